"""A clean fork server for process workers: ``python -P -m fastload._engine._zygote FD PID``.

A worker started as a fresh interpreter spends ~0.25 s (and as much CPU)
importing numpy, Blosc and the engine before it decodes its first chunk, and
every new Loader pays it again.  The zygote pays it once per consumer process:
a fresh interpreter started the same way as a worker (``subprocess``, no
``__main__`` of the user's, no inherited descriptors) that imports what workers
need and then forks one child per worker on request.  Its children run
:mod:`fastload._engine._child` exactly as a directly started worker does.

Why forking here is safe where forking the consumer is not: the zygote is
single-threaded when it forks (BLAS pools are capped to one thread before numpy
loads, and nothing else starts threads), holds no locks, arenas or user state,
and each child takes the consumer's current environment and working directory.

Protocol (one ``SOCK_SEQPACKET`` socket, so every message is one datagram;
JSON, never pickle): ``{"op": "spawn", "consumer": PID, "env": {...}, "cwd": ...}``
with the worker's socket end passed as a descriptor -> ``{"pid": PID}``;
``{"op": "status", "pid": PID}`` -> ``{"code": CODE_OR_NULL}``.  The zygote
exits when the consumer closes the socket or exits (it watches a pidfd), and
reaps its children as they exit, keeping their exit codes for ``status``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from typing import Any

logger = logging.getLogger("fastload")

#: exit codes kept for status requests (children the consumer never asks about are dropped)
_KEPT_CODES = 1024
_MAX_MESSAGE = 1 << 20
#: single-threaded BLAS in the zygote (a fork must not copy a thread pool) and so in workers
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class ZygoteError(OSError):
    """The zygote could not fork a worker (the caller starts one directly instead)."""


# ----------------------------------------------------------------- consumer side
def fresh_interpreter(module: str, fd: int, env: dict[str, str]) -> subprocess.Popen:
    """``python -P -m MODULE FD PID``: fork+exec, inheriting only socket ``fd``, not our stdin."""
    return subprocess.Popen(
        [sys.executable, "-P", "-m", module, str(fd), str(os.getpid())],
        pass_fds=(fd,),
        close_fds=True,
        stdin=subprocess.DEVNULL,  # a script fed on stdin stays the consumer's
        env=env,
    )


class Zygote:
    """The consumer's handle on its zygote process; requests are serialised by a lock."""

    def __init__(self, env: dict[str, str]) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_env = dict(env)
        for name in _BLAS_THREADS:
            zygote_env.setdefault(name, "1")
        try:
            self._proc = fresh_interpreter(
                "fastload._engine._zygote", child_end.fileno(), zygote_env
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.pid = self._proc.pid
        self._sock = parent_end
        self._lock = threading.Lock()
        self.owner = os.getpid()

    def spawn(self, worker_end: int, env: dict[str, str]) -> int:
        """Fork a worker that serves the socket ``worker_end``; its pid."""
        request = {"op": "spawn", "consumer": os.getpid(), "env": env, "cwd": os.getcwd()}
        return int(self._request(request, [worker_end])["pid"])

    def status(self, pid: int) -> int | None:
        """Exit code of the zygote's child ``pid`` (negative for a signal), None while it runs."""
        code = self._request({"op": "status", "pid": pid}).get("code")
        return None if code is None else int(code)

    def _request(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        payload = json.dumps(request).encode()
        with self._lock:
            try:
                socket.send_fds(self._sock, [payload], fds or [])
                reply = self._sock.recv(_MAX_MESSAGE)
            except OSError as exc:
                raise ZygoteError(f"the worker zygote (pid {self.pid}) is gone: {exc}") from exc
        if not reply:
            raise ZygoteError(f"the worker zygote (pid {self.pid}) exited")
        answer = json.loads(reply)
        if "error" in answer:
            raise ZygoteError(f"the worker zygote could not fork: {answer['error']}")
        return answer

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Close the socket (the zygote then exits) and, in the process that started it, reap it."""
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.owner != os.getpid():
            return  # a forked copy: the process is the parent's to reap
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._proc.wait(2.0)
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.kill()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()
_disabled = False  # set when a zygote could not start here: workers start directly


def shared_zygote(env: dict[str, str]) -> Zygote | None:
    """This process's zygote, started on first use; None where forking workers is not possible."""
    global _zygote, _disabled
    if _disabled or not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return None
    with _zygote_lock:
        zygote = _zygote
        if zygote is not None and (zygote.owner != os.getpid() or not zygote.alive):
            # it died, or this is a forked copy of the consumer (its parent's zygote): start anew
            zygote.close()
            _zygote = zygote = None
        if zygote is None:
            try:
                zygote = _zygote = Zygote(env)
            except OSError as exc:
                _disabled = True
                logger.info("fastload: no worker zygote (%s); workers start directly", exc)
                return None
        return zygote


def shutdown_zygote() -> None:
    """End this process's zygote (at exit; it also ends by itself when the consumer dies)."""
    global _zygote
    with _zygote_lock:
        zygote, _zygote = _zygote, None
    if zygote is not None and zygote.owner == os.getpid():
        zygote.close()


def _forget_after_fork() -> None:
    global _zygote
    zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.close()  # the child of a forking consumer must not talk on its parent's socket


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(shutdown_zygote)


# ------------------------------------------------------------------ zygote side
def main(argv: list[str]) -> None:
    fd, consumer_pid = int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's to handle
    control = socket.socket(fileno=fd)
    try:
        consumer = os.pidfd_open(consumer_pid)
    except OSError:
        return  # the consumer is already gone
    _name_process(b"fastload-zygote")
    # what every worker imports, once: the engine and the decoder (Blosc, CRC32C)
    from fastload._engine import _child  # noqa: F401
    from fastload.store import preload_decoding

    preload_decoding()
    codes: OrderedDict[int, int] = OrderedDict()
    poller = select.poll()
    poller.register(control.fileno(), select.POLLIN)
    poller.register(consumer, select.POLLIN)
    while True:
        _reap(codes)
        ready = dict(poller.poll(1000.0))
        if consumer in ready:
            return  # the consumer exited (even if a forked copy still holds the socket)
        if control.fileno() not in ready:
            continue
        try:
            message, fds, _flags, _addr = socket.recv_fds(control, _MAX_MESSAGE, 4)
        except OSError:
            return
        if not message:
            return  # the consumer closed its end
        try:
            request = json.loads(message)
            if request.get("op") == "spawn":
                reply = _spawn(request, fds, control, consumer)
            elif request.get("op") == "status":
                _reap(codes)
                reply = {"code": codes.pop(int(request["pid"]), None)}
            else:
                reply = {"error": f"unknown request {request.get('op')!r}"}
        except Exception as exc:  # a malformed request must not end the zygote
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for received in fds:
                with contextlib.suppress(OSError):
                    os.close(received)
        with contextlib.suppress(OSError):
            control.send(json.dumps(reply).encode())


def _spawn(request: dict[str, Any], fds: list[int], control: socket.socket, consumer: int) -> dict:
    if len(fds) != 1:
        raise ValueError(f"a spawn request carries one socket, got {len(fds)}")
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the zygote's loop
        code = 1
        try:
            control.close()
            os.close(consumer)
            _name_process(b"fastload-worker")  # what ps/top show (the command line is the zygote's)
            os.environ.clear()
            os.environ.update(request["env"])
            with contextlib.suppress(OSError):
                os.chdir(request["cwd"])
            from fastload._engine import _child

            _child.serve_socket(fds[0], int(request["consumer"]))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return {"pid": pid}


def _name_process(name: bytes) -> None:
    """Set the process name ps and top show (Linux ``PR_SET_NAME``; elsewhere nothing)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)


def _reap(codes: OrderedDict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        codes[pid] = os.waitstatus_to_exitcode(status)
        while len(codes) > _KEPT_CODES:
            codes.popitem(last=False)


if __name__ == "__main__":
    main(sys.argv)
