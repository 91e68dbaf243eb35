"""The worker zygote: workers fork from a clean interpreter, see the consumer's current
environment, and nothing of it outlives the consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
from leaks import wait_until

import fastload as fl
from fastload._engine import _zygote
from fastload.transforms import Transform

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

ZYGOTE = "fastload._engine._zygote"


def _is_zygote(proc: psutil.Process) -> bool:
    try:
        return ZYGOTE in " ".join(proc.cmdline())
    except psutil.Error:
        return False


class EnvProbe(Transform):
    """Writes the worker's FASTLOAD_PROBE variable and working directory into the batch."""

    def output_spec(self, inputs):
        return {**inputs, "probe": fl.FieldSpec((64,), np.uint8)}

    def __call__(self, batch):
        text = f"{os.environ.get('FASTLOAD_PROBE', '-')}|{os.path.basename(os.getcwd())}"
        row = np.frombuffer(text.encode().ljust(64, b" "), dtype=np.uint8)
        n = len(next(iter(batch.values())))
        return {**batch, "probe": np.tile(row, (n, 1))}


def _probes(loader: fl.Loader) -> set[str]:
    return {bytes(row).decode().strip() for b in loader for row in b["probe"]}


def test_workers_are_children_of_the_zygote(split_a):
    with fl.Loader(split_a, 8, workers=2) as loader:
        it = iter(loader)
        next(it)
        workers = [psutil.Process(pid) for pid in loader._engine.worker_pids()]
        parents = {w.parent().pid for w in workers}
        assert len(parents) == 1
        zygote = psutil.Process(parents.pop())
        assert _is_zygote(zygote)
        assert zygote.parent().pid == os.getpid()
        for _ in it:
            pass


def test_workers_take_the_consumers_current_environment_and_directory(
    split_a, tmp_path, monkeypatch
):
    with fl.Loader(split_a, 8, workers=1, transform=EnvProbe()) as loader:
        assert _probes(loader) == {f"-|{os.path.basename(os.getcwd())}"}  # zygote now running
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.setenv("FASTLOAD_PROBE", "set-later")
    monkeypatch.chdir(here)
    with fl.Loader(split_a, 8, workers=2, transform=EnvProbe()) as loader:
        assert _probes(loader) == {"set-later|elsewhere"}


def test_a_killed_zygote_is_replaced(split_a):
    with fl.Loader(split_a, 8, workers=1) as loader:
        assert sum(len(b["X"]) for b in loader) == 50
    zygote = _zygote._zygote
    assert zygote is not None
    assert zygote.alive
    os.kill(zygote.pid, signal.SIGKILL)
    assert wait_until(lambda: not zygote.alive)
    with fl.Loader(split_a, 8, workers=2) as loader:
        assert sum(len(b["X"]) for b in loader) == 50
    assert _zygote._zygote is not None
    assert _zygote._zygote.pid != zygote.pid


def test_a_worker_killed_under_the_zygote_reports_its_signal(split_a, caplog):
    loader = fl.Loader(split_a, 8, workers=1, max_worker_restarts=1)
    it = iter(loader)
    next(it)
    (pid,) = loader._engine.worker_pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.warns(RuntimeWarning, match="SIGKILL"):
        rest = sum(len(b["X"]) for b in it)
    assert rest == 50 - 8
    loader.close()


_CONSUMER = """
import sys, time
import fastload as fl
loader = fl.Loader(fl.open_store(sys.argv[1])["train"], 8, workers=2)
next(iter(loader))
print("ready", flush=True)
sys.stdin.readline() if sys.argv[2] == "exit" else time.sleep(60)
"""


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_the_zygote_ends_with_its_consumer(split_a, ending):
    consumer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CONSUMER), split_a.store.path, ending],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout.readline().strip() == "ready"
        zygotes = [p for p in psutil.Process(consumer.pid).children() if _is_zygote(p)]
        assert len(zygotes) == 1
        family = [zygotes[0], *zygotes[0].children()]
        assert len(family) == 3  # the zygote and two workers
        if ending == "kill":
            consumer.kill()
        _, err = consumer.communicate("\n" if ending == "exit" else None, timeout=30)
        killed_at = time.monotonic()
        assert "Traceback" not in err, err

        def gone() -> bool:
            return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in family)

        assert wait_until(gone, timeout_s=3.0), [p for p in family if p.is_running()]
        assert time.monotonic() - killed_at < 3.5
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate(timeout=10)
