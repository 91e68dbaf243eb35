"""Sample-level shuffle gather: ``np.take(chunk, rows, axis=0, out=slot, mode="clip")``.

This is what a worker does for every batch: pick shuffled rows of a decoded
chunk and write them into the shared-memory batch slot.  ``mode`` matters:
with numpy's default ``"raise"`` an ``out=`` gather goes through a hidden
temporary (numpy's documentation says so); ``test_take_mode`` shows the cost.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.bench
@pytest.mark.parametrize(
    ("sample_shape", "batch"), [((200, 4), 1024), ((24, 24), 1024), ((25, 25, 25), 128)]
)
def test_take_into_slot(
    benchmark, rng: np.random.Generator, sample_shape: tuple[int, ...], batch: int
) -> None:
    """Gather ``batch`` random rows out of a 4-chunk window (~16 MB) into a preallocated slot."""
    row_bytes = int(np.prod(sample_shape)) * 4
    window_rows = max(batch, 4 * (4 * 2**20 // row_bytes))
    cache = rng.standard_normal((window_rows, *sample_shape)).astype(np.float32)
    slot = np.empty((batch, *sample_shape), dtype=np.float32)
    rows = rng.permutation(window_rows)[:batch]

    result = benchmark(np.take, cache, rows, axis=0, out=slot, mode="clip")
    assert result is slot
    np.testing.assert_array_equal(slot[0], cache[rows[0]])
    benchmark.extra_info["MB_per_s"] = slot.nbytes / 1e6 / benchmark.stats["mean"]


@pytest.mark.bench
def test_sorted_take_into_slot(benchmark, rng: np.random.Generator) -> None:
    """The same gather with rows sorted (better locality), to see what ordering buys."""
    cache = rng.standard_normal((4096, 200, 4)).astype(np.float32)
    slot = np.empty((1024, 200, 4), dtype=np.float32)
    rows = np.sort(rng.permutation(4096)[:1024])
    benchmark(np.take, cache, rows, axis=0, out=slot, mode="clip")
    np.testing.assert_array_equal(slot[-1], cache[rows[-1]])


@pytest.mark.bench
@pytest.mark.parametrize("mode", ["raise", "clip"])
def test_take_mode(benchmark, rng: np.random.Generator, mode: str) -> None:
    """One decoded 3.2 MB TopTagging chunk into a slot: the engine uses "clip" (rows are in range by construction)."""
    chunk = rng.standard_normal((1024, 200, 4)).astype(np.float32)
    slot = np.empty_like(chunk)
    rows = np.sort(rng.permutation(1024))
    benchmark(np.take, chunk, rows, axis=0, out=slot, mode=mode)
    np.testing.assert_array_equal(slot, chunk[rows])
    benchmark.extra_info["MB_per_s"] = slot.nbytes / 1e6 / benchmark.stats["mean"]
