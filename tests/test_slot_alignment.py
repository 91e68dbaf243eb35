"""Every array a loader hands out is 64-byte aligned (TensorFlow and DLPack abort otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl


@pytest.mark.parametrize("batch_size", [1, 7, 100, 129])
@pytest.mark.parametrize(("backend", "workers"), [("process", 2), ("thread", 1), ("process", 0)])
def test_every_field_of_every_batch_is_64_byte_aligned(tmp_path, batch_size, backend, workers):
    """Odd per-sample sizes (12, 8, 1 bytes) and odd batch sizes still give aligned slots."""
    n = 300
    fl.write_arrays(
        tmp_path / "odd.zarr",
        {"train": {"X": np.ones((n, 3), "f4"), "y": np.arange(n), "flag": np.ones(n, np.uint8)}},
        chunk_len=32,
    )
    split = fl.open_store(tmp_path / "odd.zarr")["train"]
    with fl.Loader(split, batch_size, workers=workers, backend=backend, prefetch=3) as loader:
        seen = 0
        for batch in loader:
            for name, array in batch.items():
                assert array.ctypes.data % 64 == 0, f"{name} misaligned by {array.ctypes.data % 64}"
            seen += len(batch["y"])
    assert seen == n
