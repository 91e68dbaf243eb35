"""Worker pools: processes, threads, or inline execution behind one interface.

Each process worker has its own duplex pipe.  A shared ``multiprocessing.Queue``
would be simpler, but a worker killed while holding the queue's lock (or half
way through writing to its pipe) wedges every other worker; with one pipe per
worker a death costs only that worker's unfinished tasks, which the pool knows
and re-sends, in their original order, to a fresh replacement.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing as mp
import queue
import select
import sys
import threading
from collections import OrderedDict
from typing import Any

from fastload._engine._arena import Arena
from fastload._engine._worker import Executor, WorkerConfig, process_main, serve

BACKENDS = ("process", "thread")
_JOIN_TIMEOUT_S = 2.0


def default_start_method() -> str:
    """forkserver where available (cheap restarts, never forks a threaded parent), else spawn."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


class _Worker:
    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.outstanding: OrderedDict[int, tuple[Any, ...]] = OrderedDict()
        self.conn: Any = None
        self.handle: Any = None  # Process or Thread
        self.restarts = 0


class _QueueConn:
    """The worker's end of a thread-backend channel (Connection-like)."""

    def __init__(
        self, tasks: queue.SimpleQueue[Any], results: queue.SimpleQueue[Any], worker_id: int
    ) -> None:
        self.tasks, self.results, self.worker_id = tasks, results, worker_id

    def recv(self) -> Any:
        return self.tasks.get()

    def send(self, msg: Any) -> None:
        self.results.put((self.worker_id, msg))

    def close(self) -> None:
        pass


class Pool:
    """Runs tasks on ``n`` workers; ``events()`` yields replies and deaths."""

    def __init__(
        self,
        backend: str,
        n_workers: int,
        cfg: WorkerConfig,
        arena: Arena,
        arena_name: str,
        start_method: str | None = None,
    ) -> None:
        self.backend = backend if n_workers > 0 else "inline"
        self.cfg = cfg
        self.arena = arena
        self.arena_name = arena_name
        self.workers = [_Worker(i) for i in range(max(n_workers, 1))]
        self._ctx = (
            mp.get_context(start_method or default_start_method())
            if self.backend == "process"
            else None
        )
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inline_replies: list[tuple[int, Any]] = []
        self._inline_executor: Executor | None = None
        self._closed = False
        # one poll set for the pool's lifetime: building a selector per wait (what
        # multiprocessing.connection.wait does) cost more than the wait itself per batch
        self._poller = select.poll() if self.backend == "process" else None
        self._fd_owner: dict[int, tuple[bool, _Worker]] = {}  # fd -> (is_sentinel, worker)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self.backend == "inline":
            self._inline_executor = Executor(self.cfg, self.arena, 0)
            return
        if self.backend == "process" and self._ctx.get_start_method() == "forkserver":  # type: ignore[union-attr]
            # preloading the main module too lets each worker skip re-importing it
            self._ctx.set_forkserver_preload(["__main__", "fastload._engine._worker"])  # type: ignore[union-attr]
        for worker in self.workers:
            self._launch(worker)

    def _launch(self, worker: _Worker) -> None:
        if self.backend == "process":
            assert self._ctx is not None
            parent, child = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=process_main,
                args=(worker.id, child, self.arena_name, self.cfg),
                name=f"fastload-worker-{worker.id}",
                daemon=True,
            )
            proc.start()
            child.close()
            worker.conn, worker.handle = parent, proc
            assert self._poller is not None
            for fd, is_sentinel in ((parent.fileno(), False), (proc.sentinel, True)):
                self._poller.register(fd, select.POLLIN)
                self._fd_owner[fd] = (is_sentinel, worker)
        else:
            tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
            conn = _QueueConn(tasks, self._results, worker.id)
            # each thread gets its own chunk readers, as each process does: a reader
            # reuses one buffer for the raw chunk bytes, so sharing it between threads
            # lets one thread decode another's chunk (tests/test_loader.py found it)
            cfg = dataclasses.replace(self.cfg, sources=copy.deepcopy(self.cfg.sources))
            executor = Executor(cfg, self.arena, worker.id)
            thread = threading.Thread(
                target=serve,
                args=(executor, conn),
                name=f"fastload-worker-{worker.id}",
                daemon=True,
            )
            thread.start()
            worker.conn, worker.handle = tasks, thread

    def restart(self, worker: _Worker) -> None:
        """Replace a dead worker and re-send its unfinished tasks in their original order."""
        self._reap(worker)
        worker.restarts += 1
        self._launch(worker)
        for task in worker.outstanding.values():
            with contextlib.suppress(OSError):  # died again at once: reported by events()
                worker.conn.send(task)

    def shutdown(self) -> None:
        """Stop every worker; terminate, then kill, those that do not stop in time."""
        if self._closed:
            return
        self._closed = True
        if self.backend == "inline":
            return
        for worker in self.workers:
            with contextlib.suppress(Exception):
                if self.backend == "process":
                    worker.conn.send(("stop",))
                else:
                    worker.conn.put(("stop",))
        for worker in self.workers:
            self._reap(worker)

    def _reap(self, worker: _Worker) -> None:
        handle = worker.handle
        if handle is None:
            return
        handle.join(_JOIN_TIMEOUT_S)
        if self.backend == "process":
            assert self._poller is not None
            for fd, (_, owner) in list(self._fd_owner.items()):
                if owner is worker:
                    self._poller.unregister(fd)
                    del self._fd_owner[fd]
            if handle.is_alive():
                handle.terminate()
                handle.join(_JOIN_TIMEOUT_S)
            if handle.is_alive():
                handle.kill()
                handle.join(_JOIN_TIMEOUT_S)
            with contextlib.suppress(Exception):
                handle.close()
            with contextlib.suppress(Exception):
                worker.conn.close()
        worker.handle = None

    # ----------------------------------------------------------------- tasks
    def submit(self, task: tuple[Any, ...], worker_id: int | None = None) -> int:
        """Send ``task`` to worker ``worker_id`` (default: the least busy); return the worker's id."""
        worker = (
            self.workers[worker_id]
            if worker_id is not None
            else min(self.workers, key=lambda w: len(w.outstanding))
        )
        worker.outstanding[task[1]] = task
        if self.backend == "inline":
            self._run_inline(worker, task)
        elif self.backend == "process":
            # OSError (BrokenPipeError): the worker died and events() has not said so yet;
            # the task stays in `outstanding`, so restart() re-sends it to the replacement
            # (or the scheduler's error names it)
            with contextlib.suppress(OSError):
                worker.conn.send(task)
        else:
            worker.conn.put(task)
        return worker.id

    def _run_inline(self, worker: _Worker, task: tuple[Any, ...]) -> None:
        assert self._inline_executor is not None
        import traceback

        try:
            self._inline_executor.run(task)
            reply: tuple[Any, ...] = ("done", task[1])
        except Exception as exc:
            reply = (
                "error",
                task[1],
                f"{self._inline_executor.describe(task)}: {exc}",
                traceback.format_exc(),
            )
        self._inline_replies.append((worker.id, reply))

    def events(self, timeout: float) -> list[tuple[str, _Worker, Any]]:
        """Replies (``("reply", worker, msg)``) and deaths (``("died", worker, exitcode)``)."""
        if self.backend == "inline":
            replies, self._inline_replies = self._inline_replies, []
            return [("reply", self.workers[wid], msg) for wid, msg in replies]
        if self.backend == "thread":
            out = []
            try:
                item = self._results.get(timeout=timeout)
                out.append(item)
                while True:
                    out.append(self._results.get_nowait())
            except queue.Empty:
                pass
            return [("reply", self.workers[wid], msg) for wid, msg in out]
        assert self._poller is not None
        ready = self._poller.poll(max(0.0, timeout) * 1000.0)
        events: list[tuple[str, _Worker, Any]] = []
        dead: list[_Worker] = []
        for fd, _mask in ready:
            is_sentinel, worker = self._fd_owner[fd]
            if is_sentinel:
                dead.append(worker)
                continue
            try:
                # readable, so recv cannot block; further replies make the fd ready again
                # at the next poll (cheaper than conn.poll(), which builds a selector)
                events.append(("reply", worker, worker.conn.recv()))
            except (EOFError, OSError):
                dead.append(worker)
        for worker in dict.fromkeys(dead):
            # replies written before the death still count
            with contextlib.suppress(EOFError, OSError):
                while worker.conn.poll():
                    events.append(("reply", worker, worker.conn.recv()))
            worker.handle.join(0.5)
            if not worker.handle.is_alive():
                events.append(("died", worker, worker.handle.exitcode))
        return events

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` ran (no worker is left to reply)."""
        return self._closed

    def alive(self) -> int:
        if self.backend == "inline":
            return 1
        return sum(1 for w in self.workers if w.handle is not None and w.handle.is_alive())
