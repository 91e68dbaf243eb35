"""Measure one contender on one dataset, in a process of its own.

Why a process per (contender, dataset, workers) cell: memory and CPU numbers
are only honest when nothing else lives in the process (TensorFlow alone adds
~500 MB of RSS to whoever imports it), a contender that leaks workers or
crashes cannot disturb the next one, and the parent can always clean up by
killing the cell's process group.

The cell (``python -m bench._measure SPEC.json RESULT.json``) runs
``repeats`` fresh sessions; each iterates whole epochs until ``min_seconds``
have passed since its first batch, or stops mid-epoch at ``max_seconds``.
Every batch goes through the same :class:`Consumer`, which checks fields,
dtypes and shapes, refuses a batch that is the same array object as the
previous one, touches every byte (a sum per array) and keeps epoch sums that
must equal the dataset's reference sums — so a contender that drops, repeats
or corrupts samples is caught, not just timed.

Numbers per repeat:

* ``samples_per_s``/``mb_per_s``: steady state, from the first batch to the
  last (time to first batch is reported apart, as ``ttfb_s``);
* ``cpu_s``: user+system seconds of the cell process and all its descendants
  from open to close (reaped children from ``cpu_times``, live ones and
  grandchildren from the sampler, whichever is larger);
* ``rss_consumer_peak_mb``: the consumer process's peak RSS;
  ``rss_total_peak_mb``: peak of the RSS summed over the process tree (counts
  shared memory once per process that maps it); ``pss_total_peak_mb``: the
  same with PSS, where shared pages are split between their users — the
  memory the tree really holds.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import weakref
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ._contender import Batch, Contender, RunConfig
from ._data import BenchData

REPO_ROOT = Path(__file__).resolve().parent.parent
_MB = 1e6


class BatchError(RuntimeError):
    """A contender delivered a batch that breaks the benchmark's contract."""


# --------------------------------------------------------------------------- consumer
class Consumer:
    """The training-step stand-in shared by all contenders: validate, touch every byte, count."""

    def __init__(self, spec: dict[str, Any], batch_size: int) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.samples = 0
        self.batches = 0
        self.nbytes = 0
        self.signature: list[list[Any]] | None = None
        self.epoch_samples = 0
        self.epoch_sums: dict[str, float] = dict.fromkeys(spec, 0.0)
        self.epoch_counts: list[int] = []  # samples of every completed epoch
        self._previous: list[weakref.ref[np.ndarray]] = []

    def __call__(self, batch: Batch) -> None:
        if set(batch) != set(self.spec):
            raise BatchError(f"batch fields {sorted(batch)} != expected {sorted(self.spec)}")
        rows = None
        for key, spec in self.spec.items():
            arr = batch[key]
            if not isinstance(arr, np.ndarray):
                raise BatchError(f"field {key!r} is a {type(arr).__name__}, not a numpy array")
            if arr.dtype != spec.dtype or arr.shape[1:] != spec.shape:
                raise BatchError(
                    f"field {key!r}: got {arr.dtype}{list(arr.shape)}, expected {spec.dtype}[B, {list(spec.shape)}]"
                )
            if rows is None:
                rows = arr.shape[0]
            elif arr.shape[0] != rows:
                raise BatchError(f"field {key!r} has {arr.shape[0]} samples, others {rows}")
        if not rows or rows > self.batch_size:
            raise BatchError(f"batch of {rows} samples (batch_size {self.batch_size})")
        # the same array object again would be measured as free: refuse it
        if any(ref() is batch[key] for ref, key in zip(self._previous, self.spec, strict=False)):
            raise BatchError(
                "the contender returned the same array object as for the previous batch"
            )
        self._previous = [weakref.ref(batch[key]) for key in self.spec]
        for key in self.spec:
            arr = batch[key]
            self.epoch_sums[key] += float(arr.sum())  # reads every byte
            self.nbytes += arr.nbytes
        if self.signature is None:
            self.signature = [
                [k, list(batch[k].shape), batch[k].dtype.str] for k in sorted(self.spec)
            ]
        self.samples += rows
        self.epoch_samples += rows
        self.batches += 1

    def end_epoch(self, data: BenchData, by_design: int | None = None) -> str:
        """Compare the epoch's sample count and sums with the dataset's; reset the epoch counters.

        ``by_design``: samples the contender documents it delivers per epoch when that
        is fewer than the dataset's (a 0.5/0.5 mix ends when a class cannot fill its
        half of a batch); the sums of such an epoch cannot be checked, its count can.
        """
        verdict = "ok"
        self.epoch_counts.append(self.epoch_samples)
        if by_design is not None and by_design < data.n and self.epoch_samples == by_design:
            verdict = f"ok ({data.n - by_design} left by design)"
        elif self.epoch_samples != data.n:
            verdict = f"{self.epoch_samples} of {data.n} samples"
        else:
            for key, got in self.epoch_sums.items():
                ref, scale = data.sums[key], data.abs_sums[key]
                if abs(got - ref) > 1e-4 * scale + 1e-9:
                    verdict = f"sum of {key!r} is {got:.6g}, expected {ref:.6g}"
                    break
        self.epoch_samples = 0
        self.epoch_sums = dict.fromkeys(self.spec, 0.0)
        return verdict

    def signature_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.signature).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- resources
def _pss_bytes(pid: int) -> int | None:
    """Proportional set size from /proc/PID/smaps_rollup (Linux), None where unavailable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_s(times: Any) -> float:
    return float(times.user + times.system)


class ResourceSampler:
    """Background thread sampling RSS/PSS of this process and its descendants, and their CPU time."""

    def __init__(self, interval_s: float = 0.05, pss_every: int = 4) -> None:
        self.interval_s = interval_s
        self.pss_every = pss_every
        self.me = psutil.Process()
        self.peak_self = 0
        self.peak_total = 0
        self.peak_pss: int | None = None
        self.max_procs = 1
        self.pids: set[int] = {self.me.pid}
        self._child_cpu: dict[int, float] = {}
        self._child_cpu0: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="bench-resource-sampler", daemon=True
        )

    def start(self) -> None:
        for child in self._children():
            with contextlib.suppress(psutil.Error):
                self._child_cpu0[child.pid] = _cpu_s(child.cpu_times())
        self._sample(0)
        self._thread.start()

    def _children(self) -> list[psutil.Process]:
        try:
            return self.me.children(recursive=True)
        except psutil.Error:
            return []

    def _sample(self, tick: int) -> None:
        procs = [self.me, *self._children()]
        total = 0
        with_pss = tick % self.pss_every == 0
        pss_total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                if p is not self.me:
                    self._child_cpu[p.pid] = _cpu_s(p.cpu_times())
            except psutil.Error:
                continue
            total += rss
            if p is self.me:
                self.peak_self = max(self.peak_self, rss)
            if with_pss:
                pss_total += _pss_bytes(p.pid) or 0
        self.peak_total = max(self.peak_total, total)
        self.pids.update(p.pid for p in procs)
        self.max_procs = max(self.max_procs, len(procs))
        if with_pss and pss_total:
            self.peak_pss = max(self.peak_pss or 0, pss_total)

    def _run(self) -> None:
        tick = 1
        while not self._stop.wait(self.interval_s):
            self._sample(tick)
            tick += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(0)

    def live_children_cpu_s(self) -> float:
        """CPU seconds used during the run by descendants seen alive (grandchildren included)."""
        return sum(
            max(0.0, cpu - self._child_cpu0.get(pid, 0.0)) for pid, cpu in self._child_cpu.items()
        )


def _own_and_reaped_cpu(me: psutil.Process) -> tuple[float, float]:
    t = me.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


# --------------------------------------------------------------------------- one repeat
def _run_repeat(
    contender: Contender, data: BenchData, cfg: RunConfig, *, min_seconds: float, max_seconds: float
) -> dict[str, Any]:
    gc.collect()
    me = psutil.Process()
    consumer = Consumer(data.batch_spec(), cfg.batch_size)
    rss_before = me.memory_info().rss
    sampler = ResourceSampler()
    sampler.start()
    own0, reaped0 = _own_and_reaped_cpu(me)
    checks: list[str] = []
    t0 = time.perf_counter()
    t_first = t_end = t_open = None
    first_samples = 0
    session = None
    try:
        session = contender.open(data, cfg)
        t_open = time.perf_counter() - t0
        epoch, stop = 0, False
        while not stop:
            batches = session.epoch(epoch)
            try:
                for batch in batches:
                    consumer(batch)
                    now = time.perf_counter()
                    if t_first is None:
                        t_first, first_samples = now, consumer.samples
                    if now - t_first >= max_seconds:
                        stop = True
                        break
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # an abandoned generator releases its epoch's workers now
            if not stop:
                checks.append(consumer.end_epoch(data, session.samples_by_design(epoch)))
            epoch += 1
            if t_first is None or time.perf_counter() - t_first >= min_seconds:
                stop = True
        t_end = time.perf_counter()
    finally:
        t_close0 = time.perf_counter()
        if session is not None:
            session.close()
        close_s = time.perf_counter() - t_close0
        sampler.stop()
    own1, reaped1 = _own_and_reaped_cpu(me)
    cpu = (own1 - own0) + max(reaped1 - reaped0, sampler.live_children_cpu_s())
    if t_first is None or t_end is None or t_open is None:
        raise BatchError(f"{contender.key} delivered no batch at all")
    steady_s = t_end - t_first
    steady_samples = consumer.samples - first_samples
    if steady_samples <= 0 or steady_s <= 0:  # a single batch: fall back to the whole run
        steady_s, steady_samples = t_end - t0, consumer.samples
    bytes_per_sample = consumer.nbytes / max(1, consumer.samples)
    return {
        "samples": consumer.samples,
        "batches": consumer.batches,
        "bytes": consumer.nbytes,
        "epochs_completed": len(checks),
        "epoch_checks": checks,
        "epoch_samples": consumer.epoch_counts,
        "signature": consumer.signature,
        "signature_hash": consumer.signature_hash(),
        "open_s": t_open,
        "ttfb_s": t_first - t0,
        "run_s": t_end - t0,
        "steady_s": steady_s,
        "close_s": close_s,
        "samples_per_s": steady_samples / steady_s,
        "mb_per_s": steady_samples * bytes_per_sample / steady_s / _MB,
        "cpu_s": cpu,
        "cpu_s_per_gb": cpu / max(1e-12, consumer.nbytes / 1e9),
        "rss_before_mb": rss_before / _MB,
        "rss_consumer_peak_mb": sampler.peak_self / _MB,
        "rss_total_peak_mb": sampler.peak_total / _MB,
        "pss_total_peak_mb": None if sampler.peak_pss is None else sampler.peak_pss / _MB,
        "max_processes": sampler.max_procs,
        "pids": sorted(sampler.pids),
    }


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run a cell described by ``spec`` (``mode`` "prepare" or "run") in this process."""
    from .baselines import contender as make_contender

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    contender = make_contender(spec["contender"])
    data = BenchData.from_json(spec["data"])
    cfg = RunConfig(**spec["config"])
    note = contender.unavailable() or contender.not_applicable(data, cfg)
    if note:
        return {"status": "skipped", "note": note}
    if spec["mode"] == "prepare":
        t0 = time.perf_counter()
        contender.prepare(data)
        return {"status": "ok", "prepare_s": time.perf_counter() - t0}
    repeats = [
        _run_repeat(
            contender,
            data,
            replace(cfg, seed=cfg.seed + r),
            min_seconds=float(spec["min_seconds"]),
            max_seconds=float(spec["max_seconds"]),
        )
        for r in range(int(spec["repeats"]))
    ]
    return {"status": "ok", "repeats": repeats, "leaked_children": _reap_leftover_children()}


def _reap_leftover_children() -> list[str]:
    """Kill descendants a contender left running (multiprocessing helpers excepted); their names."""
    leaked = []
    me = psutil.Process()
    for child in me.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            direct = child.ppid() == me.pid
        except psutil.Error:
            continue
        # multiprocessing's resource tracker and forkserver, and fastload's worker zygote, live
        # until this process exits, by design (the workers the zygote forked share its command
        # line, but they are its children, not ours: those are leaks)
        if "resource_tracker" in cmdline or "forkserver" in cmdline:
            continue
        if direct and "fastload._engine._zygote" in cmdline:
            continue
        leaked.append(f"{child.pid} {cmdline[:120]}")
        with contextlib.suppress(psutil.Error):
            child.kill()
    return leaked


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path, result_path = Path(args[0]), Path(args[1])
    spec = json.loads(spec_path.read_text())
    try:
        result = run_cell(spec)
    except BaseException as exc:  # the parent reports it; the cell must still write a result
        result = {
            "status": "error",
            "note": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    result_path.write_text(json.dumps(result))
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- parent side
def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_group(pgid: int, grace_s: float = 3.0) -> bool:
    """SIGKILL what is left of process group ``pgid`` after ``grace_s``; True if anything was.

    The grace period lets multiprocessing's resource tracker finish unlinking
    segments after the cell exits, instead of being killed mid-cleanup.
    """
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _group_alive(pgid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def run_isolated(
    mode: str,
    contender_key: str,
    data: BenchData,
    cfg: RunConfig,
    workdir: Path,
    *,
    repeats: int = 1,
    min_seconds: float = 1.0,
    max_seconds: float = 5.0,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run one cell in a fresh process group; always returns a result dict (status ok/skipped/error).

    Whatever the cell leaves behind — processes in its group, new ``/dev/shm``
    entries — is killed or reported (``leaked_processes``, ``leaked_shm``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{contender_key}-{data.name}-{mode}-{uuid.uuid4().hex[:6]}"
    spec_path, result_path, log_path = (
        workdir / f"{tag}.{ext}" for ext in ("spec.json", "result.json", "log")
    )
    spec = {
        "mode": mode,
        "contender": contender_key,
        "data": data.to_json(),
        "config": asdict(cfg),
        "repeats": repeats,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
    }
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shm_before = _shm_entries()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}._measure", str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:  # timed out or interrupted: stop the cell now
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            leftover = _kill_group(proc.pid)
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        why = f"timed out after {timeout_s:.0f} s" if timed_out else f"exit code {proc.returncode}"
        result = {"status": "error", "note": f"cell {why}", "log_tail": tail}
    if result.get("status") == "error" and "log_tail" not in result:
        result["log_tail"] = log_path.read_text(errors="replace")[-2000:]
    if leftover:
        result["leaked_processes"] = True
    # other programs on the machine create segments too: only names carrying one
    # of the cell's process ids (fastload's do) are attributed to the cell
    pids = {proc.pid} | {pid for rep in result.get("repeats", []) for pid in rep.pop("pids", [])}
    leaked = [
        name
        for name in sorted(_shm_entries() - shm_before)
        if any(re.search(rf"(?<!\d){pid}(?!\d)", name) for pid in pids)
    ]
    if leaked:
        result["leaked_shm"] = leaked
    return result


if __name__ == "__main__":
    raise SystemExit(main())
