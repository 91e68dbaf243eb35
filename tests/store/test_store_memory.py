"""Store format v1: the streaming writer's memory stays bounded whatever the dataset size."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import psutil
from store_helpers import make_block

import fastload as fl


def test_pending_tail_never_exceeds_one_chunk(tmp_path: Path, rng: np.random.Generator) -> None:
    """White box: after every append, each column holds fewer than chunk_len pending rows."""
    with fl.create_store(tmp_path / "m.zarr", chunk_len=16, chunk_bytes=4096) as w:
        for m in rng.integers(0, 40, size=30):
            w.append("train", make_block(rng, int(m)))
            sw = w._splits["train"]
            columns = sw.columns()
            assert len(columns) == 5 + 2  # five dense fields, ragged values + offsets
            for col in columns:
                if hasattr(col, "column"):  # a ragged values column
                    # rows are held only until sample chunk 0 is complete
                    assert (col.column is None) == (sw.n < 16)
                    if col.column is None:
                        assert sum(map(len, col._held)) == col.total
                        continue
                    col = col.column
                assert 0 <= col.pending_rows < col.chunk_len
                assert col.rows % col.chunk_len == 0  # only whole chunks written so far
                assert col._tail is None or len(col._tail) == col.chunk_len
            assert sw.dense["X"].total == sw.n
            assert sw.offsets["hits"].total == sw.n + 1
    assert len(fl.open_store(tmp_path / "m.zarr")["train"]) == sw.n


def test_streaming_write_keeps_rss_flat(tmp_path: Path) -> None:
    """200 MB written in 2 MB blocks grows the process RSS by far less than the data (< 100 MB)."""
    block_rows, row = 512, 1024  # 512 x 1024 float32 = 2 MiB per block, 4 KiB per sample
    base = np.arange(block_rows * row, dtype=np.float32).reshape(block_rows, row)
    block = np.empty_like(base)
    labels = np.zeros(block_rows, np.int64)
    process = psutil.Process()

    def write(path: Path, n_blocks: int) -> int:
        """Write the store; return the peak RSS seen after an append or the close."""
        peak = 0
        with fl.create_store(path) as w:  # auto chunking: 1024 samples = 4 MiB chunks
            for i in range(n_blocks):
                np.add(base, i, out=block)
                w.append("train", {"x": block, "y": labels})
                peak = max(peak, process.memory_info().rss)
        return max(peak, process.memory_info().rss)

    write(tmp_path / "warm.zarr", 4)  # imports, thread pools, allocator arenas
    gc.collect()
    before = process.memory_info().rss
    growth = write(tmp_path / "big.zarr", 100) - before
    split = fl.open_store(tmp_path / "big.zarr")["train"]
    assert len(split) == 100 * block_rows
    assert split.chunk_len == 1024
    np.testing.assert_array_equal(split.read_chunk("x", split.n_chunks - 1)[-1], base[-1] + 99)
    assert growth < 100 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB writing 200 MiB"
