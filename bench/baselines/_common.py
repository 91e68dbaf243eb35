"""Helpers shared by the contenders: HDF5 block reads, batch ranges, in-block shuffling.

Everything here is picklable or module-level so that worker processes (spawned
or forked) can use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._data import BenchData, pad_ragged

Batch = dict[str, np.ndarray]


def batch_ranges(n: int, batch_size: int) -> np.ndarray:
    """``(k, 2)`` array of contiguous ``[start, stop)`` batches covering ``range(n)``."""
    starts = np.arange(0, n, batch_size, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + batch_size, n)], axis=1)


def shuffled_ranges(n: int, batch_size: int, seed: np.random.SeedSequence) -> np.ndarray:
    """Contiguous batches in a random order: how HDF5 users shuffle (sample-level reads are slow)."""
    ranges = batch_ranges(n, batch_size)
    return ranges[np.random.default_rng(seed).permutation(len(ranges))]


class H5Reader:
    """Reads samples ``[start, stop)`` of every field from ``source.h5``; ragged fields padded.

    The file is opened on first use, so an instance can be pickled into worker
    processes before any HDF5 handle exists (h5py handles must not cross a fork).
    """

    def __init__(self, data: BenchData) -> None:
        self.path = data.hdf5
        self.fields = [(f.name, f.ragged) for f in data.field_defs]
        self.max_len = dict(data.max_len)
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def _open(self) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def read(self, start: int, stop: int) -> Batch:
        f = self._open()
        out: Batch = {}
        for name, ragged in self.fields:
            if ragged:
                offsets = f[name]["offsets"][start : stop + 1]
                values = f[name]["values"][int(offsets[0]) : int(offsets[-1])]
                out[name], out[f"{name}_len"] = pad_ragged(values, offsets, self.max_len[name])
            else:
                out[name] = f[name][start:stop]
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_all(data: BenchData) -> Batch:
    """The whole dataset in memory (ragged fields padded), read block-wise from HDF5."""
    reader = H5Reader(data)
    try:
        spec = data.batch_spec()
        out = {k: np.empty((data.n, *s.shape), dtype=s.dtype) for k, s in spec.items()}
        step = max(1, data.block_len)
        for start in range(0, data.n, step):
            stop = min(data.n, start + step)
            for k, v in reader.read(start, stop).items():
                out[k][start:stop] = v
        return out
    finally:
        reader.close()


def block_batches(block: Batch, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    """Shuffle the samples of one decoded block and cut it into batches (fresh arrays)."""
    n = len(next(iter(block.values())))
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield {k: v[idx] for k, v in block.items()}


def stack_samples(samples: Sequence[dict[str, np.ndarray]], data_max_len: dict[str, int]) -> Batch:
    """Collate per-sample dicts into a batch; ragged fields (in ``data_max_len``) are padded."""
    out: Batch = {}
    for key in samples[0]:
        if key in data_max_len:
            parts = [s[key] for s in samples]
            counts = np.array([len(p) for p in parts], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(counts)])
            out[key], out[f"{key}_len"] = pad_ragged(
                np.concatenate(parts), offsets, data_max_len[key]
            )
        else:
            out[key] = np.stack([s[key] for s in samples])
    return out


def to_numpy(batch: dict[str, Any]) -> Batch:
    """Framework tensors (torch, tf) to numpy without copying where the framework allows."""
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray):
            out[k] = v
        elif hasattr(v, "numpy"):
            out[k] = v.numpy()
        else:
            out[k] = np.asarray(v)
    return out
