"""Baseline: worker processes that read HDF5 blocks and send pickled batches through a queue.

The older published design of multiprocess loaders for physics (and of many
hand-written ones): each epoch starts ``workers`` processes with the platform's
default start method, each reads its share of the shuffled batches from HDF5
and puts them on one ``multiprocessing.Queue``; every batch is pickled, written
through a pipe and unpickled by the consumer (three copies of every byte).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import H5Reader, shuffled_ranges

#: longest wait for one batch before the consumer gives up (a hung worker)
_GET_TIMEOUT_S = 120.0


def _worker(reader: H5Reader, ranges: list[tuple[int, int]], out: Any, stop: Any) -> None:
    try:
        for start, stop_row in ranges:
            if stop.is_set():
                break
            out.put(("batch", reader.read(start, stop_row)))
        out.put(("done", None))
    except BaseException:
        out.put(("error", traceback.format_exc()))
    finally:
        reader.close()


class PipeSession(Session):
    """Worker processes that call ``reader.read(start, stop)`` for their share of ``ranges(epoch)``.

    ``reader`` is picklable and opens its files on first use (in the worker);
    every batch it returns is pickled through one ``multiprocessing.Queue``.
    ``bench._lariat`` reuses it with a reader of LArIAT's original files.
    """

    def __init__(
        self,
        cfg: RunConfig,
        reader: Callable[[], Any],
        ranges: Callable[[int], list[tuple[int, int]]],
    ) -> None:
        self.cfg = cfg
        self._make_reader, self._ranges = reader, ranges
        self.ctx = mp.get_context()  # the platform default, as users get it
        self._procs: list[Any] = []
        self._queue: Any = None
        self._stop: Any = None

    def epoch(self, epoch: int) -> Iterator[Batch]:
        ranges = self._ranges(epoch)
        workers = max(1, self.cfg.workers)
        self._queue = self.ctx.Queue(maxsize=max(1, self.cfg.prefetch))
        self._stop = self.ctx.Event()
        reader = self._make_reader()
        self._procs = [
            self.ctx.Process(
                target=_worker,
                args=(reader, ranges[w::workers], self._queue, self._stop),
                daemon=True,
            )
            for w in range(workers)
        ]
        try:
            for p in self._procs:
                p.start()
            done = 0
            while done < workers:
                try:
                    kind, payload = self._queue.get(timeout=_GET_TIMEOUT_S)
                except queue.Empty:
                    raise TimeoutError(
                        f"pipe/queue baseline: no batch for {_GET_TIMEOUT_S} s"
                    ) from None
                if kind == "batch":
                    yield payload
                elif kind == "done":
                    done += 1
                else:
                    raise RuntimeError(f"pipe/queue worker failed:\n{payload}")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Stop and reap the workers, draining the queue so none blocks in put() or at exit."""
        if self._stop is not None:
            self._stop.set()
        deadline = time.monotonic() + 10.0
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty, OSError, EOFError, ValueError):
                self._queue.get(timeout=0.05)
        for p in self._procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        self._procs = []
        if self._queue is not None:
            self._queue.close()
            self._queue.cancel_join_thread()
            self._queue = None

    def close(self) -> None:
        self._shutdown()


class PipeQueue(Contender):
    key = "pipe-queue"
    label = "multiprocess + pipe/queue"
    parallel = True
    sweep = True
    quick = True
    how = "N processes read HDF5 blocks, pickled batches through a multiprocessing.Queue"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        def ranges(epoch: int) -> list[tuple[int, int]]:
            seed = epoch_seed(cfg, epoch)
            return [(int(a), int(b)) for a, b in shuffled_ranges(data.n, cfg.batch_size, seed)]

        return PipeSession(cfg, lambda: H5Reader(data), ranges)
