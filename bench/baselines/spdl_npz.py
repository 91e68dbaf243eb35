"""Peer: SPDL 0.8 (Meta's thread-based pipeline) over uncompressed NPZ blocks.

SPDL's recommended path for arrays: NPZ files read as bytes and parsed with
``spdl.io.load_npz`` (C++ zip reader, GIL released, zero-copy for stored
entries), stages run on a thread pool of ``workers`` threads.  One NPZ per
store-chunk-sized block (ragged fields as values + offsets, padded in the
pipeline); blocks in a random order, samples shuffled inside each block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._contender import (
    Batch,
    Contender,
    RunConfig,
    Session,
    ensure_format,
    epoch_seed,
    format_dir,
)
from .._data import BenchData, pad_ragged

_PIPELINE_TIMEOUT_S = 120.0


def _write_npz(data: BenchData, folder: Path) -> None:
    import h5py

    with h5py.File(data.hdf5, "r") as h5:
        for block, start in enumerate(range(0, data.n, data.block_len)):
            stop = min(data.n, start + data.block_len)
            arrays: dict[str, np.ndarray] = {}
            for f in data.field_defs:
                if f.ragged:
                    offsets = h5[f.name]["offsets"][start : stop + 1]
                    arrays[f"{f.name}.values"] = h5[f.name]["values"][
                        int(offsets[0]) : int(offsets[-1])
                    ]
                    arrays[f"{f.name}.offsets"] = offsets - offsets[0]
                else:
                    arrays[f.name] = h5[f.name][start:stop]
            np.savez(folder / f"{block:06d}.npz", **arrays)  # stored, not deflated: zero-copy loads


class _EpochSource:
    """Continuous pipeline source: each pass is the next epoch's (block, seed) order."""

    def __init__(self, n_blocks: int, cfg: RunConfig) -> None:
        self.n_blocks, self.cfg = n_blocks, cfg
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(epoch_seed(self.cfg, self.epoch))
        self.epoch += 1
        seeds = rng.integers(0, 2**63, self.n_blocks)
        for block in rng.permutation(self.n_blocks):
            yield int(block), int(seeds[block])


class _SpdlSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        from spdl.pipeline import PipelineBuilder

        self.data, self.cfg = data, cfg
        self.files = sorted(format_dir(data, SpdlNpz.key).glob("*.npz"))
        self.source = _EpochSource(len(self.files), cfg)
        threads = max(1, cfg.workers)
        # built once: the source re-iterates every epoch, so threads persist across epochs
        self._pipeline: Any = (
            PipelineBuilder()
            .add_source(self.source, continuous=True)
            .pipe(self._load, concurrency=threads)
            .pipe(self._batches, concurrency=threads)
            .disaggregate()
            .add_sink(max(1, cfg.prefetch))
            .build(num_threads=threads)
        )
        self._pipeline.start(timeout=_PIPELINE_TIMEOUT_S)

    def _load(self, item: tuple[int, int]) -> tuple[int, Batch]:
        import spdl.io

        block, seed = item
        npz = spdl.io.load_npz(self.files[block].read_bytes())
        out: Batch = {}
        for key in npz.files:
            name, _, part = key.partition(".")
            if part == "values":
                out[name], out[f"{name}_len"] = pad_ragged(
                    npz[key], npz[f"{name}.offsets"], self.data.max_len[name]
                )
            elif not part:
                out[name] = npz[key]
        return seed, out

    def _batches(self, item: tuple[int, Batch]) -> list[Batch]:
        seed, block = item
        rng = np.random.default_rng(seed)
        n = len(next(iter(block.values())))
        perm = rng.permutation(n)
        return [
            {k: v[perm[s : s + self.cfg.batch_size]] for k, v in block.items()}
            for s in range(0, n, self.cfg.batch_size)
        ]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        # the continuous source numbers its passes itself; epochs are iterated in order
        return self._pipeline.get_iterator(timeout=_PIPELINE_TIMEOUT_S)

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop(timeout=_PIPELINE_TIMEOUT_S)


class SpdlNpz(Contender):
    key = "spdl"
    label = "SPDL pipeline (NPZ)"
    family = "peer"
    requires = ("spdl.pipeline", "spdl.io")
    install = "pip install 'spdl==0.8.0'"
    parallel = True
    how = "PipelineBuilder: NPZ block bytes -> spdl.io.load_npz -> in-block shuffle, N threads"

    def prepare(self, data: BenchData) -> None:
        ensure_format(data, self.key, lambda folder: _write_npz(data, folder))

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _SpdlSession(data, cfg)
