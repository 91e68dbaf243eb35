"""Builds the arena, the worker pool and the scheduler for one loader configuration."""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastload._engine._arena import Arena, Layout, LocalArena, SharedArena
from fastload._engine._memcache import AUTO, CachePlan, plan_cache
from fastload._engine._pool import Pool, make_pool
from fastload._engine._scheduler import ChunkTable, Scheduler
from fastload._engine._slots import SlotRing
from fastload._engine._worker import WorkerConfig
from fastload._order import EpochPlan
from fastload._source import DenseChunkDecoder, RaggedChunkDecoder, Source, known_row_counts
from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.store import Ragged


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
    #: ragged fields delivered as values + offsets (``fl.Ragged``): value rows of a batch slot
    packed_rows: dict[str, int] = field(default_factory=dict)
    #: rows of every sample of each packed field, one array per source
    packed_counts: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    #: True when ``packed_rows`` was set by the user (the error then names the option)
    packed_bounded: frozenset[str] = frozenset()
    #: a shared-memory arena whatever the backend (a feed's consumers map it)
    shared: bool = False
    #: compressed bytes each worker may read ahead per store (0: none)
    readahead_bytes: int = 0
    #: decoded chunks kept in the arena: 0 none, AUTO as many as fit, else a bound in bytes
    memory_cache: int = 0


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
        if fname in spec.packed_rows:
            longest = max((int(c.max(initial=0)) for c in spec.packed_counts[fname]), default=0)
            out[fname] = FieldSpec(
                info.shape,
                info.dtype,
                ragged=True,
                max_len=longest,
                max_rows=spec.packed_rows[fname],
            )
        elif info.ragged:
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
        #: ragged fields the chunk tasks gather (the coordinator writes their offsets):
        #: value rows and offsets entries of a slot
        self.packed = {
            name: (_aligned_rows(max(rows, 1), fspec), _aligned_rows(spec.batch_size + 1, _OFFSET))
            for name, fspec in self.input_specs.items()
            if fspec.ragged
            for rows in (spec.packed_rows[name],)
        }
        #: ragged fields of the delivered batch (the packed ones, or a transform's outputs)
        self.ragged_out = (
            _ragged_slots(self.output_specs, spec.batch_size, spec.transform)
            if spec.transform is not None
            else dict(self.packed)
        )
        self.slot_nbytes = sum(
            _aligned_rows(spec.batch_size, fspec) * fspec.sample_nbytes
            for specs in self._families()
            for fspec in specs.values()
            if not fspec.ragged
        ) + sum(
            rows * specs[name].sample_nbytes + n_offsets * 8
            for specs, ragged in zip(self._families(), self._ragged_families(), strict=False)
            for name, (rows, n_offsets) in ragged.items()
        )
        keep_slots = _keep_slots(spec.max_kept_bytes, batch_slots, self.slot_nbytes, use_shm)
        self.max_kept_bytes = keep_slots * self.slot_nbytes
        self.slots = SlotRing(in_flight_limit=batch_slots, keep_limit=keep_slots)
        layout = Layout()
        layout.add("plan_rows", (max(plan_capacity, 1),), np.int64)
        families = zip(("batch", "stage"), self._families(), self._ragged_families(), strict=False)
        for prefix, specs, ragged in families:
            for name, fspec in specs.items():
                if fspec.ragged:
                    rows, n_offsets = ragged[name]
                    shape = (self.slots.size, rows, *fspec.shape)
                    layout.add(f"{prefix}/{name}/values", shape, fspec.dtype)
                    layout.add(f"{prefix}/{name}/offsets", (self.slots.size, n_offsets), np.int64)
                    continue
                rows = _aligned_rows(spec.batch_size, fspec)
                layout.add(f"{prefix}/{name}", (self.slots.size, rows, *fspec.shape), fspec.dtype)
        self.cache = _cache_plan(spec, layout.size, use_shm)
        self.cache.add_regions(layout, spec.sources, spec.fields)
        self.layout = layout
        #: set once a batch was copied because kept batches reached the bound
        self.copied_for_kept = False

        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        arena = SharedArena(layout) if use_shm else LocalArena(layout)
        self._res.arena = arena
        self.cache.write_offsets(arena)
        cfg = WorkerConfig(
            layout=layout,
            sources=_describe_sources(spec),
            source_names=list(spec.source_names),
            fields=spec.fields,
            ragged_lengths=dict(spec.ragged_lengths),
            packed=tuple(self.packed),
            input_specs=self.input_specs,
            output_specs=self.output_specs,
            batch_size=spec.batch_size,
            label_field=spec.label_field,
            transform=spec.transform,
            readahead_bytes=spec.readahead_bytes,
            cached_chunks=self.cache.chunks,
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
            cached_chunks=self.cache.chunks,
        )
        self.arena = arena

    def _families(self) -> list[dict[str, FieldSpec]]:
        """Specs of the slot families: the batch, and the staging slots a transform reads."""
        if self.spec.transform is None:
            return [self.output_specs]
        return [self.output_specs, self.input_specs]

    def _ragged_families(self) -> list[dict[str, tuple[int, int]]]:
        """Value rows and offsets entries of the ragged fields of each slot family."""
        if self.spec.transform is None:
            return [self.ragged_out]
        return [self.ragged_out, self.packed]

    @property
    def cached_chunks_filled(self) -> int:
        """Chunks of the memory cache decoded so far (hits from now on)."""
        return self.scheduler.cached_count

    @property
    def nbytes(self) -> int:
        """Size of the arena: batch ring and reserve for kept batches (untouched pages cost nothing)."""
        return self.layout.size

    def produce(
        self, plan: EpochPlan, table: ChunkTable, start_batch: int = 0
    ) -> Iterator[tuple[int, int]]:
        """Fill slots with batches ``start_batch..`` of ``plan``; yield each as ``(slot, n)``.

        What every consumer of the engine iterates (a loader through :meth:`run`,
        a feed's producer directly): the scheduler's run with the offsets of the
        packed ragged fields written into each slot before its chunk tasks are
        sent.  Checks the plan's batches against the slots' row bounds first
        (:class:`~fastload.errors.ConfigError`, before any task).  Closing the
        result abandons the epoch (its tasks are drained).
        """
        on_slot = self._packed_offsets(plan) if self.packed else None
        return self.scheduler.run(plan, table, start_batch, on_slot=on_slot)

    def check_plan(self, plan: EpochPlan) -> None:
        """Raise :class:`~fastload.errors.ConfigError` if a batch of ``plan`` overflows a slot."""
        if self.packed:
            self._packed_offsets(plan)

    def run(
        self, plan: EpochPlan, table: ChunkTable, start_batch: int, *, copy: bool = False
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield each batch as read-only arrays over its slot, or as copies.

        A lent slot returns to the ring only once every array over it is gone
        (``_slots.py``).  Copies are made with ``copy=True`` and while kept
        batches pin ``max_kept_bytes`` (``copied_for_kept`` tells the loader).
        """
        for slot, n in self.produce(plan, table, start_batch):
            if not copy and self.slots.can_keep():
                batch, roots = slot_batch(self.arena, self.output_specs, slot, n)
                self.slots.keep(slot, roots)
                yield batch
                del batch
                continue
            if not copy:
                self.copied_for_kept = True
            batch = copied_batch(self.arena, self.output_specs, slot, n)
            self.slots.release(slot)
            yield batch
            del batch  # copies pin no slot, but need not outlive the consumer's reference

    def _packed_offsets(self, plan: EpochPlan) -> Any:
        """The batch offsets of every packed field in this epoch, and the callback writing them.

        The coordinator knows every sample's row count, so it writes a batch's
        ``B + 1`` offsets into the slot before the slot's first chunk task is sent;
        workers then copy each sample's rows to where the offsets say (and check
        that the rows they decode agree).
        """
        spec, bounds = self.spec, plan.batch_bounds
        cums: dict[str, np.ndarray] = {}
        for name in self.packed:
            counts = np.zeros(plan.n_samples, dtype=np.int64)
            for s, per_sample in enumerate(spec.packed_counts[name]):
                mine = plan.source == s
                counts[mine] = per_sample[plan.index[mine]]
            cum = np.zeros(plan.n_samples + 1, dtype=np.int64)
            np.cumsum(counts, out=cum[1:])
            rows = cum[bounds[1:]] - cum[bounds[:-1]]
            cap = spec.packed_rows[name]
            if rows.size and int(rows.max()) > cap:
                b = int(np.argmax(rows))
                raise ConfigError(_overflow_message(name, b, int(rows[b]), cap, spec))
            cums[name] = cum
        arena = self.arena
        prefix = "stage" if spec.transform is not None else "batch"  # where chunk tasks write

        def write(b: int, slot: int) -> None:
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            for name, cum in cums.items():
                out = arena[f"{prefix}/{name}/offsets"][slot, : hi - lo + 1]
                np.subtract(cum[lo : hi + 1], cum[lo], out=out)

        return write

    def worker_pids(self) -> list[int]:
        pool = self._res.pool
        return [] if pool is None else pool.worker_pids()

    def close(self) -> None:
        self._finalizer()


def slot_batch(
    arena: Arena, specs: Mapping[str, FieldSpec], slot: int, n: int
) -> tuple[dict[str, Any], list[weakref.ref]]:
    """The batch of ``n`` samples in ``slot``: read-only views, and weak refs to their roots.

    A ragged field (``specs[name].ragged``) is a :class:`~fastload.Ragged` over
    the slot's ``values`` and ``offsets`` regions (``offsets[n]`` value rows).
    The roots are new arrays over the mapping (:meth:`Arena.slot_array`): the
    slot is read as long as one of them is alive.  A loader's engine and a feed's
    consumers read slots with this, so both deliver the same batches.
    """
    batch: dict[str, Any] = {}
    roots: list[weakref.ref] = []
    for name, fspec in specs.items():
        if fspec.ragged:
            offsets = arena.slot_array(f"batch/{name}/offsets", slot, n + 1)
            values = arena.slot_array(f"batch/{name}/values", slot, int(offsets[n]))
            roots += [weakref.ref(values), weakref.ref(offsets)]
            batch[name] = Ragged(values.view(), offsets.view())
            continue
        root = arena.slot_array(f"batch/{name}", slot, n)
        roots.append(weakref.ref(root))
        batch[name] = root.view()  # the consumer gets views: ``root`` is what they keep alive
    return batch, roots


def copied_batch(arena: Arena, specs: Mapping[str, FieldSpec], slot: int, n: int) -> dict[str, Any]:
    """The batch of ``n`` samples in ``slot`` as owned, writable copies (ragged: ``Ragged``)."""
    batch: dict[str, Any] = {}
    for name, fspec in specs.items():
        if fspec.ragged:
            offsets = arena.slot_array(f"batch/{name}/offsets", slot, n + 1).copy()
            values = arena.slot_array(f"batch/{name}/values", slot, int(offsets[n])).copy()
            batch[name] = Ragged(values, offsets)
        else:
            batch[name] = arena.slot_array(f"batch/{name}", slot, n).copy()
    return batch


#: the spec of one offsets entry (for slot alignment)
_OFFSET = FieldSpec((), np.int64)


def _ragged_slots(
    specs: dict[str, FieldSpec], batch_size: int, transform: Any
) -> dict[str, tuple[int, int]]:
    """Value rows and offsets entries of each ragged output of ``transform``, from its bounds."""
    out = {}
    for name, fspec in specs.items():
        if not fspec.ragged:
            continue
        rows = fspec.batch_rows(batch_size)
        if rows is None:
            raise ConfigError(
                f"transform {transform!r} declares ragged output {name!r} without a row bound, "
                "so its batch slot cannot be sized: give its FieldSpec max_len= (most rows of "
                "one sample) or max_rows= (most rows of one batch)"
            )
        out[name] = (
            _aligned_rows(max(rows, 1), fspec),
            _aligned_rows(batch_size + 1, _OFFSET),
        )
    return out


def _overflow_message(name: str, batch: int, rows: int, cap: int, spec: EngineSpec) -> str:
    if name in spec.packed_bounded:
        return (
            f"batch {batch} of this epoch holds {rows} rows of ragged field {name!r}, more than the "
            f"{cap} a batch slot holds (ragged_rows={{{name!r}: {cap}}}); raise "
            f"ragged_rows[{name!r}] to at least {rows}, or leave it unset (slots then hold the "
            f"{spec.batch_size} longest samples)"
        )
    return (
        f"batch {batch} holds {rows} rows of ragged field {name!r}, more than the {cap} rows of "
        f"the {spec.batch_size} longest samples: the source's row counts changed under the "
        "loader; rebuild it"
    )


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


def _cache_plan(spec: EngineSpec, arena_bytes: int, shared: bool) -> CachePlan:
    """The chunks kept decoded in the arena (none unless ``spec.memory_cache``)."""
    if not spec.memory_cache:
        return CachePlan(tuple(0 for _ in spec.sources), 0)
    # what the slots leave of half the memory that can back the arena: tmpfs pages past
    # /dev/shm's size would be a SIGBUS when first written
    budget = max(_spare_memory(shared) // 2 - arena_bytes, 0)
    if spec.memory_cache != AUTO:
        budget = min(budget, spec.memory_cache)
    counts: dict[str, tuple[np.ndarray | None, ...]] = {}
    for fname in spec.fields:
        if fname in spec.packed_counts:
            counts[fname] = spec.packed_counts[fname]
        elif spec.sources[0].fields[fname].ragged:
            counts[fname] = tuple(known_row_counts(s, fname) for s in spec.sources)
    return plan_cache(spec.sources, spec.fields, counts, budget)


def chunk_key_offsets(sources: tuple[Source, ...] | list[Source]) -> np.ndarray:
    """First chunk key of each source: keys number the chunks of all sources consecutively."""
    n_chunks = [s.n_chunks for s in sources]
    return np.concatenate([[0], np.cumsum(n_chunks)[:-1]]).astype(np.int64)
