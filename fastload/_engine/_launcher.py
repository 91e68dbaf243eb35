"""Starts a process worker as a fresh interpreter and keeps the handles to it.

Not ``multiprocessing``: its spawn and forkserver methods re-run or re-import
the user's ``__main__`` in every child (``spawn.prepare``), which breaks
scripts without a main guard, code on stdin and ``python -c``, re-runs a DDP
script's ``init_process_group`` and makes every worker pay for the script's
imports; ``fork`` is unsafe in a process that may hold threads.  A worker here
is ``python -P -m fastload._engine._child FD PARENT_PID`` started with
``subprocess`` (fork+exec, no Python code between them), talking over one
socket wrapped in a :class:`multiprocessing.connection.Connection` and
inheriting no other file descriptor (``close_fds``: in particular not the
resource tracker's, whose end-of-file is what unlinks a killed consumer's
segment).  Python 3.14's change of multiprocessing's default start method
therefore does not concern fastload.

Starting an interpreter and its imports costs ~0.25 s per worker, so workers
are normally forked from this process's zygote (:mod:`fastload._engine._zygote`),
itself started this way once; a worker starts directly when the zygote cannot
be used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TypeVar

import fastload
from fastload._engine._zygote import Zygote, ZygoteError, fresh_interpreter, shared_zygote

logger = logging.getLogger("fastload")

_Started = TypeVar("_Started")

#: the exit code reported for a forked worker whose status could not be learnt
_UNKNOWN_EXIT = 255

#: the directory fastload is imported from, put first on the worker's path
_FASTLOAD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


class WorkerProcess:
    """One worker interpreter: its connection, its exit sentinel and its exit code."""

    def __init__(self, name: str) -> None:
        self.conn, self._proc = _paired(
            lambda fd: fresh_interpreter("fastload._engine._child", fd, _worker_env())
        )
        self.name = name
        self.pid = self._proc.pid
        # readable once the process has exited (Linux >= 5.3); elsewhere the
        # connection's end-of-file says it
        self.sentinel: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.sentinel = os.pidfd_open(self.pid)

    @property
    def exitcode(self) -> int | None:
        """The exit code, negative for a signal, or ``None`` while running."""
        return self._proc.poll()

    def join(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)
        return self._proc.returncode

    def stop(self, timeout: float) -> None:
        """Wait ``timeout`` for the process to exit, then terminate, then kill it; release handles."""
        if self.join(timeout) is None:
            with contextlib.suppress(OSError):
                self._proc.terminate()
            if self.join(timeout) is None:
                with contextlib.suppress(OSError):
                    self._proc.kill()
                self._proc.wait()
        _close_handles(self.conn, self.sentinel)
        self.sentinel = None


class ForkedWorker:
    """A worker the zygote forked: the same interface as :class:`WorkerProcess`.

    The consumer is not its parent, so it is watched and signalled through a
    pidfd (immune to pid reuse) and its exit code comes from the zygote.
    """

    def __init__(self, name: str, zygote: Zygote) -> None:
        self.conn, self.pid = _paired(lambda fd: zygote.spawn(fd, _worker_env()))
        try:
            self.sentinel: int | None = os.pidfd_open(self.pid)
        except OSError:  # exited already (pidfds exist: the zygote needs them)
            self.sentinel = None
        self.name = name
        self._zygote = zygote
        self._code: int | None = None
        self._exited = False

    @property
    def exitcode(self) -> int | None:
        if self._exited:
            return self._code
        if self.sentinel is None or not select.select([self.sentinel], [], [], 0)[0]:
            return None
        self._exited = True
        self._code = _UNKNOWN_EXIT  # the zygote died too, or already forgot the code
        for _ in range(20):  # exited means reapable: the zygote answers within a few tries
            try:
                code = self._zygote.status(self.pid)
            except ZygoteError:
                break
            if code is not None:
                self._code = code
                break
            time.sleep(0.005)
        return self._code

    def join(self, timeout: float) -> int | None:
        if self.sentinel is not None and not self._exited:
            select.select([self.sentinel], [], [], max(0.0, timeout))
        return self.exitcode

    def stop(self, timeout: float) -> None:
        """As :meth:`WorkerProcess.stop`: wait, terminate, kill; release handles."""
        if self.join(timeout) is None and not self._exited:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self.sentinel, sig)  # type: ignore[arg-type]
                if (
                    self.join(timeout if sig == signal.SIGTERM else 10.0) is not None
                    or self._exited
                ):
                    break
        _close_handles(self.conn, self.sentinel)
        self.sentinel = None


def _paired(start: Callable[[int], _Started]) -> tuple[Connection, _Started]:
    """A socket pair: ``start(fd)`` hands one end to a new process; the other, as a Connection."""
    parent_end, child_end = socket.socketpair()
    try:
        started = start(child_end.fileno())
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return Connection(parent_end.detach()), started


def _close_handles(conn: Connection, sentinel: int | None) -> None:
    """Close a worker's connection and its pidfd (the caller forgets both)."""
    with contextlib.suppress(OSError):
        conn.close()
    if sentinel is not None:
        with contextlib.suppress(OSError):
            os.close(sentinel)


def start_worker(name: str) -> WorkerProcess | ForkedWorker:
    """A worker forked by this process's zygote, or a fresh interpreter where that fails."""
    env = _worker_env()
    zygote = shared_zygote(env)
    if zygote is not None:
        try:
            return ForkedWorker(name, zygote)
        except (ZygoteError, OSError) as exc:
            logger.info("fastload: the worker zygote failed (%s); starting %s directly", exc, name)
    return WorkerProcess(name)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _FASTLOAD_ROOT + (os.pathsep + path if path else "")
    return env


def exit_description(code: int | None) -> str:
    """``exit code -9 (SIGKILL)``-style text for a worker's exit status."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code} ({signal.Signals(-code).name})"
    return f"exit code {code}"
