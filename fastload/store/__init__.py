"""Store format v1: write (streaming, atomic) and open (validated) Zarr v3 stores.

See docs/store-format.md for the on-disk layout.  The writers' layout rule (chunk
lengths, arrays, codecs, shuffle) is :class:`StoreLayout`; :class:`ParallelStore`
writes one store from many tasks (the Dask driver in ``converters/_dask.py``).

Names are imported on first use: a prefetch worker unpickles its chunk decoders
(``fastload.store._decoder``) without importing zarr and the writers, which keeps
a worker's start-up short.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastload.store._awkward import field_name, field_names, fields_from_awkward
    from fastload.store._decoder import ChunkDecoder, RaggedDecoder, preload_decoding
    from fastload.store._layout import ArrayLayout, StoreLayout
    from fastload.store._parallel import ParallelStore, SplitSize
    from fastload.store._provenance import file_checksum, source_entry
    from fastload.store._ragged import Ragged
    from fastload.store._reader import Split, Store, open_store, probe_store
    from fastload.store._schema import (
        FORMAT_VERSION,
        FieldInfo,
        Schema,
        SplitInfo,
        choose_chunk_len,
    )
    from fastload.store._writer import StoreOptions, StoreWriter, create_store, write_arrays

_LAZY = {
    "ArrayLayout": "fastload.store._layout",
    "ChunkDecoder": "fastload.store._decoder",
    "FORMAT_VERSION": "fastload.store._schema",
    "FieldInfo": "fastload.store._schema",
    "ParallelStore": "fastload.store._parallel",
    "Ragged": "fastload.store._ragged",
    "RaggedDecoder": "fastload.store._decoder",
    "Schema": "fastload.store._schema",
    "Split": "fastload.store._reader",
    "SplitInfo": "fastload.store._schema",
    "SplitSize": "fastload.store._parallel",
    "Store": "fastload.store._reader",
    "StoreLayout": "fastload.store._layout",
    "StoreOptions": "fastload.store._writer",
    "StoreWriter": "fastload.store._writer",
    "choose_chunk_len": "fastload.store._schema",
    "create_store": "fastload.store._writer",
    "field_name": "fastload.store._awkward",
    "field_names": "fastload.store._awkward",
    "fields_from_awkward": "fastload.store._awkward",
    "file_checksum": "fastload.store._provenance",
    "open_store": "fastload.store._reader",
    "preload_decoding": "fastload.store._decoder",
    "probe_store": "fastload.store._reader",
    "source_entry": "fastload.store._provenance",
    "write_arrays": "fastload.store._writer",
}

__all__ = [
    "FORMAT_VERSION",
    "ArrayLayout",
    "ChunkDecoder",
    "FieldInfo",
    "ParallelStore",
    "Ragged",
    "RaggedDecoder",
    "Schema",
    "Split",
    "SplitInfo",
    "SplitSize",
    "Store",
    "StoreLayout",
    "StoreOptions",
    "StoreWriter",
    "choose_chunk_len",
    "create_store",
    "field_name",
    "field_names",
    "fields_from_awkward",
    "file_checksum",
    "open_store",
    "preload_decoding",
    "probe_store",
    "source_entry",
    "write_arrays",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastload.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
