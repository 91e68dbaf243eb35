"""Peer: python-blosc2 NDArrays (``.b2nd`` files, LZ4 + shuffle, the store's chunking).

Blosc2's own container: one file per field, decompressed with blosc2's
internal threads (``workers``), read chunk-aligned in a shuffled block order
in one process.  Reads are synchronous (no prefetch), as the API offers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._contender import Batch, Contender, RunConfig, Session, ensure_format, format_dir
from .._data import BenchData, pad_ragged
from ._blocks import BlockSession


def _chunk_rows(data: BenchData, shape: tuple[int, ...], itemsize: int) -> int:
    """Per-sample arrays use the store's chunk length; ragged values/offsets ~4 MiB chunks."""
    if shape[0] == data.n:
        return data.block_len
    row = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    return max(1, min(shape[0], 4 * 2**20 // max(1, row)))


def _write_b2nd(data: BenchData, folder: Path) -> None:
    import blosc2
    import h5py

    cparams = blosc2.CParams(codec=blosc2.Codec.LZ4, clevel=5, filters=[blosc2.Filter.SHUFFLE])
    with h5py.File(data.hdf5, "r") as h5:
        arrays: dict[str, Any] = {}
        for f in data.field_defs:
            sources = (
                {f.name: h5[f.name]}
                if not f.ragged
                else {
                    f"{f.name}.values": h5[f.name]["values"],
                    f"{f.name}.offsets": h5[f.name]["offsets"],
                }
            )
            for name, src in sources.items():
                chunk = _chunk_rows(data, src.shape, src.dtype.itemsize)
                dst = blosc2.empty(
                    shape=src.shape,
                    dtype=src.dtype,
                    chunks=(chunk, *src.shape[1:]),
                    urlpath=str(folder / f"{name}.b2nd"),
                    mode="w",
                    cparams=cparams,
                )
                arrays[name] = (src, dst)
        step = 8 * data.block_len
        for src, dst in arrays.values():
            for start in range(0, src.shape[0], step):
                dst[start : start + step] = src[start : start + step]


class _Blosc2Session(BlockSession):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        super().__init__(data, cfg)
        import blosc2

        blosc2.set_nthreads(max(1, cfg.workers))
        folder = format_dir(data, Blosc2NDArray.key)
        self.dense = {}
        self.ragged: dict[str, tuple[Any, np.ndarray]] = {}
        for f in data.field_defs:
            if f.ragged:
                offsets = blosc2.open(str(folder / f"{f.name}.offsets.b2nd"), mode="r")[:]
                self.ragged[f.name] = (
                    blosc2.open(str(folder / f"{f.name}.values.b2nd"), mode="r"),
                    offsets,
                )
            else:
                self.dense[f.name] = blosc2.open(str(folder / f"{f.name}.b2nd"), mode="r")

    def submit(self, block: int) -> Any:
        return block  # blosc2 reads synchronously; the work happens in finish()

    def finish(self, handle: Any) -> Batch:
        start, stop = self.bounds(handle)
        out: Batch = {k: a[start:stop] for k, a in self.dense.items()}
        for k, (values, offsets) in self.ragged.items():
            off = offsets[start : stop + 1]
            out[k], out[f"{k}_len"] = pad_ragged(
                values[int(off[0]) : int(off[-1])], off, self.data.max_len[k]
            )
        return out


class Blosc2NDArray(Contender):
    key = "blosc2"
    label = "blosc2 NDArray (.b2nd)"
    family = "peer"
    requires = ("blosc2",)
    install = "pip install blosc2"
    parallel = True
    how = (
        "one .b2nd per field (LZ4+shuffle), chunk-aligned slices in shuffled order, blosc2 threads"
    )

    def prepare(self, data: BenchData) -> None:
        ensure_format(data, self.key, lambda folder: _write_b2nd(data, folder))

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _Blosc2Session(data, cfg)
