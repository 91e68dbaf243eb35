"""Peer: WebDataset 1.0.2 — tar shards of per-sample ``.npy`` files, read by a DataLoader.

WebDataset's recommended layout: POSIX tar shards, one ``<key>.<field>.npy``
member per field and sample (ragged fields unpadded), 16 shards.  Reading:
``WebDataset(shards, shardshuffle=..., seed=...)`` split across DataLoader
workers, a 1000-sample shuffle buffer, ``np.load(allow_pickle=False)`` per
member, ``batched()`` with padding of ragged fields, ``WebLoader(num_workers=N)``.
"""

from __future__ import annotations

import contextlib
import io
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

_SHARDS = 16
_SHUFFLE_BUFFER = 1000


def _write_shards(data: BenchData, folder: Path) -> None:
    import h5py
    import webdataset as wds

    per_shard = -(-data.n // _SHARDS)
    with h5py.File(data.hdf5, "r") as h5:
        for shard, start in enumerate(range(0, data.n, per_shard)):
            stop = min(data.n, start + per_shard)
            block: dict[str, Any] = {}
            for f in data.field_defs:
                if f.ragged:
                    offsets = h5[f.name]["offsets"][start : stop + 1]
                    values = h5[f.name]["values"][int(offsets[0]) : int(offsets[-1])]
                    block[f.name] = (values, offsets - offsets[0])
                else:
                    block[f.name] = h5[f.name][start:stop]
            with wds.TarWriter(str(folder / f"shard-{shard:04d}.tar")) as sink:
                for i in range(stop - start):
                    sample: dict[str, Any] = {"__key__": f"{start + i:09d}"}
                    for name, value in block.items():
                        if isinstance(value, tuple):
                            values, offsets = value
                            arr = values[offsets[i] : offsets[i + 1]]
                        else:
                            arr = value[i]
                        buf = io.BytesIO()
                        np.save(buf, np.asarray(arr), allow_pickle=False)
                        sample[f"{name}.npy"] = buf.getvalue()
                    sink.write(sample)


class DecodeNpy:
    """``{"x.npy": bytes, ...}`` -> ``{"X": array, ...}``, never unpickling.

    WebDataset lower-cases member suffixes, so field names are mapped back.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = {name.lower(): name for name in names}

    def __call__(self, sample: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            self.names[k[: -len(".npy")]]: np.load(io.BytesIO(v), allow_pickle=False)
            for k, v in sample.items()
            if k.endswith(".npy")
        }


class Collate:
    """Stack per-sample dicts into a batch, padding ragged fields."""

    def __init__(self, max_len: dict[str, int]) -> None:
        self.max_len = dict(max_len)

    def __call__(self, samples: list[dict[str, np.ndarray]]) -> Batch:
        # WebDataset's map() puts "__key__" back into every sample
        fields = [{k: v for k, v in s.items() if not k.startswith("__")} for s in samples]
        return stack_samples(fields, self.max_len)


class _WdsSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        import webdataset as wds

        urls = [str(p) for p in sorted(format_dir(data, WebDatasetTar.key).glob("*.tar"))]
        seed = int(epoch_seed(cfg, 0).generate_state(1)[0])
        dataset = (
            wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, empty_check=False)
            .shuffle(_SHUFFLE_BUFFER, seed=seed)
            .map(DecodeNpy([f.name for f in data.field_defs]))
            .batched(cfg.batch_size, collation_fn=Collate(data.max_len), partial=True)
        )
        # built once with persistent workers, as a training script does
        self._loader: Any = wds.WebLoader(
            dataset, batch_size=None, num_workers=cfg.workers, persistent_workers=cfg.workers > 0
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


class WebDatasetTar(Contender):
    key = "webdataset"
    label = "WebDataset (tar of .npy)"
    family = "peer"
    requires = ("webdataset", "torch")
    install = "pip install 'webdataset==1.0.2' 'torch==2.13.0'"
    parallel = True
    how = "16 tar shards of per-sample .npy, shard shuffle + 1000-sample buffer, WebLoader(num_workers=N)"

    def prepare(self, data: BenchData) -> None:
        ensure_format(data, self.key, lambda folder: _write_shards(data, folder))

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _WdsSession(data, cfg)
