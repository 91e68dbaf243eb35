"""A process worker's entry point: ``python -m fastload._engine._child FD PARENT_PID``.

The same code serves workers the zygote forks (:func:`serve_socket`).

Workers are fresh interpreters that run this module, not the user's: nothing
of the consumer's ``__main__`` is re-executed or re-imported (a script without
``if __name__ == "__main__":``, code on stdin, ``python -c``, notebooks and
DDP scripts all work), and a worker imports only what its configuration needs
(numpy and fastload's engine, plus whatever the transform itself uses).  The
configuration arrives once, cloudpickled, over the socket ``FD``; everything
else goes through the shared arena.

A worker dies with its consumer: a watchdog thread wakes when the parent
process ``PARENT_PID`` exits and ends the worker at once, even in the middle of
a slow transform, so a killed consumer leaves no worker holding the segment.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from fastload._engine._arena import attach
from fastload._engine._protocol import STARTUP, Setup
from fastload._engine._worker import Executor, failed, serve

#: how often the watchdog checks its parent where pidfds do not exist
_PARENT_POLL_S = 0.2


def main(argv: list[str]) -> None:
    serve_socket(int(argv[1]), int(argv[2]), direct_child=True)


def serve_socket(fd: int, consumer_pid: int, *, direct_child: bool = False) -> None:
    """Be a worker of ``consumer_pid`` on socket ``fd`` until told to stop or it exits.

    ``direct_child``: started by the consumer itself (else forked by the zygote,
    :mod:`fastload._engine._zygote`, whose children the consumer is not a parent of).
    """
    # Ctrl-C goes to the whole process group; the consumer handles it and stops
    # the workers, which must not die half-way with a traceback of their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(consumer_pid, direct_child=direct_child)
    conn = Connection(fd)
    try:
        setup: Setup = pickle.loads(conn.recv_bytes())  # from our own parent, over our own socket
    except (EOFError, OSError):
        return
    sys.path[:] = [*setup.sys_path, *(p for p in sys.path if p not in setup.sys_path)]
    sys.argv[:] = setup.argv
    try:
        cfg = pickle.loads(setup.config)
        arena = attach(setup.arena_name, cfg.layout)
    except BaseException as exc:
        # e.g. a transform whose module does not import here: say so once, then exit
        doing = f"worker {setup.worker_id} loading its configuration (transform, chunk readers)"
        conn.send(failed(STARTUP, doing, exc, in_process=True))
        return
    try:
        serve(Executor(cfg, arena, setup.worker_id), conn, in_process=True)
    finally:
        arena.release()
        conn.close()


def _exit_with(parent_pid: int, *, direct_child: bool) -> None:
    """End this process as soon as ``parent_pid`` exits (a daemon thread watches it).

    Not ``PR_SET_PDEATHSIG``: that fires when the *thread* that started the
    worker exits, which is wrong for a loader iterated from a short-lived thread.
    """
    try:
        pidfd: int | None = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):
        pidfd = None
    if direct_child and os.getppid() != parent_pid:  # the parent died before we could watch it
        os._exit(0)
    if not direct_child and pidfd is None:  # the consumer is gone (the zygote needs pidfds)
        os._exit(0)

    def watch() -> None:
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll():
                pass
        else:  # an orphan is re-parented, so its parent pid changes
            while os.getppid() == parent_pid:
                time.sleep(_PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="fastload-watchdog", daemon=True).start()


if __name__ == "__main__":
    main(sys.argv)
