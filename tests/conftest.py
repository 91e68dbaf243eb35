"""Shared fixtures: small identifiable stores and a leak check for loader tests.

Stores
------
Every sample is identifiable from its values, so a test can tell *which*
sample landed where: in source ``s`` (``SOURCE_BASE[s]`` apart), sample ``i``
has ``X[i] = base + 100 * i + arange(32).reshape(8, 4)``, ``y[i] = i % 3`` and
``i % 5`` hit rows ``hits[i][j] = (base + i, j)``.

Leaks
-----
:func:`no_leaks` snapshots the ``/dev/shm/fastload-<pid>-*`` segments of this
process, its fastload worker processes and its ``fastload-*`` threads, and
after the test asserts that none is left.  Worker processes are the
descendants of this process other than the long-lived helpers multiprocessing
starts once per interpreter (the resource tracker, and a forkserver another library started; direct
children whose command line names them): those helpers outlive every loader by
design, workers must not.  Segments are matched by this process's pid, so
loaders of other processes sharing the machine do not disturb the check.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from leaks import fastload_threads, shm_segments, wait_until, worker_processes

import fastload as fl

# A shell starts a background job (`nohup pytest &`, some CI runners) with SIGINT
# ignored, and exec'd children inherit that: the Ctrl-C tests' subprocesses would then
# never see their SIGINT and hang.  A handler here resets to the default on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: value offset of each test source, so a sample also tells which source it came from
SOURCE_BASE = (0.0, 100_000.0)


# --------------------------------------------------------------------------- data
def make_arrays(n: int, base: float = 0.0) -> dict[str, np.ndarray | fl.Ragged]:
    """Fields X (n, 8, 4) float32, y (n,) int64 and a ragged hits field (rows of 2 float32)."""
    i = np.arange(n)
    X = (base + 100.0 * i[:, None, None] + np.arange(32).reshape(8, 4)).astype(np.float32)
    hits = fl.Ragged.from_list(
        [
            np.stack([np.full(k % 5, base + k), np.arange(k % 5)], axis=1).astype(np.float32)
            for k in i
        ]
    )
    return {"X": X, "y": (i % 3).astype(np.int64), "hits": hits}


def write_store(path: Path, n: int, chunk_len: int, base: float = 0.0) -> fl.Split:
    """Write a one-split store of ``n`` identifiable samples and return its train split."""
    fl.write_arrays(path, {"train": make_arrays(n, base)}, chunk_len=chunk_len)
    return fl.open_store(path)["train"]


@pytest.fixture(scope="session")
def split_a(tmp_path_factory: pytest.TempPathFactory) -> fl.Split:
    """50 samples in chunks of 7 (the last chunk holds 1 sample)."""
    return write_store(tmp_path_factory.mktemp("stores") / "a.zarr", n=50, chunk_len=7)


@pytest.fixture(scope="session")
def split_b(tmp_path_factory: pytest.TempPathFactory) -> fl.Split:
    """A second source: 23 samples in chunks of 5, values offset by ``SOURCE_BASE[1]``."""
    return write_store(
        tmp_path_factory.mktemp("stores") / "b.zarr", n=23, chunk_len=5, base=SOURCE_BASE[1]
    )


@pytest.fixture(scope="session")
def split_small_values(tmp_path_factory: pytest.TempPathFactory) -> fl.Split:
    """40 samples in chunks of 6 whose ragged ``hits`` values sit in chunks of only 8 rows.

    An event chunk then spans several value chunks (and value chunks straddle
    event chunks), the case the ragged reader must stitch together.
    """
    path = tmp_path_factory.mktemp("stores") / "small_values.zarr"
    fl.write_arrays(path, {"train": make_arrays(40)}, chunk_len=6, chunk_bytes=64)
    split = fl.open_store(path)["train"]
    assert split.reader("hits", "values").chunk_len == 8
    return split


@pytest.fixture
def fresh_split(tmp_path: Path) -> fl.Split:
    """A private copy of ``split_a``'s layout that a test may damage."""
    return write_store(tmp_path / "fresh.zarr", n=50, chunk_len=7)


class LeakCheck:
    """What existed before a test; :meth:`leftovers` says what it left behind."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.shm_before = shm_segments(self.pid)
        self.workers_before = {p.pid for p in worker_processes()}
        self.threads_before = set(fastload_threads())

    def new_segments(self) -> set[str]:
        return shm_segments(self.pid) - self.shm_before

    def new_workers(self) -> list[psutil.Process]:
        return [p for p in worker_processes() if p.pid not in self.workers_before]

    def new_threads(self) -> list[threading.Thread]:
        return [t for t in fastload_threads() if t not in self.threads_before]

    def assert_clean(self, timeout_s: float = 5.0) -> None:
        """Fail unless no new segment, worker or thread remains (after a grace period)."""

        def clean() -> bool:
            return not (self.new_segments() or self.new_workers() or self.new_threads())

        wait_until(clean, timeout_s)
        segments = self.new_segments()
        workers = [(p.pid, _describe(p)) for p in self.new_workers()]
        threads = [t.name for t in self.new_threads()]
        assert not segments, f"leaked shared-memory segments: {sorted(segments)}"
        assert not workers, f"leaked worker processes: {workers}"
        assert not threads, f"leaked fastload threads: {threads}"


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.name()} {' '.join(proc.cmdline())[:120]}"
    except psutil.Error:
        return "<gone>"


@pytest.fixture
def no_leaks() -> Iterator[LeakCheck]:
    """Assert that the test leaves no fastload segment in /dev/shm and no worker process."""
    check = LeakCheck()
    yield check
    check.assert_clean()


def _orphaned_segments() -> set[str]:
    """fastload segments in /dev/shm whose creating process (the pid in the name) is gone."""
    orphans = set()
    for name in shm_segments():
        pid = name.removeprefix("fastload-").split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            orphans.add(name)
    return orphans


@pytest.fixture(scope="session", autouse=True)
def no_orphaned_segments_after_the_run() -> Iterator[None]:
    """The whole run, every test with or without ``no_leaks``, leaves no segment of a dead process.

    A killed consumer's segment is unlinked by its resource tracker; a test that kills more
    (a process group) must clean up what that tracker would have.
    """
    before = _orphaned_segments()
    yield
    left = wait_until(lambda: not (_orphaned_segments() - before), 5.0)
    assert left, (
        f"shared-memory segments of dead processes left: {sorted(_orphaned_segments() - before)}"
    )
