"""``python -m bench.scan``: N trainings of the same data, one broadcast feed against N Loaders.

A hyper-parameter scan runs several trainings of one dataset on one machine.
This benchmark runs N byte-summing trainings (the consumer of
bench.throughput: validates every batch, reads every byte, checks every
completed epoch's sums), each in its own process, side by side:

* ``loaders``: each training builds its own ``fl.Loader`` (``--workers``
  worker processes each), so every training decodes every chunk;
* ``feed``: one ``fl.Feed`` process (``--workers`` workers in all) broadcasts
  every batch to the N trainings attached with ``fl.attach``.

Same synthetic TopTagging-shaped store (bench._data), batch size, seed and
shuffle.  Every training starts on the same signal, warms up for
``--warmup`` seconds and is then measured for ``--duration`` seconds.
Reported per setup: each training's delivered samples/s and data wait (time
inside ``next()``, as a fraction of the window), the aggregate samples/s,
CPU seconds of the decoding processes (the loaders' or the feed's worker
processes, ``psutil`` ``cpu_times``) and of everything, the decode CPU seconds
per epoch (per epoch that *every* training received), and the total PSS of
all the setup's processes (``memory_full_info().pss``, sampled mid-window).
The machine's load average is recorded before and after: other programs on a
shared machine lower every figure.

Examples
--------
::

    python -m bench.scan                       # 4 trainings, 15 s each setup (~1 min)
    python -m bench.scan --consumers 2 --duration 5 --events 4096 --out /tmp/scan
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from ._data import BenchData, build_dataset, default_events
from ._report import environment

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("loaders", "feed")
_MB = 1e6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.scan",
        description="N trainings on one machine: one broadcast fl.Feed against N fl.Loaders.",
    )
    p.add_argument("--consumers", type=int, default=4, help="trainings per setup (default 4)")
    p.add_argument("--events", type=int, help="samples of the TopTagging-shaped store (32768)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of each Loader, and of the feed (default 2)",
    )
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds (default 15)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before the window (2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the shuffle")
    p.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"comma-separated setups to run (default {','.join(SETUPS)})",
    )
    p.add_argument("--out", type=Path, default=Path("results/scan"), help="output folder")
    p.add_argument(
        "--data-dir", type=Path, help="keep generated data here (default OUT/data, reused)"
    )
    return p


# --------------------------------------------------------------------------- processes
class _Proc:
    """A role process: JSON lines from its stdout arrive in a queue (read by a thread)."""

    def __init__(self, spec: dict[str, Any], workdir: Path, env: dict[str, str], tag: str) -> None:
        path = workdir / f"{tag}.spec.json"
        path.write_text(json.dumps(spec))
        self.log_path = workdir / f"{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}._scan_role", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))
        self.lines.put(None)

    def line(self, timeout_s: float) -> dict[str, Any]:
        try:
            got = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            got = None
        if got is None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"process {self.popen.pid} gave no result; its log ends:\n{tail}")
        return got

    def say(self, line: bytes) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line)
        self.popen.stdin.flush()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Close stdin, wait; kill the process group if it lingers.  True if it had to."""
        with contextlib.suppress(OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        killed = False
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # also any worker left behind
        self.popen.wait()
        self._log.close()
        return killed


def _tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = float(t.user + t.system)
    return out


def _pss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += int(p.memory_full_info().pss)
    return total


def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("fastload-")}


# --------------------------------------------------------------------------- one setup
def run_setup(
    setup: str, data: BenchData, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Run ``args.consumers`` trainings with their own Loaders or on one feed; measure them."""
    feed_dir = tempfile.mkdtemp(prefix="fl-scan-")  # short: a Unix socket path is <108 bytes
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["FASTLOAD_FEED_DIR"] = str(Path(feed_dir) / "d")
    base = {
        "store": data.store,
        "data": data.to_json(),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "workers": args.workers,
        "name": "scan",
        "consumers": args.consumers,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    shm_before = _shm()
    feed: _Proc | None = None
    trainings: list[_Proc] = []
    lingered = False
    try:
        if setup == "feed":
            feed = _Proc({**base, "role": "feed"}, workdir, env, f"{setup}-feed")
            feed.line(120.0)
        role = "consumer" if setup == "feed" else "loader"
        for i in range(args.consumers):
            spec = {**base, "role": role, "label": f"training{i}"}
            trainings.append(_Proc(spec, workdir, env, f"{setup}-{i}"))
        for t in trainings:
            t.line(120.0)
        for t in trainings:
            t.say(b"go\n")
        go = time.perf_counter()
        time.sleep(args.warmup)

        def decode_side() -> list[psutil.Process]:
            tops = [feed] if feed is not None else trainings
            return [p for t in tops for p in _tree(t.popen.pid)[1:]]  # the workers (and zygote)

        def everything() -> list[psutil.Process]:
            tops = ([feed] if feed is not None else []) + trainings
            return [p for t in tops for p in _tree(t.popen.pid)]

        cpu0_decode, cpu0_all = _cpu(decode_side()), _cpu(everything())
        time.sleep(args.duration / 2)
        pss = _pss(everything())
        time.sleep(max(0.0, go + args.warmup + args.duration - time.perf_counter()))
        cpu1_decode, cpu1_all = _cpu(decode_side()), _cpu(everything())
        window = time.perf_counter() - go - args.warmup
        for t in trainings:
            t.say(b"stop\n")
        results = [t.line(60.0) for t in trainings]
    finally:
        for t in trainings:
            lingered |= t.close()
        if feed is not None:
            lingered |= feed.close()
        with contextlib.suppress(OSError):
            for leftover in Path(feed_dir, "d").glob("*"):
                leftover.unlink()
            Path(feed_dir, "d").rmdir()
            os.rmdir(feed_dir)
    pids = {t.popen.pid for t in trainings} | ({feed.popen.pid} if feed is not None else set())
    leaked = [
        name
        for name in sorted(_shm() - shm_before)
        if any(re.search(rf"(?<!\d){pid}(?!\d)", name) for pid in pids)
    ]

    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(t - before.get(pid, 0.0) for pid, t in after.items())

    decode_cpu = spent(cpu0_decode, cpu1_decode)
    consumers = []
    for r in results:
        rate = r["samples"] / r["window_s"] if r["window_s"] > 0 else 0.0
        consumers.append(
            {
                "samples": r["samples"],
                "samples_per_s": rate,
                "data_wait_frac": r["wait_s"] / r["window_s"] if r["window_s"] > 0 else 1.0,
                "epochs_done": r["epochs_done"],
                "epoch_verdicts": r["epoch_verdicts"],
            }
        )
    epochs_each = sum(c["samples_per_s"] for c in consumers) * window / len(consumers) / data.n
    return {
        "setup": setup,
        "consumers": consumers,
        "aggregate_samples_per_s": sum(c["samples_per_s"] for c in consumers),
        "window_s": window,
        "decode_cpu_s": decode_cpu,
        "decode_processes": len(cpu1_decode),
        "total_cpu_s": spent(cpu0_all, cpu1_all),
        "decode_cpu_s_per_epoch": decode_cpu / epochs_each if epochs_each else None,
        "pss_total_mb": pss / _MB,
        "bad_epochs": [v for c in consumers for v in c["epoch_verdicts"] if v != "ok"],
        "leaked_shm": leaked,
        "killed_lingering": lingered,
    }


# --------------------------------------------------------------------------- report
def format_table(results: dict[str, Any]) -> str:
    rows = [
        f"{'setup':<8} {'per training samples/s':<34} {'aggregate':>10} {'data wait':<22} "
        f"{'decode CPU s':>12} {'per epoch':>9} {'PSS MB':>7}"
    ]
    for r in results["setups"]:
        per = " ".join(f"{c['samples_per_s'] / 1e3:.0f}k" for c in r["consumers"])
        wait = " ".join(f"{100 * c['data_wait_frac']:.0f}%" for c in r["consumers"])
        per_epoch = r["decode_cpu_s_per_epoch"]
        rows.append(
            f"{r['setup']:<8} {per:<34} {r['aggregate_samples_per_s'] / 1e3:>9.0f}k {wait:<22} "
            f"{r['decode_cpu_s']:>12.1f} {per_epoch if per_epoch is None else f'{per_epoch:.2f}':>9} "
            f"{r['pss_total_mb']:>7.0f}"
        )
    if results.get("feed_vs_loaders") is not None:
        rows.append(f"aggregate feed / loaders: {results['feed_vs_loaders']:.2f}x")
    env = results["environment"]
    rows.append(
        f"load average before {results['load_before']}, after {results['load_after']} "
        f"({env['cpu_count_usable']} usable CPUs)"
    )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown or not setups:
        raise SystemExit(f"bench.scan: error: unknown setup(s) {unknown}; choose from {SETUPS}")
    if args.consumers < 1:
        raise SystemExit("bench.scan: error: --consumers must be >= 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n = args.events or default_events("toptagging", quick=False)
    data = build_dataset(
        "toptagging", n, args.data_dir or out / "data", seed=args.seed, progress=False
    )
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="scan-", dir=out) as work:
        records = [run_setup(s, data, args, Path(work)) for s in setups]
    by = {r["setup"]: r for r in records}
    ratio = None
    if "feed" in by and "loaders" in by and by["loaders"]["aggregate_samples_per_s"]:
        ratio = by["feed"]["aggregate_samples_per_s"] / by["loaders"]["aggregate_samples_per_s"]
    results = {
        "benchmark": "scan",
        "command": "python -m bench.scan " + " ".join(sys.argv[1:]),
        "config": {
            "consumers": args.consumers,
            "events": data.n,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "seed": args.seed,
            "sample_nbytes": data.sample_nbytes,
        },
        "environment": environment(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "setups": records,
        "feed_vs_loaders": ratio,
    }
    (out / "scan.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run(args)
    print(format_table(results))
    print(f"wrote {args.out / 'scan.json'}")
    bad = [r["setup"] for r in results["setups"] if r["bad_epochs"] or r["leaked_shm"]]
    if bad:
        print(f"bench.scan: error: wrong epochs or leaked memory in {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
