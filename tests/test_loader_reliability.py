"""Lifecycle and fault tests of the prefetch engine: every path releases every resource.

Each test runs under the ``no_leaks`` fixture (conftest.py): afterwards no
``/dev/shm/fastload-*`` segment of this process, no worker process and no
``fastload-*`` thread may be left.  Fault tests carry pytest-timeout marks, so a hang fails instead of
stalling the suite.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import fastload as fl
from fastload.errors import ConfigError, CorruptStoreError, WorkerError

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]


def ids_of(batch) -> np.ndarray:
    """Sample indices of a batch of the conftest stores (X[i] = 100 i + ...)."""
    return np.rint(batch["X"][:, 0, 0] / 100.0).astype(np.int64)


def epoch_ids(loader: fl.Loader) -> np.ndarray:
    return np.concatenate([ids_of(b) for b in loader])


def consume(loader: fl.Loader, *, raise_at: int = -1, exc: BaseException | None = None) -> int:
    """Iterate one epoch like a training loop, raising ``exc`` at batch ``raise_at``."""
    k = -1
    for k, _ in enumerate(loader):
        if k == raise_at and exc is not None:
            raise exc
    return k + 1


def consume_and_kill(loader: fl.Loader, at: int) -> None:
    """Iterate one epoch, SIGKILLing worker 0 after batch ``at``."""
    for k, _ in enumerate(loader):
        if k == at:
            os.kill(loader.worker_pids()[0], signal.SIGKILL)


def full_text(exc: BaseException) -> str:
    """An exception's message and its notes (what fastload attaches from the worker)."""
    return "\n".join([str(exc), *getattr(exc, "__notes__", ())])


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie has)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Unraisable:
    """Collects exceptions Python could not raise (``Exception ignored in ...``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[str] = []
        monkeypatch.setattr(sys, "unraisablehook", self._hook)

    def _hook(self, info) -> None:
        self.seen.append(f"{info.exc_type.__name__}: {info.exc_value} in {info.object!r}")


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> Unraisable:
    return Unraisable(monkeypatch)


class Slow:
    """A transform that sleeps ``seconds`` per batch (module level, so workers can unpickle it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        time.sleep(self.seconds)
        return dict(batch)


# --------------------------------------------------------------------------- normal lifecycle
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_full_epoch_then_close(split_a, backend, no_leaks):
    """Iterating to the end and closing releases the segment and the workers."""
    loader = fl.Loader(split_a, 8, workers=2, backend=backend)
    np.testing.assert_array_equal(np.sort(epoch_ids(loader)), np.arange(50))
    if backend == "process":
        assert len(loader.worker_pids()) == 2
        assert no_leaks.new_segments()  # the ring lives while the loader does
    loader.close()
    loader.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        iter(loader)


def test_context_manager_releases_everything(split_a, no_leaks):
    """Leaving a with block closes the loader."""
    with fl.Loader(split_a, 8, workers=2) as loader:
        assert loader.worker_pids() == []  # workers start with the first iteration
        assert next(iter(loader))["X"].shape == (8, 8, 4)
        pids = loader.worker_pids()
        assert len(pids) == 2
    no_leaks.assert_clean()
    assert all(_gone(p) for p in pids)


def test_break_then_close_and_iterate_again(split_a):
    """An abandoned epoch leaves the loader usable; the next loop runs the next epoch completely."""
    with fl.Loader(split_a, 5, workers=2, seed=1) as loader:
        for k, _ in enumerate(loader):
            if k == 2:
                break
        assert loader.epoch == 1
        ids = epoch_ids(loader)
        np.testing.assert_array_equal(ids, loader.plan(1).index)


@pytest.mark.parametrize("use_with", [False, True])
def test_exception_in_consumer_loop(split_a, use_with):
    """An exception raised by the training loop propagates and everything is released."""
    loader = fl.Loader(split_a, 5, workers=2)
    failure = RuntimeError("training step failed")
    if use_with:
        with pytest.raises(RuntimeError, match="training step failed"), loader:
            consume(loader, raise_at=3, exc=failure)
    else:
        try:
            with pytest.raises(RuntimeError, match="training step failed"):
                consume(loader, raise_at=3, exc=failure)
        finally:
            loader.close()


def test_keyboard_interrupt_in_consumer_loop(split_a):
    """Ctrl-C in the loop (KeyboardInterrupt) propagates unchanged, and with closes the loader."""
    with pytest.raises(KeyboardInterrupt), fl.Loader(split_a, 5, workers=2) as loader:
        consume(loader, raise_at=1, exc=KeyboardInterrupt())


@pytest.mark.parametrize("mid_epoch", [False, True])
def test_garbage_collection_without_close(split_a, unraisable, mid_epoch):
    """A loader that is dropped without close() is cleaned up by the garbage collector."""
    loader = fl.Loader(split_a, 5, workers=2)
    iterator = iter(loader)
    next(iterator)
    next(iterator)
    if not mid_epoch:
        for _ in iterator:
            pass
    del loader, iterator
    gc.collect()
    assert unraisable.seen == []


def test_close_while_an_iterator_is_suspended(split_a, unraisable):
    """close() in the middle of an epoch, then dropping the iterator, raises nothing later."""
    loader = fl.Loader(split_a, 5, workers=2)
    iterator = iter(loader)
    next(iterator)
    loader.close()
    del iterator
    gc.collect()
    assert unraisable.seen == []
    with pytest.raises(ConfigError):
        iter(loader)


@pytest.mark.timeout(180)
def test_hundred_open_iterate_close_cycles(split_a, no_leaks):
    """100 loaders opened, partly iterated and closed leak nothing (each starts fresh worker interpreters)."""
    for cycle in range(100):
        workers = 2 if cycle % 10 == 0 else 1  # process starts dominate the cost
        with fl.Loader(split_a, 8, workers=workers, seed=cycle) as loader:
            for k, batch in enumerate(loader):
                assert batch["X"].shape[0] == 8
                if k == 2:
                    break
        if cycle % 25 == 0:
            no_leaks.assert_clean()


# --------------------------------------------------------------------------- worker faults
@pytest.mark.timeout(30)
def test_killed_worker_is_replaced_and_epoch_completes(split_a):
    """SIGKILL of a worker mid-epoch: it is replaced, its tasks re-run, every sample arrives intact.

    The death is warned (RuntimeWarning) naming the worker, its signal and what it was running.
    """
    # a slow transform keeps both workers busy, so the victim dies holding tasks
    with fl.Loader(split_a, 3, workers=2, prefetch=2, seed=4, transform=Slow(0.03)) as loader:
        died = r"worker 0 \(pid \d+\) died \(exit code -9 \(SIGKILL\)\) while running: .*restarting"
        with pytest.warns(RuntimeWarning, match=died):
            victim = _two_epochs_killing_worker_0(loader, split_a)
        assert victim not in loader.worker_pids()
        assert len(loader.worker_pids()) == 2


def _two_epochs_killing_worker_0(loader: fl.Loader, split: fl.Split) -> int:
    """Check two epochs batch by batch, SIGKILLing worker 0 after batch 1; return its pid."""
    values = split.read("X")
    victim = -1
    for epoch in (0, 1):  # epoch 1 runs on the replacement
        plan = loader.plan(epoch)
        got = []
        start = time.monotonic()
        for k, batch in enumerate(loader):
            np.testing.assert_array_equal(batch["X"], values[plan.batch(k)[1]])
            got.append(ids_of(batch))
            if epoch == 0 and k == 1:
                victim = loader.worker_pids()[0]
                os.kill(victim, signal.SIGKILL)
        assert time.monotonic() - start < 10
        np.testing.assert_array_equal(np.concatenate(got), plan.index)
    return victim


@pytest.mark.timeout(30)
def test_killed_worker_without_restarts_is_a_worker_error(split_a):
    """With max_worker_restarts=0 a dead worker raises WorkerError naming it, without hanging."""
    loader = fl.Loader(
        split_a, 3, workers=2, prefetch=2, max_worker_restarts=0, transform=Slow(0.03)
    )
    start = time.monotonic()
    with (
        pytest.raises(WorkerError) as info,
        pytest.warns(RuntimeWarning, match=r"worker 0 .*died .*SIGKILL.*giving up"),
    ):
        consume_and_kill(loader, at=1)
    message = str(info.value)
    assert "worker 0 died" in message
    assert "exit code -9" in message
    assert "running" in message
    assert time.monotonic() - start < 15
    # the loader stays usable: the next epoch runs on fresh workers
    np.testing.assert_array_equal(epoch_ids(loader), loader.plan(loader.epoch - 1).index)
    loader.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("engine", [(0, "process"), (2, "thread"), (2, "process")])
def test_corrupt_chunk_names_chunk_and_store(fresh_split, engine, damage):
    """A chunk file overwritten with garbage (or cut short) raises CorruptStoreError naming chunk and store.

    Its type survives the worker (``except CorruptStoreError`` catches it on every backend).
    """
    workers, backend = engine
    chunk_file = Path(fresh_split.store.path) / "train" / "X" / "c" / "3" / "0" / "0"
    assert chunk_file.is_file()
    data = chunk_file.read_bytes()
    if damage == "garbage":
        chunk_file.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        chunk_file.write_bytes(data[: len(data) // 2])
    with (
        fl.Loader(fresh_split, 8, shuffle=False, workers=workers, backend=backend) as loader,
        pytest.raises(CorruptStoreError) as info,
    ):
        consume(loader)
    message = full_text(info.value)
    assert "chunk 3" in message
    assert str(fresh_split.store.path) in message
    assert "'X'" in message or "/X" in message


@pytest.mark.timeout(30)
def test_missing_chunk_file_is_an_error_not_silent_fill(fresh_split):
    """A deleted chunk file of a complete store is reported, not replaced by fill values."""
    chunk_file = Path(fresh_split.store.path) / "train" / "X" / "c" / "2" / "0" / "0"
    chunk_file.unlink()
    with (
        fl.Loader(fresh_split, 8, shuffle=False, workers=0) as loader,
        pytest.raises(CorruptStoreError, match=r"chunk 2.*missing"),
    ):
        consume(loader)


# --------------------------------------------------------------------------- interpreter exit
_SCRIPT = """
import json, os, signal, sys, time
import fastload as fl

def main():
    mode = sys.argv[2]
    loader = fl.Loader(fl.open_store(sys.argv[1])["train"], 5, workers=2, seed=0)
    it = iter(loader)
    next(it)
    next(it)
    print(json.dumps({"pid": os.getpid(), "workers": loader.worker_pids()}), flush=True)
    if mode == "exit":
        return  # no close(): the interpreter's exit must clean up
    if mode == "raise":
        raise KeyboardInterrupt
    while True:  # wait to be killed, still iterating
        for _ in it:
            time.sleep(0.05)
        it = iter(loader)

if __name__ == "__main__":
    main()
"""


def _start(tmp_path: Path, store_path: str, mode: str) -> tuple[subprocess.Popen, dict]:
    script = tmp_path / "consumer.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), store_path, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would see it
    )
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"consumer script failed to start:\n{err}")
    return proc, json.loads(line)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["exit", "raise", "sigint", "sigkill"])
def test_interpreter_exit_without_close_leaves_nothing(tmp_path, split_a, mode):
    """Exit, KeyboardInterrupt, Ctrl-C or SIGKILL of the consumer: no segment, no orphan worker."""
    proc, info = _start(tmp_path, split_a.store.path, mode)
    pid, workers = info["pid"], info["workers"]
    assert len(workers) == 2
    assert any(p.name.startswith(f"fastload-{pid}-") for p in Path("/dev/shm").iterdir())
    if mode == "sigint":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    elif mode == "sigkill":
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=20)
    if mode == "exit":
        assert proc.returncode == 0, err
    elif mode in ("raise", "sigint"):
        assert "KeyboardInterrupt" in err
        assert "Traceback" not in err.split("KeyboardInterrupt")[-1]  # nothing after it
    else:
        assert proc.returncode == -signal.SIGKILL

    def clean() -> bool:
        segments = [p for p in Path("/dev/shm").iterdir() if p.name.startswith(f"fastload-{pid}-")]
        return not segments and all(_gone(w) for w in workers)

    deadline = time.monotonic() + 10
    while not clean() and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = sorted(
        p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(f"fastload-{pid}-")
    )
    assert leftover == [], f"segments left by a {mode} consumer: {leftover}"
    assert [w for w in workers if not _gone(w)] == [], f"orphan workers after {mode}"
    if mode != "sigkill":
        assert "leaked shared_memory" not in err  # cleaned by fastload, not by the tracker


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_stuck_worker_times_out_with_a_description(split_a, backend):
    """A batch that takes longer than timeout_s raises WorkerError saying what it waited for."""
    start = time.monotonic()
    with (
        fl.Loader(
            split_a, 25, workers=1, backend=backend, transform=Slow(1.5), timeout_s=0.3
        ) as loader,
        pytest.raises(WorkerError, match=r"batch 0 not ready after .*workers alive"),
    ):
        consume(loader)
    assert time.monotonic() - start < 10


_HOLD_SCRIPT = """
import contextlib, gc, os, sys
import numpy as np
import fastload as fl

def main():
    split = fl.open_store(sys.argv[1])["train"]
    how = sys.argv[2]
    loader = fl.Loader(split, 8, workers=2, seed=0)
    with loader if how == "with" else contextlib.nullcontext():
        for batch in loader:
            kept = batch  # the last batch, still held after the loop (a common pattern)
        want = {k: v.copy() for k, v in kept.items()}
        if how == "close":
            loader.close()
    if how == "gc":
        del loader
        gc.collect()
    # the segment is gone (unlinked) although a batch still points into its memory
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"fastload-{os.getpid()}-")]
    for k in want:
        assert np.array_equal(kept[k], want[k]), k
    print("ok", flush=True)

if __name__ == "__main__":
    main()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close", "with", "gc"])
def test_batch_held_after_close_does_not_crash(tmp_path, split_a, how):
    """Reading a batch kept past close() (or GC) never crashes the interpreter.

    Runs in a subprocess: an unmapped view would kill the test process with SIGSEGV.
    """
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), split_a.store.path, how],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok"
    assert "Exception ignored" not in done.stderr
