"""Peer: torchdata 0.11 ``nodes`` — ParallelMapper over HDF5 batch reads.

``IterableWrapper(shuffled batch ranges) -> ParallelMapper(read, method="process")
-> Prefetcher -> Loader``: the composable successor of the DataLoader.  Worker
processes (h5py's global lock makes threads useless here) return batches through
multiprocessing queues, i.e. pickled through pipes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import H5Reader, shuffled_ranges


class ReadRange:
    """Picklable map function: ``(start, stop) -> batch`` from HDF5."""

    def __init__(self, data: BenchData) -> None:
        self.reader = H5Reader(data)

    def __call__(self, bounds: tuple[int, int]) -> Batch:
        return self.reader.read(*bounds)


def _shutdown(node: Any) -> None:
    """Stop the worker processes of a ParallelMapper (torchdata only does it in __del__)."""
    impl = getattr(node, "_it", None)
    inner = getattr(impl, "_it", None)
    if inner is not None and hasattr(inner, "_shutdown"):
        inner._shutdown()
        for w in getattr(inner, "_workers", []):
            if hasattr(w, "terminate") and w.is_alive():
                w.terminate()
                w.join(timeout=5)


class _NodesSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        self.data, self.cfg = data, cfg
        self._mapper: Any = None

    def epoch(self, epoch: int) -> Iterator[Batch]:
        import torchdata.nodes as tn

        ranges = [
            (int(a), int(b))
            for a, b in shuffled_ranges(
                self.data.n, self.cfg.batch_size, epoch_seed(self.cfg, epoch)
            )
        ]
        self._mapper = tn.ParallelMapper(
            tn.IterableWrapper(ranges),
            map_fn=ReadRange(self.data),
            num_workers=max(1, self.cfg.workers),
            in_order=False,
            method="process",
        )
        loader = tn.Loader(tn.Prefetcher(self._mapper, prefetch_factor=max(1, self.cfg.prefetch)))
        try:
            yield from loader
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._mapper is not None:
            with contextlib.suppress(Exception):
                _shutdown(self._mapper)
            self._mapper = None

    def close(self) -> None:
        self._stop()


class TorchdataNodes(Contender):
    key = "torchdata-nodes"
    label = "torchdata.nodes (h5py)"
    family = "peer"
    requires = ("torchdata.nodes",)
    install = "pip install 'torchdata==0.11.0' 'torch==2.13.0'"
    parallel = True
    how = "IterableWrapper(batch ranges) -> ParallelMapper(h5py read, process) -> Prefetcher -> Loader"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _NodesSession(data, cfg)
