"""Worker pools: one class per backend (processes, threads, inline) behind one interface.

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
import logging
import pickle
import queue
import select
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

from fastload._engine._arena import Arena
from fastload._engine._launcher import ForkedWorker, WorkerProcess, start_worker
from fastload._engine._protocol import Done, Reply, Setup, Stop, Task
from fastload._engine._worker import Executor, WorkerConfig, failed, serve
from fastload.errors import ConfigError

BACKENDS = ("process", "thread")
_JOIN_TIMEOUT_S = 2.0

logger = logging.getLogger(__name__)


class Worker:
    """One worker slot: its unfinished tasks survive the process or thread behind it."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.outstanding: OrderedDict[int, Task] = OrderedDict()
        self.restarts = 0


class WorkerReply(NamedTuple):
    worker: Worker
    message: Reply


class WorkerDied(NamedTuple):
    worker: Worker
    pid: int
    exitcode: int | None


Event = WorkerReply | WorkerDied


class Pool:
    """Runs tasks on its workers; :meth:`events` returns replies and deaths."""

    #: whether failures cross a process boundary (their traceback arrives as text)
    in_process = False

    def __init__(self, n_workers: int, cfg: WorkerConfig, arena: Arena) -> None:
        self.cfg = cfg
        self.arena = arena
        self.workers = [Worker(i) for i in range(max(n_workers, 1))]
        self._closed = False

    def start(self) -> None:
        """Start every worker."""

    def submit(self, task: Task, worker_id: int | None = None) -> int:
        """Send ``task`` to worker ``worker_id`` (default: the least busy); return the worker's id."""
        worker = (
            self.workers[worker_id]
            if worker_id is not None
            else min(self.workers, key=lambda w: len(w.outstanding))
        )
        worker.outstanding[task.id] = task
        self._send(worker, task)
        return worker.id

    def _send(self, worker: Worker, task: Task) -> None:
        raise NotImplementedError

    def events(self, timeout: float) -> list[Event]:
        """Replies and deaths, waiting up to ``timeout`` seconds for the first."""
        raise NotImplementedError

    def restart(self, worker: Worker) -> None:
        """Replace a dead worker and re-send its unfinished tasks in their original order."""
        raise NotImplementedError(f"{type(self).__name__} workers do not die")

    def shutdown(self) -> None:
        """Stop every worker (idempotent)."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` ran (no worker is left to reply)."""
        return self._closed

    def alive(self) -> int:
        """Workers still running."""
        return len(self.workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (none unless they are processes)."""
        return []


class InlinePool(Pool):
    """``workers=0``: every task runs in the calling thread as it is submitted."""

    def __init__(self, cfg: WorkerConfig, arena: Arena) -> None:
        super().__init__(0, cfg, arena)
        self._executor = Executor(cfg, arena, 0)
        self._replies: list[Event] = []

    def _send(self, worker: Worker, task: Task) -> None:
        try:
            self._executor.run(task)
            reply: Reply = Done(task.id)
        except Exception as exc:
            reply = failed(task.id, self._executor.describe(task), exc, in_process=False)
        self._replies.append(WorkerReply(worker, reply))

    def events(self, timeout: float) -> list[Event]:
        replies, self._replies = self._replies, []
        return replies


class _QueueConn:
    """The worker's end of a thread-backend channel (Connection-like)."""

    def __init__(self, tasks: queue.SimpleQueue[Any], results: queue.SimpleQueue[Any]) -> None:
        self.tasks, self.results = tasks, results
        self.worker: Worker | None = None

    def recv(self) -> Any:
        return self.tasks.get()

    def poll(self) -> bool:
        """Whether a task is queued (``recv`` would not block)."""
        return not self.tasks.empty()

    def send(self, msg: Reply) -> None:
        self.results.put(WorkerReply(self.worker, msg))  # type: ignore[arg-type]


class ThreadPool(Pool):
    """Threads in the consumer's process (decoding and copies release the GIL)."""

    def __init__(self, n_workers: int, cfg: WorkerConfig, arena: Arena) -> None:
        super().__init__(n_workers, cfg, arena)
        self._results: queue.SimpleQueue[WorkerReply] = queue.SimpleQueue()
        self._tasks: dict[int, queue.SimpleQueue[Any]] = {}
        self._threads: dict[int, threading.Thread] = {}

    def start(self) -> None:
        for worker in self.workers:
            tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
            conn = _QueueConn(tasks, self._results)
            conn.worker = worker
            # each thread gets its own chunk readers, as each process does: a reader
            # reuses one buffer for the raw chunk bytes, so sharing it between threads
            # lets one thread decode another's chunk (tests/test_loader.py found it)
            cfg = dataclasses.replace(self.cfg, sources=copy.deepcopy(self.cfg.sources))
            thread = threading.Thread(
                target=serve,
                args=(Executor(cfg, self.arena, worker.id), conn),
                kwargs={"in_process": False},
                name=f"fastload-worker-{worker.id}",
                daemon=True,
            )
            thread.start()
            self._tasks[worker.id], self._threads[worker.id] = tasks, thread

    def _send(self, worker: Worker, task: Task) -> None:
        self._tasks[worker.id].put(task)

    def events(self, timeout: float) -> list[Event]:
        out: list[Event] = []
        try:
            out.append(self._results.get(timeout=timeout))
            while True:
                out.append(self._results.get_nowait())
        except queue.Empty:
            pass
        return out

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for tasks in self._tasks.values():
            tasks.put(Stop())
        for thread in self._threads.values():
            thread.join(_JOIN_TIMEOUT_S)

    def alive(self) -> int:
        return sum(1 for t in self._threads.values() if t.is_alive())


class ProcessPool(Pool):
    """Worker processes started by :mod:`fastload._engine._launcher`, one socket each."""

    in_process = True

    def __init__(self, n_workers: int, cfg: WorkerConfig, arena: Arena, arena_name: str) -> None:
        super().__init__(n_workers, cfg, arena)
        self._arena_name = arena_name
        self._config = _pickled_config(cfg)
        self._procs: dict[int, WorkerProcess | ForkedWorker] = {}
        # one poll set for the pool's lifetime: building a selector per wait (what
        # multiprocessing.connection.wait does) cost more than the wait itself per batch
        self._poller = select.poll()
        self._fd_owner: dict[int, tuple[bool, Worker]] = {}  # fd -> (is_sentinel, worker)

    def start(self) -> None:
        # start every interpreter before sending any configuration: they import in parallel
        launched = [self._launch(worker) for worker in self.workers]
        for worker, proc in zip(self.workers, launched, strict=True):
            self._send_setup(worker, proc)

    def _launch(self, worker: Worker) -> WorkerProcess | ForkedWorker:
        proc = start_worker(f"fastload-worker-{worker.id}")
        self._procs[worker.id] = proc
        fds = [(proc.conn.fileno(), False)]
        if proc.sentinel is not None:
            fds.append((proc.sentinel, True))
        for fd, is_sentinel in fds:
            self._poller.register(fd, select.POLLIN)
            self._fd_owner[fd] = (is_sentinel, worker)
        return proc

    def _send_setup(self, worker: Worker, proc: WorkerProcess | ForkedWorker) -> None:
        setup = Setup(worker.id, self._arena_name, list(sys.path), list(sys.argv), self._config)
        with contextlib.suppress(OSError):  # died at once: events() reports it
            proc.conn.send_bytes(pickle.dumps(setup))

    def _send(self, worker: Worker, task: Task) -> None:
        # OSError (BrokenPipeError): the worker died and events() has not said so yet;
        # the task stays in `outstanding`, so restart() re-sends it to the replacement
        # (or the scheduler's error names it)
        with contextlib.suppress(OSError):
            self._procs[worker.id].conn.send(task)

    def restart(self, worker: Worker) -> None:
        started = time.perf_counter()
        self._reap(worker)
        worker.restarts += 1
        proc = self._launch(worker)
        self._send_setup(worker, proc)
        for task in worker.outstanding.values():
            self._send(worker, task)
        logger.info(
            "fastload worker %d restarted as pid %d (restart %d) in %.3f s; re-sent %d unfinished tasks",
            worker.id,
            proc.pid,
            worker.restarts,
            time.perf_counter() - started,
            len(worker.outstanding),
        )

    def events(self, timeout: float) -> list[Event]:
        ready = self._poller.poll(max(0.0, timeout) * 1000.0)
        events: list[Event] = []
        dead: list[Worker] = []
        for fd, _mask in ready:
            owner = self._fd_owner.get(fd)
            if owner is None:
                continue
            is_sentinel, worker = owner
            if is_sentinel:
                dead.append(worker)
                continue
            try:
                # readable, so recv cannot block; further replies make the fd ready again
                # at the next poll (cheaper than conn.poll(), which builds a selector)
                events.append(WorkerReply(worker, self._procs[worker.id].conn.recv()))
            except (EOFError, OSError):
                dead.append(worker)
        for worker in dict.fromkeys(dead):
            proc = self._procs[worker.id]
            # replies written before the death still count
            with contextlib.suppress(EOFError, OSError):
                while proc.conn.poll():
                    events.append(WorkerReply(worker, proc.conn.recv()))
            if proc.join(0.5) is None:
                continue  # closed its end but still running: the sentinel will say
            self._unregister(worker)
            events.append(WorkerDied(worker, proc.pid, proc.exitcode))
        return events

    def _unregister(self, worker: Worker) -> None:
        for fd, (_, owner) in list(self._fd_owner.items()):
            if owner is worker:
                self._poller.unregister(fd)
                del self._fd_owner[fd]

    def _reap(self, worker: Worker) -> None:
        proc = self._procs.pop(worker.id, None)
        if proc is None:
            return
        self._unregister(worker)
        proc.stop(_JOIN_TIMEOUT_S)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                proc.conn.send(Stop())
        for worker in self.workers:
            self._reap(worker)

    def alive(self) -> int:
        return sum(1 for p in self._procs.values() if p.exitcode is None)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs.values()]


def make_pool(backend: str, n_workers: int, cfg: WorkerConfig, arena: Arena) -> Pool:
    """The pool for ``backend`` (``workers=0`` runs inline whatever the backend)."""
    if n_workers == 0:
        return InlinePool(cfg, arena)
    if backend == "thread":
        return ThreadPool(n_workers, cfg, arena)
    return ProcessPool(n_workers, cfg, arena, arena.name)  # type: ignore[attr-defined]


def _pickled_config(cfg: WorkerConfig) -> bytes:
    """``cfg`` for process workers (cloudpickle: what ``__main__`` defines travels by value)."""
    import cloudpickle

    try:
        return cloudpickle.dumps(cfg)
    except Exception as exc:
        raise ConfigError(
            f"the loader's configuration cannot be sent to worker processes ({type(exc).__name__}: "
            f"{exc}); the transform {cfg.transform!r} must be picklable (plain attributes, no open "
            "files or locks), or use backend='thread' or workers=0"
        ) from exc
