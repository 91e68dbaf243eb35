"""fastload: feed deep-learning training in fundamental physics at the speed of memory.

Public API (see docs/ and shared DESIGN)::

    import fastload as fl
    fl.write_arrays("toy.zarr", {"train": {"X": X, "y": y}})
    store = fl.open_store("toy.zarr")
    for batch in fl.Loader(store["train"], batch_size=1024):
        ...

Names are imported on first use, so that a prefetch worker (which imports
``fastload._engine``) does not pay for zarr and the rest of the package, and
``import fastload`` stays cheap and never loads torch or TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from fastload._version import __version__

# a library logs, the application decides where it goes (warnings still surface as warnings)
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from fastload import adapters, datasets, errors, store, synthetic, transforms
    from fastload._memory import MemorySplit, from_arrays
    from fastload._selection import Selection
    from fastload._source import DenseChunkDecoder, RaggedChunkDecoder, Source
    from fastload._spec import FieldSpec
    from fastload.feed import Feed, attach
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

_LAZY = {
    "DenseChunkDecoder": "fastload._source",
    "FORMAT_VERSION": "fastload.store",
    "FieldInfo": "fastload.store",
    "Feed": "fastload.feed",
    "FieldSpec": "fastload._spec",
    "MemorySplit": "fastload._memory",
    "RaggedChunkDecoder": "fastload._source",
    "Selection": "fastload._selection",
    "Source": "fastload._source",
    "attach": "fastload.feed",
    "from_arrays": "fastload._memory",
    "Loader": "fastload.loader",
    "Mix": "fastload.mix",
    "Ragged": "fastload.store",
    "Split": "fastload.store",
    "Store": "fastload.store",
    "StoreWriter": "fastload.store",
    "create_store": "fastload.store",
    "open_store": "fastload.store",
    "write_arrays": "fastload.store",
}
_SUBMODULES = ("adapters", "datasets", "errors", "feed", "store", "synthetic", "transforms")

__all__ = [
    "FORMAT_VERSION",
    "DenseChunkDecoder",
    "Feed",
    "FieldInfo",
    "FieldSpec",
    "Loader",
    "MemorySplit",
    "Mix",
    "Ragged",
    "RaggedChunkDecoder",
    "Selection",
    "Source",
    "Split",
    "Store",
    "StoreWriter",
    "__version__",
    "adapters",
    "attach",
    "create_store",
    "datasets",
    "errors",
    "feed",
    "from_arrays",
    "open_store",
    "store",
    "synthetic",
    "transforms",
    "write_arrays",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"fastload.{name}")
    else:
        raise AttributeError(f"module 'fastload' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The API and the module's dunders; not the imports of this file, nor the
    # internal submodules (``_engine``, ``loader``) that lazy imports attach.
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
