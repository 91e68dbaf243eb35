"""``python -m bench.scan``: N trainings of the same data, one broadcast feed against N Loaders.

A hyper-parameter scan runs several trainings of one dataset on one machine.
This benchmark runs N byte-summing trainings (the consumer of
bench.throughput: validates every batch, reads every byte, checks every
completed epoch's sums), each in its own process, side by side:

* ``loaders``: each training builds its own ``fl.Loader`` (``--workers``
  worker processes each), so every training decodes every chunk;
* ``feed``: one ``fl.Feed`` process (``--workers`` workers in all) broadcasts
  every batch to the N trainings attached with ``fl.attach``;
* ``loaders+cache``, ``feed+cache`` (only when named in ``--setups``): the same
  with ``memory_cache=True``, every Loader keeping its own decoded copy, the
  feed one for all its trainings.

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

``--model fcn`` makes the trainings a learning-rate scan of torch FCNs on
the pd4ml TopTagging store (bench.train's FCN recipe, its transform in the
loaders' or the feed's workers; training ``i`` of N has learning rate
``lr * 2 ** (i - N // 2)``), with three more setups: ``hosted`` (the feed inside training 0), ``compute`` (every step on
one fixed batch: the step time without any data pipeline, and the memory of
N trainings without data) and ``memory`` (each training holds the
preprocessed split in RAM, bench.train's in-memory baseline).  Data wait is
then a fraction of the step time (wait + forward/backward/optimiser), and
*data PSS* is a setup's total PSS less the ``compute`` setup's: what the
data costs on top of the trainings themselves.  See :mod:`bench._scan_fcn`.

Examples
--------
::

    python -m bench.scan                       # 4 trainings, 15 s each setup (~1 min)
    python -m bench.scan --consumers 2 --duration 5 --events 4096 --out /tmp/scan
    python -m bench.scan --setups loaders,feed,loaders+cache,feed+cache
    python -m bench.scan --model fcn --ahead 8  # 4 FCNs, 5 setups (~2.5 min)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ._data import BenchData, build_dataset, default_events
from ._report import environment

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("loaders", "feed")
#: a setup name's suffix: the same setup with ``memory_cache=True`` (decode once, then copy)
CACHED = "+cache"
#: the byte-summing setups ``--setups`` may also name
BYTES_SETUPS = (*SETUPS, f"loaders{CACHED}", f"feed{CACHED}")
#: ``--model fcn`` also runs the data-free and the in-memory setups (in this order)
FCN_SETUPS = ("compute", "memory", "loaders", "feed", "hosted")
MODELS = ("bytes", "fcn")
#: each setup's training role (bench._scan_role)
_ROLE = {
    "compute": "compute",
    "memory": "memory",
    "loaders": "loader",
    "feed": "consumer",
    "hosted": "consumer",  # training 0 hosts the feed ("host")
}
#: samples of the TopTagging store the FCN trainings read (bench.train's default)
FCN_EVENTS = 20000
_MB = 1e6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.scan",
        description="N trainings on one machine: one broadcast fl.Feed against N fl.Loaders.",
    )
    p.add_argument("--consumers", type=int, default=4, help="trainings per setup (default 4)")
    p.add_argument(
        "--model",
        choices=MODELS,
        default="bytes",
        help="what each training does: byte sums of every batch (default) or a torch FCN",
    )
    p.add_argument(
        "--events",
        type=int,
        help=f"samples of the TopTagging-shaped store (32768; --model fcn: {FCN_EVENTS})",
    )
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
        help=f"comma-separated setups to run (default {','.join(SETUPS)}; also "
        f"{','.join(BYTES_SETUPS[len(SETUPS) :])}; --model fcn: {','.join(FCN_SETUPS)})",
    )
    p.add_argument(
        "--ahead",
        type=int,
        help="the feed's ahead= (batches a consumer may have queued; default fl.Feed's, 32)",
    )
    p.add_argument(
        "--lr", type=float, default=1e-3, help="--model fcn: the scan's middle learning rate"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="--model fcn: torch intra-op threads of each training (default 1)",
    )
    p.add_argument("--out", type=Path, default=Path("results/scan"), help="output folder")
    p.add_argument(
        "--data-dir", type=Path, help="keep generated data here (default OUT/data, reused)"
    )
    return p


@dataclass(frozen=True)
class _ScanData:
    """The store the trainings read, its training-split size, and the byte sums' reference."""

    store: str
    n: int
    bench: BenchData | None  # None for --model fcn (no byte sums to check)


def prepare_data(args: argparse.Namespace, out: Path) -> _ScanData:
    data_dir = args.data_dir or out / "data"
    if args.model == "fcn":
        from ._scan_fcn import fcn_recipe, store_path

        path = store_path(args.events or FCN_EVENTS, args.seed, data_dir)
        train, rcp = fcn_recipe(str(path))
        return _ScanData(str(path), len(rcp.view(train)), None)
    n = args.events or default_events("toptagging", quick=False)
    data = build_dataset("toptagging", n, data_dir, seed=args.seed, progress=False)
    return _ScanData(data.store, data.n, data)


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
    setup: str, data: _ScanData, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Run ``args.consumers`` trainings of one setup (own Loaders, one feed, ...); measure them."""
    feed_dir = tempfile.mkdtemp(prefix="fl-scan-")  # short: a Unix socket path is <108 bytes
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["FASTLOAD_FEED_DIR"] = str(Path(feed_dir) / "d")
    base = {
        "store": data.store,
        "data": data.bench.to_json() if data.bench is not None else None,
        "model": args.model,
        "threads": args.threads,
        "ahead": args.ahead,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "workers": args.workers,
        "memory_cache": setup.endswith(CACHED),
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
        if setup.removesuffix(CACHED) == "feed":
            feed = _Proc({**base, "role": "feed"}, workdir, env, f"{setup}-feed")
            feed.line(120.0)
        for i in range(args.consumers):
            role = "host" if setup == "hosted" and i == 0 else _ROLE[setup.removesuffix(CACHED)]
            spec = {
                **base,
                "role": role,
                "label": f"training{i}",
                "lr": args.lr * 2.0 ** (i - args.consumers // 2),
            }
            trainings.append(_Proc(spec, workdir, env, f"{setup}-{i}"))
            if role == "host":
                trainings[0].line(120.0)  # its feed exists: the others can attach
        for t in trainings[1 if setup == "hosted" else 0 :]:
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
        pss, pss_parts = 0, {}
        for quarter in (1, 2, 3):  # the largest of three samples inside the window
            time.sleep(
                max(0.0, go + args.warmup + args.duration * quarter / 4 - time.perf_counter())
            )
            parts = {
                "feed process": _pss([psutil.Process(feed.popen.pid)]) if feed else 0,
                "workers": _pss(decode_side()),
                "trainings": _pss([psutil.Process(t.popen.pid) for t in trainings]),
            }
            if sum(parts.values()) > pss:
                pss, pss_parts = sum(parts.values()), parts
        time.sleep(max(0.0, go + args.warmup + args.duration - time.perf_counter()))
        cpu1_decode, cpu1_all = _cpu(decode_side()), _cpu(everything())
        window = time.perf_counter() - go - args.warmup
        # a hosting training stops last: its feed closes when it does, and a training still
        # waiting for a batch would get FeedClosedError instead of finishing its window
        first = trainings[1:] if setup == "hosted" else trainings
        for t in first:
            t.say(b"stop\n")
        results = [t.line(60.0) for t in first]
        if setup == "hosted":
            trainings[0].say(b"stop\n")
            results.insert(0, trainings[0].line(60.0))
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
    training_pids = {t.popen.pid for t in trainings}
    training_cpu = spent(
        {p: c for p, c in cpu0_all.items() if p in training_pids},
        {p: c for p, c in cpu1_all.items() if p in training_pids},
    )
    consumers = [_training_record(r) for r in results]
    epochs_each = sum(c["samples_per_s"] for c in consumers) * window / len(consumers) / data.n
    return {
        "setup": setup,
        "consumers": consumers,
        "aggregate_samples_per_s": sum(c["samples_per_s"] for c in consumers),
        "window_s": window,
        "decode_cpu_s": decode_cpu,
        "decode_processes": len(cpu1_decode),
        "total_cpu_s": spent(cpu0_all, cpu1_all),
        "feed_process_cpu_s": spent(cpu0_all, cpu1_all) - decode_cpu - training_cpu,
        "trainings_cpu_s": training_cpu,
        "decode_cpu_s_per_epoch": decode_cpu / epochs_each if epochs_each else None,
        "pss_total_mb": pss / _MB,
        "pss_parts_mb": {k: v / _MB for k, v in pss_parts.items()},
        "bad_epochs": [v for c in consumers for v in c["epoch_verdicts"] if v != "ok"],
        "leaked_shm": leaked,
        "killed_lingering": lingered,
    }


def _training_record(r: dict[str, Any]) -> dict[str, Any]:
    """One training's figures from its JSON line (byte sums or FCN steps)."""
    rate = r["samples"] / r["window_s"] if r["window_s"] > 0 else 0.0
    if "step_s" not in r:  # byte sums: waiting as a share of the window, epochs checked
        return {
            "samples": r["samples"],
            "samples_per_s": rate,
            "data_wait_frac": r["wait_s"] / r["window_s"] if r["window_s"] > 0 else 1.0,
            "epochs_done": r["epochs_done"],
            "epoch_verdicts": r["epoch_verdicts"],
        }
    busy = r["wait_s"] + r["step_s"]  # FCN: waiting as a share of the step time
    return {
        "samples": r["samples"],
        "samples_per_s": rate,
        "data_wait_frac": r["wait_s"] / busy if busy > 0 else 1.0,
        "step_ms": 1e3 * busy / r["steps"] if r["steps"] else None,
        "steps": r["steps"],
        "lr": r["lr"],
        "loss_first": r["loss_first"],
        "loss_last": r["loss_last"],
        "epoch_verdicts": [],
    }


def _data_memory(records: list[dict[str, Any]], consumers: int) -> dict[str, Any]:
    """Each setup's PSS less the data-free ``compute`` setup's; the feed against one Loader."""
    by = {r["setup"]: r for r in records}
    if "compute" not in by:
        return {}
    floor = by["compute"]["pss_total_mb"]
    for r in records:
        r["data_pss_mb"] = r["pss_total_mb"] - floor
    out: dict[str, Any] = {}
    if "loaders" in by and by["loaders"]["data_pss_mb"] > 0:
        one_loader = by["loaders"]["data_pss_mb"] / consumers
        out["one_loader_data_pss_mb"] = one_loader
        for setup in ("feed", "hosted"):
            if setup in by:
                out[f"{setup}_data_pss_vs_one_loader"] = by[setup]["data_pss_mb"] / one_loader
    return out


# --------------------------------------------------------------------------- report
def format_table(results: dict[str, Any]) -> str:
    fcn = results["config"]["model"] == "fcn"
    rows = [
        f"{'setup':<13} {'per training samples/s':<34} {'aggregate':>10} {'data wait':<22} "
        f"{'decode CPU s':>12} {'per epoch':>9} {'PSS MB':>7}"
        + (f" {'data PSS':>8} {'step ms':>8}" if fcn else "")
    ]
    for r in results["setups"]:
        per = " ".join(f"{c['samples_per_s'] / 1e3:.1f}k" for c in r["consumers"])
        wait = " ".join(f"{100 * c['data_wait_frac']:.1f}%" for c in r["consumers"])
        per_epoch = r["decode_cpu_s_per_epoch"]
        row = (
            f"{r['setup']:<13} {per:<34} {r['aggregate_samples_per_s'] / 1e3:>9.1f}k {wait:<22} "
            f"{r['decode_cpu_s']:>12.1f} {per_epoch if per_epoch is None else f'{per_epoch:.2f}':>9} "
            f"{r['pss_total_mb']:>7.0f}"
        )
        if fcn:
            steps = [c["step_ms"] for c in r["consumers"] if c["step_ms"] is not None]
            row += f" {r.get('data_pss_mb', float('nan')):>8.0f} {sum(steps) / max(len(steps), 1):>8.1f}"
        rows.append(row)
    if results.get("feed_vs_loaders") is not None:
        rows.append(f"aggregate feed / loaders: {results['feed_vs_loaders']:.2f}x")
    for key, ratio in (results.get("cached_ratios") or {}).items():
        feed, base = key.split("_vs_")
        rows.append(f"aggregate {feed} / {base}: {ratio:.2f}x")
    if results.get("hosted_vs_loaders") is not None:
        rows.append(f"aggregate hosted feed / loaders: {results['hosted_vs_loaders']:.2f}x")
    memory = results.get("data_memory") or {}
    for setup in ("feed", "hosted"):
        if f"{setup}_data_pss_vs_one_loader" in memory:
            rows.append(
                f"data PSS: {setup} {memory[f'{setup}_data_pss_vs_one_loader']:.2f}x one Loader's "
                f"({memory['one_loader_data_pss_mb']:.0f} MB)"
            )
    if fcn:
        losses = " ".join(
            f"lr {c['lr']:.2g}: {c['loss_first']:.3f} -> {c['loss_last']:.3f}"
            for c in results["setups"][-1]["consumers"]
            if c["loss_first"] is not None
        )
        rows.append(f"loss over the window ({results['setups'][-1]['setup']}): {losses}")
    env = results["environment"]
    rows.append(
        f"load average before {results['load_before']}, after {results['load_after']} "
        f"({env['cpu_count_usable']} usable CPUs)"
    )
    return "\n".join(rows)


def _aggregate_ratio(by: dict[str, dict[str, Any]], setup: str, base: str) -> float | None:
    """Aggregate samples/s of ``setup`` over ``base``'s, when both ran (and ``base`` delivered)."""
    if setup not in by or base not in by or not by[base]["aggregate_samples_per_s"]:
        return None
    return by[setup]["aggregate_samples_per_s"] / by[base]["aggregate_samples_per_s"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    known = FCN_SETUPS if args.model == "fcn" else BYTES_SETUPS
    default = FCN_SETUPS if args.model == "fcn" else SETUPS
    chosen = args.setups if args.setups is not None else ",".join(default)
    setups = [s.strip() for s in chosen.split(",") if s.strip()]
    unknown = sorted(set(setups) - set(known))
    if unknown or not setups:
        raise SystemExit(
            f"bench.scan: error: unknown setup(s) {unknown} for --model {args.model}; "
            f"choose from {known}"
        )
    if args.consumers < 1:
        raise SystemExit("bench.scan: error: --consumers must be >= 1")
    if args.threads < 1:
        raise SystemExit("bench.scan: error: --threads must be >= 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args, out)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="scan-", dir=out) as work:
        records = [run_setup(s, data, args, Path(work)) for s in setups]
    by = {r["setup"]: r for r in records}
    ratio = _aggregate_ratio(by, "feed", "loaders")
    cached = {  # the cached feed against the plain loaders and against cached loaders
        f"feed{CACHED}_vs_{base}": r
        for base in ("loaders", f"loaders{CACHED}")
        if (r := _aggregate_ratio(by, f"feed{CACHED}", base)) is not None
    }
    hosted_ratio = _aggregate_ratio(by, "hosted", "loaders")
    results = {
        "benchmark": "scan",
        "command": "python -m bench.scan " + " ".join(sys.argv[1:]),
        "config": {
            "model": args.model,
            "consumers": args.consumers,
            "events": data.n,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "seed": args.seed,
            "sample_nbytes": data.bench.sample_nbytes if data.bench is not None else None,
            "threads": args.threads if args.model == "fcn" else None,
            "lr": args.lr if args.model == "fcn" else None,
        },
        "environment": environment(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "setups": records,
        "feed_vs_loaders": ratio,
        "hosted_vs_loaders": hosted_ratio,
        "cached_ratios": cached,
        "data_memory": _data_memory(records, args.consumers),
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
