"""The engine's index arithmetic (coordinator tables, the workers' ragged copy) against slow, obvious references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastload._engine import _scheduler
from fastload._engine._scheduler import chunk_table, within_batch_order
from fastload._order import EpochPlan


def _random_plan(
    rng: np.random.Generator, sizes: list[int], n_sources: int, n_max: int
) -> EpochPlan:
    total = sum(sizes)
    source = rng.integers(0, n_sources, total)
    # distinct (source, index) pairs, as a real plan has
    index = np.empty(total, dtype=np.int64)
    for s in range(n_sources):
        mask = source == s
        index[mask] = rng.choice(n_max, int(mask.sum()), replace=False)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return EpochPlan(source, index, bounds)


def _reference_order(plan: EpochPlan) -> EpochPlan:
    batch = np.repeat(np.arange(plan.n_batches), np.diff(plan.batch_bounds))
    order = np.lexsort((plan.index, plan.source, batch))
    return EpochPlan(plan.source[order], plan.index[order], plan.batch_bounds)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    n_sources=st.integers(1, 4),
)
def test_within_batch_order_equals_lexsort(seed: int, sizes: list[int], n_sources: int) -> None:
    rng = np.random.default_rng(seed)
    plan = _random_plan(rng, sizes, n_sources, n_max=2 * sum(sizes) + 5)
    got, want = within_batch_order(plan), _reference_order(plan)
    np.testing.assert_array_equal(got.source, want.source)
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(got.batch_bounds, plan.batch_bounds)


def test_within_batch_order_falls_back_when_keys_do_not_pack() -> None:
    """Indices near 2**62 leave no room for the source bits: the lexsort path must be used."""
    plan = EpochPlan(
        np.array([1, 0, 1, 0]), np.array([2**62, 2**62 + 5, 3, 1]), np.array([0, 2, 4])
    )
    got = within_batch_order(plan)
    np.testing.assert_array_equal(got.source, [0, 1, 0, 1])
    np.testing.assert_array_equal(got.index, [2**62 + 5, 2**62, 1, 3])


@pytest.mark.parametrize("max_key", [100, 70_000, 2**40])
def test_key_order_is_a_stable_argsort(max_key: int) -> None:
    """Radix (uint16 keys), packed and plain paths all give the stable order."""
    rng = np.random.default_rng(max_key)
    keys = rng.integers(0, max_key, 5000)
    keys[:50] = keys[0]  # ties must keep their plan order
    np.testing.assert_array_equal(
        _scheduler._order_by_key_then_position(keys), np.argsort(keys, kind="stable")
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=10),
    chunk_len=st.integers(1, 16),
    start_batch=st.integers(0, 3),
)
def test_chunk_table_runs_cover_the_plan(
    seed: int, sizes: list[int], chunk_len: int, start_batch: int
) -> None:
    """Every entry from ``start_batch`` on is copied once, to its batch and position."""
    rng = np.random.default_rng(seed)
    plan = within_batch_order(_random_plan(rng, sizes, 2, n_max=3 * sum(sizes)))
    start_batch = min(start_batch, plan.n_batches - 1)
    chunk_lens = np.array([chunk_len, chunk_len + 3])
    n_chunks = -(-3 * sum(sizes) // chunk_lens)
    key_offsets = np.array([0, n_chunks[0]])
    table = chunk_table(plan, chunk_lens, key_offsets, start_batch)
    seen = np.zeros(plan.n_samples, dtype=int)
    for t, key in enumerate(table.keys):
        source = int(np.searchsorted(key_offsets, key, side="right") - 1)
        chunk = key - key_offsets[source]
        for r in range(table.run_bounds[t], table.run_bounds[t + 1]):
            b = table.run_batch[r]
            for e in range(table.run_entry[r], table.run_end[r]):
                pos = plan.batch_bounds[b] + table.run_dest[r] + (e - table.run_entry[r])
                assert plan.source[pos] == source
                assert plan.index[pos] == chunk * chunk_lens[source] + table.rows[e]
                seen[pos] += 1
    lo = plan.batch_bounds[start_batch]
    assert (seen[lo:] == 1).all()
    assert (seen[:lo] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    mean_rows=st.sampled_from([0.5, 3, 30, 100]),  # both sides of the slice-copy threshold
    n=st.integers(1, 40),
    length=st.integers(1, 120),
)
def test_ragged_copy_pads_and_truncates_like_a_loop(
    seed: int, mean_rows: float, n: int, length: int
) -> None:
    """Selected samples of a decoded ragged chunk, zero-padded or truncated to ``length`` rows."""
    from fastload._engine._worker import _copy_ragged

    rng = np.random.default_rng(seed)
    counts = rng.poisson(mean_rows, 64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    values = rng.standard_normal((int(offsets[-1]), 3)).astype(np.float32)
    rows = np.sort(rng.choice(64, n, replace=False))
    out = np.full((n, length, 3), np.nan, dtype=np.float32)  # stale slot contents
    lens = np.full(n, -1, dtype=np.int64)
    _copy_ragged(values, offsets, rows, out, lens)
    for i, r in enumerate(rows):
        sample = values[offsets[r] : offsets[r + 1]][:length]
        assert lens[i] == len(sample)
        np.testing.assert_array_equal(out[i, : len(sample)], sample)
        assert not out[i, len(sample) :].any()
