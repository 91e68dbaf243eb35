"""The contenders of ``python -m bench.throughput``, one module each (see :mod:`bench._contender`).

Importing this package imports no framework: each contender imports its
library when it is opened, so a missing package skips only that contender.
"""

from __future__ import annotations

from bench._contender import Contender
from bench.baselines.blosc2_ndarray import Blosc2NDArray
from bench.baselines.fastload_loader import (
    FastloadMix,
    FastloadMixThread,
    FastloadPremixed,
    FastloadPremixedThread,
)
from bench.baselines.in_memory import InMemory
from bench.baselines.litdata_stream import LitdataStreaming
from bench.baselines.naive_generator import NaiveGenerator
from bench.baselines.pipe_queue import PipeQueue
from bench.baselines.spdl_npz import SpdlNpz
from bench.baselines.tensorstore_zarr import TensorstoreZarr
from bench.baselines.tf_data import TfData
from bench.baselines.torch_dataloader import TorchDataLoader, TorchDataLoaderPinned
from bench.baselines.torchdata_nodes import TorchdataNodes
from bench.baselines.webdataset_tar import WebDatasetTar

#: every contender, in table order: reference, baselines, peers, fastload
CONTENDERS: tuple[type[Contender], ...] = (
    InMemory,
    NaiveGenerator,
    PipeQueue,
    TorchDataLoader,
    TorchDataLoaderPinned,
    TfData,
    TensorstoreZarr,
    SpdlNpz,
    TorchdataNodes,
    WebDatasetTar,
    Blosc2NDArray,
    LitdataStreaming,
    FastloadPremixed,
    FastloadPremixedThread,
    FastloadMix,
    FastloadMixThread,
)


def contender(key: str) -> Contender:
    """A contender instance by key (``KeyError`` listing the keys otherwise)."""
    for cls in CONTENDERS:
        if cls.key == key:
            return cls()
    raise KeyError(f"unknown contender {key!r}; choose from {[c.key for c in CONTENDERS]}")


__all__ = ["CONTENDERS", "contender"]
