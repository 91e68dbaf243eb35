"""``remainder="random"``: the samples the floors leave over go to random sources, per batch.

The order layer is checked with hypothesis over sizes, weights, batch sizes,
policies and world sizes: exact per-batch counts (sum ``batch_size``, each the
floor or one more), each sample at most once per epoch and per rank piece,
disjoint ranks, an epoch length that the draw cannot change, determinism for a
seed, and long-run shares equal to the weights (LArIAT's 12 classes in batches
of 128, where ``"largest"`` gives classes 0-7 one sample more in every batch).
Real loaders over in-memory classes check labels, DDP ranks and resume.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload._order import (
    MixConfig,
    OrderConfig,
    SourceShape,
    batches_per_epoch,
    changed_settings,
    mix_counts,
    plan_description,
    plan_epoch,
    plan_fingerprint,
    plan_resumed,
)
from fastload._remainder import random_remainder
from fastload.errors import ConfigError

FAST = settings(max_examples=120, deadline=None)

weights_st = st.lists(st.integers(1, 9), min_size=2, max_size=6).map(lambda w: tuple(map(float, w)))


def floors_of(batch_size: int, weights) -> np.ndarray:
    total = sum(Fraction(w) for w in weights)
    return np.array([int(batch_size * Fraction(w) // total) for w in weights])


def per_batch(plan, n_sources: int) -> np.ndarray:
    """``(n_batches, n_sources)`` samples of each source in each batch of ``plan``."""
    batch = np.repeat(np.arange(plan.n_batches), np.diff(plan.batch_bounds))
    flat = np.bincount(batch * n_sources + plan.source, minlength=plan.n_batches * n_sources)
    return flat.reshape(plan.n_batches, n_sources)


def plans_of(sources, cfg, mix, world, epoch=0):
    return [
        plan_epoch(sources, replace(cfg, rank=r, world_size=world), epoch, mix)
        for r in range(world)
    ]


# --------------------------------------------------------------------------- per-batch counts
@FAST
@given(
    sizes=st.lists(st.integers(1, 300), min_size=6, max_size=6),
    chunk_len=st.integers(1, 16),
    weights=weights_st,
    batch_size=st.integers(4, 40),
    world=st.integers(1, 3),
    shuffle=st.booleans(),
    cycle=st.booleans(),
)
def test_counts_are_exact_and_samples_unique(
    sizes, chunk_len, weights, batch_size, world, shuffle, cycle
):
    """Every batch: batch_size samples, source s floor_s or floor_s + 1 of them; every rank the
    same number of batches; with first_exhausted each sample at most once over all ranks."""
    sources = [SourceShape(n, chunk_len) for n in sizes[: len(weights)]]
    mix = MixConfig(
        weights,
        "cycle" if cycle else "first_exhausted",
        3 * sum(sizes) if cycle else None,
        "random",
    )
    cfg = OrderConfig(batch_size, shuffle=shuffle, seed=11, window_chunks=2)
    floors = floors_of(batch_size, weights)
    try:
        plans = plans_of(sources, cfg, mix, world)
    except ConfigError:
        assert cycle  # a cycle needs a sample of every source per rank
        assert min(s.n for s in sources) < world
        return
    assert len({p.n_batches for p in plans}) == 1, "DDP needs equal batch counts"
    seen: Counter[tuple[int, int]] = Counter()
    for rank, plan in enumerate(plans):
        assert plan.n_batches == batches_per_epoch(
            sources, replace(cfg, rank=rank, world_size=world), mix
        )
        counts = per_batch(plan, len(sources))
        assert (np.diff(plan.batch_bounds) == batch_size).all()
        assert (counts.sum(axis=1) == batch_size).all()
        assert ((counts == floors) | (counts == floors + 1)).all()
        for s, shape in enumerate(sources):
            idx = plan.index[plan.source == s]
            assert ((idx >= 0) & (idx < shape.n)).all()
            if not cycle:
                seen.update((s, int(i)) for i in idx)
    assert max(seen.values(), default=1) == 1, "a sample delivered twice in an epoch"


@FAST
@given(
    n=st.integers(50, 2000),
    weights=weights_st,
    batch_size=st.integers(4, 64),
    world=st.integers(1, 4),
)
def test_first_exhausted_length_is_the_same_every_epoch_and_tight(n, weights, batch_size, world):
    """The epoch ends at the same batch in every epoch (batches_per_epoch has no epoch), every
    rank's plan stays inside its rank piece, and one block more could overrun some source."""
    sources = [SourceShape(n + 7 * s, 8) for s in range(len(weights))]
    mix = MixConfig(weights, remainder="random")
    cfg = OrderConfig(batch_size, seed=5, world_size=world)
    layout = random_remainder(batch_size, weights)
    if layout is None:
        return  # nothing left over: the largest-remainder plan
    n_batches = batches_per_epoch(sources, cfg, mix)
    pieces = np.array([s.n // world for s in sources])
    for epoch in range(3):
        plan = plan_epoch(sources, cfg, epoch, mix)
        assert plan.n_batches == n_batches
        assert (np.bincount(plan.source, minlength=len(sources)) <= pieces).all()
    # tight: a block consumes at most block * (B w_s) + 1 of source s, so the binding source
    # would run out within about one block more
    total = sum(Fraction(w) for w in weights)
    target = np.array([float(batch_size * Fraction(w) / total) for w in weights])
    block = layout.block
    assert ((n_batches + block) * (target + 1 / block) >= pieces).any()


def test_draws_are_deterministic_and_differ_between_batches_and_epochs():
    sources = [SourceShape(600, 16) for _ in range(12)]
    mix = MixConfig((1.0,) * 12, remainder="random")
    cfg = OrderConfig(128, seed=3)
    a, b = plan_epoch(sources, cfg, 0, mix), plan_epoch(sources, cfg, 0, mix)
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_array_equal(a.index, b.index)
    counts = per_batch(a, 12)
    assert len({tuple(row) for row in counts}) > 1, "the same classes get the extra every batch"
    other_epoch = per_batch(plan_epoch(sources, cfg, 1, mix), 12)
    other_seed = per_batch(plan_epoch(sources, replace(cfg, seed=4), 0, mix), 12)
    assert not np.array_equal(counts, other_epoch)
    assert not np.array_equal(counts, other_seed)
    # shuffle=False: store order inside each source, the draws still seeded
    plain = replace(cfg, shuffle=False)
    p0, p1 = plan_epoch(sources, plain, 0, mix), plan_epoch(sources, replace(plain, seed=9), 0, mix)
    assert not np.array_equal(per_batch(p0, 12), per_batch(p1, 12))
    for s in range(12):
        idx = p0.index[p0.source == s]
        np.testing.assert_array_equal(idx, np.arange(len(idx)))


# --------------------------------------------------------------------------- long-run shares
def test_twelve_equal_classes_batch_128_have_no_class_bias():
    """LArIAT's reference: 128 // 12 = 10 per class, 8 left to random classes.  "largest" gives
    classes 0-7 eleven in every batch; "random" gives each 2/3 extra on average, exactly 2 in
    every block of 3 batches."""
    sources = [SourceShape(10_000, 64) for _ in range(12)]
    cfg = OrderConfig(128, seed=0)
    largest = per_batch(plan_epoch(sources, cfg, 0, MixConfig((1.0,) * 12)), 12)
    assert (largest[:, :8] == 11).all()
    assert (largest[:, 8:] == 10).all()
    plan = plan_epoch(sources, cfg, 0, MixConfig((1.0,) * 12, remainder="random"))
    counts = per_batch(plan, 12)
    assert len(counts) >= 900
    whole = len(counts) // 3 * 3
    blocks = counts[:whole].reshape(-1, 3, 12).sum(axis=1)
    assert (blocks == 32).all()  # 3 * 128 / 12 per class in every 3 batches
    assert np.abs(counts.mean(axis=0) - 128 / 12).max() < 1 / len(counts) * 3
    assert np.abs(largest.mean(axis=0) - 128 / 12).max() > 0.3


@pytest.mark.parametrize(
    "weights",
    [(1.0, 2.0, 4.0), (0.3, 0.45, 0.25), (1.0, 2**0.5, 3.14159), (5.0, 1.0, 1.0, 1.0, 1.0)],
)
def test_long_run_shares_follow_the_weights(weights):
    """Mean count per source over many batches within a few standard errors of B * w_s, and
    within one extra sample per block of its expectation over every block."""
    batch_size = 10
    mix = MixConfig(weights, "cycle", 400_000, "random")
    sources = [SourceShape(1000, 10) for _ in weights]
    cfg = OrderConfig(batch_size, seed=1)
    counts = per_batch(plan_epoch(sources, cfg, 0, mix), len(weights))
    target = np.array(
        [batch_size * Fraction(w) / sum(map(Fraction, weights)) for w in weights], float
    )
    layout = random_remainder(batch_size, weights)
    assert layout is not None
    n = len(counts)
    assert np.abs(counts.mean(axis=0) - target).max() < 0.5 / np.sqrt(n) * 5 + 1e-9
    block = layout.block
    per_block = counts[: n // block * block].reshape(-1, block, len(weights)).sum(axis=1)
    assert (np.abs(per_block - block * target) < 1 + 1e-9).all()
    if block < 4096:  # exact block: the shares come out exactly
        np.testing.assert_allclose(per_block, np.broadcast_to(block * target, per_block.shape))


# --------------------------------------------------------------------------- resume, fingerprint
@FAST
@given(
    data=st.data(),
    sizes=st.lists(st.integers(20, 300), min_size=4, max_size=4),
    weights=weights_st,
    batch_size=st.integers(6, 30),
    change=st.sampled_from([(2, 3), (3, 1), (1, 2)]),
)
def test_elastic_resume_of_a_random_remainder(data, sizes, weights, batch_size, change):
    """Old ranks before the cut + new ranks after it: each sample at most once, exact counts,
    the same number of batches on every new rank; the same world resumes the same plan."""
    old, new = change
    weights = weights[:4]
    sources = [SourceShape(n, 8) for n in sizes[: len(weights)]]
    mix = MixConfig(weights, remainder="random")
    cfg = OrderConfig(batch_size, seed=2, window_chunks=2)
    floors = floors_of(batch_size, weights)
    try:
        before = plans_of(sources, cfg, mix, old, epoch=1)
    except ConfigError:
        return  # a source without samples per batch
    cut = data.draw(st.integers(0, before[0].n_batches), label="cut")
    seen = Counter()
    for plan in before:
        hi = int(plan.batch_bounds[cut])
        seen.update(zip(plan.source[:hi].tolist(), plan.index[:hi].tolist(), strict=True))
    after = [
        plan_resumed(sources, replace(cfg, rank=r, world_size=new), 1, mix, [(old, cut)])
        for r in range(new)
    ]
    assert len({p.n_batches for p in after}) == 1
    for plan in after:
        counts = per_batch(plan, len(sources))
        assert (counts.sum(axis=1) == batch_size).all()
        assert ((counts == floors) | (counts == floors + 1)).all()
        seen.update(zip(plan.source.tolist(), plan.index.tolist(), strict=True))
    assert max(seen.values(), default=1) == 1


def test_fingerprint_and_description_name_the_remainder():
    sources = [SourceShape(100, 10)] * 3
    cfg = OrderConfig(10, seed=1)
    largest, random = MixConfig((1.0, 1.0, 1.0)), MixConfig((1.0, 1.0, 1.0), remainder="random")
    assert "remainder" not in plan_description(sources, cfg, largest)  # old states still load
    assert plan_fingerprint(sources, cfg, largest) != plan_fingerprint(sources, cfg, random)
    changed = changed_settings(
        plan_description(sources, cfg, largest), plan_description(sources, cfg, random)
    )
    assert any(
        "remainder (fl.Mix(remainder=...)) (saved 'largest', now 'random')" in c for c in changed
    )
    # nothing left over: both modes are the same plan, and the same fingerprint
    even = MixConfig((1.0, 1.0), remainder="random")
    assert plan_fingerprint(sources[:2], cfg, even) == plan_fingerprint(
        sources[:2], cfg, MixConfig((1.0, 1.0))
    )
    # seeded draws: the seed counts even without shuffling
    plain = replace(cfg, shuffle=False)
    assert plan_fingerprint(sources, plain, random) != plan_fingerprint(
        sources, replace(plain, seed=2), random
    )
    assert plan_fingerprint(sources, plain, largest) == plan_fingerprint(
        sources, replace(plain, seed=2), largest
    )


def test_remainder_is_validated():
    with pytest.raises(ConfigError, match=r"remainder.*\('largest', 'random'\)"):
        MixConfig((1.0, 1.0), remainder="uniform")
    # a floor of 0 is fine with "random" (the source gets 0 or 1), refused with "largest"
    sources = [SourceShape(100, 10)] * 3
    cfg = OrderConfig(2, seed=1)
    with pytest.raises(ConfigError, match="0 samples per batch"):
        plan_epoch(sources, cfg, 0, MixConfig((1.0, 1.0, 1.0)))
    plan = plan_epoch(sources, cfg, 0, MixConfig((1.0, 1.0, 1.0), remainder="random"))
    counts = per_batch(plan, 3)
    assert (counts.sum(axis=1) == 2).all()
    assert (counts <= 1).all()
    assert np.abs(counts.mean(axis=0) - 2 / 3).max() < 0.15
    assert mix_counts(2, (1.0, 1.0, 1.0)).tolist() == [1, 1, 0]


# --------------------------------------------------------------------------- fl.Mix + fl.Loader
CLASSES = 12


def classes(n: int = 200, chunk_len: int = 8) -> dict[str, fl.Source]:
    """12 in-memory classes; field ``i`` is class * 100_000 + the sample's index."""
    out = {}
    for c in range(CLASSES):
        i = np.arange(n, dtype=np.int64) + c * 100_000
        out[f"c{c}"] = fl.from_arrays({"i": i}, chunk_len=chunk_len)
    return out


def epoch_of(loader: fl.Loader, k: int | None = None) -> tuple[list[np.ndarray], dict]:
    """``i`` of the first ``k`` batches (all if None), checking each batch; the state after."""
    got, state = [], loader.state_dict()
    for batch in loader:
        label, i = np.asarray(batch["label"]), np.asarray(batch["i"])
        np.testing.assert_array_equal(i // 100_000, label)  # labels match the sources
        counts = np.bincount(label, minlength=CLASSES)
        assert counts.sum() == 20
        assert set(counts.tolist()) <= {1, 2}  # 20 // 12 = 1 each, 8 left over
        got.append(i.copy())
        state = loader.state_dict()
        if k is not None and len(got) == k:
            break
    return got, state


def test_loader_mixes_with_a_random_remainder_and_resumes():
    mix = fl.Mix(classes(), {f"c{c}": 1 for c in range(CLASSES)}, remainder="random")
    assert "remainder='random'" in repr(mix)
    options = {"batch_size": 20, "seed": 4, "workers": 0}
    with fl.Loader(mix, **options) as loader:
        full, _ = epoch_of(loader)
    ids = np.concatenate(full)
    assert len(ids) == len(set(ids.tolist()))  # each sample at most once
    counts = np.array([np.bincount(b // 100_000, minlength=CLASSES) for b in full])
    assert len({tuple(c) for c in counts}) > 1  # not the same classes every batch
    assert np.abs(counts.mean(axis=0) - 20 / 12).max() < 0.05  # 2/3 extra each, in blocks of 3
    # resume mid-epoch: the same remaining batches
    with fl.Loader(mix, **options) as first:
        _, state = epoch_of(first, 5)
    assert state["config"]["remainder"] == "random"
    with fl.Loader(mix, **options) as second:
        second.load_state_dict(state)
        rest, _ = epoch_of(second)
    assert len(rest) == len(full) - 5
    for a, b in zip(rest, full[5:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_loader_ranks_are_disjoint_and_resume_elastically():
    mix = fl.Mix(classes(), {f"c{c}": 1 for c in range(CLASSES)}, remainder="random")
    options = {"batch_size": 20, "seed": 6, "workers": 0}
    before, states, lengths = [], [], []
    for rank in range(2):
        with fl.Loader(mix, rank=rank, world_size=2, **options) as loader:
            lengths.append(len(loader))
            got, state = epoch_of(loader, 3)
            before += got
            states.append(state)
    assert lengths[0] == lengths[1]
    after = []
    for rank in range(3):
        with fl.Loader(mix, rank=rank, world_size=3, **options) as loader:
            loader.load_state_dict(states)
            after += epoch_of(loader)[0]
    ids = np.concatenate(before + after).tolist()
    assert len(ids) == len(set(ids)), "a sample delivered twice across the ranks"
    # another remainder is another order: refused, naming the setting
    largest = fl.Mix(classes(), {f"c{c}": 1 for c in range(CLASSES)})
    loader = fl.Loader(largest, rank=0, world_size=2, **options)
    with loader, pytest.raises(ConfigError, match=r"remainder.*saved 'random', now 'largest'"):
        loader.load_state_dict(states[0])


def test_mix_validates_the_remainder():
    with pytest.raises(ConfigError, match=r"fl\.Mix.*remainder.*\('largest', 'random'\)"):
        fl.Mix(classes(10), remainder="even")
