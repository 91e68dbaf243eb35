"""Epoch plans: which samples each rank reads in each epoch, and in which batches.

This is fastload's order layer: pure, deterministic logic with no I/O and no
processes.  The engine asks :func:`plan_epoch` for the plan of one epoch on one
rank and then reads exactly those samples, batch by batch.

Invariants (each is tested in ``tests/test_order.py``):

- The plan is a function of ``(sources, OrderConfig, MixConfig, epoch)`` only,
  never of worker count or timing; :func:`plan_fingerprint` hashes those inputs
  except the rank and world size.
- Elastic resume: :func:`plan_resumed` continues an epoch that other worlds of
  ranks began; what they consumed plus what it delivers is each sample of the
  epoch at most once (exactly once for one source without ``drop_last``; for
  ``policy="cycle"``, at most once per pass of its source).
- Single source: every sample of the source is delivered exactly once per epoch
  by exactly one rank (unless ``drop_last`` drops the tail of a rank's stream).
- Order is built from chunks: a window of the plan touches at most
  ``window_chunks`` chunks, so workers read whole chunks, never scattered samples.
- Mixing: every batch holds exactly ``batch_size`` samples, of which exactly
  ``mix_counts(batch_size, weights)[s]`` come from source ``s`` (with
  ``remainder="random"``: ``floor(batch_size * w_s)`` or one more, drawn per
  batch, see :mod:`fastload._remainder`).

Randomness is counter based: a 64-bit key per (stream, counter) is obtained by
mixing a key derived with :class:`numpy.random.SeedSequence` (a documented,
version-stable algorithm) and the counter through the SplitMix64 finaliser,
which is a bijection of 64-bit integers.  Sorting by such keys yields the
permutations.  Integer arithmetic and sorting by distinct keys give the same
result in every numpy version, and counters make the plan of one rank
computable without generating the random numbers of the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from fastload import _validate
from fastload._remainder import (
    REMAINDERS,
    RandomRemainder,
    batch_counts,
    max_batches,
    random_remainder,
)
from fastload.errors import ConfigError

__all__ = [
    "ORDER_VERSION",
    "EpochPlan",
    "MixConfig",
    "OrderConfig",
    "SourceShape",
    "batches_per_epoch",
    "changed_settings",
    "legacy_fingerprint",
    "merge_states",
    "mix_counts",
    "plan_description",
    "plan_epoch",
    "plan_fingerprint",
    "plan_resumed",
    "resume_history",
]

#: Version of the ordering algorithm; part of :func:`plan_fingerprint`, so a
#: resume state saved under another algorithm is refused instead of silently
#: continuing with different samples.
ORDER_VERSION = 1

POLICIES = ("first_exhausted", "cycle")

# Purposes keep the random streams of one (seed, epoch) independent.
_PURPOSE_CHUNKS = 1  # chunk permutation of one source
_PURPOSE_WINDOW = 2  # sample shuffle inside windows of one source
_PURPOSE_INTERLEAVE = 3  # position of each source's samples inside a mixed batch
_PURPOSE_INTERLEAVE_RESUMED = 4  # the same, in the batches of an elastic resume
_PURPOSE_REMAINDER = 5  # which sources get a leftover sample (remainder="random")
_PURPOSE_REMAINDER_RESUMED = 6  # the same, in the batches of an elastic resume

_MAX_SOURCES = int(np.iinfo(np.int16).max)  # EpochPlan.source is int16
# Window ids up to this many bits are packed with the key into one 64-bit sort
# key (fast); beyond it an exact lexsort is used.
_PACKED_WINDOW_BITS = 32
_U64 = np.uint64


# --------------------------------------------------------------------------- validation
def _check_weights(weights: object) -> tuple[float, ...]:
    """Validate mixing weights: a non-empty sequence of finite numbers > 0."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(
            f"weights must be a sequence of numbers > 0, one per source, got {weights!r}"
        )
    if len(weights) == 0:
        raise ConfigError("weights must name at least one source, got an empty sequence")
    hint = "; drop a source from the mix instead of giving it weight 0"
    return tuple(
        _validate.number(w, name=f"weights[{s}]", above=0, hint=hint) for s, w in enumerate(weights)
    )


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SourceShape:
    """Size and chunking of one source (one split of one store).

    Parameters
    ----------
    n : int
        Number of samples, >= 0.
    chunk_len : int
        Samples per chunk along the sample axis, >= 1; the last chunk holds
        ``n - (n_chunks - 1) * chunk_len`` samples.
    """

    n: int
    chunk_len: int

    def __post_init__(self) -> None:
        owner = "SourceShape"
        object.__setattr__(self, "n", _validate.integer(self.n, name="n", minimum=0, owner=owner))
        chunk_len = _validate.integer(self.chunk_len, name="chunk_len", minimum=1, owner=owner)
        object.__setattr__(self, "chunk_len", chunk_len)

    @property
    def n_chunks(self) -> int:
        """Number of chunks, the last one possibly short."""
        return -(-self.n // self.chunk_len)


@dataclass(frozen=True)
class OrderConfig:
    """Everything about the order of one rank except the sources and the mix.

    Parameters
    ----------
    batch_size : int
        Samples per batch on this rank, >= 1.
    shuffle : bool
        Permute chunks and shuffle samples inside windows; ``False`` gives store order.
    seed : int
        Seed of every random choice, >= 0.  Same seed and config, same plans.
    window_chunks : int
        Samples are shuffled inside windows of this many consecutive chunks of
        the permuted chunk order, >= 1.  Larger windows shuffle better and need
        more chunks in flight.
    rank, world_size : int
        This process's rank among ``world_size`` data-parallel processes.
    drop_last : bool
        Single source only: drop the incomplete last batch, and give every rank
        the same number of batches (needed by DDP).

    Raises
    ------
    ConfigError
        If a value has the wrong type or is out of range.
    """

    batch_size: int
    shuffle: bool = True
    seed: int = 0
    window_chunks: int = 8
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False

    def __post_init__(self) -> None:
        # No owner in the messages: the names are fl.Loader's parameters, and the
        # loader builds this config inside _validate.on_behalf_of("fl.Loader").
        for name, minimum in (
            ("batch_size", 1),
            ("seed", 0),
            ("window_chunks", 1),
            ("rank", 0),
            ("world_size", 1),
        ):
            value = _validate.integer(getattr(self, name), name=name, minimum=minimum)
            object.__setattr__(self, name, value)
        for name in ("shuffle", "drop_last"):
            object.__setattr__(self, name, _validate.flag(getattr(self, name), name=name))
        if self.rank >= self.world_size:
            raise ConfigError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")


@dataclass(frozen=True)
class MixConfig:
    """How several sources are mixed into one stream of batches.

    Parameters
    ----------
    weights : tuple of float
        One weight > 0 per source; normalised internally.  Each batch holds
        exactly ``mix_counts(batch_size, weights)`` samples of each source.
    policy : {"first_exhausted", "cycle"}
        ``"first_exhausted"``: the epoch ends before the first batch that some
        source cannot fill; no sample repeats.  ``"cycle"``: the epoch has
        ``num_samples`` samples and a source that runs out starts a fresh pass.
    num_samples : int or None
        ``"cycle"`` only (required there): samples per epoch summed over all
        ranks, rounded to whole batches per rank (up, or down with ``drop_last``).
    remainder : {"largest", "random"}
        Who gets the samples that ``floor(batch_size * w_s)`` leaves over in a
        batch.  ``"largest"``: the sources with the largest fractional parts,
        the same in every batch (:func:`mix_counts`).  ``"random"``: distinct
        sources drawn anew for every batch (seeded), source ``s`` with
        probability equal to its fractional part, so its expected count is
        ``batch_size * w_s`` (see :mod:`fastload._remainder`).

    Raises
    ------
    ConfigError
        If a weight is not finite and > 0, the policy or remainder is unknown, or
        ``num_samples`` is missing for ``"cycle"`` or given for ``"first_exhausted"``.
    """

    weights: tuple[float, ...]
    policy: str = "first_exhausted"
    num_samples: int | None = None
    remainder: str = "largest"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _check_weights(self.weights))
        _validate.choice(self.policy, POLICIES, name="policy")
        _validate.choice(self.remainder, REMAINDERS, name="remainder")
        if self.policy == "cycle":
            if self.num_samples is None:
                raise ConfigError(
                    "policy='cycle' needs num_samples (samples per epoch over all "
                    "ranks): cycling has no natural epoch end"
                )
            num_samples = _validate.integer(self.num_samples, name="num_samples", minimum=1)
            object.__setattr__(self, "num_samples", num_samples)
        elif self.num_samples is not None:
            raise ConfigError(
                f"num_samples={self.num_samples!r} only applies to policy='cycle'; "
                "with 'first_exhausted' the smallest source ends the epoch"
            )


# --------------------------------------------------------------------------- the plan
class EpochPlan:
    """The samples one rank delivers in one epoch, in delivery order, cut into batches.

    Attributes
    ----------
    source : numpy.ndarray
        ``int16 (total,)``: source id of each delivered sample.
    index : numpy.ndarray
        ``int64 (total,)``: sample index within that source.
    batch_bounds : numpy.ndarray
        ``int64 (n_batches + 1,)``: batch ``b`` is ``[batch_bounds[b], batch_bounds[b + 1])``.

    The arrays are read-only, so a plan can be shared without copying.
    """

    __slots__ = ("batch_bounds", "index", "source")

    def __init__(self, source: np.ndarray, index: np.ndarray, batch_bounds: np.ndarray) -> None:
        self.source = np.ascontiguousarray(source, dtype=np.int16)
        self.index = np.ascontiguousarray(index, dtype=np.int64)
        self.batch_bounds = np.ascontiguousarray(batch_bounds, dtype=np.int64)
        for a in (self.source, self.index, self.batch_bounds):
            a.flags.writeable = False

    @property
    def n_batches(self) -> int:
        """Number of batches in this epoch on this rank."""
        return len(self.batch_bounds) - 1

    @property
    def n_samples(self) -> int:
        """Number of samples delivered in this epoch on this rank."""
        return len(self.index)

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(source, index)`` views of batch ``b`` (``0 <= b < n_batches``)."""
        b = operator.index(b)
        if not 0 <= b < self.n_batches:
            raise IndexError(f"batch {b} out of range for a plan of {self.n_batches} batches")
        lo, hi = int(self.batch_bounds[b]), int(self.batch_bounds[b + 1])
        return self.source[lo:hi], self.index[lo:hi]

    def __repr__(self) -> str:
        return f"EpochPlan(n_samples={self.n_samples}, n_batches={self.n_batches})"


# --------------------------------------------------------------------------- randomness
def _stream_key(seed: int, epoch: int, purpose: int, ident: int) -> np.uint64:
    """64-bit key of one random stream; ``ident`` is a source id or a rank."""
    state = np.random.SeedSequence([seed, epoch, purpose, ident]).generate_state(1, np.uint64)
    return state[0]


def _mix64(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output for ``counters`` (uint64 array) of stream ``key``.

    A bijection of the counter for a fixed key, so distinct counters give
    distinct keys and sorting by them is deterministic with any algorithm.
    Operations are on arrays, where numpy wraps uint64 overflow silently.
    """
    z = counters.astype(_U64) * _U64(0x9E3779B97F4A7C15) + key
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


# --------------------------------------------------------------------------- streams
def _rank_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Contiguous piece ``[lo, hi)`` of an ``n``-sample stream owned by ``rank``.

    Pieces are disjoint, cover ``range(n)`` and differ in size by at most one.
    """
    return rank * n // world_size, (rank + 1) * n // world_size


def _source_stream(
    shape: SourceShape, cfg: OrderConfig, epoch: int, source_id: int, length: int
) -> np.ndarray:
    """The first ``length`` sample indices of this rank's stream of one source.

    Pass ``q`` (``q = 0, 1, ...``) of a source is its chunks in a permutation
    seeded by ``(seed, epoch, source_id, q)``, as one stream of samples.  This
    rank owns positions ``[lo, hi)`` of every pass.  Inside each window (a run
    of ``window_chunks`` consecutive chunks of the pass, intersected with the
    rank's piece) samples are shuffled.  Passes are concatenated until
    ``length`` samples are reached; one pass is the usual case.
    """
    n, chunk_len = shape.n, shape.chunk_len
    lo, hi = _rank_bounds(n, cfg.world_size, cfg.rank)
    piece = hi - lo
    if length == 0:
        return np.empty(0, dtype=np.int64)
    if piece == 0:  # callers rule this out with a ConfigError naming the source
        raise ValueError("cannot draw samples from an empty rank piece")
    n_passes = -(-length // piece)
    if not cfg.shuffle:
        return np.arange(length, dtype=np.int64) % piece + lo

    # Chunk permutation of every pass at once: one key per (pass, chunk).
    n_chunks = shape.n_chunks
    chunk_keys = _mix64(
        _stream_key(cfg.seed, epoch, _PURPOSE_CHUNKS, source_id),
        np.arange(n_passes * n_chunks, dtype=np.uint64),
    ).reshape(n_passes, n_chunks)
    perm = np.argsort(chunk_keys, axis=1)  # chunk ids in delivery order, per pass
    size = np.minimum(chunk_len, n - perm * chunk_len)
    end = np.cumsum(size, axis=1)
    start = end - size  # stream position of each chunk's first sample

    # Segments: the part of each chunk that falls into this rank's piece.
    pass_of, pos_of = np.nonzero((start < hi) & (end > lo))  # row-major: stream order
    seg_start = start[pass_of, pos_of]
    seg_from = np.maximum(seg_start, lo)
    seg_len = np.minimum(end[pass_of, pos_of], hi) - seg_from
    seg_first = perm[pass_of, pos_of] * chunk_len + (seg_from - seg_start)
    seg_off = np.cumsum(seg_len) - seg_len
    total = n_passes * piece
    within = np.arange(total, dtype=np.int64) - np.repeat(seg_off, seg_len)
    index = np.repeat(seg_first, seg_len) + within

    # Shuffle inside windows: sort by (window, key).  Keys, window ids and the
    # key truncation below depend on stream positions, not on the rank, so a
    # rank's order inside a window is the single-rank order restricted to it.
    position = np.repeat(pass_of.astype(np.int64) * n + seg_from, seg_len) + within
    keys = _mix64(_stream_key(cfg.seed, epoch, _PURPOSE_WINDOW, source_id), position)
    windows_per_pass = -(-n_chunks // cfg.window_chunks)
    window = pass_of.astype(np.int64) * windows_per_pass + pos_of // cfg.window_chunks
    window = np.repeat(window, seg_len).astype(_U64)  # nondecreasing along the stream
    bits = (n_passes * windows_per_pass - 1).bit_length()
    if bits == 0:
        order = np.argsort(keys)  # one window; keys are distinct: deterministic
    elif bits <= _PACKED_WINDOW_BITS:
        # One 64-bit sort key: window in the high bits, the key's top bits below
        # (4x faster than lexsort).  Truncated keys may tie; the stable sort then
        # keeps stream order, so the result stays deterministic and the bias is
        # negligible (ties need two equal 32+-bit draws in one window).
        sort_key = (window << _U64(64 - bits)) | (keys >> _U64(bits))
        order = np.argsort(sort_key, kind="stable")
    else:  # > 4e9 windows: exact but slower
        order = np.lexsort((keys, window))
    return index[order][:length]


# --------------------------------------------------------------------------- mixing
def mix_counts(batch_size: int, weights: Sequence[float]) -> np.ndarray:
    """Samples per batch of each source, by largest-remainder rounding.

    Source ``s`` gets ``floor(batch_size * w_s)`` samples (``w`` normalised to
    sum 1), and the ``batch_size - sum(floors)`` left over go one each to the
    sources with the largest fractional parts, ties to the lower source id.
    Arithmetic is exact (rational), so equal weights tie exactly.

    Parameters
    ----------
    batch_size : int
        Samples per batch, >= 1.
    weights : sequence of float
        One finite weight > 0 per source.

    Returns
    -------
    numpy.ndarray
        ``int64 (n_sources,)``, summing to ``batch_size``; each entry differs
        from ``batch_size * w_s`` by less than 1.

    Raises
    ------
    ConfigError
        If ``batch_size`` < 1 or a weight is not finite and > 0.
    """
    batch_size = _validate.integer(batch_size, name="batch_size", minimum=1, owner="mix_counts")
    exact_weights = [Fraction(w) for w in _check_weights(weights)]
    total = sum(exact_weights)
    shares = [batch_size * w / total for w in exact_weights]
    counts = [math.floor(x) for x in shares]
    left = batch_size - sum(counts)
    by_remainder = sorted(range(len(shares)), key=lambda s: (-(shares[s] - counts[s]), s))
    for s in by_remainder[:left]:
        counts[s] += 1
    return np.array(counts, dtype=np.int64)


def _uses_mix(sources: Sequence[SourceShape], mix: MixConfig | None) -> bool:
    """Whether the mixing semantics apply (else the single-source ones do).

    One source with ``"first_exhausted"`` is plain single-source loading (a
    short last batch allowed); one source with ``"cycle"`` keeps ``num_samples``.
    """
    return mix is not None and (len(sources) > 1 or mix.policy == "cycle")


def _check_inputs(
    sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig | None
) -> tuple[SourceShape, ...]:
    """Validate the combination of sources, config and mix; return the sources as a tuple."""
    if not isinstance(cfg, OrderConfig):
        raise ConfigError(f"cfg must be an OrderConfig, got {type(cfg).__name__}")
    if mix is not None and not isinstance(mix, MixConfig):
        raise ConfigError(f"mix must be a MixConfig or None, got {type(mix).__name__}")
    sources = tuple(sources)
    if not sources:
        raise ConfigError("an epoch plan needs at least one source, got none")
    for s, shape in enumerate(sources):
        if not isinstance(shape, SourceShape):
            raise ConfigError(f"source {s} must be a SourceShape, got {type(shape).__name__}")
    if len(sources) > _MAX_SOURCES:
        raise ConfigError(f"at most {_MAX_SOURCES} sources can be mixed, got {len(sources)}")
    if mix is None:
        if len(sources) > 1:
            raise ConfigError(
                f"{len(sources)} sources need a MixConfig saying how to mix them, got mix=None"
            )
        return sources
    if len(mix.weights) != len(sources):
        raise ConfigError(
            f"MixConfig has {len(mix.weights)} weights for {len(sources)} sources; "
            "give exactly one weight per source"
        )
    if _uses_mix(sources, mix):
        layout = _random_layout(cfg, mix)
        if layout is None:
            counts = mix_counts(cfg.batch_size, mix.weights)
            starved = [s for s in range(len(sources)) if counts[s] == 0]
        else:  # a floor of 0 is fine while the source can draw a leftover sample
            starved = [
                s
                for s, (f, r) in enumerate(zip(layout.floors, layout.shares, strict=True))
                if f == r == 0
            ]
        if starved:
            raise ConfigError(
                f"batch_size={cfg.batch_size} is too small for weights {mix.weights}: source(s) "
                f"{starved} would get 0 samples per batch and never be delivered; raise "
                "batch_size or those weights"
            )
        if mix.policy == "cycle":
            small = [s for s, shape in enumerate(sources) if shape.n < cfg.world_size]
            if small:
                raise ConfigError(
                    f"policy='cycle' needs every source to have at least world_size="
                    f"{cfg.world_size} samples (one per rank); source(s) {small} have fewer"
                )
    return sources


def _random_layout(cfg: OrderConfig, mix: MixConfig) -> RandomRemainder | None:
    """The random remainder's layout, or None where the counts are :func:`mix_counts`."""
    if mix.remainder != "random":
        return None
    return random_remainder(cfg.batch_size, mix.weights)  # None: nothing left over


def _batch_counts(
    cfg: OrderConfig, epoch: int, mix: MixConfig, n_batches: int, rank: int, purpose: int
) -> np.ndarray:
    """``int64 (n_batches, n_sources)``: samples of each source in each batch of ``rank``.

    Largest remainder: :func:`mix_counts` in every batch.  Random remainder:
    drawn per batch from the stream ``(seed, epoch, purpose, rank)``.
    """
    layout = _random_layout(cfg, mix)
    if layout is None:
        counts = mix_counts(cfg.batch_size, mix.weights)
        return np.broadcast_to(counts, (n_batches, len(counts)))
    key = _stream_key(cfg.seed, epoch, purpose, rank)
    return batch_counts(layout, n_batches, lambda counters: _mix64(key, counters))


def _mix_batches(sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig) -> int:
    """Batches per epoch of a mix on every rank (equal across ranks and epochs)."""
    if mix.policy == "first_exhausted":
        layout = _random_layout(cfg, mix)
        if layout is not None:  # the most that every draw fills: the same in every epoch
            return max_batches(layout, [shape.n // cfg.world_size for shape in sources])
    counts = mix_counts(cfg.batch_size, mix.weights)
    if mix.policy == "first_exhausted":
        # The smallest rank piece of a source has n // world_size samples;
        # taking it makes every rank stop after the same batch.
        return min(
            (shape.n // cfg.world_size) // int(k) for shape, k in zip(sources, counts, strict=True)
        )
    assert mix.num_samples is not None  # MixConfig guarantees it for "cycle"
    per_batch = cfg.world_size * cfg.batch_size  # samples per global step
    if cfg.drop_last:
        return mix.num_samples // per_batch
    return -(-mix.num_samples // per_batch)


def batches_per_epoch(
    sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig | None = None
) -> int:
    """Number of batches this rank delivers per epoch, without building the plan.

    Equal to ``plan_epoch(sources, cfg, e, mix).n_batches`` for every epoch
    ``e``; also validates the inputs, so a loader can call it when it is built.

    Raises
    ------
    ConfigError
        As :func:`plan_epoch`.
    """
    sources = _check_inputs(sources, cfg, mix)
    if mix is not None and _uses_mix(sources, mix):
        return _mix_batches(sources, cfg, mix)
    n = sources[0].n
    if cfg.drop_last:
        return (n // cfg.world_size) // cfg.batch_size
    lo, hi = _rank_bounds(n, cfg.world_size, cfg.rank)
    return -(-(hi - lo) // cfg.batch_size)


# --------------------------------------------------------------------------- planning
def plan_epoch(
    sources: Sequence[SourceShape], cfg: OrderConfig, epoch: int, mix: MixConfig | None = None
) -> EpochPlan:
    """Plan one epoch of one rank: which samples, in which order, in which batches.

    Single source (``mix`` is None, or one source with ``"first_exhausted"``):
    the chunks are permuted (seeded by ``seed``, ``epoch`` and the source), the
    resulting sample stream is cut into ``world_size`` contiguous pieces
    (``[r*n//W, (r+1)*n//W)``, disjoint, sizes within one), and samples are
    shuffled inside windows of ``window_chunks`` consecutive permuted chunks.
    Batches are consecutive ``batch_size`` slices of the rank's stream; the last
    one may be short and ranks may differ by one batch, unless ``drop_last``,
    which gives every rank ``(n // world_size) // batch_size`` full batches.
    ``shuffle=False`` keeps store order.

    Mix (several sources, or ``"cycle"``): each source has its own rank stream
    as above; every batch takes the next ``mix_counts(batch_size, weights)[s]``
    samples of source ``s`` and, with ``shuffle``, interleaves them in a seeded
    order (else source 0's share first, then source 1's, ...).  The epoch ends
    per ``mix.policy``; every rank delivers the same number of full batches.

    Parameters
    ----------
    sources : sequence of SourceShape
        The sources; their position is their source id.
    cfg : OrderConfig
        Batch size, shuffling, seed, window, rank and drop_last.
    epoch : int
        Epoch number, >= 0; each epoch has its own permutations.
    mix : MixConfig, optional
        Required for more than one source.

    Returns
    -------
    EpochPlan
        Read-only arrays of source ids, sample indices and batch bounds.

    Raises
    ------
    ConfigError
        If the inputs are inconsistent (no sources, several sources without a
        mix, weights not matching the sources, a source getting 0 samples per
        batch, ``"cycle"`` with a source smaller than ``world_size``).
    """
    sources = _check_inputs(sources, cfg, mix)
    epoch = _validate.integer(epoch, name="epoch", minimum=0, owner="plan_epoch")
    n_batches = batches_per_epoch(sources, cfg, mix)
    batch_size = cfg.batch_size

    if mix is None or not _uses_mix(sources, mix):
        lo, hi = _rank_bounds(sources[0].n, cfg.world_size, cfg.rank)
        total = n_batches * batch_size if cfg.drop_last else hi - lo
        index = _source_stream(sources[0], cfg, epoch, 0, hi - lo)[:total]
        bounds = np.minimum(np.arange(n_batches + 1, dtype=np.int64) * batch_size, total)
        return EpochPlan(np.zeros(total, dtype=np.int16), index, bounds)

    counts = _batch_counts(cfg, epoch, mix, n_batches, cfg.rank, _PURPOSE_REMAINDER)
    streams = [
        _source_stream(shape, cfg, epoch, s, int(total))
        for s, (shape, total) in enumerate(zip(sources, counts.sum(axis=0), strict=True))
    ]
    return _mixed_plan(streams, counts, cfg, epoch, _PURPOSE_INTERLEAVE)


def _mixed_plan(
    streams: Sequence[np.ndarray],
    counts: np.ndarray,
    cfg: OrderConfig,
    epoch: int,
    purpose: int,
) -> EpochPlan:
    """Batches taking ``counts[b, s]`` samples of ``streams[s]`` each, interleaved if shuffling.

    ``counts`` is ``(n_batches, n_sources)``, every row summing to the batch
    size; source ``s`` takes its samples from the start of ``streams[s]``.
    """
    n_batches, n_sources = counts.shape
    batch_size = cfg.batch_size
    # store-order layout: each batch is source 0's share, then source 1's, ...
    ids = np.tile(np.arange(n_sources, dtype=np.int16), n_batches)
    source = np.repeat(ids, counts.reshape(-1))
    index = np.empty(len(source), dtype=np.int64)
    taken = [
        stream[: int(total)] for stream, total in zip(streams, counts.sum(axis=0), strict=True)
    ]
    if len(source):  # positions of each source's samples, in batch order
        index[np.argsort(source, kind="stable")] = np.concatenate(taken)
    source = source.reshape(n_batches, batch_size)
    index = index.reshape(n_batches, batch_size)
    if cfg.shuffle and n_batches:
        keys = _mix64(
            _stream_key(cfg.seed, epoch, purpose, cfg.rank),
            np.arange(n_batches * batch_size, dtype=np.uint64),
        ).reshape(n_batches, batch_size)
        slot = np.argsort(keys, axis=1)  # distinct keys: deterministic
        source = np.take_along_axis(source, slot, axis=1)
        index = np.take_along_axis(index, slot, axis=1)
    bounds = np.arange(n_batches + 1, dtype=np.int64) * batch_size
    return EpochPlan(source.reshape(-1), index.reshape(-1), bounds)


# --------------------------------------------------------------------------- fingerprint
#: what each entry of :func:`plan_description` is, for messages that name a changed setting
_SETTING_NAMES = {
    "order_version": "the ordering algorithm (another fastload version)",
    "sources": "the source(s): number of samples or chunk length",
    "batch_size": "batch_size",
    "shuffle": "shuffle",
    "seed": "seed",
    "window_chunks": "window_chunks",
    "drop_last": "drop_last",
    "mix": "the mix (per-batch counts of the weights, policy, num_samples or remainder shares)",
    "remainder": "remainder (fl.Mix(remainder=...))",
}
#: the value of a setting that a description leaves out when it has its default
_DEFAULTS = {"remainder": "largest"}


def plan_description(
    sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig | None = None
) -> dict[str, object]:
    """The settings that determine the samples of every epoch, as JSON-ready values.

    World-independent: ``rank`` and ``world_size`` only say who reads which
    part of an epoch, and an elastic resume (:func:`plan_resumed`) continues an
    epoch under another world size, so they are left out.  Left out too are
    inputs that cannot change the plan: the seed and window when
    ``shuffle=False``, the mix of a single ``"first_exhausted"`` source,
    ``drop_last`` under ``"first_exhausted"`` mixing, and weights beyond the
    per-batch counts they round to.

    Raises
    ------
    ConfigError
        As :func:`plan_epoch`.
    """
    sources = _check_inputs(sources, cfg, mix)
    described: dict[str, object] = {
        "order_version": ORDER_VERSION,
        "sources": [[shape.n, shape.chunk_len] for shape in sources],
        "batch_size": cfg.batch_size,
        "shuffle": cfg.shuffle,
        "seed": cfg.seed if cfg.shuffle else None,
        "window_chunks": cfg.window_chunks if cfg.shuffle else None,
        "drop_last": cfg.drop_last,
        "mix": None,
    }
    if mix is not None and _uses_mix(sources, mix):
        mixed: dict[str, object] = {
            "counts": mix_counts(cfg.batch_size, mix.weights).tolist(),
            "policy": mix.policy,
            "num_samples": mix.num_samples,
        }
        if mix.policy == "first_exhausted":
            described["drop_last"] = None
        layout = _random_layout(cfg, mix)
        if layout is not None:  # absent with "largest": the states saved before it still load
            described["remainder"] = "random"
            mixed["remainder"] = layout.describe()
            described["seed"] = cfg.seed  # the draws are seeded even with shuffle=False
        described["mix"] = mixed
    return described


def _digest(described: Mapping[str, object]) -> str:
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def plan_fingerprint(
    sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig | None = None
) -> str:
    """Stable hash of :func:`plan_description`: of everything that determines the epochs' samples.

    A resume state stores it; loading the state under inputs with another
    fingerprint must be refused, because the same (epoch, batch) would name
    other samples.  Equal fingerprints and equal world sizes imply equal plans
    for every epoch.  The fingerprint does not depend on ``rank`` or
    ``world_size`` (a state carries those beside it), so a state can be resumed
    by another rank of the same world, or elastically by another world.

    Returns
    -------
    str
        32 hexadecimal digits.

    Raises
    ------
    ConfigError
        As :func:`plan_epoch`.
    """
    return _digest(plan_description(sources, cfg, mix))


def legacy_fingerprint(
    sources: Sequence[SourceShape], cfg: OrderConfig, mix: MixConfig | None = None
) -> str:
    """The fingerprint of states saved before elastic resume: it included rank and world size."""
    return _digest(
        {**plan_description(sources, cfg, mix), "rank": cfg.rank, "world_size": cfg.world_size}
    )


def changed_settings(saved: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """Names of the settings in which two :func:`plan_description` results differ."""
    keys = sorted(set(saved) | set(current), key=lambda k: (k not in _SETTING_NAMES, k))
    changed = []
    for key in keys:
        was, now = saved.get(key, _DEFAULTS.get(key)), current.get(key, _DEFAULTS.get(key))
        if was != now:
            name = _SETTING_NAMES.get(key, key)
            changed.append(f"{name} (saved {was!r}, now {now!r})")
    return changed


# --------------------------------------------------------------------------- elastic resume
Segment = tuple[int, int]


def _check_history(history: object) -> tuple[Segment, ...]:
    """Validate a resume history; drop segments in which nothing was consumed."""
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise ConfigError(
            f"a resume history must be a sequence of (world_size, batches) pairs, got {history!r}"
        )
    segments: list[Segment] = []
    for i, segment in enumerate(history):
        if (
            isinstance(segment, (str, bytes))
            or not isinstance(segment, Sequence)
            or len(segment) != 2
        ):
            raise ConfigError(
                f"resume history entry {i} must be a (world_size, batches) pair, got {segment!r}"
            )
        world = _validate.integer(segment[0], name=f"history[{i}] world_size", minimum=1)
        batches = _validate.integer(segment[1], name=f"history[{i}] batches", minimum=0)
        if batches:
            segments.append((world, batches))
    return tuple(segments)


def resume_history(
    history: Sequence[Sequence[int]], saved_world: int, batches: int, world_size: int
) -> tuple[tuple[Segment, ...], int]:
    """The history and start batch a loader of ``world_size`` ranks resumes from.

    A state saved by a world of ``saved_world`` ranks, each ``batches`` batches
    into the current segment of its epoch (after the earlier segments
    ``history``): under the same world size the loader skips ``batches``
    batches of the same plan; under another, the segment joins the history and
    the new world starts at batch 0 of the remainder.
    """
    segments = _check_history(history)
    if saved_world == world_size:
        return segments, batches
    return _check_history([*segments, (saved_world, batches)]), 0


def _mark(consumed: list[np.ndarray], plan: EpochPlan, batches: int) -> None:
    """Mark the samples of the first ``batches`` batches of ``plan`` consumed."""
    hi = int(plan.batch_bounds[batches])
    source, index = plan.source[:hi], plan.index[:hi]
    for s, mask in enumerate(consumed):
        taken = index[source == s]
        if mask[taken].any():  # the construction rules it out; never deliver a sample twice
            raise AssertionError("elastic resume would deliver a consumed sample again")
        mask[taken] = True


def _remainder_plan(
    remaining: Sequence[np.ndarray], cfg: OrderConfig, epoch: int, mix: MixConfig | None
) -> EpochPlan:
    """Plan of rank ``cfg.rank`` of ``cfg.world_size`` for the samples ``remaining`` (per source).

    Each rank takes a contiguous piece of every source's remaining stream, so
    chunk locality is kept.  Single source: every rank gets the same number of
    batches, full ones then at most one short one; with ``drop_last`` all full,
    and the remainder past ``world_size * batch_size * batches`` is not
    delivered.  Without it every remaining sample is delivered, and the counts
    are equal unless fewer than ``world_size`` samples are left for the last
    step (then some ranks have one batch fewer).  Mix: exact per-batch counts,
    the same number of batches on every rank, as many as every source can fill.
    """
    world, rank, batch_size = cfg.world_size, cfg.rank, cfg.batch_size
    if mix is not None and len(remaining) > 1:
        layout = _random_layout(cfg, mix)
        if layout is None:
            k = mix_counts(batch_size, mix.weights)
            n_batches = min(
                (len(rem) // world) // int(c) for rem, c in zip(remaining, k, strict=True)
            )
        else:
            n_batches = max_batches(layout, [len(rem) // world for rem in remaining])
        # every rank's counts, for the start of this rank's piece of each source
        counts = [
            _batch_counts(cfg, epoch, mix, n_batches, r, _PURPOSE_REMAINDER_RESUMED)
            for r in range(world if layout is not None else rank + 1)
        ]
        before = sum((c.sum(axis=0) for c in counts[:rank]), np.zeros(len(remaining), np.int64))
        streams = [rem[int(lo) :] for rem, lo in zip(remaining, before, strict=True)]
        return _mixed_plan(streams, counts[rank], cfg, epoch, _PURPOSE_INTERLEAVE_RESUMED)
    rem = remaining[0]
    n = len(rem)
    step = world * batch_size
    if cfg.drop_last:
        n_batches = n // step
        lo, size = rank * n_batches * batch_size, n_batches * batch_size
    else:
        full = max(-(-n // step) - 1, 0)  # steps in which every rank gets a full batch
        tail = n - full * step  # samples of the last step, shared as evenly as possible
        lo = rank * full * batch_size + rank * tail // world
        size = full * batch_size + (rank + 1) * tail // world - rank * tail // world
        n_batches = -(-size // batch_size)
    index = rem[lo : lo + size]
    bounds = np.minimum(np.arange(n_batches + 1, dtype=np.int64) * batch_size, size)
    return EpochPlan(np.zeros(size, dtype=np.int16), index, bounds)


def _check_consumed(world: int, batches: int, epoch: int, most: int) -> None:
    """Refuse a segment that consumed more batches than its plans have."""
    if batches > most:
        raise ConfigError(
            f"the resume state says each of {world} ranks consumed {batches} batches of epoch "
            f"{epoch}, but their plans have at most {most}; the state does not belong to "
            "this configuration"
        )


def _mark_passes(mask: np.ndarray, n: int, passes: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Mark the ``(pass, sample)`` pairs consumed in ``mask`` (flat, pass-major, ``n`` per pass).

    Returns the mask, grown to the highest marked pass.  Marking a pair twice is
    an AssertionError: the construction rules it out.
    """
    if len(samples) == 0:
        return mask
    need = (int(passes.max()) + 1) * n
    if need > len(mask):
        mask = np.concatenate([mask, np.zeros(need - len(mask), dtype=bool)])
    before = np.count_nonzero(mask)
    mask[passes * n + samples] = True
    if np.count_nonzero(mask) - before != len(samples):
        raise AssertionError("elastic resume would deliver a (pass, sample) of a cycle twice")
    return mask


def _cycle_supply(
    shape: SourceShape,
    single_rank: OrderConfig,
    epoch: int,
    source_id: int,
    mask: np.ndarray,
    demand: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sample, pass)`` of what is left of one cycling source, at least ``demand`` long.

    Pass after pass, the samples of pass ``q`` in the single-rank order that
    ``mask`` does not mark consumed in pass ``q``; passes past the marked ones
    are whole.  The passes drawn are the marked ones plus as many as ``demand``
    needs beyond them, so the result is a function of ``mask`` and ``demand``
    (the window sort's key truncation depends on the number of passes drawn, so
    a later resume that recomputes this supply must draw the same number).
    """
    n = shape.n
    marked = len(mask) // n  # passes up to the highest one holding a mark
    free = marked * n - int(np.count_nonzero(mask))
    n_passes = marked + -(-max(demand - free, 0) // n)
    order = _source_stream(shape, single_rank, epoch, source_id, n_passes * n)
    position = np.arange(n_passes * n, dtype=np.int64)
    pass_of = position // n
    consumed = np.zeros(n_passes * n, dtype=bool)
    consumed[: len(mask)] = mask
    keep = np.flatnonzero(~consumed[pass_of * n + order])
    return order[keep], pass_of[keep]


def _cycle_batches(left: int, cfg: OrderConfig, world: int) -> int:
    """Batches per rank of ``world`` ranks for ``left`` samples of a cycle epoch (as a normal epoch)."""
    step = world * cfg.batch_size
    left = max(left, 0)
    return left // step if cfg.drop_last else -(-left // step)


def _cycle_resumed(
    sources: Sequence[SourceShape],
    cfg: OrderConfig,
    epoch: int,
    mix: MixConfig,
    segments: Sequence[Segment],
) -> EpochPlan:
    """:func:`plan_resumed` of a ``policy="cycle"`` mix (one source or several).

    Per source, ``mask`` marks the consumed ``(pass, sample)`` pairs.  The first
    segment ran the normal plans: rank ``r``'s stream of a source is pass 0's
    piece ``r``, pass 1's piece ``r``, ...; its first ``c`` elements were
    consumed, element ``i`` in pass ``i // piece``.  Every later world (and the
    new one) plans what is left of the epoch's length, ``num_samples`` minus the
    segments' ``batches * world * batch_size``, as a normal cycle epoch rounds
    it; its rank ``r`` takes per-batch counts drawn for ``(rank r, resumed)`` and
    a contiguous piece of each source's supply (:func:`_cycle_supply`), right
    after the pieces of ranks ``0 .. r-1``.
    """
    assert mix.num_samples is not None  # MixConfig guarantees it for "cycle"
    single_rank = replace(cfg, rank=0, world_size=1)
    masks = [np.zeros(0, dtype=bool) for _ in sources]
    left = mix.num_samples
    worlds: list[tuple[int, int | None]] = [*segments, (cfg.world_size, None)]
    for i, (world, batches) in enumerate(worlds):
        world_cfg = replace(cfg, rank=0, world_size=world)
        _check_inputs(sources, world_cfg, mix)  # one sample per rank of every world
        if i == 0:
            n_batches = _mix_batches(sources, world_cfg, mix)
            purpose = _PURPOSE_REMAINDER
        else:
            n_batches = _cycle_batches(left, cfg, world)
            purpose = _PURPOSE_REMAINDER_RESUMED
        if batches is not None:
            _check_consumed(world, batches, epoch, n_batches)
        counts = [_batch_counts(cfg, epoch, mix, n_batches, r, purpose) for r in range(world)]
        totals = [c.sum(axis=0) for c in counts]  # per rank: samples of each source
        if i == 0:  # the normal plans: each rank's own stream of every source
            assert batches is not None
            for r in range(world):
                rank_cfg = replace(cfg, rank=r, world_size=world)
                taken = counts[r][:batches].sum(axis=0)
                for s, shape in enumerate(sources):
                    lo, hi = _rank_bounds(shape.n, world, r)
                    # the normal plan's length: its window order, exactly
                    stream = _source_stream(shape, rank_cfg, epoch, s, int(totals[r][s]))
                    used = stream[: int(taken[s])]
                    passes = np.arange(len(used), dtype=np.int64) // (hi - lo)
                    masks[s] = _mark_passes(masks[s], shape.n, passes, used)
        else:
            demand = sum(totals, np.zeros(len(sources), dtype=np.int64))
            supply = [
                _cycle_supply(shape, single_rank, epoch, s, masks[s], int(demand[s]))
                for s, shape in enumerate(sources)
            ]
            starts = np.cumsum([np.zeros(len(sources), dtype=np.int64), *totals], axis=0)
            if batches is None:  # the new world: this rank's plan
                rank = cfg.rank
                streams = [sample[int(starts[rank][s]) :] for s, (sample, _) in enumerate(supply)]
                return _mixed_plan(streams, counts[rank], cfg, epoch, _PURPOSE_INTERLEAVE_RESUMED)
            for r in range(world):
                taken = counts[r][:batches].sum(axis=0)
                for s, (shape, (sample, pass_of)) in enumerate(zip(sources, supply, strict=True)):
                    lo, hi = int(starts[r][s]), int(starts[r][s] + taken[s])
                    masks[s] = _mark_passes(masks[s], shape.n, pass_of[lo:hi], sample[lo:hi])
        assert batches is not None
        left -= batches * world * cfg.batch_size
    raise AssertionError("unreachable: the last world returns its plan")


def plan_resumed(
    sources: Sequence[SourceShape],
    cfg: OrderConfig,
    epoch: int,
    mix: MixConfig | None = None,
    history: Sequence[Sequence[int]] = (),
) -> EpochPlan:
    """Plan of one rank for the rest of an epoch that earlier worlds of ranks began.

    ``history`` lists the epoch's earlier *segments* as ``(world_size,
    batches)``: the first world ran the normal plans (:func:`plan_epoch`) and
    each of its ranks consumed its first ``batches`` batches; every later world
    ran the plans of what was left (as computed here) and each of its ranks
    consumed ``batches`` of them.  Ranks move in lockstep: every rank of a world
    consumed the same number of batches (a rank with fewer batches in its plan
    consumed all of them).  With an empty history this is :func:`plan_epoch`.

    What is left is every sample of the epoch that no earlier segment consumed
    (including samples the earlier worlds' ``drop_last`` would have dropped), in
    the single-rank order of the epoch; ``cfg.world_size`` ranks share it in
    contiguous pieces (see :func:`_remainder_plan`).  The result is a function
    of ``(sources, cfg, epoch, mix, history)`` only; the next epoch is the
    normal :func:`plan_epoch` of the new world.

    Guarantees: no sample consumed in an earlier segment is delivered again,
    and with one source and ``drop_last=False`` every sample of the epoch is
    delivered exactly once over all segments.  With ``drop_last`` fewer than
    ``world_size * batch_size`` are left out.  A ``"first_exhausted"`` mix keeps
    its exact per-batch counts; its epoch ends when a source cannot fill every
    rank's next batch (as without a resume, not every sample is delivered).

    A ``policy="cycle"`` mix (one source or several) counts consumption per
    *pass*: pass ``q`` of a source is one chunk permutation keyed by ``(seed,
    epoch, source, q)``, whatever the world, and a rank of the first world read
    its piece of pass 0, then of pass 1, ...; so what was consumed is a set of
    ``(pass, sample)`` pairs.  What is left of a source is, pass after pass, the
    samples of pass ``q`` in its single-rank order that were not consumed in
    pass ``q`` (passes nobody reached are whole): a pass's leftover comes before
    any sample of a later pass.  The epoch keeps its fixed length: the new
    world delivers ``num_samples - sum(batches * world_size * batch_size)``
    over the segments, rounded to whole global steps as a normal cycle epoch
    (down with ``drop_last``, else up; nothing if that is <= 0), every batch
    with exact per-batch counts (with ``remainder="random"`` drawn from
    ``(seed, epoch, new rank)``, a stream apart from the normal epoch's), and
    rank ``r`` takes a contiguous piece of each source's leftover right after
    ranks ``0 .. r-1``.  A later segment consumed the start of its ranks' pieces,
    pairs that carry their pass.  Guarantee: within each pass of each source,
    no sample is delivered twice over all segments and the new world.

    Raises
    ------
    ConfigError
        If the inputs are inconsistent (as :func:`plan_epoch`; for a cycle mix
        also for a segment's world size), or a segment consumed more batches
        than its plans have.
    """
    sources = _check_inputs(sources, cfg, mix)
    epoch = _validate.integer(epoch, name="epoch", minimum=0, owner="plan_resumed")
    segments = _check_history(history)
    if not segments:
        return plan_epoch(sources, cfg, epoch, mix)
    mixed = mix is not None and _uses_mix(sources, mix)
    if mixed and mix is not None and mix.policy == "cycle":
        return _cycle_resumed(sources, cfg, epoch, mix, segments)
    effective = mix if mixed else None
    consumed = [np.zeros(shape.n, dtype=bool) for shape in sources]
    single_rank = replace(cfg, rank=0, world_size=1)
    order = [
        _source_stream(shape, single_rank, epoch, s, shape.n) for s, shape in enumerate(sources)
    ]
    for i, (world, batches) in enumerate(segments):
        if i == 0:
            plans = [
                plan_epoch(sources, replace(cfg, rank=rank, world_size=world), epoch, mix)
                for rank in range(world)
            ]
        else:
            remaining = [o[~c[o]] for o, c in zip(order, consumed, strict=True)]
            plans = [
                _remainder_plan(
                    remaining, replace(cfg, rank=rank, world_size=world), epoch, effective
                )
                for rank in range(world)
            ]
        _check_consumed(world, batches, epoch, max(plan.n_batches for plan in plans))
        for plan in plans:
            _mark(consumed, plan, min(batches, plan.n_batches))
    remaining = [o[~c[o]] for o, c in zip(order, consumed, strict=True)]
    return _remainder_plan(remaining, cfg, epoch, effective)


def merge_states(states: Sequence[Mapping[str, object]]) -> Mapping[str, object]:
    """One resume state from the states of several ranks of one world, checked for lockstep.

    Elastic resume assumes that every rank stands at the same batch of the same
    epoch (DDP's lockstep); states that disagree on the epoch, batch, world
    size, history or configuration are refused.

    Raises
    ------
    ConfigError
        If ``states`` is empty, the states disagree, or a rank appears twice.
    """
    states = list(states)
    if not states:
        raise ConfigError("load_state_dict got an empty sequence of states; pass one per rank")
    for i, state in enumerate(states):
        if not isinstance(state, Mapping):
            raise ConfigError(f"state {i} must be a loader state_dict(), got {state!r}")
    first = states[0]
    for key in ("fingerprint", "world_size", "epoch", "batch", "elastic"):
        values = [state.get(key) for state in states]
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(
                f"rank {s.get('rank', i)}: {v!r}"
                for i, (s, v) in enumerate(zip(states, values, strict=True))
            )
            raise ConfigError(
                f"the ranks' states disagree on {key!r} ({shown}); elastic resume assumes the "
                "ranks moved in lockstep (each at the same batch of the same epoch, as under DDP "
                "with drop_last=True): save every rank's state at the same step"
            )
    ranks = [state.get("rank") for state in states]
    if len(set(ranks)) != len(ranks):
        raise ConfigError(f"the states name a rank twice (ranks {ranks}); pass one state per rank")
    world = first.get("world_size")
    if any(
        not isinstance(r, int) or (isinstance(world, int) and not 0 <= r < world) for r in ranks
    ):
        raise ConfigError(f"the states' ranks {ranks} are not ranks of a world of {world}")
    return first
