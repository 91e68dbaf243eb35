"""Tests of fastload's order layer: epoch plans, sharding, windows, mixing, fingerprints."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload._order as order_module
from fastload._order import (
    EpochPlan,
    MixConfig,
    OrderConfig,
    SourceShape,
    batches_per_epoch,
    legacy_fingerprint,
    mix_counts,
    plan_epoch,
    plan_fingerprint,
)
from fastload.errors import ConfigError

FAST = settings(max_examples=200, deadline=None)


# --------------------------------------------------------------------------- helpers
def rank_plans(sources, mix=None, epoch=0, **cfg):
    """Plans of every rank for one epoch."""
    world_size = cfg.pop("world_size", 1)
    return [
        plan_epoch(sources, OrderConfig(rank=r, world_size=world_size, **cfg), epoch, mix)
        for r in range(world_size)
    ]


def batch_sizes(plan: EpochPlan) -> np.ndarray:
    return np.diff(plan.batch_bounds)


def greedy_segments(chunks: np.ndarray, cap: int) -> int:
    """Fewest consecutive segments of ``chunks`` with at most ``cap`` distinct values each.

    Greedy is optimal here, so if the true windows are a partition into K
    segments of at most ``cap`` chunks, this returns at most K.
    """
    segments, seen = 0, set()
    for c in chunks.tolist():
        if c not in seen and len(seen) == cap:
            segments, seen = segments + 1, set()
        seen.add(c)
    return segments + bool(seen)


single_source = st.tuples(
    st.integers(0, 600),  # n
    st.integers(1, 40),  # chunk_len
    st.integers(1, 50),  # batch_size
    st.integers(1, 5),  # window_chunks
    st.integers(1, 5),  # world_size
    st.booleans(),  # shuffle
    st.integers(0, 2**32),  # seed
    st.integers(0, 1000),  # epoch
)


# --------------------------------------------------------------------------- single source
@FAST
@given(single_source)
def test_every_sample_exactly_once_across_ranks(params):
    """Without drop_last, rank plans are disjoint, cover range(n), and have balanced sizes."""
    n, chunk_len, batch_size, window, world_size, shuffle, seed, epoch = params
    cfg = dict(batch_size=batch_size, window_chunks=window, shuffle=shuffle, seed=seed)
    plans = rank_plans([SourceShape(n, chunk_len)], epoch=epoch, world_size=world_size, **cfg)
    everything = np.concatenate([p.index for p in plans])
    assert np.array_equal(np.sort(everything), np.arange(n))
    sizes = [p.n_samples for p in plans]
    assert max(sizes) - min(sizes) <= 1
    for r, p in enumerate(plans):
        assert p.index.dtype == np.int64
        assert p.source.dtype == np.int16
        assert np.all(p.source == 0)
        bs = batch_sizes(p)
        assert np.all(bs[:-1] == batch_size)
        assert len(bs) == 0 or 1 <= bs[-1] <= batch_size
        assert p.batch_bounds[0] == 0
        assert p.batch_bounds[-1] == p.n_samples
        cfg_r = OrderConfig(rank=r, world_size=world_size, **cfg)
        assert p.n_batches == batches_per_epoch([SourceShape(n, chunk_len)], cfg_r)


@FAST
@given(single_source)
def test_drop_last_gives_equal_full_batches(params):
    """With drop_last, every rank has (n // W) // B full batches and no sample repeats."""
    n, chunk_len, batch_size, window, world_size, shuffle, seed, epoch = params
    plans = rank_plans(
        [SourceShape(n, chunk_len)],
        epoch=epoch,
        world_size=world_size,
        batch_size=batch_size,
        window_chunks=window,
        shuffle=shuffle,
        seed=seed,
        drop_last=True,
    )
    expected = (n // world_size) // batch_size
    for p in plans:
        assert p.n_batches == expected
        assert np.all(batch_sizes(p) == batch_size)
    everything = np.concatenate([p.index for p in plans])
    assert len(np.unique(everything)) == len(everything) == expected * batch_size * world_size
    assert np.all((everything >= 0) & (everything < n))


@FAST
@given(single_source)
def test_window_locality(params):
    """A rank's stream splits into windows that each touch at most window_chunks chunks."""
    n, chunk_len, batch_size, window, world_size, _, seed, epoch = params
    for p in rank_plans(
        [SourceShape(n, chunk_len)],
        epoch=epoch,
        world_size=world_size,
        batch_size=batch_size,
        window_chunks=window,
        seed=seed,
    ):
        chunks = p.index // chunk_len
        touched = len(np.unique(chunks))
        # The windows met by a rank: ceil(touched / window), +1 for a partial first one.
        assert greedy_segments(chunks, window) <= -(-touched // window) + 1


def test_windows_are_whole_chunk_groups():
    """With one rank and full chunks, each window_chunks*chunk_len slice is whole chunks."""
    chunk_len, window = 7, 3
    plan = plan_epoch([SourceShape(7 * 30, chunk_len)], OrderConfig(5, window_chunks=window), 4)
    for piece in plan.index.reshape(-1, chunk_len * window):
        chunks, counts = np.unique(piece // chunk_len, return_counts=True)
        assert len(chunks) == window
        assert np.all(counts == chunk_len)
    # ... while samples inside a window are shuffled, not left in chunk order.
    assert not np.array_equal(plan.index[:chunk_len] % chunk_len, np.arange(chunk_len))


@FAST
@given(single_source)
def test_rank_order_is_single_rank_order_restricted(params):
    """Each rank delivers its samples in the order the world_size=1 plan has them."""
    n, chunk_len, batch_size, window, world_size, shuffle, seed, epoch = params
    cfg = dict(batch_size=batch_size, window_chunks=window, shuffle=shuffle, seed=seed)
    whole = plan_epoch([SourceShape(n, chunk_len)], OrderConfig(**cfg), epoch).index
    for p in rank_plans([SourceShape(n, chunk_len)], epoch=epoch, world_size=world_size, **cfg):
        assert np.array_equal(p.index, whole[np.isin(whole, p.index)])


def test_shuffle_false_is_store_order():
    """shuffle=False: ranks get contiguous pieces of store order, concatenating to range(n)."""
    plans = rank_plans([SourceShape(103, 10)], world_size=4, batch_size=8, shuffle=False)
    assert np.array_equal(np.concatenate([p.index for p in plans]), np.arange(103))
    assert [p.index[0] for p in plans] == [0, 25, 51, 77]
    dropped = rank_plans(
        [SourceShape(103, 10)], world_size=4, batch_size=8, shuffle=False, drop_last=True
    )
    for p, full in zip(dropped, plans, strict=True):
        assert np.array_equal(p.index, full.index[:24])


def test_determinism_and_epoch_dependence():
    """Same inputs give identical plans; another epoch or seed gives another order."""
    sources = [SourceShape(1000, 16)]
    cfg = OrderConfig(32, seed=7, rank=1, world_size=3)
    a, b = plan_epoch(sources, cfg, 5), plan_epoch(sources, cfg, 5)
    assert np.array_equal(a.index, b.index)
    assert np.array_equal(a.batch_bounds, b.batch_bounds)
    assert not np.array_equal(a.index, plan_epoch(sources, cfg, 6).index)
    other_seed = OrderConfig(32, seed=8, rank=1, world_size=3)
    assert not np.array_equal(a.index, plan_epoch(sources, other_seed, 5).index)


def test_dropped_samples_change_per_epoch():
    """With drop_last and shuffling, the dropped tail differs between epochs."""
    sources, cfg = [SourceShape(1000, 10)], OrderConfig(64, drop_last=True)
    kept = [frozenset(plan_epoch(sources, cfg, e).index.tolist()) for e in range(3)]
    assert len(set(kept)) == 3


def test_chunk_order_is_roughly_uniform():
    """Over many epochs each chunk leads the stream about equally often (catches a bad mixer)."""
    sources, cfg = [SourceShape(100, 10)], OrderConfig(10, window_chunks=1)
    firsts = Counter(int(plan_epoch(sources, cfg, e).index[0]) // 10 for e in range(2000))
    assert sorted(firsts) == list(range(10))
    assert all(140 <= c <= 260 for c in firsts.values())  # mean 200, sd ~13


def test_golden_plan():
    """Pins the algorithm: a change here must bump ORDER_VERSION."""
    plan = plan_epoch([SourceShape(23, 4)], OrderConfig(4, seed=1, window_chunks=2), 2)
    assert plan.index.tolist() == GOLDEN_INDEX
    assert plan.batch_bounds.tolist() == [0, 4, 8, 12, 16, 20, 23]
    fp = plan_fingerprint([SourceShape(23, 4)], OrderConfig(4, seed=1, window_chunks=2))
    assert fp == GOLDEN_FINGERPRINT
    # states saved before elastic resume (their hash held rank and world size) still load
    legacy = legacy_fingerprint([SourceShape(23, 4)], OrderConfig(4, seed=1, window_chunks=2))
    assert legacy == GOLDEN_LEGACY_FINGERPRINT


# Windows of 2 chunks (4 samples each, the last chunk 3): chunks {0, 1}, {5, 3}, {2, 4}.
GOLDEN_INDEX = [1, 0, 2, 7, 4, 6, 5, 3, 20, 12, 15, 13, 22, 21, 14, 8, 10, 19, 16, 18, 17, 9, 11]
GOLDEN_FINGERPRINT = "8ab7da6fab145ab9ce03182876c3a1c0"
GOLDEN_LEGACY_FINGERPRINT = "588a08b5db1fb58e4e6870ffbfc24aa2"


def test_golden_mix_plan():
    """Pins the mixing algorithm (counts 3:2 per batch, interleaved); changes bump ORDER_VERSION."""
    sources = [SourceShape(9, 2), SourceShape(6, 3)]
    plan = plan_epoch(sources, OrderConfig(5, seed=4), 1, MixConfig((3, 2)))
    assert plan.source.tolist() == [0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1]
    assert plan.index.tolist() == [8, 1, 3, 4, 4, 2, 2, 3, 5, 7, 5, 0, 0, 6, 1]
    assert plan.batch_bounds.tolist() == [0, 5, 10, 15]


def test_exact_window_sort_matches_packed_sort(monkeypatch):
    """The lexsort used for > 2**32 windows orders exactly like the packed 64-bit sort."""
    sources = [SourceShape(5000, 3)]
    cfg = OrderConfig(64, window_chunks=4, seed=9, rank=1, world_size=3)
    packed = plan_epoch(sources, cfg, 2).index
    monkeypatch.setattr(order_module, "_PACKED_WINDOW_BITS", 0)
    assert np.array_equal(plan_epoch(sources, cfg, 2).index, packed)


def test_plan_arrays_are_read_only_and_batches_are_views():
    """EpochPlan arrays cannot be modified; batch(b) slices them without copying."""
    plan = plan_epoch([SourceShape(50, 8)], OrderConfig(16), 0)
    with pytest.raises(ValueError, match="read-only"):
        plan.index[0] = 1
    src, idx = plan.batch(3)
    assert len(idx) == 2
    assert np.shares_memory(idx, plan.index)
    assert np.all(src == 0)
    with pytest.raises(IndexError, match="out of range"):
        plan.batch(4)
    assert repr(plan) == "EpochPlan(n_samples=50, n_batches=4)"


def test_empty_source_and_tiny_sources():
    """n=0 plans nothing; n < world_size leaves some ranks empty."""
    assert plan_epoch([SourceShape(0, 4)], OrderConfig(8), 0).n_batches == 0
    plans = rank_plans([SourceShape(2, 4)], world_size=3, batch_size=8)
    assert [p.n_samples for p in plans] == [0, 1, 1]


# --------------------------------------------------------------------------- mixing
mixes = st.tuples(
    st.lists(st.tuples(st.integers(0, 400), st.integers(1, 30)), min_size=2, max_size=4),
    st.lists(st.floats(0.05, 10), min_size=4, max_size=4),
    st.integers(4, 40),  # batch_size
    st.integers(1, 3),  # world_size
    st.booleans(),  # shuffle
    st.integers(1, 4),  # window_chunks
    st.integers(0, 1000),  # epoch
)


def check_batches(plans, counts, batch_size):
    """Every batch of every rank is full and holds exactly counts[s] samples of source s."""
    assert len({p.n_batches for p in plans}) == 1
    for p in plans:
        assert np.all(batch_sizes(p) == batch_size)
        per_batch = p.source.reshape(-1, batch_size)
        for s, k in enumerate(counts):
            assert np.all((per_batch == s).sum(axis=1) == k)


@FAST
@given(mixes)
def test_mix_first_exhausted(params):
    """Exact per-batch counts, equal batch counts over ranks, no repeats, maximal length."""
    shapes, weights, batch_size, world_size, shuffle, window, epoch = params
    sources = [SourceShape(n, c) for n, c in shapes]
    weights = tuple(weights[: len(sources)])
    counts = mix_counts(batch_size, weights)
    mix = MixConfig(weights)
    if np.any(counts == 0):
        with pytest.raises(ConfigError, match="0 samples per batch"):
            plan_epoch(sources, OrderConfig(batch_size), epoch, mix)
        return
    cfg = dict(batch_size=batch_size, shuffle=shuffle, window_chunks=window)
    plans = rank_plans(sources, mix, epoch, world_size=world_size, **cfg)
    check_batches(plans, counts, batch_size)
    n_batches = plans[0].n_batches
    assert n_batches == min((s.n // world_size) // k for s, k in zip(sources, counts, strict=True))
    # One more batch would overrun some source on the smallest rank piece.
    assert any(
        (s.n // world_size) < (n_batches + 1) * k for s, k in zip(sources, counts, strict=True)
    )
    pairs = np.concatenate([p.source.astype(np.int64) * 10**6 + p.index for p in plans])
    assert len(np.unique(pairs)) == len(pairs)
    for s, shape in enumerate(sources):
        assert all(np.all(p.index[p.source == s] < shape.n) for p in plans)
    if not shuffle:
        layout = np.repeat(np.arange(len(sources)), counts)
        assert all(np.all(p.source.reshape(-1, batch_size) == layout) for p in plans)


@FAST
@given(mixes, st.integers(1, 3000), st.booleans())
def test_mix_cycle(params, num_samples, drop_last):
    """Cycle delivers num_samples (rounded to batches); sources repeat only when they run out."""
    shapes, weights, batch_size, world_size, shuffle, window, epoch = params
    sources = [SourceShape(max(n, world_size), c) for n, c in shapes]
    weights = tuple(weights[: len(sources)])
    counts = mix_counts(batch_size, weights)
    if np.any(counts == 0):
        return
    mix = MixConfig(weights, policy="cycle", num_samples=num_samples)
    cfg = dict(batch_size=batch_size, shuffle=shuffle, window_chunks=window, drop_last=drop_last)
    plans = rank_plans(sources, mix, epoch, world_size=world_size, **cfg)
    check_batches(plans, counts, batch_size)
    per_step = world_size * batch_size
    expected = num_samples // per_step if drop_last else -(-num_samples // per_step)
    assert plans[0].n_batches == expected
    for s, shape in enumerate(sources):
        needed, smallest_piece = expected * counts[s], shape.n // world_size
        taken = np.concatenate([p.index[p.source == s] for p in plans])
        seen = np.bincount(taken, minlength=shape.n)
        assert len(seen) == shape.n  # every index is inside the source
        if needed <= smallest_piece:
            assert seen.max() <= 1  # a source that suffices is never repeated, on any rank
        else:
            # Each pass is a whole permutation cut into rank pieces: a sample is
            # seen once per pass every rank finished, and at most once per pass begun.
            assert seen.min() >= needed // (smallest_piece + 1)
            assert seen.max() <= -(-needed // smallest_piece)
        if world_size == 1:
            assert seen.max() - seen.min() <= 1
        if not shuffle:  # store order: a rank cycles through its own piece only
            for r, p in enumerate(plans):
                got = p.index[p.source == s]
                assert np.all(got >= r * shape.n // world_size)
                assert np.all(got < (r + 1) * shape.n // world_size)


def test_cycle_repeats_only_the_small_source():
    """A 1000-sample and a 100-sample source mixed 1:1 over 2000 samples: the small one 10x."""
    sources = [SourceShape(1000, 32), SourceShape(100, 8)]
    mix = MixConfig((0.5, 0.5), policy="cycle", num_samples=2000)
    plan = plan_epoch(sources, OrderConfig(50), 0, mix)
    assert plan.n_samples == 2000
    big, small = plan.index[plan.source == 0], plan.index[plan.source == 1]
    assert np.array_equal(np.sort(big), np.arange(1000))
    assert np.all(np.bincount(small, minlength=100) == 10)
    # Each pass of the small source is a fresh permutation.
    passes = small.reshape(10, 100)  # shuffle within batches keeps 25-sample groups per batch
    assert len({tuple(sorted(x)) for x in passes}) == 1
    assert len({tuple(x) for x in passes}) == 10


def test_mix_is_deterministic_and_interleaved():
    """Same config, same mixed plan; shuffle interleaves sources inside each batch."""
    sources = [SourceShape(500, 10), SourceShape(300, 7), SourceShape(200, 5)]
    mix, cfg = MixConfig((5, 3, 2)), OrderConfig(20, seed=3)
    a, b = plan_epoch(sources, cfg, 1, mix), plan_epoch(sources, cfg, 1, mix)
    assert np.array_equal(a.source, b.source)
    assert np.array_equal(a.index, b.index)
    assert a.n_batches == 50
    assert not np.array_equal(a.source[:20], np.repeat([0, 1, 2], [10, 6, 4]))
    assert not np.array_equal(a.index, plan_epoch(sources, cfg, 2, mix).index)


def test_one_source_mix():
    """One source: first_exhausted is plain loading; cycle keeps num_samples."""
    sources, cfg = [SourceShape(95, 10)], OrderConfig(10, seed=2)
    plain = plan_epoch(sources, cfg, 0)
    mixed = plan_epoch(sources, cfg, 0, MixConfig((1.0,)))
    assert np.array_equal(plain.index, mixed.index)
    assert mixed.n_batches == 10
    cycled = plan_epoch(sources, cfg, 0, MixConfig((1.0,), policy="cycle", num_samples=150))
    assert cycled.n_samples == 150
    assert np.all(np.bincount(cycled.index, minlength=95) >= 1)


# --------------------------------------------------------------------------- mix_counts
@FAST
@given(st.integers(1, 5000), st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=8))
def test_mix_counts_largest_remainder(batch_size, weights):
    """Counts sum to B, each is floor or ceil of B*w, and +1s go to the largest remainders."""
    counts = mix_counts(batch_size, weights)
    assert counts.dtype == np.int64
    assert counts.sum() == batch_size
    exact = [Fraction(w) for w in weights]
    shares = [batch_size * w / sum(exact) for w in exact]
    floors = [int(x) for x in shares]
    assert all(c - x < 1 and x - c < 1 for c, x in zip(counts.tolist(), shares, strict=True))
    bumped = [s for s in range(len(shares)) if counts[s] > floors[s]]
    kept = [s for s in range(len(shares)) if counts[s] == floors[s]]
    for i in bumped:
        for j in kept:
            ri, rj = shares[i] - floors[i], shares[j] - floors[j]
            assert ri > rj or (ri == rj and i < j)


def test_mix_counts_examples():
    """Exact ties go to the lower source id; scaling weights changes nothing."""
    assert mix_counts(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert mix_counts(5, [1, 1]).tolist() == [3, 2]
    assert mix_counts(7, [0.1, 0.2, 0.7]).tolist() == [1, 1, 5]
    assert mix_counts(1024, [0.5, 0.5]).tolist() == [512, 512]
    assert mix_counts(100, [3, 1]).tolist() == mix_counts(100, [0.75, 0.25]).tolist() == [75, 25]


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: OrderConfig(0), "batch_size"),
        (lambda: OrderConfig(1.5), "batch_size"),
        (lambda: OrderConfig(True), "batch_size"),
        (lambda: OrderConfig(8, rank=2, world_size=2), "rank"),
        (lambda: OrderConfig(8, rank=-1), "rank"),
        (lambda: OrderConfig(8, world_size=0), "world_size"),
        (lambda: OrderConfig(8, window_chunks=0), "window_chunks"),
        (lambda: OrderConfig(8, seed=-1), "seed"),
        (lambda: OrderConfig(8, shuffle="yes"), "shuffle"),
        (lambda: OrderConfig(8, drop_last=1), "drop_last"),
        (lambda: SourceShape(-1, 4), "n"),
        (lambda: SourceShape(10, 0), "chunk_len"),
        (lambda: MixConfig((1.0, -1.0)), r"weights\[1\]"),
        (lambda: MixConfig((1.0, 0.0)), r"weights\[1\]"),
        (lambda: MixConfig((float("nan"),)), r"weights\[0\]"),
        (lambda: MixConfig((1.0, float("inf"))), "finite"),
        (lambda: MixConfig(()), "at least one"),
        (lambda: MixConfig("ab"), "sequence"),
        (lambda: MixConfig((1.0, "x")), "number"),
        (lambda: MixConfig((1.0,), policy="longest"), "policy"),
        (lambda: MixConfig((1.0, 1.0), policy="cycle"), "num_samples"),
        (lambda: MixConfig((1.0, 1.0), policy="cycle", num_samples=0), "num_samples"),
        (lambda: MixConfig((1.0, 1.0), num_samples=100), "only applies"),
        (lambda: mix_counts(0, [1.0]), "batch_size"),
        (lambda: mix_counts(4, [1.0, -2.0]), r"weights\[1\]"),
        (lambda: plan_epoch([], OrderConfig(4), 0), "at least one source"),
        (lambda: plan_epoch([SourceShape(10, 2)], OrderConfig(4), -1), "epoch"),
        (lambda: plan_epoch([SourceShape(10, 2)] * 2, OrderConfig(4), 0), "MixConfig"),
        (
            lambda: plan_epoch([SourceShape(10, 2)] * 2, OrderConfig(4), 0, MixConfig((1.0,))),
            "1 weights for 2 sources",
        ),
        (
            lambda: plan_epoch([SourceShape(10, 2)] * 2, OrderConfig(4), 0, MixConfig((1.0, 0.01))),
            "0 samples per batch",
        ),
        (
            lambda: plan_epoch(
                [SourceShape(10, 2), SourceShape(1, 1)],
                OrderConfig(4, world_size=2),
                0,
                MixConfig((1.0, 1.0), policy="cycle", num_samples=8),
            ),
            "at least world_size",
        ),
        (lambda: plan_epoch([(10, 2)], OrderConfig(4), 0), "SourceShape"),
        (lambda: batches_per_epoch([SourceShape(10, 2)], {"batch_size": 4}), "OrderConfig"),
    ],
)
def test_config_errors(build, match):
    """Bad inputs raise ConfigError naming the offending value."""
    with pytest.raises(ConfigError, match=match):
        build()


def test_config_normalises_numpy_integers():
    """numpy integers and weight lists are accepted and stored as plain Python values."""
    cfg = OrderConfig(np.int64(8), seed=np.uint32(3))
    assert type(cfg.batch_size) is int
    assert type(cfg.seed) is int
    mix = MixConfig([1, np.float32(2.0)])
    assert mix.weights == (1.0, 2.0)
    assert hash(mix) == hash(MixConfig((1.0, 2.0)))


# --------------------------------------------------------------------------- fingerprint
def test_fingerprint_tracks_what_changes_the_order():
    """The fingerprint changes with every input that changes a plan, and only with those."""
    src = [SourceShape(100, 10)]
    base = plan_fingerprint(src, OrderConfig(8))
    assert len(base) == 32
    assert base == plan_fingerprint(src, OrderConfig(8))
    changed = [
        plan_fingerprint([SourceShape(101, 10)], OrderConfig(8)),
        plan_fingerprint([SourceShape(100, 11)], OrderConfig(8)),
        plan_fingerprint(src, OrderConfig(9)),
        plan_fingerprint(src, OrderConfig(8, seed=1)),
        plan_fingerprint(src, OrderConfig(8, window_chunks=2)),
        plan_fingerprint(src, OrderConfig(8, shuffle=False)),
        plan_fingerprint(src, OrderConfig(8, drop_last=True)),
        plan_fingerprint(src, OrderConfig(8), MixConfig((1.0,), "cycle", 200)),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # World-independent: a state resumes under another rank or world size (elastic resume).
    assert base == plan_fingerprint(src, OrderConfig(8, world_size=2))
    assert base == plan_fingerprint(src, OrderConfig(8, rank=2, world_size=3))
    # Inputs that cannot change the order do not change the fingerprint.
    unshuffled = plan_fingerprint(src, OrderConfig(8, shuffle=False))
    assert unshuffled == plan_fingerprint(src, OrderConfig(8, shuffle=False, seed=5))
    assert base == plan_fingerprint(src, OrderConfig(8), MixConfig((3.0,)))
    two = [SourceShape(100, 10), SourceShape(50, 5)]
    assert plan_fingerprint(two, OrderConfig(8), MixConfig((1, 1))) == plan_fingerprint(
        two, OrderConfig(8), MixConfig((0.5, 0.5))
    )
    assert plan_fingerprint(two, OrderConfig(8), MixConfig((1, 1))) != plan_fingerprint(
        two, OrderConfig(8), MixConfig((1, 3))
    )
