"""fastload: feed deep-learning training in fundamental physics at the speed of memory.

Public API (see docs/ and shared DESIGN)::

    import fastload as fl
    fl.write_arrays("toy.zarr", {"train": {"X": X, "y": y}})
    store = fl.open_store("toy.zarr")
"""

from __future__ import annotations

from fastload import errors, transforms
from fastload._spec import FieldSpec
from fastload._version import __version__
from fastload.loader import Loader
from fastload.mix import Mix
from fastload.store import (
    FORMAT_VERSION,
    FieldInfo,
    Ragged,
    Split,
    Store,
    StoreWriter,
    create_store,
    open_store,
    write_arrays,
)

__all__ = [
    "FORMAT_VERSION",
    "FieldInfo",
    "FieldSpec",
    "Loader",
    "Mix",
    "Ragged",
    "Split",
    "Store",
    "StoreWriter",
    "__version__",
    "create_store",
    "errors",
    "open_store",
    "transforms",
    "write_arrays",
]
