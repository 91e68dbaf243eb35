"""The coordinator: turns an epoch plan into chunk tasks and delivers batches in plan order.

Work unit
---------
One task per *chunk*: a worker decodes the chunk once into a reused scratch
buffer and copies its rows into every batch slot that needs them.  With window
shuffling a chunk feeds a few consecutive batches and a batch draws from a few
chunks; tasks never depend on each other, so workers never wait.

Within a batch, samples are ordered by (source, index in the source): the
order inside a batch does not change a gradient step, and it makes the rows a
chunk gives a batch one contiguous run, copied with a single ``np.take``.
Which samples form which batch is exactly the plan's (see docs/order.md).

Batch ring
----------
A batch gets a slot when the first chunk task feeding it is issued and hands
it to the engine when delivered; the engine keeps it out of circulation for as
long as the consumer holds arrays over it (see ``_slots.py``), so a batch
still held is never overwritten.  Tasks are issued in order of the first batch
they feed, and at most the ring's prefetch depth of batches hold slots while
being filled; that depth is at least ``max(last_use - first_use) + 2``, so
in-order issuing always progresses, whatever the consumer keeps.
"""

from __future__ import annotations

import bisect
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload._engine._launcher import exit_description
from fastload._engine._memcache import FILL, HIT, NO_CACHE
from fastload._engine._pool import Pool, WorkerDied
from fastload._engine._protocol import ChunkTask, Done, Task, TransformTask, failure
from fastload._engine._slots import SlotRing
from fastload._order import EpochPlan
from fastload.errors import WorkerError

logger = logging.getLogger(__name__)


def _bits(upper: int) -> int:
    """Bits needed for values ``0..upper``."""
    return max(int(upper), 0).bit_length()


def within_batch_order(plan: EpochPlan) -> EpochPlan:
    """The plan with each batch's samples sorted by (source, index): the delivery order."""
    if plan.n_samples == 0:
        return plan
    index_bits = _bits(int(plan.index.max()))
    source_bits = _bits(int(plan.source.max()))
    if source_bits + index_bits + _bits(plan.n_batches - 1) > 63:
        batch = np.repeat(np.arange(plan.n_batches, dtype=np.int64), np.diff(plan.batch_bounds))
        order = np.lexsort((plan.index, plan.source, batch))
        return EpochPlan(plan.source[order], plan.index[order], plan.batch_bounds)
    # (source, index) packed in one int64, sorted per batch, unpacked again: no
    # argsort and no gather; ~5x a three-key lexsort over the whole epoch
    key = plan.source.astype(np.int64) << index_bits
    key |= plan.index
    sizes = np.diff(plan.batch_bounds)
    uniform = int(np.argmax(sizes != sizes[0])) or sizes.size  # leading batches of one size
    head = int(plan.batch_bounds[uniform])
    key[:head].reshape(uniform, -1).sort(axis=1)  # many small sorts beat one big one
    for b in range(uniform, plan.n_batches):  # rare: batch sizes change (last batch, mixes)
        key[plan.batch_bounds[b] : plan.batch_bounds[b + 1]].sort()
    return EpochPlan(key >> index_bits, key & ((1 << index_bits) - 1), plan.batch_bounds)


def _order_by_key_then_position(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of ``keys``: entries of one key keep their plan order."""
    if int(keys.max()) < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")  # radix sort: O(n)
    position_bits = _bits(keys.size - 1)
    if _bits(int(keys.max())) + position_bits <= 63:
        packed = keys << position_bits
        packed |= np.arange(keys.size, dtype=np.int64)
        packed.sort()
        packed &= (1 << position_bits) - 1
        return packed
    return np.argsort(keys, kind="stable")


@dataclass
class ChunkTable:
    """Per-epoch work list: chunk tasks in issue order and the runs each one copies."""

    keys: np.ndarray  # chunk key of each task, in issue order
    run_bounds: np.ndarray  # task t copies runs run_bounds[t]:run_bounds[t+1]
    run_batch: np.ndarray
    run_entry: np.ndarray  # first plan_rows entry of each run (runs are contiguous in entries)
    run_end: np.ndarray  # one past its last entry
    run_dest: np.ndarray  # position in its batch of each run's first sample
    n_entries: int
    rows: np.ndarray  # row within its chunk of each entry (written to the arena)
    pieces: np.ndarray  # per batch: number of chunk tasks feeding it
    slots_needed: int  # batch slots that guarantee progress


def chunk_table(
    plan: EpochPlan, chunk_lens: np.ndarray, key_offsets: np.ndarray, start_batch: int
) -> ChunkTable:
    """Group the plan's samples (from ``start_batch`` on) by chunk, then batch."""
    n_batches = plan.n_batches
    lo = int(plan.batch_bounds[start_batch]) if n_batches else 0
    source = plan.source[lo:].astype(np.int64)
    index = plan.index[lo:]
    chunk, local = np.divmod(index, chunk_lens[source])
    keys = key_offsets[source] + chunk
    batch = np.repeat(np.arange(n_batches, dtype=np.int64), np.diff(plan.batch_bounds))[lo:]
    position = np.arange(lo, lo + index.size, dtype=np.int64) - plan.batch_bounds[batch]
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ChunkTable(
            empty,
            np.zeros(1, np.int64),
            empty,
            empty,
            empty,
            empty,
            0,
            empty,
            np.zeros(n_batches, np.int64),
            2,
        )
    # (key, batch, position) order: plan order is (batch, position) order already
    order = _order_by_key_then_position(keys)
    keys, batch, local, position = keys[order], batch[order], local[order], position[order]
    run_start = np.flatnonzero(np.r_[True, (np.diff(keys) != 0) | (np.diff(batch) != 0)])
    key_start = np.flatnonzero(np.r_[True, np.diff(keys) != 0])
    run_end = np.r_[run_start[1:], keys.size]
    task_keys = keys[key_start]
    # runs of one key are consecutive; a key's first run has its earliest batch
    task_run_lo = np.searchsorted(run_start, key_start)
    task_run_hi = np.r_[task_run_lo[1:], run_start.size]
    first_use = batch[key_start]
    last_use = batch[np.r_[key_start[1:], keys.size] - 1]
    issue = np.lexsort((task_keys, first_use))
    # re-lay runs in issue order so task t's runs are contiguous
    counts = (task_run_hi - task_run_lo)[issue]
    run_bounds = np.zeros(issue.size + 1, dtype=np.int64)
    np.cumsum(counts, out=run_bounds[1:])
    run_ids = np.repeat(task_run_lo[issue] - run_bounds[:-1], counts) + np.arange(run_bounds[-1])
    reach = np.maximum.accumulate(last_use[issue]) - first_use[issue]
    return ChunkTable(
        keys=task_keys[issue],
        run_bounds=run_bounds,
        run_batch=batch[run_start][run_ids],
        run_entry=run_start[run_ids],
        run_end=run_end[run_ids],
        run_dest=position[run_start][run_ids],
        n_entries=int(keys.size),
        rows=local,
        pieces=np.bincount(batch[run_start], minlength=n_batches),
        slots_needed=int(reach.max()) + 2,
    )


class Scheduler:
    """Runs epochs on a pool; yields ``(batch_slot, n_samples)`` in plan order.

    Slots come from ``slots`` (a :class:`SlotRing`); a yielded slot belongs to
    the caller, who gives it back with ``slots.keep()`` or ``slots.release()``.
    """

    def __init__(
        self,
        pool: Pool,
        arena: Any,
        slots: SlotRing,
        *,
        chunk_lens: list[int],
        key_offsets: np.ndarray,
        transform: bool,
        timeout_s: float,
        max_restarts: int,
        cached_chunks: tuple[int, ...] = (),
    ) -> None:
        self.pool = pool
        self.arena = arena
        self.slots = slots
        self.chunk_lens = np.asarray(chunk_lens, dtype=np.int64)
        self.key_offsets = key_offsets
        self.key_offset_list = [int(k) for k in key_offsets]  # bisect per task, no numpy call
        self.has_transform = transform
        self.timeout_s = timeout_s
        self.max_restarts = max_restarts
        self._task_id = 0
        self._pending: dict[int, Task] = {}  # task id -> task, until done
        #: per source: chunks below this have a place in the memory cache (_memcache.py)
        self.cached_chunks = tuple(cached_chunks) or tuple(0 for _ in chunk_lens)
        self._cached: set[int] = set()  # keys of chunks whose fill is done: hits from now on
        self._filling: set[int] = set()  # keys of chunks with a fill task in flight

    def run(
        self,
        plan: EpochPlan,
        table: ChunkTable,
        start_batch: int = 0,
        *,
        on_slot: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[int, int]]:
        """Deliver batches ``start_batch..`` of ``plan`` as ``(slot, n_samples)``.

        ``on_slot(batch, slot)`` runs when a batch gets its slot, before any task
        feeding it is sent (the engine writes ragged batches' offsets there).
        """
        self.arena["plan_rows"][: table.n_entries] = table.rows
        epoch = _EpochRun(self, plan, table, on_slot)
        try:
            for b in range(start_batch, plan.n_batches):
                yield epoch.next_batch(b)
        except GeneratorExit:
            # an abandoned epoch (break, close) must not leave tasks writing into slots
            # that the next epoch will reuse
            self.drain()
            epoch.abandon()
            raise
        # any other exception (WorkerError, Ctrl-C while waiting) propagates without
        # draining: waiting for queued work would delay Ctrl-C by all of it; the
        # loader discards this engine instead

    @property
    def cached_count(self) -> int:
        """Chunks whose fill is done (read from another thread: a snapshot)."""
        return len(self._cached)

    # ------------------------------------------------------------ task messages
    def _chunk_task(self, key: int, source: int, chunk: int, runs: tuple[Any, ...]) -> int:
        task_id = self._next_id()
        self._send(ChunkTask(task_id, source, chunk, runs, self._cache_mode(key, source, chunk)))
        return task_id

    def _cache_mode(self, key: int, source: int, chunk: int) -> int:
        """Read a cached chunk from memory, fill a cacheable one, decode the others as usual."""
        if key in self._cached:
            return HIT
        if chunk < self.cached_chunks[source] and key not in self._filling:
            self._filling.add(key)
            return FILL
        return NO_CACHE

    def _settled(self, task_id: int, *, done: bool) -> None:
        """Record a finished (``done``) or failed fill: its chunk is cached, or may be filled again."""
        task = self._pending.get(task_id)
        if isinstance(task, ChunkTask) and task.cache == FILL:
            key = self.key_offset_list[task.source] + task.chunk
            self._filling.discard(key)
            if done:
                self._cached.add(key)

    def _transform_task(self, slot: int, n: int, batch: int) -> None:
        self._send(TransformTask(self._next_id(), slot, n, batch))

    @staticmethod
    def _transform_batch(task: Task) -> int | None:
        """The batch a finished task completes by itself (transform tasks), else None."""
        return task.batch if isinstance(task, TransformTask) else None

    # ---------------------------------------------------------------- helpers
    def _next_id(self) -> int:
        self._task_id += 1
        return self._task_id

    def _send(self, task: Task) -> None:
        self._pending[task.id] = task
        self.pool.submit(task)

    def _poll(self, on_done: Any, timeout: float) -> None:
        # handle every event before raising: a reply dropped here would leave its task
        # pending forever, and drain() would then wait out timeout_s for it
        error: BaseException | None = None
        for event in self.pool.events(timeout):
            worker = event.worker
            if isinstance(event, WorkerDied):
                error = self._on_death(event) or error
                continue
            message = event.message
            worker.outstanding.pop(message.id, None)
            self._settled(message.id, done=isinstance(message, Done))
            if isinstance(message, Done):
                on_done(message.id)
            else:
                self._pending.pop(message.id, None)
                error = error or failure(message, in_process=self.pool.in_process)
        if error is not None:
            raise error

    def _on_death(self, death: WorkerDied) -> WorkerError | None:
        """Report a dead worker; restart it, or return the error that ends the epoch."""
        worker = death.worker
        running = self._describe(list(worker.outstanding.values()))
        what = (
            f"fastload worker {worker.id} (pid {death.pid}) died ({exit_description(death.exitcode)}) "
            f"while running: {running}"
        )
        if worker.restarts >= self.max_restarts:  # no restart left
            # its tasks will never finish: stop waiting for them
            for task_id in worker.outstanding:
                self._settled(task_id, done=False)
                self._pending.pop(task_id, None)
            worker.outstanding.clear()
            what += f"; giving up after {worker.restarts + 1} deaths (max_worker_restarts={self.max_restarts})"
            logger.error("%s", what)
            warnings.warn(what, RuntimeWarning, stacklevel=2)
            return WorkerError(
                f"worker {worker.id} died ({exit_description(death.exitcode)}) "
                f"{worker.restarts + 1} times; giving up. It was running: {running}"
            )
        what += f"; restarting it (restart {worker.restarts + 1} of {self.max_restarts})"
        logger.warning("%s", what)
        warnings.warn(what, RuntimeWarning, stacklevel=2)
        self.pool.restart(worker)
        return None

    def _timed_out(self, batch: int) -> WorkerError:
        what = (
            f"batch {batch} not ready after {self.timeout_s:.0f}s: {self.pool.alive()} of "
            f"{len(self.pool.workers)} workers alive, {len(self._pending)} tasks pending "
            f"({self._describe(list(self._pending.values())[:8])})"
        )
        logger.error("%s", what)
        return WorkerError(what)

    def _describe(self, tasks: list[Task]) -> str:
        parts = []
        for task in tasks:
            if isinstance(task, ChunkTask):
                parts.append(f"chunk {task.chunk} of source {task.source}")
            else:
                parts.append(f"transform of batch {task.batch}")
        return ", ".join(parts) or "no task"

    def drain(self) -> None:
        """Wait for every issued task to finish (bounded by ``timeout_s``)."""
        deadline = time.monotonic() + self.timeout_s
        # a closed pool (loader.close() or the engine's finalizer ran before this
        # abandoned generator was finalized) has no worker left to wait for
        while self._pending and not self.pool.closed and time.monotonic() < deadline:
            try:
                self._poll(lambda task_id: self._pending.pop(task_id, None), 0.5)
            except Exception:  # a failed task is finished too
                continue
        if self._pending and (self._cached or self._filling):
            # a task still running after the wait may yet write into the cache: stop using it
            logger.warning(
                "%d tasks still running after %.0f s; the memory cache is no longer used",
                len(self._pending),
                self.timeout_s,
            )
            self.cached_chunks = tuple(0 for _ in self.cached_chunks)
            self._cached.clear()
        self._filling.clear()
        self._pending.clear()
        for worker in self.pool.workers:
            worker.outstanding.clear()


class _EpochRun:
    """The state of one epoch on a scheduler: which batch has which slot, what is issued and done.

    Tasks are issued in the chunk table's order (the order of the first batch
    each feeds); a task is issued only once every batch it feeds has a slot,
    and the number of batches holding slots is capped by the slot ring's
    prefetch depth, which is at least the table's ``slots_needed``: so the
    batch the consumer waits for always has all its tasks issued eventually.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        plan: EpochPlan,
        table: ChunkTable,
        on_slot: Callable[[int, int], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.on_slot = on_slot
        self.slots = scheduler.slots
        self.table = table
        self.bounds = plan.batch_bounds
        self.pieces_left = table.pieces.copy()  # per batch: chunk tasks not yet done
        self.slot_of: dict[int, int] = {}  # batch -> slot, until delivered
        self.batches_of_task: dict[int, tuple[int, ...]] = {}
        self.ready: set[int] = set()
        self.next_task = 0
        # the next task's runs, batches, and those of them still without a slot; kept
        # while the ring is full, so a blocked issue() costs one comparison per call
        # (batches get slots only in issue(), so `new` stays valid until it is issued)
        self.waiting: tuple[int, int, list[int], list[int]] | None = None

    def batch_len(self, b: int) -> int:
        return int(self.bounds[b + 1] - self.bounds[b])

    def next_batch(self, b: int) -> tuple[int, int]:
        """Wait until batch ``b`` is complete; hand over its slot."""
        scheduler = self.scheduler
        self.slots.sweep()  # slots of batches the consumer dropped return to the ring
        self.issue()
        deadline = time.monotonic() + scheduler.timeout_s
        while b not in self.ready:
            scheduler._poll(self.on_done, min(1.0, max(0.0, deadline - time.monotonic())))
            self.issue()
            if b not in self.ready and time.monotonic() > deadline:
                raise scheduler._timed_out(b)
        self.ready.discard(b)
        self.slots.delivered()
        return self.slot_of.pop(b), self.batch_len(b)

    def on_done(self, task_id: int) -> None:
        task = self.scheduler._pending.pop(task_id, None)
        if task is None:
            return
        completed = Scheduler._transform_batch(task)
        if completed is not None:
            self.ready.add(completed)
            return
        for b in self.batches_of_task.pop(task_id):
            self.pieces_left[b] -= 1
            if self.pieces_left[b] == 0:
                if self.scheduler.has_transform:
                    self.scheduler._transform_task(self.slot_of[b], self.batch_len(b), b)
                else:
                    self.ready.add(b)

    def issue(self) -> None:
        """Issue tasks in table order while the ring has room for the batches they feed."""
        table, slot_of, scheduler = self.table, self.slot_of, self.scheduler
        while self.next_task < table.keys.size:
            if self.waiting is None:
                t = self.next_task
                r0, r1 = int(table.run_bounds[t]), int(table.run_bounds[t + 1])
                batches = table.run_batch[r0:r1].tolist()
                self.waiting = (r0, r1, batches, [b for b in batches if b not in slot_of])
            r0, r1, batches, new = self.waiting
            if len(new) > self.slots.room:
                return
            self.waiting = None
            for b in new:
                slot = slot_of[b] = self.slots.take()
                if self.on_slot is not None:
                    self.on_slot(b, slot)
            key = int(table.keys[self.next_task])
            source = bisect.bisect_right(scheduler.key_offset_list, key) - 1
            runs = tuple(
                (slot_of[b], e0, e1, dest)
                for b, e0, e1, dest in zip(
                    batches,
                    table.run_entry[r0:r1].tolist(),
                    table.run_end[r0:r1].tolist(),
                    table.run_dest[r0:r1].tolist(),
                    strict=True,
                )
            )
            chunk = key - scheduler.key_offset_list[source]
            self.batches_of_task[scheduler._chunk_task(key, source, chunk, runs)] = tuple(batches)
            self.next_task += 1

    def abandon(self) -> None:
        """Give back the slots of batches that will not be delivered (after a drain)."""
        self.slots.abandon(list(self.slot_of.values()))
        self.slot_of.clear()
