"""Messages between the coordinator and its workers, and how a worker's exception travels.

Tasks (coordinator -> worker) and replies (worker -> coordinator) are small
NamedTuples, never arrays: the data itself moves through the shared arena.

Tasks never wait for each other: chunk tasks write disjoint rows, and the
coordinator sends a transform only after every chunk of its batch is done.

A task that raises comes back as :class:`Failed` carrying the exception
itself, so the consumer can re-raise it with its own type (``except
CorruptStoreError`` or ``except ValueError`` works as without workers).  A
process worker pickles it with cloudpickle (an exception class defined in the
user's ``__main__`` travels by value); when that fails, or the consumer cannot
unpickle it, the consumer raises :class:`~fastload.errors.WorkerError` with the
worker's message instead.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import NamedTuple

from fastload.errors import WorkerError

#: one copy of rows: (batch slot, first plan_rows entry, one past the last, first row in the slot)
Run = tuple[int, int, int, int]


class ChunkTask(NamedTuple):
    """Decode chunk ``chunk`` of every selected field of source ``source`` and copy its ``runs``.

    Each run ``(slot, entry_lo, entry_hi, dest_lo)`` copies the chunk rows
    ``plan_rows[entry_lo:entry_hi]`` to positions ``dest_lo..`` of batch slot ``slot``.
    ``cache`` (``fastload._engine._memcache``): 0 decode into the scratch buffer,
    1 decode into the chunk's place in the arena's memory cache, 2 the chunk is
    there already (copy from it, read nothing).
    """

    id: int
    source: int
    chunk: int
    runs: tuple[Run, ...]
    cache: int = 0


class TransformTask(NamedTuple):
    """Apply the transform to the ``n`` staged samples of ``slot`` (batch ``batch`` of the epoch)."""

    id: int
    slot: int
    n: int
    batch: int


class Stop(NamedTuple):
    """Finish: the worker exits after the task it is running."""


Task = ChunkTask | TransformTask


class Done(NamedTuple):
    """Task ``id`` finished."""

    id: int


class Failed(NamedTuple):
    """Task ``id`` raised (``id`` is ``-1`` when the worker failed to start).

    ``error`` is the exception itself (thread and inline workers), its pickle
    (process workers), or ``None`` when it did not pickle.
    """

    id: int
    doing: str  # what the worker was doing: worker, store and chunk, or transform and batch
    summary: str  # "ExceptionType: message", for when the exception itself cannot be rebuilt
    traceback: str  # the worker's formatted traceback
    error: BaseException | bytes | None


Reply = Done | Failed

#: ``Failed.id`` of a worker that could not set itself up (no task involved)
STARTUP = -1


def pickled_error(exc: BaseException) -> bytes | None:
    """``exc`` as bytes for the consumer, or ``None`` when it does not pickle."""
    import cloudpickle

    try:
        return cloudpickle.dumps(exc)
    except Exception:
        return None


def failure(reply: Failed, *, in_process: bool) -> BaseException:
    """The exception to raise in the consumer for ``reply``, with what the worker was doing attached.

    The original exception keeps its type; its notes say which worker, store and
    chunk (or transform and batch) it came from, and, for a process worker (whose
    frames cannot travel), the worker's traceback.  :class:`WorkerError` only when
    the exception could not be rebuilt.
    """
    exc: BaseException | None = None
    if isinstance(reply.error, BaseException):
        exc = reply.error
    elif isinstance(reply.error, bytes):
        with contextlib.suppress(Exception):
            exc = pickle.loads(reply.error)  # our own worker's bytes, never a file's
    if not isinstance(exc, BaseException):
        return WorkerError(
            f"{reply.doing}: {reply.summary}\n\nworker traceback:\n{reply.traceback}"
        )
    exc.add_note(f"raised by fastload {reply.doing}")
    if in_process:
        exc.add_note(f"worker traceback:\n{reply.traceback.rstrip()}")
    return exc


class Setup(NamedTuple):
    """The first message a process worker receives: who it is and its configuration.

    ``config`` is the cloudpickled ``WorkerConfig``, decoded only after the
    worker has put the consumer's ``sys_path`` in place, so that a transform
    pickled by reference (``from mytransforms import JetMass``) imports there;
    ``argv`` is the consumer's ``sys.argv`` (code that reads it still finds the
    script's arguments).
    """

    worker_id: int
    arena_name: str
    sys_path: list[str]
    argv: list[str]
    config: bytes
