"""Builds the arena, the worker pool and the scheduler for one loader configuration."""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload._engine._arena import Layout, LocalArena, SharedArena
from fastload._engine._chunks import DenseChunks, RaggedChunks
from fastload._engine._pool import Pool, make_pool
from fastload._engine._scheduler import ChunkTable, Scheduler
from fastload._engine._worker import WorkerConfig
from fastload._order import EpochPlan
from fastload._spec import FieldSpec
from fastload.store import Split


@dataclass(frozen=True)
class EngineSpec:
    """What the engine must produce; fixed for the lifetime of a loader."""

    sources: tuple[Split, ...]
    source_names: tuple[str, ...]
    fields: tuple[str, ...]
    ragged_lengths: dict[str, int]
    label_field: str | None
    transform: Any
    batch_size: int
    batch_slots: int
    workers: int
    backend: str
    timeout_s: float
    max_restarts: int


def input_specs(spec: EngineSpec) -> dict[str, FieldSpec]:
    """Per-sample specs of gathered batches, before any transform."""
    first = spec.sources[0]
    out: dict[str, FieldSpec] = {}
    for fname in spec.fields:
        info = first.fields[fname]
        if info.ragged:
            out[fname] = FieldSpec((spec.ragged_lengths[fname], *info.shape), info.dtype)
            out[f"{fname}_len"] = FieldSpec((), np.int64)
        else:
            out[fname] = FieldSpec(info.shape, info.dtype)
    if spec.label_field is not None:
        out[spec.label_field] = FieldSpec((), np.int64)
    return out


def _describe_sources(spec: EngineSpec) -> list[dict[str, DenseChunks | RaggedChunks]]:
    described = []
    for split in spec.sources:
        readers: dict[str, DenseChunks | RaggedChunks] = {}
        for fname in spec.fields:
            if split.fields[fname].ragged:
                readers[fname] = RaggedChunks(
                    values=DenseChunks.of(split.reader(fname, "values")),
                    offsets=split.offsets(fname),
                    event_chunk_len=split.chunk_len,
                )
            else:
                readers[fname] = DenseChunks.of(split.reader(fname))
        described.append(readers)
    return described


class _Resources:
    """What must be released, kept apart from the engine so a finalizer can own it."""

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self.arena: Any = None

    def release(self) -> None:
        pool, self.pool = self.pool, None
        arena, self.arena = self.arena, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.shutdown()
        if arena is not None:
            arena.destroy()


class Engine:
    """An arena + pool + scheduler with ``batch_slots`` slots and room for ``plan_capacity`` plan entries."""

    def __init__(self, spec: EngineSpec, batch_slots: int, plan_capacity: int) -> None:
        self.spec = spec
        self.batch_slots = batch_slots
        self.plan_capacity = plan_capacity
        self.input_specs = input_specs(spec)
        self.output_specs = (
            dict(spec.transform.output_spec(self.input_specs))
            if spec.transform is not None
            else dict(self.input_specs)
        )
        layout = Layout()
        layout.add("plan_rows", (max(plan_capacity, 1),), np.int64)
        families = [("batch", self.output_specs)]
        if spec.transform is not None:
            families.append(("stage", self.input_specs))
        for prefix, specs in families:
            for name, fspec in specs.items():
                rows = _aligned_rows(spec.batch_size, fspec)
                layout.add(f"{prefix}/{name}", (batch_slots, rows, *fspec.shape), fspec.dtype)
        self.layout = layout

        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        use_shm = spec.backend == "process" and spec.workers > 0
        arena = SharedArena(layout) if use_shm else LocalArena(layout)
        self._res.arena = arena
        cfg = WorkerConfig(
            layout=layout,
            sources=_describe_sources(spec),
            source_names=list(spec.source_names),
            fields=spec.fields,
            ragged_lengths=dict(spec.ragged_lengths),
            input_specs=self.input_specs,
            output_specs=self.output_specs,
            batch_size=spec.batch_size,
            label_field=spec.label_field,
            transform=spec.transform,
        )
        pool = make_pool(spec.backend, spec.workers, cfg, arena)
        self._res.pool = pool
        pool.start()
        self.scheduler = Scheduler(
            pool,
            arena,
            chunk_lens=[s.chunk_len for s in spec.sources],
            key_offsets=chunk_key_offsets(spec.sources),
            batch_slots=batch_slots,
            transform=spec.transform is not None,
            timeout_s=spec.timeout_s,
            max_restarts=spec.max_restarts,
        )
        self.arena = arena

    @property
    def nbytes(self) -> int:
        """Size of the shared arena."""
        return self.layout.size

    def run(
        self, plan: EpochPlan, table: ChunkTable, start_batch: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield views of each batch's slot; a view is valid until the next batch is requested."""
        batch_views = {name: self.arena[f"batch/{name}"] for name in self.output_specs}
        for slot, n in self.scheduler.run(plan, table, start_batch):
            yield {name: views[slot, :n] for name, views in batch_views.items()}

    def worker_pids(self) -> list[int]:
        pool = self._res.pool
        return [] if pool is None else pool.worker_pids()

    def close(self) -> None:
        self._finalizer()


def _aligned_rows(batch_size: int, spec: FieldSpec) -> int:
    """Rows per slot, rounded up so that every slot of a region starts 64-byte aligned.

    TensorFlow and DLPack abort on misaligned buffers; regions start page-aligned, so
    slot ``k`` starts at ``k * rows * sample_nbytes``, which this makes a multiple of 64.
    """
    nbytes = max(spec.sample_nbytes, 1)
    step = 64 // math.gcd(64, nbytes)
    return -(-batch_size // step) * step


def chunk_key_offsets(sources: tuple[Split, ...] | list[Split]) -> np.ndarray:
    """First chunk key of each source: keys number the chunks of all sources consecutively."""
    n_chunks = [s.n_chunks for s in sources]
    return np.concatenate([[0], np.cumsum(n_chunks)[:-1]]).astype(np.int64)
