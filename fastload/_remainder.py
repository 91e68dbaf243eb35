"""Per-batch source counts of a mix whose leftover samples go to random sources.

``remainder="random"`` (see ``docs/order.md``): source ``s`` gets
``floor(batch_size * w_s)`` samples in every batch, and the ``left`` samples
that the floors leave over go, one each, to ``left`` distinct sources drawn at
random, source ``s`` with probability ``r_s = batch_size * w_s - floor(...)``
(the ``r_s`` sum to ``left``).  So every count is its floor or floor + 1, every
batch sums to ``batch_size``, and the expected count of ``s`` is
``batch_size * w_s``.

The draw is *systematic sampling* in blocks of ``block`` consecutive batches.
A block lays the sources out in a random order as intervals of lengths
``r_s`` (in integer units: ``period = block * unit`` units per 1), end to
end over ``[0, left)``; a batch with offset ``u`` takes the sources whose
interval holds one of ``u, u + 1, ..., u + left - 1``.  The offsets of a
block's batches are the strata ``p / block`` (``p = 0 .. block-1``, in a random
order) plus one jitter in ``[0, 1 / block)``.  Each offset is uniform on
``[0, 1)``, so ``s`` is chosen with probability ``r_s`` (up to the unit grid,
< 2^-32); and over a whole block ``s`` is chosen ``floor(block * r_s)`` or
``ceil(block * r_s)`` times, exactly ``block * r_s`` when ``block`` is the
common denominator of the ``r_s`` (12 equal classes, batch 128:
``r_s = 2/3``, ``block = 3``, every class gets exactly 2 extra samples in every
3 batches).  That bound is what makes the end of a ``"first_exhausted"`` epoch
independent of the draw (:func:`max_batches`).

Pure integer arithmetic on numpy arrays, keys from the caller's counter-based
generator; no global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["REMAINDERS", "RandomRemainder", "batch_counts", "max_batches", "random_remainder"]

#: the ways the samples left over by the floors are handed out (fl.Mix(remainder=...))
REMAINDERS = ("largest", "random")

_UNIT_BITS = 20
_UNIT = 1 << _UNIT_BITS  # grid units per stratum: the jitter's resolution
_MAX_BLOCK = 1 << 12  # longest block; beyond, the shares are rounded to the grid

#: ``draw(counters)``: uint64 keys of one random stream for a uint64 array of counters
Draw = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RandomRemainder:
    """The per-batch layout of a random remainder.

    Attributes
    ----------
    floors : tuple of int
        ``floor(batch_size * w_s)``: samples of each source in every batch.
    shares : tuple of int
        ``r_s`` in units of ``1 / period``; they sum to ``left * period``.
    block : int
        Batches per block (the common denominator of the ``r_s`` if it is at
        most 4096, else 4096).
    """

    floors: tuple[int, ...]
    shares: tuple[int, ...]
    block: int

    @property
    def period(self) -> int:
        """Units per sample: ``block * unit``."""
        return self.block * _UNIT

    @property
    def left(self) -> int:
        """Samples per batch beyond the floors."""
        return sum(self.shares) // self.period

    @property
    def most_per_block(self) -> np.ndarray:
        """The most extra samples a source can get in one block: ``ceil(share / unit)``."""
        return -(-np.array(self.shares, dtype=np.int64) // _UNIT)

    def describe(self) -> dict[str, object]:
        """JSON-ready values that determine the draws (for the plan fingerprint)."""
        return {"floors": list(self.floors), "shares": list(self.shares), "block": self.block}


def random_remainder(batch_size: int, weights: Sequence[float]) -> RandomRemainder | None:
    """The layout for ``batch_size`` and (validated) ``weights``; None when nothing is left over.

    With nothing left over (every ``batch_size * w_s`` whole) a random
    remainder is the largest-remainder split, and the caller uses that.
    """
    exact = [Fraction(w) for w in weights]
    total = sum(exact)
    targets = [batch_size * w / total for w in exact]
    floors = [math.floor(x) for x in targets]
    fractions = [x - f for x, f in zip(targets, floors, strict=True)]
    left = batch_size - sum(floors)
    if left == 0:
        return None
    common = math.lcm(*(r.denominator for r in fractions))
    block = common if common <= _MAX_BLOCK else _MAX_BLOCK
    period = block * _UNIT
    scaled = [r * period for r in fractions]  # whole numbers when block == common
    shares = [math.floor(x) for x in scaled]
    short = left * period - sum(shares)  # < number of sources; 0 when exact
    by_remainder = sorted(range(len(scaled)), key=lambda s: (-(scaled[s] - shares[s]), s))
    for s in by_remainder[:short]:
        shares[s] += 1
    return RandomRemainder(tuple(floors), tuple(shares), block)


def batch_counts(layout: RandomRemainder, n_batches: int, draw: Draw) -> np.ndarray:
    """``int64 (n_batches, n_sources)``: samples of each source in each batch.

    Every row sums to ``sum(floors) + left``; every entry is its floor or
    floor + 1.  Batch ``b`` depends on ``draw`` and ``b`` only (not on
    ``n_batches``), so a longer epoch extends a shorter one.
    """
    n_sources, block, period = len(layout.floors), layout.block, layout.period
    floors = np.array(layout.floors, dtype=np.int64)
    if n_batches == 0:
        return np.empty((0, n_sources), dtype=np.int64)
    n_blocks = -(-n_batches // block)
    # per block: the source order, the strata order, one jitter (distinct counters)
    stride = n_sources + block + 1
    base = np.arange(n_blocks, dtype=np.uint64)[:, None] * np.uint64(stride)
    order = np.argsort(draw(base + np.arange(n_sources, dtype=np.uint64)), axis=1)
    strata = np.argsort(
        draw(base + np.uint64(n_sources) + np.arange(block, dtype=np.uint64)), axis=1
    )
    jitter = (draw(base[:, 0] + np.uint64(n_sources + block)) >> np.uint64(64 - _UNIT_BITS)).astype(
        np.int64
    )
    offset = (strata * _UNIT + jitter[:, None]).reshape(-1)[:n_batches, None]  # in [0, period)
    lengths = np.array(layout.shares, dtype=np.int64)[order]
    ends = np.repeat(np.cumsum(lengths, axis=1), block, axis=0)[:n_batches]
    starts = ends - np.repeat(lengths, block, axis=0)[:n_batches]

    def points_below(x: np.ndarray) -> np.ndarray:
        """How many of offset + j * period (j >= 0) lie below x."""
        return np.maximum(-((offset - x) // period), 0)

    chosen = points_below(ends) - points_below(starts)  # 0 or 1, in the block's source order
    extra = np.empty_like(chosen)
    np.put_along_axis(extra, np.repeat(order, block, axis=0)[:n_batches], chosen, axis=1)
    return floors + extra


def max_batches(layout: RandomRemainder, pieces: Sequence[int]) -> int:
    """The most batches that every draw can fill when source ``s`` has ``pieces[s]`` samples.

    A block of ``block`` batches takes at most ``block * floor + most`` samples
    of a source, and its first ``t`` batches at most ``t * floor + min(t, most)``;
    the result is the largest batch count within those bounds for every
    source, whatever the draw, so it is the same in every epoch.  A source with
    floor 0 and share 0 (never delivered) must be refused by the caller.
    """
    block = layout.block
    found = []
    for piece, floor, most in zip(
        pieces, layout.floors, layout.most_per_block.tolist(), strict=True
    ):
        whole = block * floor + most
        blocks, rest = divmod(int(piece), whole)
        # the first t batches of the next block, t < block: t*floor + min(t, most) <= rest
        if most * (floor + 1) <= rest:  # past the bound's bend at t = most
            t = block - 1 if floor == 0 else (rest - most) // floor
        else:
            t = rest // (floor + 1)
        found.append(blocks * block + min(t, block - 1))
    return min(found)
