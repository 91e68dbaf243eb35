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
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import fastload

#: the directory fastload is imported from, put first on the worker's path
_FASTLOAD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


class WorkerProcess:
    """One worker interpreter: its connection, its exit sentinel and its exit code."""

    def __init__(self, name: str) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            fd = child_end.fileno()
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "fastload._engine._child", str(fd), str(os.getpid())],
                pass_fds=(fd,),
                close_fds=True,
                stdin=subprocess.DEVNULL,  # a script fed on stdin stays the consumer's
                env=_worker_env(),
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.name = name
        self.pid = self._proc.pid
        self.conn = Connection(parent_end.detach())
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
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.sentinel is not None:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = None


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
