"""Baseline: a Keras-style Python generator reading the HDF5 file batch by batch.

What most analysis code does: one process, ``h5py`` slices of contiguous
samples, batches in a shuffled order (sample-level random reads from HDF5 are
one to two orders of magnitude slower, so nobody shuffles per sample), no
prefetching — decoding and training alternate.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import H5Reader, shuffled_ranges


def hdf5_batch_generator(reader: H5Reader, n: int, cfg: RunConfig, epoch: int) -> Iterator[Batch]:
    """The generator a Keras user passes to ``model.fit``: shuffled batch order, h5py slices."""
    for start, stop in shuffled_ranges(n, cfg.batch_size, epoch_seed(cfg, epoch)):
        yield reader.read(int(start), int(stop))


class _GeneratorSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        self.reader = H5Reader(data)
        self.n = data.n
        self.cfg = cfg

    def epoch(self, epoch: int) -> Iterator[Batch]:
        return hdf5_batch_generator(self.reader, self.n, self.cfg, epoch)

    def close(self) -> None:
        self.reader.close()


class NaiveGenerator(Contender):
    key = "naive-h5py"
    label = "naive generator (h5py)"
    quick = True
    how = "Python generator, h5py contiguous slices, shuffled batch order, no prefetch"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _GeneratorSession(data, cfg)
