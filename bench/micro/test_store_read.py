"""Blosc chunk decode straight into a preallocated buffer: ``Split.read_chunk(field, i, out)``."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl


@pytest.mark.bench
def test_read_chunk_into_buffer(benchmark, toptagging_store: fl.Store) -> None:
    """One chunk (~3.3 MB of float32) decoded into a reused buffer; MB/s in extra_info."""
    split = toptagging_store["train"]
    out = np.empty((split.chunk_len, 200, 4), dtype=np.float32)
    chunks = iter(range(10**9))

    def decode() -> np.ndarray:
        return split.read_chunk("X", next(chunks) % split.n_chunks, out)

    rows = benchmark(decode)
    assert rows.shape == (split.chunk_len, 200, 4)
    benchmark.extra_info["MB_per_chunk"] = out.nbytes / 1e6
    benchmark.extra_info["MB_per_s"] = out.nbytes / 1e6 / benchmark.stats["mean"]


@pytest.mark.bench
def test_read_chunk_fresh_buffer(benchmark, toptagging_store: fl.Store) -> None:
    """The same decode into a newly allocated array each time (page faults included), for contrast."""
    split = toptagging_store["train"]
    chunks = iter(range(10**9))

    def decode() -> np.ndarray:
        return split.read_chunk("X", next(chunks) % split.n_chunks)

    rows = benchmark(decode)
    assert rows.shape[0] == split.chunk_len
