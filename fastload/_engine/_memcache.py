"""Decoded chunks kept in the arena: ``fl.Loader(..., memory_cache=True)``.

The first time a chunk task runs for a cached chunk (a *fill*), the worker
decodes the chunk into the chunk's place in the arena instead of its scratch
buffer and copies its rows to the batch slots from there.  Once the
coordinator has that task's :class:`~fastload._engine._protocol.Done`, later
tasks for the chunk (the next epochs) are *hits*: the worker copies the rows
from the arena, with no file read, no decompression and no checksum.

Why this keeps tasks independent
    A chunk is a hit only after its fill is done, and the reply crossed a pipe
    (or a queue) before the hit task was sent: every write of the fill happens
    before every read of a hit.  Inside one epoch each chunk has one task, so a
    fill never runs beside a hit or another fill of its chunk (the scheduler
    also tracks fills in flight).  A fill that fails, or whose worker dies,
    leaves its chunk uncached; the restarted worker's re-sent task fills it.

Layout (per source ``s`` with ``K`` cached chunks of ``L`` samples)
    * dense field ``f``: ``cache/s/f`` holds ``K * L`` rows (the whole last
      chunk, padding included, as ``decode_into`` writes it);
    * ragged field ``f``: ``cache/s/f/values`` holds the value rows of samples
      ``0 .. min(K * L, n) - 1`` back to back and ``cache/s/f/offsets`` their
      offsets from 0, written by the coordinator from the source's row counts
      before any worker starts.  A fill checks the decoded counts against them
      (:class:`~fastload.errors.StoreChangedError` otherwise) and a hit hands
      the executor the whole values region with the chunk's absolute offsets
      (the decoder contract: offsets need not start at 0).

Which chunks
    The first ``K_s`` chunks of every source, the same fraction of each
    source's decoded bytes, within the budget: ``memory_cache=True`` takes
    every chunk if they fit in half of the memory that can back the arena
    (``/dev/shm`` for process workers), an integer is a bound in bytes.  The
    pages are allocated as chunks are filled and freed with the arena.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from fastload._engine._arena import Layout
from fastload._source import Source

logger = logging.getLogger(__name__)

#: ``ChunkTask.cache`` values
NO_CACHE, FILL, HIT = 0, 1, 2
#: ``EngineSpec.memory_cache`` for ``memory_cache=True``: as much as fits
AUTO = -1
MEMORY_CACHE_AUTO = AUTO  # the name the loader imports


@dataclass(frozen=True)
class CachePlan:
    """Which chunks of which source are kept decoded, and the offsets of their ragged fields."""

    chunks: tuple[int, ...]  # per source: chunks 0 .. chunks[s] - 1 are cached
    nbytes: int
    #: (source, field) -> offsets from 0 of the cached samples' value rows
    offsets: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return any(self.chunks)

    def add_regions(
        self, layout: Layout, sources: tuple[Source, ...], fields: tuple[str, ...]
    ) -> None:
        """Add the cache's regions to ``layout`` (after the slots: they are touched only when filled)."""
        for s, k in enumerate(self.chunks):
            if not k:
                continue
            source = sources[s]
            for fname in fields:
                info = source.fields[fname]
                if info.ragged:
                    offsets = self.offsets[(s, fname)]
                    rows = int(offsets[-1])
                    layout.add(f"cache/{s}/{fname}/values", (max(rows, 1), *info.shape), info.dtype)
                    layout.add(f"cache/{s}/{fname}/offsets", offsets.shape, np.int64)
                else:
                    layout.add(
                        f"cache/{s}/{fname}", (k * source.chunk_len, *info.shape), info.dtype
                    )

    def write_offsets(self, arena: object) -> None:
        """Write the ragged fields' offsets into the arena (before any worker reads them)."""
        for (s, fname), offsets in self.offsets.items():
            arena[f"cache/{s}/{fname}/offsets"][:] = offsets  # type: ignore[index]


def plan_cache(
    sources: tuple[Source, ...],
    fields: tuple[str, ...],
    counts: dict[str, tuple[np.ndarray | None, ...]],
    budget: int,
) -> CachePlan:
    """Choose the cached chunks: every chunk if all fit in ``budget`` bytes, else a prefix of each source.

    ``counts[f][s]`` are the row counts of ragged field ``f`` in source ``s``
    (``None``: unknown, and the source is not cached).
    """
    per_chunk: list[np.ndarray | None] = []  # cumulative bytes of chunks 0..c per source
    for s, source in enumerate(sources):
        n, length = len(source), source.chunk_len
        chunk_bytes = np.zeros(source.n_chunks, dtype=np.int64)
        for fname in fields:
            info = source.fields[fname]
            row = int(np.prod(info.shape, dtype=np.int64)) * np.dtype(info.dtype).itemsize
            if not info.ragged:
                chunk_bytes += length * row
                continue
            rows = counts[fname][s]
            if rows is None:
                per_chunk.append(None)
                break
            cum = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(rows, out=cum[1:])
            ends = np.minimum(np.arange(1, source.n_chunks + 1, dtype=np.int64) * length, n)
            starts = np.arange(source.n_chunks, dtype=np.int64) * length
            chunk_bytes += (cum[ends] - cum[starts]) * row + 8 * (ends - starts)
        else:
            per_chunk.append(np.cumsum(chunk_bytes))
    total = sum(int(c[-1]) for c in per_chunk if c is not None and c.size)
    share = 1.0 if total <= budget else budget / max(total, 1)
    chunks: list[int] = []
    for cum_bytes in per_chunk:
        if cum_bytes is None or not cum_bytes.size:
            chunks.append(0)
            continue
        chunks.append(int(np.searchsorted(cum_bytes, share * int(cum_bytes[-1]), side="right")))
    offsets: dict[tuple[int, str], np.ndarray] = {}
    for s, k in enumerate(chunks):
        if not k:
            continue
        source = sources[s]
        samples = min(k * source.chunk_len, len(source))
        for fname in fields:
            if source.fields[fname].ragged:
                rows = counts[fname][s]
                assert rows is not None  # a source without counts caches nothing (above)
                cum = np.zeros(samples + 1, dtype=np.int64)
                np.cumsum(rows[:samples], out=cum[1:])
                offsets[(s, fname)] = cum
    nbytes = sum(
        int(c[k - 1]) for c, k in zip(per_chunk, chunks, strict=True) if k and c is not None
    )
    plan = CachePlan(tuple(chunks), nbytes, offsets)
    cached, every = sum(chunks), sum(s.n_chunks for s in sources)
    if share < 1.0 or any(c is None for c in per_chunk):
        logger.warning(
            "memory_cache: %d of %d chunks (%.1f MiB of %.1f MiB decoded) are kept in memory%s",
            cached,
            every,
            nbytes / 2**20,
            total / 2**20,
            "; sources without offsets(field) for a ragged field are not cached"
            if any(c is None for c in per_chunk)
            else f"; the budget is {budget / 2**20:.1f} MiB",
        )
    else:
        logger.info(
            "memory_cache: all %d chunks (%.1f MiB decoded) kept in memory", every, nbytes / 2**20
        )
    return plan
