"""``fl.Loader``: batches of a Source (store or in-memory split) or a Mix, prefetched in shared memory."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, cast

import numpy as np

from fastload import _validate
from fastload._engine import (
    BACKENDS,
    MEMORY_CACHE_AUTO,
    ChunkTable,
    Engine,
    EngineSpec,
    chunk_key_offsets,
    chunk_table,
    input_specs,
    within_batch_order,
)
from fastload._messages import closest
from fastload._order import (
    EpochPlan,
    OrderConfig,
    SourceShape,
    changed_settings,
    legacy_fingerprint,
    merge_states,
    plan_description,
    plan_fingerprint,
    plan_resumed,
    resume_history,
)
from fastload._source import Source, check_source, describe, known_row_counts
from fastload._spec import FieldSpec
from fastload.errors import ConfigError, FieldNotFoundError
from fastload.mix import Mix

__all__ = ["Loader"]

Batch = dict[str, np.ndarray]
_log = logging.getLogger(__name__)


class _Done:
    """A finished computation with the interface of a future."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


#: default ``readahead_bytes`` of a Loader: compressed bytes per worker and store
DEFAULT_READAHEAD_BYTES = 64 * 2**20


def _sources_of(source: object) -> tuple[tuple[Source, ...], tuple[str, ...], Mix | None]:
    """The sources a loader reads, their names, and the mix (None for one source)."""
    if isinstance(source, Mix):
        return tuple(source.sources.values()), tuple(source.names), source
    check_source(source, owner="fl.Loader", what="source", or_else="a fl.Mix of sources")
    split = cast(Source, source)
    return (split,), (split.name,), None


def _check_engine_options(
    backend: str,
    workers: object,
    prefetch: object,
    window_chunks: object,
    max_kept_bytes: object,
    timeout_s: object,
    max_worker_restarts: object,
    copy: object,
) -> None:
    owner = "fl.Loader"
    _validate.choice(backend, BACKENDS, name="backend", owner=owner)
    _validate.integer(workers, name="workers", minimum=0, owner=owner)
    _validate.integer(prefetch, name="prefetch", minimum=2, owner=owner)
    _validate.integer(window_chunks, name="window_chunks", minimum=1, owner=owner)
    _validate.optional_integer(max_kept_bytes, name="max_kept_bytes", minimum=0, owner=owner)
    _validate.number(timeout_s, name="timeout_s", above=0, owner=owner)
    _validate.integer(max_worker_restarts, name="max_worker_restarts", minimum=0, owner=owner)
    _validate.flag(copy, name="copy", owner=owner)


def _memory_cache_bytes(memory_cache: object) -> int:
    """``memory_cache`` as the engine's setting: 0 off, ``AUTO`` for True, else a bound in bytes."""
    if isinstance(memory_cache, (bool, np.bool_)):
        return MEMORY_CACHE_AUTO if memory_cache else 0
    if not _validate.is_integer(memory_cache):
        raise _validate.problem(
            "fl.Loader", "memory_cache", "True, False or a number of bytes >= 0", memory_cache
        )
    return _validate.integer(memory_cache, name="memory_cache", minimum=0, owner="fl.Loader")


def _select_fields(
    splits: tuple[Source, ...], mix: Mix | None, fields: Sequence[str] | None
) -> tuple[str, ...]:
    first = splits[0]
    all_fields = tuple(first.fields)
    if fields is not None:
        selected = tuple(fields)
    else:
        selected = mix.common_fields() if mix is not None else all_fields
    for fname in selected:
        if fname not in first.fields:
            raise FieldNotFoundError(
                f"field {fname!r} not in {describe(first)}{closest(fname, list(all_fields))} "
                f"(fields: {list(all_fields)})"
            )
    if not selected:
        raise ConfigError("fl.Loader: fields must name at least one field, got none")
    if mix is not None:
        mix.check_fields(selected)
    return selected


def _ragged_lengths(
    splits: tuple[Source, ...],
    selected: tuple[str, ...],
    pad: Mapping[str, int] | None,
    packed: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Padded length of each selected ragged field: ``pad``'s, else the longest sample."""
    lengths: dict[str, int] = {}
    for fname in selected:
        if splits[0].fields[fname].ragged and fname not in (packed or {}):
            length = (pad or {}).get(fname) or max(s.max_len(fname) for s in splits)
            lengths[fname] = max(int(length), 1)
    return lengths


#: how a ragged field may arrive in a batch (``Loader(ragged=...)``)
RAGGED_MODES = ("pad", "offsets")


def _packed_fields(
    splits: tuple[Source, ...],
    selected: tuple[str, ...],
    ragged: Mapping[str, str] | None,
    ragged_rows: Mapping[str, int] | None,
    pad: Mapping[str, int] | None,
    batch_size: int,
) -> tuple[dict[str, int], dict[str, tuple[np.ndarray, ...]], frozenset[str]]:
    """Ragged fields delivered as values + offsets: slot rows, per-source row counts, bounded ones.

    A slot holds, by default, the rows of the ``batch_size`` longest samples of
    all sources: no batch of any epoch, rank or mix can hold more.
    """
    owner = "fl.Loader"
    modes = dict(ragged or {})
    rows_given = dict(ragged_rows or {})
    for fname, mode in modes.items():
        if fname not in selected or not splits[0].fields[fname].ragged:
            ragged_names = [f for f in selected if splits[0].fields[f].ragged]
            raise ConfigError(
                f"{owner}: ragged= names {fname!r}, which is not a selected ragged field "
                f"(selected ragged fields: {ragged_names})"
            )
        _validate.choice(mode, RAGGED_MODES, name=f"ragged[{fname!r}]", owner=owner)
    packed_names = [f for f in selected if modes.get(f) == "offsets"]
    for fname, rows in rows_given.items():
        if fname not in packed_names:
            raise ConfigError(
                f"{owner}: ragged_rows= names {fname!r}, which is not delivered as values + "
                f'offsets; add ragged={{{fname!r}: "offsets"}} (fields with offsets: {packed_names})'
            )
        _validate.integer(rows, name=f"ragged_rows[{fname!r}]", minimum=1, owner=owner)
    for fname in packed_names:
        if fname in (pad or {}):
            raise ConfigError(
                f'{owner}: field {fname!r} has ragged="offsets" and a pad= length; a field '
                "arrives either padded or as values + offsets: drop one of them"
            )
    rows_of: dict[str, int] = {}
    counts_of: dict[str, tuple[np.ndarray, ...]] = {}
    for fname in packed_names:
        counts = tuple(_row_counts(s, fname) for s in splits)
        every = np.concatenate(counts)
        k = min(batch_size, every.size)
        longest = int(np.partition(every, every.size - k)[every.size - k :].sum()) if k else 0
        rows_of[fname] = int(rows_given.get(fname, longest))
        counts_of[fname] = counts
    return rows_of, counts_of, frozenset(rows_given)


def _row_counts(split: Source, fname: str) -> np.ndarray:
    """Rows of every sample of a ragged field, from the source's ``offsets(field)``."""
    counts = known_row_counts(split, fname)
    if counts is None:
        raise ConfigError(
            f'fl.Loader: ragged={{{fname!r}: "offsets"}} needs every sample\'s row count before '
            f"reading; {describe(split)} has no offsets(field) method (optional in the Source "
            "contract): add one, or let the field arrive padded"
        )
    return counts


_warned_unsharded = False


def _warn_if_unsharded_in_distributed_job() -> None:
    """Warn (once per process) when a loader without ranks runs in a torch.distributed job.

    Every rank would read the whole epoch, in the same order: silently the same
    samples on every GPU.  Warn rather than shard automatically: an explicit
    rank/world_size keeps which samples each process reads visible in the code
    (docs/order.md).  torch is looked up only if the program imported it.
    """
    global _warned_unsharded
    dist = sys.modules.get("torch.distributed")
    if _warned_unsharded or dist is None:
        return
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = int(dist.get_world_size())
    except (RuntimeError, ValueError, AttributeError):
        return
    if world <= 1:
        return
    _warned_unsharded = True
    message = (
        f"fl.Loader built without rank/world_size inside a torch.distributed job of {world} "
        "processes: every rank loads the same samples. Use "
        "fastload.adapters.torch.distributed_loader(source, batch_size, ...) to give each rank "
        "its shard, or pass rank= and world_size= (world_size=1 if every rank should read "
        "everything)"
    )
    _log.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


class Loader:
    """Iterate batches of a source (a premixed split) or of a :class:`Mix` (mixed on the fly).

    Workers decode chunks and gather each batch into a slot of a batch
    ring in shared memory; the consumer receives ``dict[str, np.ndarray]`` of
    read-only arrays over that slot, with no copy.  A slot is reused only once
    every array of its batch — and every view or tensor made from one — is
    gone, so batches kept in a list stay correct.  Kept batches pin shared
    memory, up to ``max_kept_bytes``; beyond it batches arrive as copies until
    kept ones are released, with one warning.  ``copy=True`` returns copies
    always.  Batches come in plan order whatever the worker timing; the plan
    depends only on the seed, the epoch and the configuration (see
    docs/order.md), never on ``workers``.

    Parameters
    ----------
    source : Source | Mix
        ``store["train"]``, ``fl.from_arrays({...})`` (any :class:`~fastload.Source`) or ``fl.Mix({...})``.
    batch_size : int
        Samples per batch.
    shuffle : bool
        Permute chunks each epoch and shuffle samples inside windows of chunks.
    seed : int
        Seed of every permutation.
    workers : int
        Worker processes (or threads); ``0`` runs everything in the calling thread.
    prefetch : int
        Batches prepared ahead of the consumer (the ring adds what the shuffle
        window needs to make progress).
    fields : Sequence[str] | None
        Fields to read (default: all).  A ragged field ``f`` arrives padded as
        ``f`` ``(B, L, ...)`` plus ``f_len`` ``(B,)``, unless ``ragged`` says otherwise.
    transform : Transform | None
        Per-batch transform run in the workers (see :mod:`fastload.transforms`).
    drop_last : bool
        Drop the last short batch; with ranks, every rank gets the same number of
        full batches (what DDP needs).
    rank, world_size : int | None
        This process's shard of every epoch; shards are disjoint.  Default: the
        whole epoch (0 of 1).  A loader built without them inside an initialised
        ``torch.distributed`` group of several processes warns once: use
        :func:`fastload.adapters.torch.distributed_loader` there.
    window_chunks : int
        Chunks per shuffle window: larger mixes better, needs more batches in flight.
    backend : {"process", "thread"}
        Worker kind.  Process workers are fresh interpreters running fastload's
        own worker module: they never re-run or re-import the script's
        ``__main__`` (no ``if __name__ == "__main__":`` guard needed), and a
        transform defined there is sent by value.  (There is no
        ``start_method``: multiprocessing's start methods are not used.)
    copy : bool
        Return copies (owned, writable arrays) instead of arrays over shared memory.
    pad : Mapping[str, int] | None
        Padded length per ragged field (default: the longest sample in the split(s)).
    ragged : Mapping[str, str] | None
        How each ragged field arrives: ``"pad"`` (the default, above) or
        ``"offsets"``: ``batch[f]`` is a :class:`~fastload.Ragged` whose
        ``values`` hold the batch's rows back to back and ``offsets`` its
        ``B + 1`` row offsets (from 0), read-only views of shared memory like any
        batch array; no ``f_len``.  Needs the source's ``offsets(field)``
        (stores and ``fl.from_arrays`` have it).  A ``transform`` receives the
        field as a ``fl.Ragged`` too (its spec ``ragged=True``) and may return
        ragged outputs with declared row bounds (docs/transforms.md).
    ragged_rows : Mapping[str, int] | None
        Value rows a batch slot holds per ``"offsets"`` field (default: the rows
        of the ``batch_size`` longest samples, which no batch can exceed).  A
        smaller bound saves shared memory; an epoch with a batch above it raises
        :class:`~fastload.errors.ConfigError` naming the field before its first batch.
    timeout_s : float
        Longest wait for one batch before :class:`~fastload.errors.WorkerError`.
    max_worker_restarts : int
        Times a dead worker is replaced before the loader gives up.
    max_kept_bytes : int | None
        Shared memory that batches the consumer keeps may pin (default:
        ``max(1 GiB, 4 x the batch ring)``, at most half of the free space of
        ``/dev/shm``; at least 4 batches).  Past it, batches are delivered as
        copies while the kept ones stay alive, and the loader warns once.
    readahead_bytes : int
        Compressed bytes each worker may read ahead, per store, of the chunks
        it decodes next (default 64 MiB; ``0``: none).  Local chunk files get
        ``posix_fadvise(WILLNEED)`` (the bytes wait in the page cache), remote
        ones concurrent GETs whose bytes the worker holds.  What is decoded
        does not change.  ``workers=0`` reads nothing ahead.
    memory_cache : bool | int
        Keep decoded chunks in shared memory (default ``False``).  ``True``:
        the first epoch decodes each chunk once into the loader's arena and
        later epochs copy rows from there, with no file read, decompression or
        checksum (each chunk was verified when first decoded); every chunk is
        kept if they fit in half of the free ``/dev/shm`` (process workers) or
        memory, else the same leading fraction of each source's chunks, with a
        warning.  An integer bounds the bytes kept.  For stores that fit in
        RAM and are read for many epochs (docs/architecture.md, "Memory
        cache"); batches are the same with and without it.
    """

    def __init__(
        self,
        source: Source | Mix,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        workers: int = 2,
        prefetch: int = 4,
        fields: Sequence[str] | None = None,
        transform: Any = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        window_chunks: int = 4,
        backend: str = "process",
        copy: bool = False,
        pad: Mapping[str, int] | None = None,
        ragged: Mapping[str, str] | None = None,
        ragged_rows: Mapping[str, int] | None = None,
        timeout_s: float = 300.0,
        max_worker_restarts: int = 3,
        max_kept_bytes: int | None = None,
        readahead_bytes: int = DEFAULT_READAHEAD_BYTES,
        memory_cache: bool | int = False,
    ) -> None:
        splits, names, mix = _sources_of(source)
        _check_engine_options(
            backend,
            workers,
            prefetch,
            window_chunks,
            max_kept_bytes,
            timeout_s,
            max_worker_restarts,
            copy,
        )
        _validate.integer(readahead_bytes, name="readahead_bytes", minimum=0, owner="fl.Loader")
        cache_bytes = _memory_cache_bytes(memory_cache)
        if rank is None and world_size is None:
            _warn_if_unsharded_in_distributed_job()
        with _validate.on_behalf_of("fl.Loader"):
            self._order = OrderConfig(
                batch_size=batch_size,
                shuffle=shuffle,
                seed=seed,
                window_chunks=window_chunks,
                rank=0 if rank is None else rank,
                world_size=1 if world_size is None else world_size,
                drop_last=drop_last,
            )
        self._mix = None
        if mix is not None:
            with _validate.on_behalf_of("fl.Mix"):
                self._mix = mix.order_config()
        selected = _select_fields(splits, mix, fields)
        packed_rows, packed_counts, bounded = _packed_fields(
            splits, selected, ragged, ragged_rows, pad, self._order.batch_size
        )
        self._shapes = tuple(SourceShape(n=len(s), chunk_len=s.chunk_len) for s in splits)
        self._spec = EngineSpec(
            sources=splits,
            source_names=names,
            fields=selected,
            ragged_lengths=_ragged_lengths(splits, selected, pad, packed_rows),
            label_field=mix.label_field if mix is not None else None,
            transform=transform,
            batch_size=self._order.batch_size,
            batch_slots=int(prefetch),
            workers=int(workers),
            backend=backend,
            timeout_s=float(timeout_s),
            max_restarts=int(max_worker_restarts),
            max_kept_bytes=None if max_kept_bytes is None else int(max_kept_bytes),
            packed_rows=packed_rows,
            packed_counts=packed_counts,
            packed_bounded=bounded,
            readahead_bytes=int(readahead_bytes),
            memory_cache=cache_bytes,
        )
        self._chunk_lens = np.array([s.chunk_len for s in splits], dtype=np.int64)
        self._key_offsets = chunk_key_offsets(splits)
        self.copy = bool(copy)
        self.epoch = 0
        self._start_batch = 0
        self._delivered = 0  # batches delivered in the current epoch (incl. resumed ones)
        self._in_epoch = False
        self._engine: Engine | None = None
        self._closed = False
        self._warned_kept = False
        self._fingerprint = plan_fingerprint(self._shapes, self._order, self._mix)
        # earlier (world_size, batches) segments of self.epoch after an elastic resume
        self._elastic: tuple[tuple[int, int], ...] = ()
        self._preparing: dict[int, Any] = {}
        self._planner: ThreadPoolExecutor | None = None
        # validate the configuration (and output specs) now, not in the first next()
        self._check_epoch_has_batches()
        self._check_transform()

    def _check_epoch_has_batches(self) -> None:
        if self.plan(0).n_batches == 0:
            order = self._order
            raise ConfigError(
                f"an epoch of this loader has no batch: {sum(s.n for s in self._shapes)} samples, "
                f"batch_size={order.batch_size}, world_size={order.world_size}, "
                f"drop_last={order.drop_last}"
                + (f", mix policy {self._mix.policy!r}" if self._mix else "")
                + "; use a smaller batch_size or drop_last=False"
            )

    def _check_transform(self) -> None:
        transform = self._spec.transform
        if transform is None:
            return
        try:
            transform.output_spec(input_specs(self._spec))
        except AttributeError as exc:
            raise ConfigError(
                f"transform {transform!r} has no output_spec(); see fastload.transforms"
            ) from exc

    # ------------------------------------------------------------------ info
    @property
    def batch_size(self) -> int:
        return self._order.batch_size

    @property
    def drop_last(self) -> bool:
        """Whether short batches are dropped (then every batch has ``batch_size`` samples)."""
        return self._order.drop_last

    @property
    def fields(self) -> tuple[str, ...]:
        return self._spec.fields

    @property
    def output_specs(self) -> dict[str, FieldSpec]:
        """Per-sample shape and dtype of every field of a batch."""
        specs = input_specs(self._spec)
        transform = self._spec.transform
        return dict(transform.output_spec(specs)) if transform is not None else specs

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The plan of an epoch on this rank: samples in delivery order, cut into batches.

        Batch membership is the order layer's (docs/order.md); inside a batch,
        samples are sorted by (source, index), see docs/architecture.md.  After
        an elastic resume, the current epoch's plan is the rest of that epoch.
        """
        epoch = self.epoch if epoch is None else epoch
        return self._prepared(epoch)[0]

    def _history(self, epoch: int) -> tuple[tuple[int, int], ...]:
        """The elastic-resume segments before this loader's part of ``epoch`` (usually none)."""
        return self._elastic if epoch == self.epoch else ()

    def _prepared(self, epoch: int) -> tuple[EpochPlan, ChunkTable]:
        """Plan and chunk table (from batch 0) of ``epoch``, computed at most once."""
        key = (epoch, self._history(epoch))
        future = self._preparing.get(key)
        if future is None:
            future = self._preparing[key] = _Done(self._compute(*key))
        self._forget_old()
        return future.result()

    def _prepare_ahead(self, epoch: int) -> None:
        """Compute the next epoch's plan in a thread while this one runs (numpy sorts release the GIL)."""
        key = (epoch, self._history(epoch))
        if key in self._preparing:
            return
        if self._planner is None:
            self._planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastload-planner")
        self._preparing[key] = self._planner.submit(self._compute, *key)

    def _forget_old(self) -> None:
        # plans are as large as an epoch's index arrays: keep only a few around
        for e in sorted(self._preparing)[:-3]:
            del self._preparing[e]

    def _compute(
        self, epoch: int, history: tuple[tuple[int, int], ...] = ()
    ) -> tuple[EpochPlan, ChunkTable]:
        plan = plan_resumed(self._shapes, self._order, epoch, self._mix, history)
        plan = within_batch_order(plan)
        return plan, chunk_table(plan, self._chunk_lens, self._key_offsets, 0)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.plan().n_batches

    def __repr__(self) -> str:
        return (
            f"<fastload.Loader sources={list(self._spec.source_names)} batch_size={self.batch_size} "
            f"workers={self._spec.workers} backend={self._spec.backend!r} epoch={self.epoch}>"
        )

    # ----------------------------------------------------------------- epochs
    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch`` from its start (like DistributedSampler)."""
        if self._in_epoch:
            raise ConfigError(
                "set_epoch() called during an iteration; finish or break out of the loop first"
            )
        self.epoch = int(epoch)
        self._start_batch = 0
        self._elastic = ()

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: the next unseen batch of the current epoch.

        ``batch`` counts batches of this world's part of the epoch; ``elastic``
        lists the ``[world_size, batches]`` parts earlier worlds consumed (after
        an elastic resume, else empty).  ``config`` holds the settings the
        fingerprint hashes, so a refused state names what changed.
        """
        return {
            "epoch": self.epoch,
            "batch": self._delivered if self._in_epoch else self._start_batch,
            "fingerprint": self._fingerprint,
            "rank": self._order.rank,
            "world_size": self._order.world_size,
            "elastic": [list(segment) for segment in self._elastic],
            "config": plan_description(self._shapes, self._order, self._mix),
        }

    def load_state_dict(self, state: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Resume so that the next iteration starts exactly at ``state``'s next unseen batch.

        ``state`` is one rank's ``state_dict()`` or a sequence of every old rank's
        (checked to agree: ranks move in lockstep).  Saved under the same world
        size, any rank's state gives this rank the same position on its own
        shard.  Saved under another ``world_size`` (an *elastic* resume), the rest
        of the epoch — every sample no old rank consumed — is shared among the
        new ranks, and the next epoch is the new world's normal plan; see
        docs/order.md, "Elastic resume".
        """
        if self._in_epoch:
            raise ConfigError("load_state_dict() called during an iteration")
        if not isinstance(state, Mapping):
            state = merge_states(state)
        order = self._order
        if "world_size" not in state:  # saved before elastic resume: the hash held the ranks
            if state.get("fingerprint") != legacy_fingerprint(self._shapes, order, self._mix):
                raise ConfigError(
                    "the saved loader state was made with a different configuration (sources, "
                    "batch size, seed, shuffle, window, ranks or mix); it would not resume the "
                    "same batches"
                )
            saved_world, history = order.world_size, []
        else:
            if state.get("fingerprint") != self._fingerprint:
                mine = plan_description(self._shapes, order, self._mix)
                saved = state.get("config")
                changed = changed_settings(saved, mine) if isinstance(saved, Mapping) else []
                raise ConfigError(
                    "the saved loader state was made with a different configuration, so the same "
                    "batch would name other samples: changed "
                    + (
                        "; ".join(changed)
                        if changed
                        else "sources, batch size, seed, shuffle, window or mix"
                    )
                    + ". Load it into a loader with the saved settings, or start a fresh epoch"
                )
            saved_world, history = int(state["world_size"]), state.get("elastic", [])
        epoch, batch = int(state["epoch"]), int(state["batch"])
        elastic, start = resume_history(history, saved_world, batch, order.world_size)
        previous = self.epoch, self._start_batch, self._elastic
        self.epoch, self._start_batch, self._elastic = epoch, start, elastic
        try:
            n = self.plan(epoch).n_batches  # also checks the history against the plans
            if not 0 <= start <= n:
                raise ConfigError(
                    f"saved batch {start} out of range for epoch {epoch} ({n} batches)"
                )
        except BaseException:
            self.epoch, self._start_batch, self._elastic = previous
            raise
        if elastic:
            _log.info(
                "elastic resume of epoch %d: %s; now %d ranks, %d batches on this rank",
                epoch,
                ", then ".join(f"{w} ranks consumed {k} batches" for w, k in elastic),
                order.world_size,
                n,
            )

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Batch]:
        if self._closed:
            raise ConfigError("this Loader is closed")
        if self._in_epoch:
            raise ConfigError(
                "a Loader supports one iteration at a time; finish or break the previous loop"
            )
        return self._iterate()

    def _iterate(self) -> Iterator[Batch]:
        start = self._start_batch
        plan, table = self._prepared(self.epoch)
        if start >= plan.n_batches:  # resumed at the very end of an epoch
            self._finish_epoch()
            start = 0
            plan, table = self._prepared(self.epoch)
        if start:
            table = chunk_table(plan, self._chunk_lens, self._key_offsets, start)
        engine = self._engine_for(plan, table)
        self._prepare_ahead(self.epoch + 1)
        self._in_epoch = True
        self._delivered = start
        try:
            for batch in engine.run(plan, table, start, copy=self.copy):
                self._delivered += 1
                if engine.copied_for_kept and not self._warned_kept:
                    self._warn_kept(engine)
                yield batch
                # the consumer may have dropped it: this frame must not pin its slot
                # while the next batch is prepared
                del batch
        except GeneratorExit:
            raise
        except BaseException:
            # WorkerError (the pool may have lost a worker for good) or an interrupt while
            # waiting: tasks may still be in flight, so the next iteration gets a fresh engine
            engine.close()
            if self._engine is engine:
                self._engine = None
            raise
        finally:
            # also for an abandoned epoch (break, exception): the next iteration starts
            # the next epoch, as with a torch DataLoader; state_dict() taken inside the
            # loop resumes exactly
            self._in_epoch = False
            self._finish_epoch()

    def _warn_kept(self, engine: Engine) -> None:
        self._warned_kept = True
        message = (
            f"batches kept by the consumer pin {engine.max_kept_bytes / 2**20:.0f} MiB of shared "
            "memory (the max_kept_bytes bound): until some of them are released, the loader "
            "delivers copies, which is slower. Copy what you keep (b['y'].copy(), or "
            "fl.Loader(..., copy=True)), or raise max_kept_bytes"
        )
        _log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _finish_epoch(self) -> None:
        self.epoch += 1
        self._start_batch = 0
        self._delivered = 0
        self._elastic = ()

    def _engine_for(self, plan: EpochPlan, table: ChunkTable) -> Engine:
        engine = self._engine
        # progress needs `slots_needed` slots (every batch one window of chunks feeds)
        if (
            engine is not None
            and engine.batch_slots > table.slots_needed
            and engine.plan_capacity >= table.n_entries
        ):
            return engine
        if engine is not None:
            engine.close()
        # twice the batches one window of chunks feeds, so the next window's chunks decode
        # while this window's batches are consumed (with one window's worth, every window
        # boundary stalled: +50% throughput at batch 256); +2: later epochs may need a few more
        slots = 2 * table.slots_needed + self._spec.batch_slots + 2
        self._engine = Engine(
            self._spec, batch_slots=slots, plan_capacity=max(table.n_entries, plan.n_samples)
        )
        return self._engine

    # --------------------------------------------------------------- adapters
    def torch(self, device: Any = None, pin_memory: bool | None = None, **options: Any) -> Any:
        """Batches as dicts of torch tensors (zero-copy on CPU; pinned, async copies to a GPU).

        See :func:`fastload.adapters.torch.to_torch`.
        """
        from fastload.adapters.torch import to_torch

        return to_torch(self, device=device, pin_memory=pin_memory, **options)

    def tf(self, **options: Any) -> Any:
        """A ``tf.data.Dataset`` with a complete ``element_spec``; see :func:`fastload.adapters.tf.to_tf`."""
        from fastload.adapters.tf import to_tf

        return to_tf(self, **options)

    def jax(self, **options: Any) -> Any:
        """Batches as dicts of ``jax.Array`` (zero-copy on CPU; ``device_put`` to an accelerator).

        See :func:`fastload.adapters.jax.to_jax`.
        """
        from fastload.adapters.jax import to_jax

        return to_jax(self, **options)

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        self._closed = True
        if self._planner is not None:
            self._planner.shutdown(wait=True, cancel_futures=True)
            self._planner = None
        self._preparing = {}
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (empty before the first iteration or with threads)."""
        return self._engine.worker_pids() if self._engine is not None else []

    @property
    def shared_nbytes(self) -> int:
        """Size of the arena: the batch ring plus the reserve for kept batches.

        Pages of the reserve take memory only once a kept batch uses them.
        """
        return self._engine.nbytes if self._engine is not None else 0
