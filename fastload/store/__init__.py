"""Store format v1: write (streaming, atomic) and open (validated) Zarr v3 stores.

See docs/store-format.md for the on-disk layout.  The writers' layout rule (chunk
lengths, arrays, codecs, shuffle) is :class:`StoreLayout`; :class:`ParallelStore`
writes one store from many tasks (the Dask driver in ``converters/_dask.py``).
"""

from __future__ import annotations

from fastload.store._awkward import field_name, field_names, fields_from_awkward
from fastload.store._decoder import ChunkDecoder, RaggedDecoder
from fastload.store._layout import ArrayLayout, StoreLayout
from fastload.store._parallel import ParallelStore, SplitSize
from fastload.store._provenance import file_checksum, source_entry
from fastload.store._ragged import Ragged
from fastload.store._reader import Split, Store, open_store, probe_store
from fastload.store._schema import FORMAT_VERSION, FieldInfo, Schema, SplitInfo, choose_chunk_len
from fastload.store._writer import StoreOptions, StoreWriter, create_store, write_arrays

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
    "probe_store",
    "source_entry",
    "write_arrays",
]
