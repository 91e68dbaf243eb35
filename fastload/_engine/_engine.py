"""Builds the arena, the worker pool and the scheduler for one loader configuration."""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload._engine._arena import Layout, LocalArena, SharedArena
from fastload._engine._pool import Pool, make_pool
from fastload._engine._scheduler import ChunkTable, Scheduler
from fastload._engine._slots import SlotRing
from fastload._engine._worker import WorkerConfig
from fastload._order import EpochPlan
from fastload._source import DenseChunkDecoder, RaggedChunkDecoder, Source
from fastload._spec import FieldSpec


@dataclass(frozen=True)
class EngineSpec:
    """What the engine must produce; fixed for the lifetime of a loader."""

    sources: tuple[Source, ...]
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
    max_kept_bytes: int | None = None  # None: max(DEFAULT_MAX_KEPT_BYTES, 4 x the ring)
    #: a shared-memory arena whatever the backend (a feed's consumers map it)
    shared: bool = False


#: default bound on the shared memory batches kept by the consumer may pin
DEFAULT_MAX_KEPT_BYTES = 1 << 30
#: kept batches always allowed, whatever the bound: the one the consumer's loop
#: variable holds while the next is prepared, plus slack for adapters that hold one
MIN_KEPT_SLOTS = 4


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


def _describe_sources(
    spec: EngineSpec,
) -> list[dict[str, DenseChunkDecoder | RaggedChunkDecoder]]:
    """Each source's decoder of every selected field (what workers receive)."""
    return [{fname: split.decoder(fname) for fname in spec.fields} for split in spec.sources]


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
    """An arena + pool + scheduler for one loader configuration.

    ``batch_slots`` batches may be in flight (the prefetch depth); the arena
    also reserves slots for batches the consumer keeps, up to about
    ``max_kept_bytes``, and has room for ``plan_capacity`` plan entries.
    """

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
        use_shm = spec.shared or (spec.backend == "process" and spec.workers > 0)
        self.slot_nbytes = sum(
            _aligned_rows(spec.batch_size, fspec) * fspec.sample_nbytes
            for specs in self._families()
            for fspec in specs.values()
        )
        keep_slots = _keep_slots(spec.max_kept_bytes, batch_slots, self.slot_nbytes, use_shm)
        self.max_kept_bytes = keep_slots * self.slot_nbytes
        self.slots = SlotRing(in_flight_limit=batch_slots, keep_limit=keep_slots)
        layout = Layout()
        layout.add("plan_rows", (max(plan_capacity, 1),), np.int64)
        for prefix, specs in zip(("batch", "stage"), self._families(), strict=False):
            for name, fspec in specs.items():
                rows = _aligned_rows(spec.batch_size, fspec)
                layout.add(f"{prefix}/{name}", (self.slots.size, rows, *fspec.shape), fspec.dtype)
        self.layout = layout
        #: set once a batch was copied because kept batches reached the bound
        self.copied_for_kept = False

        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
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
            self.slots,
            chunk_lens=[s.chunk_len for s in spec.sources],
            key_offsets=chunk_key_offsets(spec.sources),
            transform=spec.transform is not None,
            timeout_s=spec.timeout_s,
            max_restarts=spec.max_restarts,
        )
        self.arena = arena

    def _families(self) -> list[dict[str, FieldSpec]]:
        """Specs of the slot families: the batch, and the staging slots a transform reads."""
        if self.spec.transform is None:
            return [self.output_specs]
        return [self.output_specs, self.input_specs]

    @property
    def nbytes(self) -> int:
        """Size of the arena: batch ring and reserve for kept batches (untouched pages cost nothing)."""
        return self.layout.size

    def run(
        self, plan: EpochPlan, table: ChunkTable, start_batch: int, *, copy: bool = False
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield each batch as read-only arrays over its slot, or as copies.

        A lent slot returns to the ring only once every array over it is gone
        (``_slots.py``).  Copies are made with ``copy=True`` and while kept
        batches pin ``max_kept_bytes`` (``copied_for_kept`` tells the loader).
        """
        for slot, n in self.scheduler.run(plan, table, start_batch):
            if not copy and self.slots.can_keep():
                yield self._lend(slot, n)
                continue
            if not copy:
                self.copied_for_kept = True
            batch = {
                name: self.arena[f"batch/{name}"][slot, :n].copy() for name in self.output_specs
            }
            self.slots.release(slot)
            yield batch
            del batch  # copies pin no slot, but need not outlive the consumer's reference

    def _lend(self, slot: int, n: int) -> dict[str, np.ndarray]:
        batch, roots = {}, []
        for name in self.output_specs:
            root = self.arena.slot_array(f"batch/{name}", slot, n)
            roots.append(weakref.ref(root))
            batch[name] = root.view()  # the consumer gets views: ``root`` is what they keep alive
        self.slots.keep(slot, roots)
        return batch

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


def _keep_slots(max_kept_bytes: int | None, ring_slots: int, slot_nbytes: int, shared: bool) -> int:
    """Slots reserved for kept batches: the bound, within half of the memory that can back them."""
    slot_nbytes = max(slot_nbytes, 1)
    bound = (
        max(DEFAULT_MAX_KEPT_BYTES, 4 * ring_slots * slot_nbytes)
        if max_kept_bytes is None
        else max_kept_bytes
    )
    # a reserve larger than /dev/shm (or memory) could be touched into a SIGBUS
    spare = _spare_memory(shared) // 2 // slot_nbytes - ring_slots
    return max(MIN_KEPT_SLOTS, min(bound // slot_nbytes, spare))


def _spare_memory(shared: bool) -> int:
    """Bytes free in /dev/shm (shared arena) or of physical memory (local arena)."""
    try:
        if shared:
            st = os.statvfs("/dev/shm")
            return st.f_bavail * st.f_frsize
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MAX_KEPT_BYTES * 4


def chunk_key_offsets(sources: tuple[Source, ...] | list[Source]) -> np.ndarray:
    """First chunk key of each source: keys number the chunks of all sources consecutively."""
    n_chunks = [s.n_chunks for s in sources]
    return np.concatenate([[0], np.cumsum(n_chunks)[:-1]]).astype(np.int64)
