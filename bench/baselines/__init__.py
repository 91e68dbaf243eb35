"""The contenders of ``python -m bench.throughput``, one module each (see :mod:`bench._contender`).

Importing this package imports no framework: each contender imports its
library when it is opened, so a missing package skips only that contender.
"""

from __future__ import annotations

from .._contender import Contender
from .blosc2_ndarray import Blosc2NDArray
from .fastload_loader import (
    FastloadMix,
    FastloadMixThread,
    FastloadPremixed,
    FastloadPremixedThread,
)
from .in_memory import InMemory
from .litdata_stream import LitdataStreaming
from .naive_generator import NaiveGenerator
from .pipe_queue import PipeQueue
from .spdl_npz import SpdlNpz
from .tensorstore_zarr import TensorstoreZarr
from .tf_data import TfData
from .torch_dataloader import TorchDataLoader, TorchDataLoaderPinned
from .torchdata_nodes import TorchdataNodes
from .webdataset_tar import WebDatasetTar

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
