"""Store format v1: write (streaming, atomic) and open (validated) Zarr v3 stores.

See docs/store-format.md for the on-disk layout.
"""

from __future__ import annotations

from fastload.store._decoder import ChunkDecoder, RaggedDecoder
from fastload.store._provenance import file_checksum
from fastload.store._ragged import Ragged
from fastload.store._reader import Split, Store, open_store, probe_store
from fastload.store._schema import FORMAT_VERSION, FieldInfo, Schema, SplitInfo, choose_chunk_len
from fastload.store._writer import StoreWriter, create_store, write_arrays

__all__ = [
    "FORMAT_VERSION",
    "ChunkDecoder",
    "FieldInfo",
    "Ragged",
    "RaggedDecoder",
    "Schema",
    "Split",
    "SplitInfo",
    "Store",
    "StoreWriter",
    "choose_chunk_len",
    "create_store",
    "file_checksum",
    "open_store",
    "probe_store",
    "write_arrays",
]
