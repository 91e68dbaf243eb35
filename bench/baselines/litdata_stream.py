"""Peer: Lightning's litdata 0.2.76 — ``optimize()`` chunks read by a StreamingDataLoader.

litdata's own format: ``litdata.optimize`` serialises each sample (numpy
arrays with their own serializer, ragged fields unpadded) into binary chunks
of 16 MB; ``StreamingDataset(shuffle=True)`` reads them chunk by chunk in
DataLoader workers and ``StreamingDataLoader(num_workers=N)`` collates batches
(ragged fields padded in the collate function).
"""

from __future__ import annotations

import contextlib
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
from .._data import BenchData
from ._common import stack_samples, to_numpy


def samples_of_range(
    item: tuple[str, list[tuple[str, bool]], int, int],
) -> Iterator[dict[str, np.ndarray]]:
    """``optimize`` worker function: the samples ``[start, stop)`` of the HDF5 file."""
    import h5py

    path, fields, start, stop = item
    with h5py.File(path, "r") as h5:
        block: dict[str, Any] = {}
        for name, ragged in fields:
            if ragged:
                offsets = h5[name]["offsets"][start : stop + 1]
                block[name] = (
                    h5[name]["values"][int(offsets[0]) : int(offsets[-1])],
                    offsets - offsets[0],
                )
            else:
                block[name] = h5[name][start:stop]
    for i in range(stop - start):
        sample = {}
        for name, value in block.items():
            if isinstance(value, tuple):
                values, offsets = value
                sample[name] = np.ascontiguousarray(values[offsets[i] : offsets[i + 1]])
            else:
                sample[name] = np.ascontiguousarray(value[i])
        yield sample


def _optimize(data: BenchData, folder: Path) -> None:
    from litdata import optimize

    fields = [(f.name, f.ragged) for f in data.field_defs]
    step = max(1, data.block_len)
    inputs = [(data.hdf5, fields, s, min(data.n, s + step)) for s in range(0, data.n, step)]
    optimize(
        fn=samples_of_range,
        inputs=inputs,
        output_dir=str(folder),
        chunk_bytes="16MB",
        num_workers=1,
        mode="overwrite",
        verbose=False,
        start_method="spawn",
    )


class Collate:
    """Stack litdata samples into a batch: restore scalar shapes (stored as (1,)), pad ragged fields."""

    def __init__(self, data: BenchData) -> None:
        self.max_len = dict(data.max_len)
        self.shapes = {f.name: f.shape for f in data.field_defs if not f.ragged}

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        fixed = []
        for s in samples:
            arrays = to_numpy(s)
            fixed.append(
                {k: v.reshape(self.shapes[k]) if k in self.shapes else v for k, v in arrays.items()}
            )
        return stack_samples(fixed, self.max_len)


class _LitdataSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        from litdata import StreamingDataLoader, StreamingDataset

        seed = int(epoch_seed(cfg, 0).generate_state(1)[0] % 2**31)
        dataset = StreamingDataset(
            str(format_dir(data, LitdataStreaming.key)), shuffle=True, seed=seed, drop_last=False
        )
        # built once: the loader reshuffles every epoch itself (seed + epoch)
        self._loader: Any = StreamingDataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            collate_fn=Collate(data),
            persistent_workers=cfg.workers > 0,
        )

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for batch in self._loader:
            yield to_numpy(batch)

    def close(self) -> None:
        loader, self._loader = self._loader, None
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            with contextlib.suppress(Exception):
                it._shutdown_workers()


class LitdataStreaming(Contender):
    key = "litdata"
    label = "litdata StreamingDataset"
    family = "peer"
    requires = ("litdata", "torch")
    install = "pip install 'litdata==0.2.76' 'torch==2.13.0'"
    parallel = True
    how = "litdata.optimize() 16 MB chunks, StreamingDataset(shuffle=True), StreamingDataLoader(num_workers=N)"

    def prepare(self, data: BenchData) -> None:
        ensure_format(data, self.key, lambda folder: _optimize(data, folder))

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _LitdataSession(data, cfg)
