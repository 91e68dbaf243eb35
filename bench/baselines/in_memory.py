"""Reference: the whole dataset preloaded in numpy, batches gathered by a random permutation.

This is the ceiling a loader can approach (no I/O, no decoding, one gather per
batch), and what users do when the data fits in RAM.  Its time to first batch
includes reading everything, and its memory is the whole dataset.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import read_all


class _InMemorySession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.arrays: Batch | None = read_all(data)
        self.n = data.n

    def epoch(self, epoch: int) -> Iterator[Batch]:
        assert self.arrays is not None, "session is closed"
        perm = np.random.default_rng(epoch_seed(self.cfg, epoch)).permutation(self.n)
        for start in range(0, self.n, self.cfg.batch_size):
            idx = perm[start : start + self.cfg.batch_size]
            yield {k: v[idx] for k, v in self.arrays.items()}  # X[idx]: a fresh copy per batch

    def close(self) -> None:
        self.arrays = None


class InMemory(Contender):
    key = "in-memory"
    label = "in memory (numpy)"
    family = "reference"
    quick = True
    how = "whole dataset in RAM, X[perm[i:i+B]] per batch, one thread"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _InMemorySession(data, cfg)
