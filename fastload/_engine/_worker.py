"""What a prefetch worker does: decode a chunk and copy its rows into the batch slots that need them.

The tasks (:mod:`fastload._engine._protocol`) are small messages, never arrays:

:class:`~fastload._engine._protocol.ChunkTask`
    Decode chunk ``chunk`` of every selected field of source ``source`` into the
    worker's scratch buffer (reused, so it stays in the CPU cache), then copy
    each *run* ``(slot, entry_lo, entry_hi, dest_lo)`` — the rows
    ``plan_rows[entry_lo:entry_hi]`` of the chunk — to positions
    ``dest_lo..`` of batch slot ``slot``.  Inside a batch, samples are ordered
    by (source, index), so the rows one chunk gives one batch are contiguous
    there and each run is a single ``np.take(..., out=)``.
:class:`~fastload._engine._protocol.TransformTask`
    Apply the transform to the ``n`` staged samples of ``slot`` and write the
    result into the slot's output fields.

Replies are :class:`~fastload._engine._protocol.Done` or
:class:`~fastload._engine._protocol.Failed` (carrying the exception itself).
How a process worker starts is :mod:`fastload._engine._child`'s business.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fastload._engine._arena import Arena, Layout
from fastload._engine._memcache import FILL, HIT, NO_CACHE
from fastload._engine._protocol import (
    ChunkTask,
    Done,
    Failed,
    Reply,
    Stop,
    Task,
    pickled_error,
)
from fastload._source import DenseChunkDecoder, RaggedChunkDecoder
from fastload._spec import FieldSpec, output_problem
from fastload.errors import RaggedBoundError, StoreChangedError, WorkerError
from fastload.store import Ragged

logger = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """Everything a worker needs, sent once when it starts (picklable).

    ``sources[s][field]`` is ``source.decoder(field)`` of source ``s``: a
    :class:`~fastload._source.RaggedChunkDecoder` for the fields of
    ``ragged_lengths``, a :class:`~fastload._source.DenseChunkDecoder` for the
    others (the Source contract, ``fastload/_source.py``).
    """

    layout: Layout
    sources: list[dict[str, DenseChunkDecoder | RaggedChunkDecoder]]
    source_names: list[str]
    fields: tuple[str, ...]
    ragged_lengths: dict[str, int]  # padded length L of each ragged field
    packed: tuple[str, ...]  # ragged fields delivered as values + offsets (fl.Ragged)
    input_specs: dict[str, FieldSpec]  # what gathering produces (before the transform)
    output_specs: dict[str, FieldSpec]  # what lands in the batch slot
    batch_size: int
    label_field: str | None = None
    transform: Any = None
    #: compressed bytes each worker may read ahead per store (0: no read-ahead)
    readahead_bytes: int = 0
    #: per source: chunks 0 .. n - 1 have a place in the arena's memory cache
    cached_chunks: tuple[int, ...] = ()

    @property
    def gather_prefix(self) -> str:
        """Region family chunk tasks write: staging when a transform follows, else the batch."""
        return "stage" if self.transform is not None else "batch"


class Executor:
    """Executes tasks against an arena; shared by process, thread and inline backends."""

    def __init__(self, cfg: WorkerConfig, arena: Arena, worker_id: int) -> None:
        self.cfg = cfg
        self.arena = arena
        self.worker_id = worker_id
        self._scratch: dict[str, np.ndarray] = {}
        self._read_ahead: set[int] = set()  # ids of queued tasks whose chunks are read ahead

    # ------------------------------------------------------------- chunk task
    def chunk(
        self,
        source: int,
        chunk: int,
        runs: tuple[tuple[int, int, int, int], ...],
        cache: int = NO_CACHE,
    ) -> None:
        cfg = self.cfg
        plan_rows = self.arena["plan_rows"]
        prefix = cfg.gather_prefix
        for fname in cfg.fields:
            reader = cfg.sources[source][fname]
            # raggedness from the configuration (the field's spec), not from the decoder:
            # the contract asks nothing more of a decoder than decoding
            if fname in cfg.packed or fname in cfg.ragged_lengths:
                values, offsets = self._ragged_chunk(
                    source, fname, chunk, cast(RaggedChunkDecoder, reader), cache
                )
            if fname in cfg.packed:
                counts = _copy_packed(
                    values,
                    offsets,
                    plan_rows,
                    runs,
                    self.arena[f"{prefix}/{fname}/offsets"],
                    self.arena[f"{prefix}/{fname}/values"],
                )
                if counts is not None:
                    raise self._changed(source, fname, chunk, counts)
            elif fname in cfg.ragged_lengths:
                slots_out = self.arena[f"{prefix}/{fname}"]
                slots_len = self.arena[f"{prefix}/{fname}_len"]
                for slot, lo, hi, dest in runs:
                    rows = plan_rows[lo:hi]
                    _copy_ragged(
                        values,
                        offsets,
                        rows,
                        slots_out[slot, dest : dest + hi - lo],
                        slots_len[slot, dest : dest + hi - lo],
                    )
            else:
                dense = cast(DenseChunkDecoder, reader)
                slots_out = self.arena[f"{prefix}/{fname}"]
                whole = _whole_chunk_run(runs, plan_rows, dense.chunk_len)
                if cache != NO_CACHE:
                    length = dense.chunk_len
                    decoded = self.arena[f"cache/{source}/{fname}"][
                        chunk * length : (chunk + 1) * length
                    ]
                    if cache == FILL:
                        dense.decode_into(chunk, decoded)
                    if whole:
                        slot, _lo, _hi, dest = runs[0]
                        slots_out[slot, dest : dest + length] = decoded
                        continue
                elif whole:
                    # the run is the whole chunk, rows in order (always so with one-sample
                    # chunks): decode straight into the slot, one pass over the bytes
                    slot, _lo, _hi, dest = runs[0]
                    dense.decode_into(chunk, slots_out[slot, dest : dest + dense.chunk_len])
                    continue
                else:
                    decoded = self._dense_scratch(fname, dense)
                    dense.decode_into(chunk, decoded)
                for slot, lo, hi, dest in runs:
                    # mode="clip": with the default "raise", numpy gathers into a hidden
                    # temporary and copies that into `out` (3x slower, measured); the rows
                    # come from the chunk table and are in range by construction
                    np.take(
                        decoded,
                        plan_rows[lo:hi],
                        axis=0,
                        out=slots_out[slot, dest : dest + hi - lo],
                        mode="clip",
                    )
        if cfg.label_field is not None:
            labels = self.arena[f"{prefix}/{cfg.label_field}"]
            for slot, lo, hi, dest in runs:
                labels[slot, dest : dest + hi - lo] = source

    def _ragged_chunk(
        self, source: int, fname: str, chunk: int, reader: RaggedChunkDecoder, cache: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values and offsets of a ragged chunk: decoded into scratch, and kept, or from the cache.

        From the cache, ``values`` is the source's whole cached region and
        ``offsets`` the chunk's absolute offsets into it (offsets need not start at 0).
        """
        if cache == HIT:
            return self._cached_ragged(source, fname, chunk, reader.chunk_len)
        values, offsets = self._ragged_scratch(fname, reader)
        rows = reader.decode_into(chunk, values, offsets)
        if cache == FILL:
            kept_values, kept_offsets = self._cached_ragged(source, fname, chunk, reader.chunk_len)
            counts = np.diff(offsets[: rows + 1])
            if rows + 1 != kept_offsets.size or not np.array_equal(counts, np.diff(kept_offsets)):
                raise self._changed(source, fname, chunk, counts.tolist()[:8])
            lo, hi = int(kept_offsets[0]), int(kept_offsets[-1])
            kept_values[lo:hi] = values[int(offsets[0]) : int(offsets[rows])]
        return values, offsets

    def _cached_ragged(
        self, source: int, fname: str, chunk: int, chunk_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        offsets = self.arena[f"cache/{source}/{fname}/offsets"]
        first = chunk * chunk_len
        last = min(first + chunk_len, offsets.size - 1)
        return self.arena[f"cache/{source}/{fname}/values"], offsets[first : last + 1]

    def _changed(self, source: int, fname: str, chunk: int, counts: list[int]) -> StoreChangedError:
        return StoreChangedError(
            f"ragged field {fname!r} of source {self.cfg.source_names[source]!r}: "
            f"chunk {chunk} decodes samples of {counts} rows where the loader, "
            "when built, read other row counts; the data changed under the "
            "loader: rebuild it"
        )

    def _dense_scratch(self, fname: str, reader: DenseChunkDecoder) -> np.ndarray:
        buf = self._scratch.get(fname)
        if buf is None or buf.shape[0] < reader.chunk_len:
            rows = max(reader.chunk_len, *(s[fname].chunk_len for s in self.cfg.sources))
            buf = np.empty((rows, *reader.row_shape), dtype=reader.dtype)
            self._scratch[fname] = buf
        return buf

    def _ragged_scratch(
        self, fname: str, reader: RaggedChunkDecoder
    ) -> tuple[np.ndarray, np.ndarray]:
        values = self._scratch.get(f"{fname}/values")
        need = reader.capacity_rows()
        if values is None or values.shape[0] < need:
            values = np.empty((max(need, 1), *reader.row_shape), dtype=reader.dtype)
            self._scratch[f"{fname}/values"] = values
        offsets = self._scratch.get(f"{fname}/offsets")
        if offsets is None or offsets.shape[0] < reader.chunk_len + 1:
            offsets = np.empty(reader.chunk_len + 1, dtype=np.int64)
            self._scratch[f"{fname}/offsets"] = offsets
        return values, offsets

    # --------------------------------------------------------- transform task
    def transform(self, slot: int, n: int) -> None:
        cfg = self.cfg
        staged = {name: self._staged(name, spec, slot, n) for name, spec in cfg.input_specs.items()}
        result = cfg.transform(staged)
        for name, spec in cfg.output_specs.items():
            if name not in result:
                raise WorkerError(
                    f"transform {cfg.transform!r} did not return its declared field {name!r}"
                )
            value = result[name]
            if not spec.ragged:
                value = np.asarray(value)
            problem = output_problem(spec, value, n)
            if problem is not None:
                what, over_bound = problem
                if over_bound:
                    raise RaggedBoundError(
                        f"transform {cfg.transform!r}: ragged output {name!r} {what}; the batch "
                        "slot is sized from that bound, so nothing was written: raise the bound "
                        "the transform declares in output_spec() (e.g. a larger n or k), or make "
                        "it return fewer rows"
                    )
                # the slot would cast silently (float -> int truncates): refuse, as check_transform does
                raise WorkerError(
                    f"transform {cfg.transform!r} returned field {name!r} that {what} in "
                    "output_spec()"
                )
            if spec.ragged:
                values, offsets = value.rebased()
                self.arena[f"batch/{name}/offsets"][slot, : n + 1] = offsets
                self.arena[f"batch/{name}/values"][slot, : values.shape[0]] = values
            else:
                self.arena[f"batch/{name}"][slot, :n] = value

    def _staged(self, name: str, spec: FieldSpec, slot: int, n: int) -> Any:
        """A transform's input field: the staged rows (a read-only ``Ragged`` for a ragged one)."""
        if not spec.ragged:
            return self.arena[f"stage/{name}"][slot, :n]
        offsets = self.arena[f"stage/{name}/offsets"][slot, : n + 1].view()
        values = self.arena[f"stage/{name}/values"][slot, : int(offsets[n])].view()
        offsets.flags.writeable = False
        values.flags.writeable = False
        return Ragged(values, offsets)

    # ------------------------------------------------------------- read-ahead
    def read_ahead(self, tasks: Iterable[Task]) -> None:
        """Tell the decoders which chunks come next (``tasks``, in order) so they read them ahead.

        Decoders without ``read_ahead`` (in-memory sources) are skipped; the first
        one whose window is full ends it.  Never raises: a chunk that cannot be
        read ahead is read, and its error reported, when its task runs.
        """
        window = self.cfg.readahead_bytes
        if window <= 0:
            return
        done = self._read_ahead
        try:
            for task in tasks:
                if not isinstance(task, ChunkTask) or task.id in done or task.cache == HIT:
                    continue  # a cached chunk reads nothing
                for fname in self.cfg.fields:
                    hint = getattr(self.cfg.sources[task.source][fname], "read_ahead", None)
                    if hint is not None and not hint(task.chunk, window):
                        return
                done.add(task.id)
        except Exception as exc:
            logger.debug("read-ahead stopped: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Release what reading ahead holds (I/O threads, bytes), for every decoder."""
        for decoders in self.cfg.sources:
            for decoder in decoders.values():
                release = getattr(decoder, "close_read_ahead", None)
                if release is not None:
                    with contextlib.suppress(Exception):
                        release()

    # --------------------------------------------------------------- dispatch
    def run(self, task: Task) -> None:
        self._read_ahead.discard(task.id)
        if isinstance(task, ChunkTask):
            self.chunk(task.source, task.chunk, task.runs, task.cache)
        else:
            self.transform(task.slot, task.n)

    def describe(self, task: Task) -> str:
        """Who is doing what: the worker, and the store and chunk, or the transform and batch."""
        if isinstance(task, ChunkTask):
            first = self.cfg.sources[task.source][self.cfg.fields[0]]
            url = getattr(
                first, "url", None
            )  # optional in the contract; decoders of a store have it
            where = f"data at {url!r}, " if isinstance(url, str) else ""
            return (
                f"worker {self.worker_id} reading chunk {task.chunk} of source "
                f"{self.cfg.source_names[task.source]!r} ({where}fields {list(self.cfg.fields)})"
            )
        return f"worker {self.worker_id} applying transform {self.cfg.transform!r} to batch {task.batch}"


#: Mean rows per sample above which per-sample slice copies beat one vectorised scatter
#: (measured: at 64 rows per sample the loop is 4x faster, at 4 rows 4x slower).
_SLICE_COPY_MIN_ROWS = 24


def _copy_ragged(
    values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, out: np.ndarray, lens: np.ndarray
) -> None:
    """Copy samples ``rows`` of a decoded ragged chunk into zero-padded ``out`` (n, L, ...)."""
    n, length = out.shape[0], out.shape[1]
    start = offsets[rows]
    counts = np.minimum(offsets[rows + 1] - start, length)
    lens[...] = counts
    out[...] = 0
    total = int(counts.sum())
    if total == 0:
        return
    if total >= _SLICE_COPY_MIN_ROWS * n:
        # long samples (calorimeter hits): one memcpy per sample, no index arrays
        for i, (a, c) in enumerate(zip(start.tolist(), counts.tolist(), strict=True)):
            out[i, :c] = values[a : a + c]
        return
    out_flat = out.reshape(n * length, *out.shape[2:])
    first = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    within = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
    sample = np.repeat(np.arange(n, dtype=np.int64), counts)
    out_flat[sample * length + within] = values[np.repeat(start, counts) + within]


def _whole_chunk_run(
    runs: tuple[tuple[int, int, int, int], ...], plan_rows: np.ndarray, chunk_len: int
) -> bool:
    """Whether ``runs`` is one run of rows ``0..chunk_len-1`` of the chunk, in order.

    Then the chunk can be decoded into the slot itself: ``decode_into`` writes
    exactly ``chunk_len`` rows, all of them this run's (a partial last chunk, whose
    padding rows would land on other samples of the slot, is never one).
    """
    if len(runs) != 1:
        return False
    _slot, lo, hi, _dest = runs[0]
    if hi - lo != chunk_len:
        return False
    if chunk_len == 1:
        return int(plan_rows[lo]) == 0
    return bool(np.array_equal(plan_rows[lo:hi], np.arange(chunk_len)))


def _copy_packed(
    values: np.ndarray,
    offsets: np.ndarray,
    plan_rows: np.ndarray,
    runs: tuple[tuple[int, int, int, int], ...],
    slots_offsets: np.ndarray,
    slots_values: np.ndarray,
) -> list[int] | None:
    """Copy the samples of a chunk task's ``runs`` back to back into their batch slots.

    Run ``(slot, lo, hi, dest)`` holds the samples ``plan_rows[lo:hi]`` of the
    decoded chunk (``values``, ``offsets``); its sample ``i`` goes to
    ``slots_values[slot, o[i]:o[i + 1]]`` with ``o = slots_offsets[slot, dest:]``
    (written by the coordinator from the source's row counts).  Returns None, or,
    without writing anything, the decoded counts when they disagree with the
    offsets (the rows of other samples would be overwritten).

    The whole task is checked and cut into segments at once: samples that follow
    each other in the chunk (common without shuffling, or with batches large
    against the chunk) are one slice, and each run's slices go into its slot with
    one ``np.concatenate`` (short samples, as particle lists: one ``np.take``).
    """
    lo, hi = runs[0][1], runs[-1][2]
    if any(runs[i][2] != runs[i + 1][1] for i in range(len(runs) - 1)):
        raise WorkerError(f"chunk task runs {runs!r} do not cover consecutive plan entries")
    rows = plan_rows[lo:hi]
    start = offsets[rows]
    stop = offsets[rows + 1]
    counts = stop - start
    expected = np.empty_like(counts)
    bounds = []  # per run: its entries in the task, and its slot's offsets
    for slot, r_lo, r_hi, dest in runs:
        slot_offsets = slots_offsets[slot, dest : dest + r_hi - r_lo + 1]
        np.subtract(slot_offsets[1:], slot_offsets[:-1], out=expected[r_lo - lo : r_hi - lo])
        bounds.append((slot, r_lo - lo, r_hi - lo, slot_offsets))
    if not np.array_equal(counts, expected):
        return counts.tolist()[:8]
    # a segment ends where the next sample does not follow in the chunk, and at a run's end
    breaks = start[1:] != stop[:-1]
    for _, _, r_hi, _ in bounds[:-1]:
        breaks[r_hi - 1] = True
    cut = np.flatnonzero(breaks) + 1
    first = np.zeros(cut.size + 1, dtype=np.intp)  # first and last sample of each segment
    first[1:] = cut
    last = np.full(cut.size + 1, rows.size - 1, dtype=np.intp)
    last[:-1] = cut - 1
    seg_lo, seg_hi = start[first].tolist(), stop[last].tolist()
    seg_of_run = np.searchsorted(first, [b[1] for b in bounds] + [rows.size]).tolist()
    for r, (slot, r_lo, r_hi, slot_offsets) in enumerate(bounds):
        base, total = int(slot_offsets[0]), int(slot_offsets[-1])
        target = slots_values[slot, base:total]
        s0, s1 = seg_of_run[r], seg_of_run[r + 1]
        if total == base:
            continue
        if s1 - s0 == 1:
            target[...] = values[seg_lo[s0] : seg_hi[s0]]
        elif total - base < _SLICE_COPY_MIN_ROWS * (r_hi - r_lo):
            # short samples: one gather over a row index beats many small slices
            n_rows = counts[r_lo:r_hi]
            within = np.arange(total - base, dtype=np.int64) - np.repeat(
                slot_offsets[:-1] - base, n_rows
            )
            np.take(
                values,
                np.repeat(start[r_lo:r_hi], n_rows) + within,
                axis=0,
                out=target,
                mode="clip",
            )
        else:
            pieces = [values[a:b] for a, b in zip(seg_lo[s0:s1], seg_hi[s0:s1], strict=True)]
            np.concatenate(pieces, axis=0, out=target)
    return None


def serve(executor: Executor, conn: Any, *, in_process: bool) -> None:
    """Run tasks from ``conn`` until told to stop or the other end goes away.

    ``in_process``: replies cross a process boundary, so a failure carries its
    exception pickled (or ``None``) rather than the object itself.  With
    read-ahead on, the tasks already queued on ``conn`` are received before the
    next one runs (in order, still run one by one) and their chunks read ahead.
    """
    try:
        _serve(executor, conn, in_process=in_process)
    finally:
        executor.close()


def _serve(executor: Executor, conn: Any, *, in_process: bool) -> None:
    backlog: deque[Task | Stop] = deque()
    queued = _queued(conn) if executor.cfg.readahead_bytes > 0 else None
    peek = queued is not None
    while True:
        try:
            if not backlog:
                backlog.append(conn.recv())
            if queued is not None:
                while queued():  # queued already: receiving cannot block
                    backlog.append(conn.recv())
        except (EOFError, OSError):
            if not backlog:
                return
        task = backlog.popleft()
        if isinstance(task, Stop):
            return
        if peek:
            executor.read_ahead(itertools.chain((task,), backlog))  # type: ignore[arg-type]
        try:
            executor.run(task)
            reply: Reply = Done(task.id)
        except BaseException as exc:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                return
            reply = failed(task.id, executor.describe(task), exc, in_process=in_process)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def _queued(conn: Any) -> Callable[[], bool] | None:
    """A cheap "is a message waiting on ``conn``" check (None when ``conn`` cannot tell)."""
    fileno = getattr(conn, "fileno", None)
    if fileno is not None:
        # one poll set, not Connection.poll(), which builds a selector per call
        poller = select.poll()
        poller.register(fileno(), select.POLLIN)
        return lambda: bool(poller.poll(0))
    return getattr(conn, "poll", None)


def failed(task_id: int, doing: str, exc: BaseException, *, in_process: bool) -> Failed:
    """The reply for ``exc``, raised while ``doing`` task ``task_id`` (inside an except block)."""
    return Failed(
        id=task_id,
        doing=doing,
        summary=f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc(),
        error=pickled_error(exc) if in_process else exc,
    )
