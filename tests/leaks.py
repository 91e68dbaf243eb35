"""Leak probes shared by the tests: fastload's /dev/shm segments, worker processes, threads.

A plain module (not conftest.py) so test files can import it by name: ``tests/store`` has a
conftest of its own, and ``from conftest import ...`` would find whichever was imported first.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "fastload-"
# long-lived helpers started once per interpreter: multiprocessing's resource tracker (the
# forkserver only for other libraries) and fastload's worker zygote. They outlive every
# loader by design and end with the consumer; their children (workers) are counted
_MP_HELPERS = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "fastload._engine._zygote",
)


def shm_segments(pid: int | None = None) -> set[str]:
    """Names of ``/dev/shm`` segments made by fastload in process ``pid`` (default: any)."""
    prefix = SHM_PREFIX if pid is None else f"{SHM_PREFIX}{pid}-"
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix)}


def _is_mp_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return any(helper in cmdline for helper in _MP_HELPERS)


def worker_processes(parent: psutil.Process | None = None) -> list[psutil.Process]:
    """Live descendants of ``parent`` (default: this process) except multiprocessing's helpers.

    fastload's workers are direct children; a multiprocessing helper's children are
    counted too (another library's pool started through it).
    """
    parent = parent or psutil.Process()
    out = []
    for child in parent.children(recursive=False):
        if _is_mp_helper(child):
            kids = _live(child.children(recursive=True))
        else:
            kids = _live([child, *child.children(recursive=True)])
        out.extend(kids)
    return out


def fastload_threads() -> list[threading.Thread]:
    """Live threads of this process started by fastload (named ``fastload-*``)."""
    return [t for t in threading.enumerate() if t.name.startswith("fastload-")]


def _live(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until(condition: object, timeout_s: float = 5.0, interval_s: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
