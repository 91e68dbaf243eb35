"""Which batch slots are free, being filled, or still held by the consumer.

A slot is *in flight* from the moment the scheduler gives it to a batch until
that batch is delivered.  A delivered batch is either *kept* — the consumer got
arrays over the slot memory, and the slot stays out of circulation until every
one of them is garbage — or *released* at once (it was copied out).

The number of slots in flight is capped by ``in_flight_limit`` (the prefetch
depth the scheduler needs to progress), the number kept by ``keep_limit``;
the arena holds ``in_flight_limit + keep_limit`` slots, so a free slot always
exists for every batch that may go in flight.  Slots are handed out lowest
number first: a loop that drops each batch keeps cycling through the same
few slots (whose pages are already mapped and warm), and the higher slots —
the reserve for kept batches — cost no memory until a consumer keeps batches.

Kept slots are swept lazily at scheduling points, never from GC callbacks:
a few of them per batch (bounded work), all of them only when the keep limit
is reached, and then at most once per ``1/16`` of the kept count.
"""

from __future__ import annotations

import heapq
import weakref
from collections import deque

#: kept slots checked per scheduling point (the drop-each-batch loop has one or two)
_SWEEP_PER_BATCH = 4


class SlotRing:
    """Slot accounting of one arena; see the module docstring."""

    def __init__(self, in_flight_limit: int, keep_limit: int) -> None:
        self.in_flight_limit = in_flight_limit
        self.keep_limit = keep_limit
        self.size = in_flight_limit + keep_limit
        self._free: list[int] = []  # a heap of released slots, all below _fresh
        self._fresh = 0  # slots from here on were never used
        self.in_flight = 0
        self._kept: deque[tuple[int, tuple[weakref.ref, ...]]] = deque()
        self._skip_full_sweeps = 0

    @property
    def room(self) -> int:
        """Slots batches may still take before the prefetch depth is reached."""
        return self.in_flight_limit - self.in_flight

    @property
    def kept(self) -> int:
        """Delivered batches whose arrays may still be alive (as of the last sweep)."""
        return len(self._kept)

    def take(self) -> int:
        """A free slot for a batch about to be filled (the caller checked ``room``)."""
        if self.in_flight >= self.in_flight_limit:
            raise RuntimeError("batch slot taken beyond the prefetch depth (scheduler bug)")
        self.in_flight += 1
        if self._free:
            return heapq.heappop(self._free)
        if self._fresh >= self.size:
            raise RuntimeError("no free batch slot (slot accounting bug)")
        self._fresh += 1
        return self._fresh - 1

    def delivered(self) -> None:
        """A batch in flight was handed to the engine, which keeps or releases its slot next."""
        self.in_flight -= 1

    def release(self, slot: int) -> None:
        """Return a slot nobody reads any more."""
        heapq.heappush(self._free, slot)

    def abandon(self, slots: list[int]) -> None:
        """Return the slots of batches that were in flight and will never be delivered."""
        for slot in slots:
            self.in_flight -= 1
            self.release(slot)

    def keep(self, slot: int, roots: list[weakref.ref]) -> None:
        """The consumer holds arrays over ``slot``; it comes back once every root is dead."""
        self._kept.append((slot, tuple(roots)))

    def can_keep(self) -> bool:
        """Whether one more delivered batch may stay pinned, sweeping if at the limit."""
        if len(self._kept) < self.keep_limit:
            return True
        if self._skip_full_sweeps > 0:
            self._skip_full_sweeps -= 1
            return False
        self.sweep(len(self._kept))
        if len(self._kept) < self.keep_limit:
            return True
        # the consumer holds everything: don't pay a full sweep on every batch
        self._skip_full_sweeps = len(self._kept) // 16
        return False

    def sweep(self, budget: int = _SWEEP_PER_BATCH) -> None:
        """Release kept slots whose arrays are all dead, checking at most ``budget`` live ones."""
        kept = self._kept
        checked = 0  # live ones, moved to the back: once checked == len(kept), all were seen
        while kept and checked < min(budget, len(kept)):
            slot, roots = kept[0]
            if any(root() is not None for root in roots):
                kept.rotate(-1)
                checked += 1
            else:
                kept.popleft()
                heapq.heappush(self._free, slot)
