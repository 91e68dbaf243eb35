"""Process workers as users run them: scripts without a main guard, stdin, ``python -c``, DDP.

Workers are fresh interpreters running fastload's worker module, so none of
these may re-run the user's script (its top-level side effects happen once), a
transform defined in ``__main__`` must work, an exception keeps its type, and a
killed consumer or worker leaves no process, segment or semaphore behind.
Most tests run a user script in a subprocess, as the user would.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from leaks import shm_segments, wait_until, worker_processes

import fastload as fl
from fastload.errors import WorkerError

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]


def run_python(args: list[str], *, stdin: Path | None = None, cwd: Path | None = None):
    """Run ``python ARGS`` like a user would; return the completed process."""
    with open(stdin) if stdin is not None else open(os.devnull) as feed:
        return subprocess.run(
            [sys.executable, *args],
            stdin=feed,
            capture_output=True,
            text=True,
            timeout=100,
            cwd=cwd,
        )


def assert_clean_run(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok"), done.stdout


# A physicist's script: no main guard, a side effect at top level, two epochs.
_UNGUARDED = """
import sys
{preamble}
with open({marker!r}, "a") as f:
    f.write("ran\\n")

import numpy as np
import fastload as fl

split = fl.open_store({store!r})["train"]
loader = fl.Loader(split, 8, workers=2, seed=0)
for epoch in range(2):
    ids = np.concatenate([np.rint(b["X"][:, 0, 0] / 100.0) for b in loader])
    assert np.array_equal(np.sort(ids), np.arange(50)), ids
loader.close()
print("ok")
"""


def _unguarded(tmp_path: Path, split: fl.Split, preamble: str = "") -> tuple[str, Path]:
    marker = tmp_path / "side_effect.txt"
    code = _UNGUARDED.format(preamble=preamble, marker=str(marker), store=split.store.path)
    return code, marker


def test_script_without_main_guard_runs_its_top_level_once(tmp_path, split_a):
    """A script without ``if __name__ == "__main__":`` is not re-run by the workers."""
    code, marker = _unguarded(tmp_path, split_a)
    script = tmp_path / "train.py"
    script.write_text(code)
    assert_clean_run(run_python([str(script)]))
    assert marker.read_text() == "ran\n"


def test_script_on_stdin(tmp_path, split_a):
    """``python - < script.py`` works (the workers never look for a file named ``<stdin>``)."""
    code, marker = _unguarded(tmp_path, split_a)
    script = tmp_path / "train.py"
    script.write_text(code)
    assert_clean_run(run_python(["-"], stdin=script))
    assert marker.read_text() == "ran\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_script_without_guard_initialises_once(tmp_path, split_a):
    """``init_process_group`` at the top of an unguarded script runs once: no EADDRINUSE."""
    pytest.importorskip("torch.distributed")
    preamble = textwrap.dedent(f"""
        import torch.distributed as dist
        dist.init_process_group(
            "gloo", init_method="tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    """)
    code, marker = _unguarded(tmp_path, split_a, preamble)
    script = tmp_path / "ddp.py"
    script.write_text(code + "dist.destroy_process_group()\n")
    done = run_python([str(script)])
    assert "EADDRINUSE" not in done.stderr
    assert "address already in use" not in done.stderr.lower()
    assert_clean_run(done)
    assert marker.read_text() == "ran\n"


# A transform and an exception class defined in __main__ (here: python -c), and a
# check of what the worker imported although the script imported torch.
_MAIN_TRANSFORM = """
import os, sys
import torch  # the user's import: the workers must not pay for it
import numpy as np
import fastload as fl
from fastload.transforms import Transform
from fastload import FieldSpec

class RowSum(Transform):
    def output_spec(self, inputs):
        return {"X": inputs["X"], "S": FieldSpec((), np.float64), "torch": FieldSpec((), np.int64)}
    def __call__(self, batch):
        n = len(batch["X"])
        return {"X": batch["X"], "S": batch["X"].sum(axis=(1, 2), dtype=np.float64),
                "torch": np.full(n, "torch" in sys.modules, dtype=np.int64)}

class Cursed(Exception):
    pass

class Explode(RowSum):
    def __call__(self, batch):
        raise Cursed("batch is cursed")

split = fl.open_store(sys.argv[1])["train"]
X = split.read("X")
loader = fl.Loader(split, 8, workers=2, fields=["X"], transform=RowSum(), shuffle=True, seed=3)
plan = loader.plan()
for k, batch in enumerate(loader):
    want = X[plan.batch(k)[1]]
    assert np.array_equal(batch["X"], want)
    assert np.allclose(batch["S"], want.sum(axis=(1, 2), dtype=np.float64)), k
    assert not batch["torch"].any(), "a worker imported torch"
for pid in loader.worker_pids():
    with open(f"/proc/{pid}/maps") as maps:
        assert "libtorch" not in maps.read(), f"worker {pid} mapped libtorch"
loader.close()

with fl.Loader(split, 8, workers=2, fields=["X"], transform=Explode()) as bad:
    try:
        next(iter(bad))
    except Cursed as exc:  # the class defined here, not a WorkerError
        assert "worker traceback" in "".join(exc.__notes__), exc.__notes__
    else:
        raise AssertionError("no error")
print("ok")
"""


def test_transform_defined_in_main_of_python_c(split_a):
    """``python -c`` with a transform class in ``__main__``: correct values, no torch in the workers,
    and the transform's own exception class caught by ``except`` in the consumer."""
    pytest.importorskip("torch")
    assert_clean_run(run_python(["-c", _MAIN_TRANSFORM, split_a.store.path]))


def test_transform_imported_from_the_scripts_directory(tmp_path, split_a):
    """A transform in a module next to the script (pickled by reference) imports in the workers."""
    (tmp_path / "mytransforms.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from fastload.transforms import Transform

        class Negate(Transform):
            def output_spec(self, inputs):
                return dict(inputs)

            def __call__(self, batch):
                return {"X": -batch["X"]}
        """)
    )
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        import fastload as fl
        from mytransforms import Negate

        split = fl.open_store({split_a.store.path!r})["train"]
        loader = fl.Loader(split, 8, workers=2, fields=["X"], transform=Negate(), shuffle=False)
        got = np.concatenate([b["X"] for b in loader])
        assert np.array_equal(got, -split.read("X"))
        loader.close()
        print("ok")
        """)
    )
    assert_clean_run(run_python([str(script)], cwd=Path("/")))


# --------------------------------------------------------------------------- failures keep their type
class _Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()  # does not pickle


class RaiseUnpicklable(fl.transforms.Transform):
    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        raise _Unpicklable("holds a lock")


@pytest.mark.timeout(60)
def test_exception_that_does_not_pickle_becomes_worker_error(split_a):
    """Where the exception itself cannot travel, WorkerError carries its type, message and traceback."""
    with (
        fl.Loader(split_a, 8, workers=2, transform=RaiseUnpicklable()) as loader,
        pytest.raises(WorkerError, match="_Unpicklable: holds a lock") as info,
    ):
        next(iter(loader))
    assert "worker traceback" in str(info.value)
    assert "applying transform" in str(info.value)


# --------------------------------------------------------------------------- nothing left behind
_SLOW_CONSUMER = """
import os, sys, time
import fastload as fl
from fastload.transforms import Transform

class Sleepy(Transform):
    def output_spec(self, inputs):
        return dict(inputs)
    def __call__(self, batch):
        open(os.path.join(sys.argv[2], f"busy-{os.getpid()}"), "w").close()
        time.sleep(20)
        return dict(batch)

loader = fl.Loader(fl.open_store(sys.argv[1])["train"], 8, workers=2, transform=Sleepy())
next(iter(loader))
"""


@pytest.mark.timeout(60)
def test_killed_consumer_takes_its_busy_workers_along(tmp_path, split_a):
    """SIGKILL of the consumer while its workers sleep in a 20 s transform: within 2 s no worker
    and no segment of it is left."""
    busy = tmp_path / "busy"
    busy.mkdir()
    consumer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CONSUMER, split_a.store.path, str(busy)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: len(list(busy.iterdir())) == 2, timeout_s=40), (
            "workers never started the transform"
        )
        workers = [int(p.name.removeprefix("busy-")) for p in busy.iterdir()]
        assert sorted(workers) == sorted(
            p.pid for p in worker_processes(psutil.Process(consumer.pid))
        )
        assert shm_segments(consumer.pid)
        consumer.kill()
        consumer.wait(10)
        killed_at = time.monotonic()

        def running() -> list[int]:  # an exited worker may stay a zombie until init reaps it
            return [w for w in workers if not _exited(w)]

        wait_until(lambda: not shm_segments(consumer.pid) and not running(), timeout_s=2.0)
        assert time.monotonic() - killed_at < 2.5
        assert not shm_segments(consumer.pid), "the killed consumer's segment is still there"
        alive = running()
        assert alive == [], f"workers outlived their consumer: {alive}"
    finally:
        if consumer.poll() is None:
            consumer.kill()
        consumer.communicate(timeout=10)


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _semaphores() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("sem.")}


@pytest.mark.timeout(180)
def test_thirty_worker_kills_leave_no_semaphore_or_process(split_a, no_leaks):
    """30 SIGKILLed workers are each replaced and warned; no semaphore or extra process remains."""
    semaphores = _semaphores()
    kills = 30
    with fl.Loader(split_a, 8, workers=2, seed=0, max_worker_restarts=kills + 1) as loader:
        np.testing.assert_array_equal(
            np.sort(np.concatenate([b["y"] for b in loader])), np.sort(split_a.read("y"))
        )
        with pytest.warns(RuntimeWarning, match=r"died \(exit code -9 \(SIGKILL\)\)") as seen:
            _epochs_killing_a_worker_before_each(loader, range(1, kills + 1))
        deaths = [w for w in seen if "died" in str(w.message)]
        assert len(deaths) == kills
        assert len(worker_processes()) == 2
        assert _semaphores() <= semaphores, sorted(_semaphores() - semaphores)
    no_leaks.assert_clean()
    assert _semaphores() <= semaphores


def _epochs_killing_a_worker_before_each(loader: fl.Loader, epochs: range) -> None:
    for epoch in epochs:
        victim = loader.worker_pids()[epoch % 2]
        os.kill(victim, signal.SIGKILL)
        ids = np.concatenate([np.rint(b["X"][:, 0, 0] / 100.0) for b in loader])
        np.testing.assert_array_equal(ids, loader.plan(epoch).index)
        assert victim not in loader.worker_pids()


@pytest.mark.timeout(60)
def test_death_restart_and_timeout_are_logged(split_a, caplog):
    """A worker death (warning), its restart (info, with its cost) and a timeout (error) are
    logged on the ``fastload`` logger."""
    caplog.set_level(logging.INFO, logger="fastload")
    with fl.Loader(split_a, 8, workers=2) as loader:
        next(iter(loader))
        victim = loader.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        with pytest.warns(RuntimeWarning, match=f"pid {victim}"):
            np.concatenate([b["y"] for b in loader])
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert any(
        name.startswith("fastload.") and level == logging.WARNING and f"pid {victim}) died" in msg
        for name, level, msg in records
    ), records
    assert any(level == logging.INFO and "restarted as pid" in msg for _, level, msg in records)
    caplog.clear()
    with (
        fl.Loader(split_a, 25, workers=1, transform=Slow(1.5), timeout_s=0.3) as loader,
        pytest.raises(WorkerError, match="not ready after"),
    ):
        next(iter(loader))
    assert any(
        r.name.startswith("fastload.")
        and r.levelno == logging.ERROR
        and "not ready" in r.getMessage()
        for r in caplog.records
    )


class Slow(fl.transforms.Transform):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        time.sleep(self.seconds)
        return dict(batch)
