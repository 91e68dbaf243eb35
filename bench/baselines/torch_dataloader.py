"""Baseline: ``torch.utils.data.DataLoader`` over an h5py-backed map-style Dataset.

Done the fast way users do it: the sampler yields whole batches (a
``BatchSampler`` over contiguous indices, in a random batch order), so one
``__getitem__`` reads one contiguous h5py slice per field; ``batch_size=None``
turns off per-sample collation; the HDF5 file is opened lazily in each worker;
workers are persistent across epochs.  Batches travel to the consumer as
tensors in shared memory (torch's file-descriptor passing).  With
``pin_memory=True`` (only where CUDA exists) the main process copies every batch
into page-locked memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import H5Reader, to_numpy


class H5BatchDataset:
    """Map-style dataset: ``ds[[i, i+1, ..., j]]`` reads samples ``i..j`` in one slice per field."""

    def __init__(self, data: BenchData) -> None:
        self.reader = H5Reader(data)  # opens its file lazily, i.e. in the worker
        self.n = data.n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, indices: list[int]) -> Batch:
        start, stop = int(indices[0]), int(indices[-1]) + 1
        if stop - start != len(indices):
            raise IndexError("H5BatchDataset reads contiguous index lists only")
        return self.reader.read(start, stop)


class _TorchSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig, pin_memory: bool) -> None:
        import torch
        from torch.utils.data import (
            BatchSampler,
            DataLoader,
            SequentialSampler,
            SubsetRandomSampler,
        )

        self.cfg = cfg
        self.generator = torch.Generator()
        batches = list(
            BatchSampler(SequentialSampler(range(data.n)), cfg.batch_size, drop_last=False)
        )
        self.loader: Any = DataLoader(
            H5BatchDataset(data),
            sampler=SubsetRandomSampler(batches, generator=self.generator),  # yields index lists
            batch_size=None,  # one __getitem__ is one batch: no per-sample collation
            num_workers=cfg.workers,
            persistent_workers=cfg.workers > 0,
            pin_memory=pin_memory,
        )

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.generator.manual_seed(int(epoch_seed(self.cfg, epoch).generate_state(1)[0]))
        for batch in self.loader:
            yield to_numpy(batch)

    def close(self) -> None:
        loader, self.loader = self.loader, None
        if loader is not None:
            it = getattr(loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                with contextlib.suppress(Exception):
                    it._shutdown_workers()
            del loader


class TorchDataLoader(Contender):
    key = "torch"
    label = "torch DataLoader (h5py)"
    requires = ("torch",)
    install = "pip install 'torch==2.13.0' (CPU wheel)"
    parallel = True
    sweep = True
    quick = True
    how = "DataLoader(num_workers=N, sampler=batches in random order, batch_size=None), h5py slices"
    pin_memory = False

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _TorchSession(data, cfg, self.pin_memory)


class TorchDataLoaderPinned(TorchDataLoader):
    key = "torch-pinned"
    label = "torch DataLoader (h5py, pinned)"
    sweep = False
    quick = False
    how = TorchDataLoader.how + ", pin_memory=True"
    pin_memory = True

    def not_applicable(self, data: BenchData, cfg: RunConfig) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "pin_memory needs CUDA; none on this machine"
        return None
