"""Chunk-wise reading shared by the single-process peers (tensorstore, blosc2).

Each epoch visits read blocks (``BenchData.block_len`` samples, the store's
chunk length) in a random order, keeps ``prefetch`` block reads in flight when
the library reads asynchronously, and shuffles samples inside each block
before cutting batches — the access pattern a chunked format rewards.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._contender import Batch, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import block_batches


class BlockSession(Session):
    """Session over shuffled blocks; subclasses start and finish the read of one block."""

    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        self.data, self.cfg = data, cfg
        self.block_len = data.block_len
        self.n_blocks = -(-data.n // self.block_len)

    def bounds(self, block: int) -> tuple[int, int]:
        start = block * self.block_len
        return start, min(self.data.n, start + self.block_len)

    @abstractmethod
    def submit(self, block: int) -> Any:
        """Start reading ``block``; returns a handle for :meth:`finish`."""

    @abstractmethod
    def finish(self, handle: Any) -> Batch:
        """Wait for a read started by :meth:`submit` and return the block's arrays."""

    def epoch(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng(epoch_seed(self.cfg, epoch))
        inflight: deque[Any] = deque()
        depth = max(1, self.cfg.prefetch)
        for block in rng.permutation(self.n_blocks):
            inflight.append(self.submit(int(block)))
            if len(inflight) >= depth:
                yield from block_batches(self.finish(inflight.popleft()), self.cfg.batch_size, rng)
        while inflight:
            yield from block_batches(self.finish(inflight.popleft()), self.cfg.batch_size, rng)
