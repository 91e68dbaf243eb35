"""Peer: TensorStore reading the very same Zarr v3 store fastload reads.

The fairest same-format comparison: Google's C++ Zarr implementation decodes
the Blosc chunks on its own thread pool (``data_copy_concurrency`` =
``workers``) with ``prefetch`` block reads in flight, in one process; the
Python side shuffles samples inside each block and cuts batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._contender import Batch, Contender, RunConfig, Session
from .._data import BenchData, pad_ragged
from ._blocks import BlockSession


class _TensorstoreSession(BlockSession):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        super().__init__(data, cfg)
        import tensorstore as ts

        limit = max(1, cfg.workers)
        ctx = ts.Context(
            {
                "data_copy_concurrency": {"limit": limit},
                "file_io_concurrency": {"limit": max(2, limit)},
                "cache_pool": {"total_bytes_limit": 0},
            }
        )

        def open_array(path: str) -> Any:
            spec = {
                "driver": "zarr3",
                "kvstore": {"driver": "file", "path": f"{data.store}/train/{path}"},
            }
            return ts.open(spec, context=ctx, read=True).result()

        self.dense: dict[str, Any] = {}
        self.ragged: dict[str, tuple[Any, np.ndarray]] = {}
        for f in data.field_defs:
            if f.ragged:
                offsets = open_array(f"{f.name}/offsets").read().result()
                self.ragged[f.name] = (open_array(f"{f.name}/values"), offsets)
            else:
                self.dense[f.name] = open_array(f.name)

    def submit(self, block: int) -> Any:
        start, stop = self.bounds(block)
        futures = {k: a[start:stop].read() for k, a in self.dense.items()}
        for k, (values, offsets) in self.ragged.items():
            a, b = int(offsets[start]), int(offsets[stop])
            futures[k] = (values[a:b].read(), offsets[start : stop + 1])
        return futures

    def finish(self, handle: Any) -> Batch:
        out: Batch = {}
        for k, fut in handle.items():
            if k in self.ragged:
                values, offsets = fut[0].result(), fut[1]
                out[k], out[f"{k}_len"] = pad_ragged(values, offsets, self.data.max_len[k])
            else:
                out[k] = fut.result()
        return out


class TensorstoreZarr(Contender):
    key = "tensorstore"
    label = "TensorStore (same Zarr store)"
    family = "peer"
    requires = ("tensorstore",)
    install = "pip install tensorstore"
    parallel = True
    how = "tensorstore zarr3 driver on the fastload store; shuffled chunks, in-chunk shuffle, async reads"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _TensorstoreSession(data, cfg)
