"""The prefetch engine: shared-memory arena, worker pool, scheduler (internal).

What the loader uses is exported here, resolved on first use: a worker process imports
``fastload._engine._child`` and must not pay for the coordinator's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastload._engine._arena import Arena, Layout, Region
    from fastload._engine._engine import (
        Engine,
        EngineSpec,
        chunk_key_offsets,
        copied_batch,
        input_specs,
        slot_batch,
    )
    from fastload._engine._memcache import MEMORY_CACHE_AUTO
    from fastload._engine._pool import BACKENDS
    from fastload._engine._scheduler import ChunkTable, chunk_table, within_batch_order

_EXPORTS = {
    "Arena": "fastload._engine._arena",
    "Layout": "fastload._engine._arena",
    "Region": "fastload._engine._arena",
    "BACKENDS": "fastload._engine._pool",
    "MEMORY_CACHE_AUTO": "fastload._engine._memcache",
    "ChunkTable": "fastload._engine._scheduler",
    "Engine": "fastload._engine._engine",
    "EngineSpec": "fastload._engine._engine",
    "chunk_key_offsets": "fastload._engine._engine",
    "copied_batch": "fastload._engine._engine",
    "slot_batch": "fastload._engine._engine",
    "chunk_table": "fastload._engine._scheduler",
    "input_specs": "fastload._engine._engine",
    "within_batch_order": "fastload._engine._scheduler",
}

__all__ = [
    "BACKENDS",
    "MEMORY_CACHE_AUTO",
    "Arena",
    "ChunkTable",
    "Engine",
    "EngineSpec",
    "Layout",
    "Region",
    "chunk_key_offsets",
    "chunk_table",
    "copied_batch",
    "input_specs",
    "slot_batch",
    "within_batch_order",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastload._engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
