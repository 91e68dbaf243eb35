"""Elastic resume: a state saved under one world size (and worker count) continues under another.

The order layer (``plan_resumed``) is tested over many sizes with hypothesis: the
batches every old rank consumed before the cut plus the batches every new rank
delivers after it cover the epoch's samples exactly once; for a ``policy="cycle"``
mix, a reference model checks every plan and that no (pass, sample) of a source is
delivered twice.  A few end-to-end
tests run real loaders over in-memory sources whose samples carry their index.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload._order import (
    _PURPOSE_REMAINDER,
    _PURPOSE_REMAINDER_RESUMED,
    EpochPlan,
    MixConfig,
    OrderConfig,
    SourceShape,
    _batch_counts,
    _source_stream,
    merge_states,
    mix_counts,
    plan_epoch,
    plan_fingerprint,
    plan_resumed,
)
from fastload.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_leaks")

FAST = settings(max_examples=150, deadline=None)
#: the world-size changes issue #14 names (the worker change is tested end to end)
CHANGES = [(2, 3), (3, 1), (1, 4)]


# --------------------------------------------------------------------------- order layer
def world_plans(sources, cfg: OrderConfig, world: int, epoch: int, mix, history) -> list[EpochPlan]:
    """The plans of every rank of a world of ``world`` ranks after ``history``."""
    return [
        plan_resumed(sources, replace(cfg, rank=r, world_size=world), epoch, mix, history)
        for r in range(world)
    ]


def consumed_pairs(plans: list[EpochPlan], batches: int) -> list[tuple[int, int]]:
    """(source, index) of the first ``batches`` batches of every plan (all of a shorter one)."""
    pairs = []
    for plan in plans:
        hi = int(plan.batch_bounds[min(batches, plan.n_batches)])
        pairs += zip(plan.source[:hi].tolist(), plan.index[:hi].tolist(), strict=True)
    return pairs


def run_epoch(sources, cfg, epoch, mix, segments, final_world):
    """Consume ``segments`` [(world, batches)] of an epoch, then all of ``final_world``'s part.

    Returns every delivered (source, index) pair in order of the segments and the
    final world's plans.
    """
    delivered: list[tuple[int, int]] = []
    history: list[tuple[int, int]] = []
    for world, batches in segments:
        plans = world_plans(sources, cfg, world, epoch, mix, history)
        delivered += consumed_pairs(plans, batches)
        history.append((world, batches))
    final = world_plans(sources, cfg, final_world, epoch, mix, history)
    delivered += consumed_pairs(final, max(p.n_batches for p in final))
    return delivered, final


def cut_point(data, sources, cfg, mix, world) -> int:
    """A cut anywhere in the epoch of ``world`` ranks, both ends included."""
    most = max(p.n_batches for p in world_plans(sources, cfg, world, 1, mix, ()))
    return data.draw(st.integers(0, most), label="cut")


@FAST
@given(
    data=st.data(),
    n=st.integers(1, 400),
    chunk_len=st.integers(1, 40),
    batch_size=st.integers(1, 24),
    window_chunks=st.integers(1, 4),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    change=st.sampled_from(CHANGES),
)
def test_single_source_every_sample_exactly_once(
    data, n, chunk_len, batch_size, window_chunks, shuffle, drop_last, change
):
    """Old ranks before the cut + new ranks after it: each sample of the epoch at most once,
    all of them without drop_last; with it, fewer than a global step left out and every new
    rank has the same number of full batches."""
    old, new = change
    sources = [SourceShape(n, chunk_len)]
    cfg = OrderConfig(
        batch_size, shuffle=shuffle, seed=7, window_chunks=window_chunks, drop_last=drop_last
    )
    cut = cut_point(data, sources, cfg, None, old)
    delivered, final = run_epoch(sources, cfg, 1, None, [(old, cut)], new)
    counts = Counter(index for _, index in delivered)
    assert max(counts.values(), default=1) == 1, "a sample delivered twice"
    assert set(counts) <= set(range(n))
    n_batches = [p.n_batches for p in final]
    sizes = np.concatenate([np.diff(p.batch_bounds) for p in final])
    remaining = n - len(consumed_pairs(world_plans(sources, cfg, old, 1, None, ()), cut))
    if drop_last:
        assert len(set(n_batches)) == 1, "DDP needs equal batch counts"
        assert (sizes == batch_size).all()
        assert n - len(counts) < new * batch_size  # the undelivered remainder
        assert n_batches[0] == remaining // (new * batch_size)
    else:
        assert len(counts) == n, "a sample never delivered"
        assert max(n_batches) - min(n_batches) <= 1
        step = new * batch_size
        tail = remaining - (max(-(-remaining // step), 1) - 1) * step
        if tail == 0 or tail >= new:
            assert len(set(n_batches)) == 1  # equal whenever the samples allow it
        for plan in final:  # full batches, then at most one short one
            assert (np.diff(plan.batch_bounds)[:-1] == batch_size).all()
            assert (np.diff(plan.batch_bounds) > 0).all()


@FAST
@given(
    data=st.data(),
    n=st.integers(1, 300),
    chunk_len=st.integers(1, 30),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    worlds=st.lists(st.integers(1, 5), min_size=2, max_size=4),
)
def test_chain_of_resumes(data, n, chunk_len, batch_size, drop_last, worlds):
    """Several cuts in one epoch (e.g. 2 -> 3 -> 1) still deliver every sample at most once."""
    sources = [SourceShape(n, chunk_len)]
    cfg = OrderConfig(batch_size, seed=3, window_chunks=2, drop_last=drop_last)
    segments: list[tuple[int, int]] = []
    for world in worlds[:-1]:
        most = max(p.n_batches for p in world_plans(sources, cfg, world, 0, None, segments))
        segments.append((world, data.draw(st.integers(0, most), label=f"cut of {world}")))
    delivered, final = run_epoch(sources, cfg, 0, None, segments, worlds[-1])
    counts = Counter(delivered)
    assert max(counts.values(), default=1) == 1
    if drop_last:
        assert n - len(counts) < worlds[-1] * batch_size
        assert len({p.n_batches for p in final}) == 1
    else:
        assert len(counts) == n


@FAST
@given(
    data=st.data(),
    sizes=st.lists(st.integers(4, 150), min_size=2, max_size=4),
    chunk_len=st.integers(1, 16),
    batch_size=st.integers(4, 20),
    proportional=st.booleans(),
    change=st.sampled_from(CHANGES),
)
def test_mix_keeps_exact_counts_and_never_repeats(
    data, sizes, chunk_len, batch_size, proportional, change
):
    """A first_exhausted mix resumed elastically: exact per-batch counts, equal batch counts on
    the new ranks, no sample twice, and as many batches as the remaining samples can fill."""
    old, new = change
    weights = tuple(float(s) for s in sizes) if proportional else (1.0,) * len(sizes)
    counts = mix_counts(batch_size, weights)
    if (counts == 0).any() or any(
        s < max(old, new) * k for s, k in zip(sizes, counts, strict=True)
    ):
        return  # a configuration the loader refuses, or an epoch of no batch
    sources = [SourceShape(s, chunk_len) for s in sizes]
    mix = MixConfig(weights)
    cfg = OrderConfig(batch_size, seed=5, window_chunks=2)
    cut = cut_point(data, sources, cfg, mix, old)
    delivered, final = run_epoch(sources, cfg, 1, mix, [(old, cut)], new)
    assert max(Counter(delivered).values(), default=1) == 1
    assert len({p.n_batches for p in final}) == 1
    for plan in final:
        for b in range(plan.n_batches):
            source, _ = plan.batch(b)
            assert np.bincount(source, minlength=len(sizes)).tolist() == counts.tolist()
    # maximal: some source cannot fill one more batch on every new rank
    used = Counter(s for s, _ in delivered)
    assert any(sizes[s] - used[s] < new * int(counts[s]) for s in range(len(sizes)))


# --------------------------------------------------------------------------- policy="cycle"
class Passes:
    """The single-rank order of each pass of one source: row ``q`` is pass ``q``'s samples."""

    def __init__(self, shape: SourceShape, cfg: OrderConfig, epoch: int, source_id: int) -> None:
        self.args = shape, replace(cfg, rank=0, world_size=1), epoch, source_id
        self.rows = np.empty((0, shape.n), dtype=np.int64)

    def __getitem__(self, q: int) -> np.ndarray:
        shape = self.args[0]
        if q >= len(self.rows):
            n_passes = max(2 * len(self.rows), q + 1)
            self.rows = _source_stream(*self.args, n_passes * shape.n).reshape(n_passes, shape.n)
        return self.rows[q]


def chunk_positions(passes: Passes, q: int) -> np.ndarray:
    """Each sample's position in pass ``q``'s chunk stream (before the window shuffle).

    ``passes`` must be built with ``window_chunks=1``: then every window is one chunk, so
    the pass's chunks appear in their permuted order; the stream is those chunks one after
    the other, each in store order.
    """
    shape = passes.args[0]
    chunk = passes[q] // shape.chunk_len
    _, first = np.unique(chunk, return_index=True)
    stream = np.concatenate(
        [
            np.arange(c * shape.chunk_len, min((c + 1) * shape.chunk_len, shape.n))
            for c in chunk[np.sort(first)].tolist()
        ]
    )
    position = np.empty(shape.n, dtype=np.int64)
    position[stream] = np.arange(shape.n)
    return position


def cycle_batches(left: int, world: int, cfg: OrderConfig) -> int:
    """The fixed-length rule: a cycle epoch's ``left`` samples in batches of ``world`` ranks."""
    step = world * cfg.batch_size
    left = max(left, 0)
    return left // step if cfg.drop_last else -(-left // step)


def check_cycle_epoch(sources, cfg, epoch, mix, segments, final_world) -> list[EpochPlan]:
    """Run a cycle epoch cut into ``segments`` [(world, batches)] and finished by ``final_world``,
    checking each world's plans against a reference model of the documented rule.

    The reference: the first world's rank ``r`` reads positions ``[r*n//W, (r+1)*n//W)``
    of pass ``q``'s chunk stream (:func:`chunk_positions`), pass after pass, so the
    ``j``-th time it delivers a sample is the ``j``-th pass that puts the sample in its
    piece.  A later world's supply of a source is, pass after pass, the single-rank
    order without the (pass, sample) pairs delivered before; its ranks take contiguous
    pieces in rank order.  A segment of 0 batches is no segment.  Every batch of every plan must hold exactly its piece's
    samples, and no (source, pass, sample) may be delivered twice over the epoch.
    Returns the final world's plans.
    """
    passes = [Passes(shape, cfg, epoch, s) for s, shape in enumerate(sources)]
    by_chunk = [  # the chunk order of each pass
        Passes(shape, replace(cfg, window_chunks=1), epoch, s) for s, shape in enumerate(sources)
    ]
    delivered: list[set[tuple[int, int]]] = [set() for _ in sources]  # (pass, sample)
    layout_counts = mix_counts(cfg.batch_size, mix.weights)

    def deliver(s: int, pairs) -> None:
        for pair in pairs:
            assert pair not in delivered[s], f"source {s}: (pass, sample) {pair} delivered twice"
            delivered[s].add(pair)

    segments = [(world, batches) for world, batches in segments if batches]  # as plan_resumed
    left, history, plans = mix.num_samples, [], []
    for i, (world, batches) in enumerate([*segments, (final_world, None)]):
        plans = world_plans(sources, cfg, world, epoch, mix, history)
        expected = cycle_batches(left, world, cfg)
        assert [p.n_batches for p in plans] == [expected] * world, "the fixed epoch length"
        used = expected if batches is None else batches
        for r, plan in enumerate(plans):
            per_batch = np.array(
                [
                    np.bincount(plan.batch(b)[0], minlength=len(sources))
                    for b in range(plan.n_batches)
                ]
            ).reshape(-1, len(sources))
            assert (per_batch.sum(axis=1) == cfg.batch_size).all()
            # largest: mix_counts in every batch; random: floor or floor + 1, as drawn
            assert (np.abs(per_batch - layout_counts) <= 1).all()
            if mix.remainder == "largest":
                assert (per_batch == layout_counts).all()
            purpose = _PURPOSE_REMAINDER if i == 0 else _PURPOSE_REMAINDER_RESUMED
            assert (per_batch == _batch_counts(cfg, epoch, mix, expected, r, purpose)).all()
        for s, shape in enumerate(sources):
            n = shape.n
            if i == 0:
                for r, plan in enumerate(plans):
                    lo, hi = r * n // world, (r + 1) * n // world
                    end = int(plan.batch_bounds[used])
                    times = Counter(plan.index[:end][plan.source[:end] == s].tolist())
                    owned: dict[int, list[int]] = {x: [] for x in times}
                    q = 0
                    while any(len(owned[x]) < m for x, m in times.items()):
                        position = chunk_positions(by_chunk[s], q)
                        for x in owned:
                            if lo <= position[x] < hi:
                                owned[x].append(q)
                        q += 1
                    for x, m in times.items():
                        deliver(s, [(q, x) for q in owned[x][:m]])
                continue
            demand = sum(int((plan.source == s).sum()) for plan in plans)
            supply: list[tuple[int, int]] = []
            q = 0
            while len(supply) < demand:
                supply += [(q, x) for x in passes[s][q].tolist() if (q, x) not in delivered[s]]
                q += 1
            start = 0
            for plan in plans:
                for b in range(plan.n_batches):
                    source, index = plan.batch(b)
                    mine = index[source == s].tolist()
                    piece = supply[start : start + len(mine)]
                    assert Counter(mine) == Counter(x for _, x in piece), "not the supply's piece"
                    if b < used:
                        deliver(s, piece)
                    start += len(mine)
        if batches is not None:
            history.append((world, batches))
            left -= batches * world * cfg.batch_size
    return plans


def cycle_setup(data, sizes, weights, remainder, batch_size, worlds):
    """Sources, mix and config of a cycle epoch, or None for a configuration that is refused."""
    mix = MixConfig(
        tuple(weights[: len(sizes)]), "cycle", data.draw(st.integers(1, 600)), remainder
    )
    cfg = OrderConfig(
        batch_size,
        shuffle=data.draw(st.booleans(), label="shuffle"),
        seed=data.draw(st.integers(0, 3), label="seed"),
        window_chunks=data.draw(st.integers(1, 3), label="window_chunks"),
        drop_last=data.draw(st.booleans(), label="drop_last"),
    )
    chunk_len = data.draw(st.integers(1, 12), label="chunk_len")
    sources = [SourceShape(n, chunk_len) for n in sizes]
    try:
        for world in set(worlds):
            plan_epoch(sources, replace(cfg, world_size=world), 0, mix)
    except ConfigError:
        return None  # a source with 0 samples per batch
    return sources, cfg, mix


CYCLE_SIZES = st.lists(st.integers(4, 90), min_size=1, max_size=3)  # small ones cycle many passes
CYCLE_WEIGHTS = st.lists(st.integers(1, 4), min_size=3, max_size=3)


@FAST
@given(
    data=st.data(),
    sizes=CYCLE_SIZES,
    weights=CYCLE_WEIGHTS,
    remainder=st.sampled_from(["largest", "random"]),
    batch_size=st.integers(1, 16),
    change=st.sampled_from(CHANGES),
)
def test_cycle_mix_resumes_every_pass_at_most_once(
    data, sizes, weights, remainder, batch_size, change
):
    """A policy='cycle' mix (or one cycling source) cut under one world and finished under
    another: the fixed epoch length, exact per-batch counts, and within each pass of each
    source no sample delivered twice over the old and the new ranks."""
    old, new = change
    setup = cycle_setup(data, sizes, weights, remainder, batch_size, change)
    if setup is None:
        return
    sources, cfg, mix = setup
    cut = cut_point(data, sources, cfg, mix, old)
    final = check_cycle_epoch(sources, cfg, 1, mix, [(old, cut)], new)
    if cut == 0:  # nothing consumed: the new world's normal epoch
        for rank, plan in enumerate(final):
            normal = plan_epoch(sources, replace(cfg, rank=rank, world_size=new), 1, mix)
            assert plan.index.tolist() == normal.index.tolist()


@FAST
@given(
    data=st.data(),
    sizes=CYCLE_SIZES,
    weights=CYCLE_WEIGHTS,
    remainder=st.sampled_from(["largest", "random"]),
    batch_size=st.integers(1, 12),
    worlds=st.lists(st.integers(1, 4), min_size=3, max_size=4),
)
def test_cycle_chain_of_resumes(data, sizes, weights, remainder, batch_size, worlds):
    """Several cuts in one cycle epoch (e.g. 2 -> 3 -> 1): each segment's consumption carries
    its passes, and the rule holds over the whole chain."""
    setup = cycle_setup(data, sizes, weights, remainder, batch_size, worlds)
    if setup is None:
        return
    sources, cfg, mix = setup
    segments: list[tuple[int, int]] = []
    for world in worlds[:-1]:
        most = max(p.n_batches for p in world_plans(sources, cfg, world, 0, mix, segments))
        segments.append((world, data.draw(st.integers(0, most), label=f"cut of {world}")))
    check_cycle_epoch(sources, cfg, 0, mix, segments, worlds[-1])


def test_cycle_resume_repeats_a_small_source_by_passes():
    """A source of 5 samples that each rank cycles many times: the reference check holds and the
    new ranks finish the epoch's fixed length."""
    sources = [SourceShape(97, 8), SourceShape(5, 2)]
    mix = MixConfig((1, 1), "cycle", 400, "random")
    cfg = OrderConfig(7, seed=2, window_chunks=2)
    final = check_cycle_epoch(sources, cfg, 3, mix, [(2, 11)], 3)
    assert sum(p.n_batches for p in final) == 3 * cycle_batches(400 - 2 * 11 * 7, 3, cfg)
    assert sum(int((p.source == 1).sum()) for p in final) > 5 * 10  # many passes of source 1


def test_normal_cycle_plans_are_unchanged():
    """Elastic resume of cycle mixes leaves the normal plans byte for byte as they were (hash of
    plan_epoch and plan_fingerprint over remainders, shuffle, drop_last, ranks, epochs)."""
    digest = hashlib.sha256()
    for remainder in ("largest", "random"):
        for shuffle in (True, False):
            for drop_last in (False, True):
                for world in (1, 2, 3):
                    for rank in range(world):
                        sources = [SourceShape(57, 4), SourceShape(9, 2), SourceShape(130, 16)]
                        mix = MixConfig((1.0, 2.0, 3.5), "cycle", 301, remainder)
                        cfg = OrderConfig(
                            7,
                            shuffle=shuffle,
                            seed=11,
                            window_chunks=3,
                            rank=rank,
                            world_size=world,
                            drop_last=drop_last,
                        )
                        for epoch in (0, 2):
                            plan = plan_epoch(sources, cfg, epoch, mix)
                            for a in (plan.source, plan.index, plan.batch_bounds):
                                digest.update(a.tobytes())
                        digest.update(plan_fingerprint(sources, cfg, mix).encode())
                        one = MixConfig((1.0,), "cycle", 100, remainder)
                        plan = plan_epoch([SourceShape(23, 5)], cfg, 1, one)
                        for a in (plan.source, plan.index, plan.batch_bounds):
                            digest.update(a.tobytes())
    assert digest.hexdigest() == GOLDEN_CYCLE_PLANS


#: computed before cycle mixes had an elastic resume
GOLDEN_CYCLE_PLANS = "33a1071e09c03391780aa525b64830a04b73cb666e8e1665db209437a14fa9e5"


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("drop_last", [False, True])
def test_cut_at_start_is_the_new_worlds_normal_plan(change, drop_last):
    """Nothing consumed yet: the resumed epoch is the new world's ordinary epoch."""
    old, new = change
    sources = [SourceShape(97, 5)]
    for rank in range(new):
        rcfg = OrderConfig(6, seed=2, drop_last=drop_last, rank=rank, world_size=new)
        resumed = plan_resumed(sources, rcfg, 3, None, [(old, 0)])
        normal = plan_epoch(sources, rcfg, 3)
        assert resumed.index.tolist() == normal.index.tolist()
        assert resumed.batch_bounds.tolist() == normal.batch_bounds.tolist()


def test_resumed_plan_is_deterministic_and_keeps_store_order():
    """Same (seed, epoch, old world, new world): same plan; shuffle=False keeps store order."""
    sources = [SourceShape(200, 8)]
    cfg = OrderConfig(7, seed=9, rank=1, world_size=3)
    a = plan_resumed(sources, cfg, 2, None, [(2, 5)])
    b = plan_resumed(sources, cfg, 2, None, [(2, 5)])
    assert a.index.tolist() == b.index.tolist()
    assert a.index.tolist() != plan_resumed(sources, cfg, 3, None, [(2, 5)]).index.tolist()
    ordered = plan_resumed(
        sources, OrderConfig(7, shuffle=False, rank=1, world_size=3), 2, None, [(2, 5)]
    )
    assert (np.diff(ordered.index) > 0).all()


def test_history_out_of_range_is_refused():
    sources = [SourceShape(50, 5)]
    cfg = OrderConfig(5, world_size=3)
    with pytest.raises(ConfigError, match="consumed 99 batches"):
        plan_resumed(sources, cfg, 0, None, [(2, 99)])
    with pytest.raises(ConfigError, match="pair"):
        plan_resumed(sources, cfg, 0, None, [(2,)])
    two = [SourceShape(50, 5), SourceShape(40, 5)]
    cycle = MixConfig((1, 1), "cycle", 100)  # 2 ranks: 10 batches each; after 3 of them,
    assert plan_resumed(two, cfg, 0, cycle, [(2, 10)]).n_batches == 0  # 3 ranks: 5 each
    with pytest.raises(ConfigError, match="consumed 11 batches"):
        plan_resumed(two, cfg, 0, cycle, [(2, 11)])
    assert plan_resumed(two, replace(cfg, world_size=1), 0, cycle, [(2, 3), (3, 5)]).n_batches == 0
    with pytest.raises(ConfigError, match="consumed 6 batches"):
        plan_resumed(two, replace(cfg, world_size=1), 0, cycle, [(2, 3), (3, 6)])
    # a world with fewer ranks than a source's samples could not have run
    with pytest.raises(ConfigError, match="at least world_size=60"):
        plan_resumed(two, cfg, 0, cycle, [(60, 1)])


def test_merge_states_checks_lockstep():
    base = {"fingerprint": "f", "world_size": 2, "epoch": 1, "batch": 4, "elastic": []}
    assert merge_states([{**base, "rank": 0}, {**base, "rank": 1}])["batch"] == 4
    with pytest.raises(ConfigError, match="lockstep"):
        merge_states([{**base, "rank": 0}, {**base, "rank": 1, "batch": 3}])
    with pytest.raises(ConfigError, match="twice"):
        merge_states([{**base, "rank": 0}, {**base, "rank": 0}])
    with pytest.raises(ConfigError, match="not ranks"):
        merge_states([{**base, "rank": 5}])
    with pytest.raises(ConfigError, match="empty"):
        merge_states([])


# --------------------------------------------------------------------------- loaders
def indexed(n: int, chunk_len: int, base: int = 0) -> fl.Source:
    """An in-memory source whose field ``i`` is each sample's own index (+ base)."""
    i = np.arange(base, base + n, dtype=np.int64)
    return fl.from_arrays({"i": i, "x": i.astype(np.float32)[:, None]}, chunk_len=chunk_len)


def consume(loader: fl.Loader, k: int | None) -> tuple[list[np.ndarray], dict]:
    """The ``i`` of the first ``k`` batches (all if None) of this epoch, and the state after."""
    got: list[np.ndarray] = []
    state = loader.state_dict()
    if k == 0:
        return got, state
    for batch in loader:
        got.append(batch["i"].copy())
        state = loader.state_dict()
        if k is not None and len(got) == k:
            return got, state
    return got, loader.state_dict()  # after the epoch: the start of the next


def loaders(source, world: int, **options) -> list[fl.Loader]:
    return [fl.Loader(source, rank=r, world_size=world, **options) for r in range(world)]


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("drop_last", [False, True])
def test_loaders_resume_under_another_world_size(change, drop_last):
    """Real loaders: cut mid-epoch under the old world, resume every new rank from the states."""
    old, new = change
    source = indexed(203, 9)
    options = {"batch_size": 8, "seed": 4, "workers": 0, "drop_last": drop_last}
    cut = 3
    before, states = [], []
    for loader in loaders(source, old, **options):
        with loader:
            got, state = consume(loader, cut)
        before += got
        states.append(state)
    after, lengths, next_epoch = [], [], []
    for loader in loaders(source, new, **options):
        with loader:
            loader.load_state_dict(states)  # every old rank's state, checked for lockstep
            assert loader.epoch == states[0]["epoch"] == 0
            lengths.append(len(loader))
            got, state = consume(loader, None)
            assert len(got) == lengths[-1]
            assert (state["epoch"], state["batch"], state["world_size"]) == (1, 0, new)
            next_epoch.append(consume(loader, None)[0])
        after += got
    ids = np.concatenate(before + after)
    assert len(ids) == len(set(ids.tolist())), "a sample delivered twice"
    if drop_last:
        assert len(set(lengths)) == 1
        assert 203 - len(ids) < new * 8
    else:
        assert sorted(ids.tolist()) == list(range(203))
    # the next epoch is the new world's normal epoch
    for rank, got in enumerate(next_epoch):
        with fl.Loader(source, rank=rank, world_size=new, **options) as fresh:
            fresh.set_epoch(1)
            expected = consume(fresh, None)[0]
        assert [b.tolist() for b in got] == [b.tolist() for b in expected]


def test_workers_two_to_one_and_world_change():
    """2 process workers -> 1 (same world: the exact remaining batches), and 2 thread workers
    on 2 ranks -> 1 worker on 3 ranks (every sample once)."""
    source = indexed(150, 6)
    options = {"batch_size": 5, "seed": 8}
    with fl.Loader(source, workers=0, **options) as reference:
        whole = consume(reference, None)[0]
    with fl.Loader(source, workers=2, **options) as first:
        head, state = consume(first, 7)
    with fl.Loader(source, workers=1, **options) as second:
        second.load_state_dict(state)
        tail = consume(second, None)[0]
    assert [b.tolist() for b in head + tail] == [b.tolist() for b in whole]

    before, states = [], []
    for loader in loaders(source, 2, workers=2, backend="thread", **options):
        with loader:
            got, state = consume(loader, 4)
        before += got
        states.append(state)
    after = []
    for rank in range(3):
        with fl.Loader(
            source, rank=rank, world_size=3, workers=1, backend="thread", **options
        ) as loader:
            loader.load_state_dict(states[rank % 2])  # any old rank's state: lockstep
            after += consume(loader, None)[0]
    assert sorted(np.concatenate(before + after).tolist()) == list(range(150))


def test_resumed_state_resumes_again():
    """A state saved inside a resumed epoch resumes exactly, in the same world or another."""
    source = indexed(180, 7)
    options = {"batch_size": 6, "seed": 1, "workers": 0}
    before, states = [], []
    for loader in loaders(source, 2, **options):
        with loader:
            got, state = consume(loader, 4)
        before += got
        states.append(state)
    # 3 ranks take 2 batches each, then save
    middle, states3 = [], []
    for loader in loaders(source, 3, **options):
        with loader:
            loader.load_state_dict(states[0])
            got, state = consume(loader, 2)
        assert state["elastic"] == [[2, 4]]
        assert state["batch"] == 2
        middle += got
        states3.append(state)
    # the same 3 ranks resume at batch 2 of their part ...
    with fl.Loader(source, rank=1, world_size=3, **options) as again:
        again.load_state_dict(states3[0])
        with fl.Loader(source, rank=1, world_size=3, **options) as uninterrupted:
            uninterrupted.load_state_dict(states[0])
            whole = consume(uninterrupted, None)[0]
        assert [b.tolist() for b in consume(again, None)[0]] == [b.tolist() for b in whole[2:]]
    # ... or 1 rank takes the rest
    with fl.Loader(source, **options) as last:
        last.load_state_dict(states3)
        rest = consume(last, None)[0]
    assert sorted(np.concatenate(before + middle + rest).tolist()) == list(range(180))


def test_mix_resumes_under_another_world_size():
    """fl.Mix with exact per-batch counts: 2 ranks -> 3 ranks, every batch's composition exact,
    no sample twice, and labels that match the samples' sources."""
    mix = fl.Mix({"a": indexed(120, 5), "b": indexed(60, 4, base=10_000)}, label_field="label")
    options = {"batch_size": 6, "seed": 3, "workers": 0}
    before, states = [], []
    for loader in loaders(mix, 2, **options):
        with loader:
            got, state = consume(loader, 3)
        before += got
        states.append(state)
    after, lengths = [], []
    for loader in loaders(mix, 3, **options):
        with loader:
            loader.load_state_dict(states)
            lengths.append(len(loader))
            for batch in loader:
                assert np.bincount(batch["label"], minlength=2).tolist() == [4, 2]
                assert ((batch["i"] >= 10_000) == (batch["label"] == 1)).all()
                after.append(batch["i"].copy())
    ids = np.concatenate(before + after).tolist()
    assert len(ids) == len(set(ids))
    assert len(set(lengths)) == 1
    assert lengths[0] > 0
    # every remaining sample of both sources fits in whole batches here: all delivered
    assert sorted(ids) == list(range(120)) + list(range(10_000, 10_060))


def test_cycle_mix_resumes_under_another_world_size():
    """A policy='cycle' fl.Mix whose small source cycles: 2 ranks -> 3 ranks.  The loaders deliver
    exactly the order layer's batches, which the reference check accepts (no (pass, sample)
    twice), every batch's composition is exact and the new ranks finish the fixed length."""
    mix = fl.Mix(
        {"a": indexed(40, 5), "b": indexed(9, 3, base=10_000)},
        {"a": 2, "b": 1},
        policy="cycle",
        num_samples=120,
        label_field="label",
    )
    options = {"batch_size": 6, "seed": 3, "workers": 0, "window_chunks": 2}
    sources = [SourceShape(40, 5), SourceShape(9, 3)]
    cfg = OrderConfig(6, seed=3, window_chunks=2)
    cut = 3

    def ids(plan: EpochPlan) -> list[list[int]]:
        every = plan.index + 10_000 * plan.source.astype(np.int64)
        return [
            sorted(every[plan.batch_bounds[b] : plan.batch_bounds[b + 1]].tolist())
            for b in range(plan.n_batches)
        ]

    states = []
    for rank, loader in enumerate(loaders(mix, 2, **options)):
        with loader:
            got, state = consume(loader, cut)
        normal = plan_epoch(sources, replace(cfg, rank=rank, world_size=2), 0, mix.order_config())
        assert [sorted(b.tolist()) for b in got] == ids(normal)[:cut]
        states.append(state)
    final = check_cycle_epoch(sources, cfg, 0, mix.order_config(), [(2, cut)], 3)
    delivered_b = 2 * cut * 2
    for rank, loader in enumerate(loaders(mix, 3, **options)):
        with loader:
            loader.load_state_dict(states)
            assert len(loader) == cycle_batches(120 - 2 * cut * 6, 3, cfg) == 5
            got = []
            for batch in loader:
                assert np.bincount(batch["label"], minlength=2).tolist() == [4, 2]
                assert ((batch["i"] >= 10_000) == (batch["label"] == 1)).all()
                got.append(sorted(batch["i"].tolist()))
            assert loader.state_dict()["epoch"] == 1
        assert got == ids(final[rank])
        delivered_b += sum(len([i for i in batch if i >= 10_000]) for batch in got)
    assert delivered_b == 2 * cut * 2 + 3 * 5 * 2 > 4 * 9  # source b ran through several passes


def test_changed_settings_are_named_and_legacy_states_load():
    source = indexed(60, 5)
    with fl.Loader(source, 4, seed=1, workers=0, world_size=2) as loader:
        state = loader.state_dict()
    for change, name in (({"seed": 2}, "seed"), ({"batch_size": 5}, "batch_size")):
        other = fl.Loader(source, **{"batch_size": 4, "seed": 1, **change}, workers=0)
        with other, pytest.raises(ConfigError, match=f"changed {name}"):
            other.load_state_dict(state)
    other = fl.Loader(indexed(61, 5), 4, seed=1, workers=0)
    with other, pytest.raises(ConfigError, match="changed the source"):
        other.load_state_dict(state)
    # a state of an older fastload (fingerprint with rank and world size, no world_size key)
    from fastload._order import legacy_fingerprint

    with fl.Loader(source, 4, seed=1, workers=0, rank=1, world_size=2) as loader:
        legacy = {
            "epoch": 0,
            "batch": 2,
            "fingerprint": legacy_fingerprint(
                [SourceShape(60, 5)], OrderConfig(4, seed=1, window_chunks=4, rank=1, world_size=2)
            ),
        }
        loader.load_state_dict(legacy)
        assert loader.state_dict()["batch"] == 2
        with pytest.raises(ConfigError, match="different configuration"):
            loader.load_state_dict({**legacy, "fingerprint": "0" * 32})
