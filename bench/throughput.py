"""``python -m bench.throughput``: fastload side by side with what physicists use today.

With no arguments: generates the four synthetic datasets (TopTagging, EoS,
LCD calorimeter, AHCAL) in a temporary folder, runs every available contender
on each (each in its own process, the same batches into the same consumer),
sweeps the worker count for the parallel ones, prints a table and writes
``results.json``, ``throughput.png`` and ``throughput_vs_workers.png`` into
``--out`` (default ``bench_results/``).  ``--quick`` does the same on tiny data
with a subset of contenders in well under a minute (the test suite runs it).

Examples
--------
::

    python -m bench.throughput                       # the full comparison (a few minutes)
    python -m bench.throughput --quick --out /tmp/q  # smoke run
    python -m bench.throughput --dataset lcd --contenders fastload,torch,in-memory --workers 4
    python -m bench.throughput --list                # contenders and whether they run here
    python -m bench.throughput --ragged --workers 2  # AHCAL ragged batches vs RAM (bench/_ragged.py)
    python -m bench.throughput --dataset lariat      # LArIAT reduced in workers vs RAM (bench/_lariat.py)
    python -m bench.throughput --cold --workers 2 --batch-size 1024  # cold page cache vs the disk
    python -m bench.throughput --remote --workers 2 --batch-size 1024  # S3 + 20 ms per request
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._contender import Contender, RunConfig
from ._data import DATASETS, BenchData, build_dataset, default_events
from ._measure import run_isolated
from ._report import (
    RESULTS_SCHEMA,
    environment,
    format_markdown,
    format_table,
    plot_bars,
    plot_sweep,
    summarise,
    write_json,
)
from .baselines import CONTENDERS


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Throughput, time to first batch, memory and CPU of fastload against the loaders "
        "physicists use today, on synthetic copies of four physics datasets.",
    )
    p.add_argument(
        "--dataset",
        action="append",
        choices=[*sorted(DATASETS), "lariat"],
        metavar="NAME",
        help=f"dataset to run (repeatable; default: all of {', '.join(DATASETS)}); 'lariat' runs "
        "alone: LArIAT events reduced in the workers against RAM and a DLKit-style loader, "
        "writes lariat.json (bench/_lariat.py)",
    )
    p.add_argument(
        "--events",
        type=int,
        help="samples per dataset (default: per dataset, ~100 MB per epoch each)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="worker processes/threads of the parallel contenders (default: CPU count)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny data, 1 repeat, a subset of contenders (<1 min)"
    )
    p.add_argument(
        "--repeats", type=int, help="sessions per cell, median reported (default 2; --quick 1)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench_results"),
        help="output folder (default bench_results/)",
    )
    p.add_argument(
        "--contenders", help="comma-separated contender keys to run (default: all; see --list)"
    )
    p.add_argument("--skip", default="", help="comma-separated contender keys to leave out")
    p.add_argument(
        "--sweep-workers",
        type=_int_list,
        help="worker counts of the sweep (default 1,2; empty string: no sweep)",
    )
    p.add_argument(
        "--sweep-dataset",
        choices=sorted(DATASETS),
        help="dataset of the sweep (default: the first)",
    )
    p.add_argument(
        "--min-seconds", type=float, help="run whole epochs until this long (default 1; --quick 0)"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        help="stop a session mid-epoch after this long (default 2; --quick 20)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="keep generated data here and reuse it next time (default: a temporary folder)",
    )
    p.add_argument(
        "--hdf5-compression",
        default="none",
        choices=("none", "gzip", "lzf"),
        help="compression of the HDF5 source the baselines read (default none: their best case)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of every shuffle")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--ragged",
        action="store_true",
        help="AHCAL only: fastload ragged batches (values + offsets) against an in-memory "
        "ragged baseline and fastload's padded batches, same consumer; writes ragged.json",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="TopTagging only: evict the store's pages before each repeat and compare fastload's "
        "compressed-bytes rate with the disk's sequential read() of the same files; writes cold.json",
    )
    p.add_argument(
        "--remote",
        action="store_true",
        help="TopTagging only: the store through a moto S3 server on 127.0.0.1 behind a proxy "
        "adding --latency-ms per request, against the same store read locally; writes remote.json",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="--remote: delay the proxy adds to each request (default 20)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        help="--cold, --remote: the loader's prefetch (default: the loader's default)",
    )
    p.add_argument(
        "--readahead-bytes",
        type=int,
        help="--cold, --remote: the loader's readahead_bytes (default: the loader's default; 0: none)",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the contenders and whether they can run, then exit",
    )
    return p


# --------------------------------------------------------------------------- selection
def missing_requirement(c: Contender) -> str | None:
    """Cheap check in the parent: is every required package installed? (Cells import for real.)"""
    for req in c.requires:
        module, _, attr = req.partition(":")
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            hint = f"; install: {c.install}" if c.install else ""
            return f"package {module.split('.')[0]!r} is not installed{hint}"
        if attr and not hasattr(importlib.import_module(module), attr):
            return f"{module}.{attr} does not exist yet"
    return None


def select_contenders(args: argparse.Namespace) -> list[Contender]:
    keys = {c.key for c in CONTENDERS}
    chosen = [c() for c in CONTENDERS]
    if args.contenders:
        wanted = [k.strip() for k in args.contenders.split(",") if k.strip()]
        unknown = sorted(set(wanted) - keys)
        if unknown:
            raise SystemExit(f"unknown contender(s) {unknown}; choose from {sorted(keys)}")
        chosen = [c for c in chosen if c.key in wanted]
    elif args.quick:
        chosen = [c for c in chosen if c.quick]
    skip = {k.strip() for k in args.skip.split(",") if k.strip()}
    unknown = sorted(skip - keys)
    if unknown:
        raise SystemExit(f"unknown contender(s) in --skip {unknown}; choose from {sorted(keys)}")
    return [c for c in chosen if c.key not in skip]


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    datasets = args.dataset or (["toptagging"] if args.quick else list(DATASETS))
    return {
        "datasets": list(dict.fromkeys(datasets)),
        "repeats": args.repeats or (1 if args.quick else 2),
        "sweep_workers": args.sweep_workers if args.sweep_workers is not None else [1, 2],
        "min_seconds": args.min_seconds
        if args.min_seconds is not None
        else (0.0 if args.quick else 1.0),
        "max_seconds": args.max_seconds
        if args.max_seconds is not None
        else (20.0 if args.quick else 2.0),
    }


def _events(name: str, args: argparse.Namespace) -> int:
    if args.events:
        return args.events
    return default_events(name, quick=args.quick)


# --------------------------------------------------------------------------- running
class _Runner:
    """Runs cells and prints one line per cell."""

    def __init__(self, args: argparse.Namespace, settings: dict[str, Any], workdir: Path) -> None:
        self.args, self.settings, self.workdir = args, settings, workdir
        self.prepared: dict[tuple[str, str], dict[str, Any]] = {}
        self.skipped: dict[str, dict[str, Any]] = {}  # contender -> skip result (a missing package)

    def cell(self, c: Contender, data: BenchData, workers: int) -> dict[str, Any]:
        cfg = RunConfig(batch_size=self.args.batch_size, workers=workers, seed=self.args.seed)
        record: dict[str, Any] = {
            "dataset": data.name,
            "contender": c.key,
            "label": c.label,
            "family": c.family,
            "workers": workers if c.parallel else 0,
            "how": c.how,
        }
        missing = missing_requirement(c)
        if missing:
            return {**record, "status": "skipped", "note": missing}
        if c.key in self.skipped:  # found unusable in an earlier cell: don't start another process
            return {**record, **self.skipped[c.key]}
        prep = self._prepare(c, data, cfg)
        if prep.get("status") == "skipped":
            self.skipped[c.key] = prep
        if prep.get("status") != "ok":
            return {**record, **prep}
        t0 = time.perf_counter()
        max_s = float(self.settings["max_seconds"])
        timeout = self.settings["repeats"] * (max_s + 120) + 60
        result = run_isolated(
            "run",
            c.key,
            data,
            cfg,
            self.workdir,
            repeats=self.settings["repeats"],
            min_seconds=float(self.settings["min_seconds"]),
            max_seconds=max_s,
            timeout_s=timeout,
        )
        record.update(result)
        if result.get("status") == "skipped":  # e.g. no CUDA for pinning: the same on every dataset
            self.skipped[c.key] = result
        record["prepare_s"] = prep.get("prepare_s", 0.0)
        record["cell_s"] = time.perf_counter() - t0
        record["summary"] = summarise(record)
        return record

    def _prepare(self, c: Contender, data: BenchData, cfg: RunConfig) -> dict[str, Any]:
        key = (c.key, data.folder)
        if key not in self.prepared:
            if type(c).prepare is Contender.prepare:
                self.prepared[key] = {"status": "ok", "prepare_s": 0.0}
            else:
                self.prepared[key] = run_isolated(
                    "prepare", c.key, data, cfg, self.workdir, timeout_s=1800
                )
        return self.prepared[key]


def _line(rec: dict[str, Any]) -> str:
    s = rec.get("summary")
    head = f"  {rec['label'][:34]:34s} w={rec['workers']:<2d}"
    if s is None:
        note = rec.get("note", "")
        return f"{head} {rec['status'].upper()}: {note}" + (
            f"\n{rec['log_tail'][-800:]}" if rec.get("log_tail") else ""
        )
    extra = ""
    if rec.get("leaked_children") or rec.get("leaked_processes") or rec.get("leaked_shm"):
        extra = (
            f"  LEAKED: {rec.get('leaked_children') or ''} {rec.get('leaked_shm') or ''}".rstrip()
        )
    return (
        f"{head} {s['samples_per_s']:>11,.0f} samples/s {s['mb_per_s']:8.0f} MB/s  "
        f"TTFB {s['ttfb_s']:5.2f} s  epoch {s['epoch_check']}{extra}"
    )


def _build(name: str, args: argparse.Namespace, data_root: Path) -> BenchData:
    return build_dataset(
        name,
        _events(name, args),
        data_root,
        seed=args.seed,
        hdf5_compression=args.hdf5_compression,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def _build_datasets(
    args: argparse.Namespace, settings: dict[str, Any], data_root: Path
) -> dict[str, BenchData]:
    datasets: dict[str, BenchData] = {}
    for name in settings["datasets"]:
        t0 = time.perf_counter()
        data = datasets[name] = _build(name, args, data_root)
        print(
            f"data: {data.title}: {data.n:,} samples in {time.perf_counter() - t0:.1f} s "
            f"({data.folder})",
            flush=True,
        )
    return datasets


def _run_cells(
    runner: _Runner, contenders: list[Contender], datasets: dict[str, BenchData], workers: int
) -> list[dict[str, Any]]:
    records = []
    for data in datasets.values():
        print(f"{data.title} (workers={workers}, batch {runner.args.batch_size}):", flush=True)
        for c in contenders:
            rec = runner.cell(c, data, workers)
            records.append(rec)
            print(_line(rec), flush=True)
    return records


def _run_sweep(
    runner: _Runner,
    contenders: list[Contender],
    data: BenchData,
    counts: list[int],
    records: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Parallel contenders over worker ``counts`` on ``data``, reusing cells already run."""
    print(f"worker sweep on {data.title}: {counts}", flush=True)
    done = {(r["dataset"], r["contender"], r["workers"]): r for r in records}
    sweep = []
    for c in (c for c in contenders if c.parallel and (c.sweep or runner.args.contenders)):
        for w in counts:
            same = done.get((data.name, c.key, w))
            rec = dict(same) if same else runner.cell(c, data, w)
            sweep.append(rec)
            if not same:
                print(_line(rec), flush=True)
    return sweep


def _results(
    args: argparse.Namespace,
    settings: dict[str, Any],
    env: dict[str, Any],
    contenders: list[Contender],
    datasets: dict[str, BenchData],
    records: list[dict[str, Any]],
    sweep: tuple[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    sweep_name, sweep_records = sweep
    return {
        "schema": RESULTS_SCHEMA,
        "environment": env,
        "command": "python -m bench.throughput " + " ".join(args.argv),
        "config": {
            "batch_size": args.batch_size,
            "workers": args.workers,
            "seed": args.seed,
            "hdf5_compression": args.hdf5_compression,
            "quick": args.quick,
            **settings,
            "prefetch": RunConfig(1, 1).prefetch,
        },
        "datasets": {
            name: {
                "title": d.title,
                "n": d.n,
                "sample_nbytes": d.sample_nbytes,
                "raw_nbytes": d.raw_nbytes,
                "chunk_len": d.chunk_len,
                "block_len": d.block_len,
                "max_len": d.max_len,
                "sizes_bytes": d.sizes_bytes,
                "generation_s": d.generation_s,
                "description": DATASETS[name].description,
                "fields": d.fields,
            }
            for name, d in datasets.items()
            if name in settings["datasets"] or name == sweep_name
        },
        "results": records,
        "sweep": sweep_records,
        "sweep_dataset": sweep_name,
        "contenders": {
            c.key: {"label": c.label, "family": c.family, "how": c.how} for c in contenders
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate data, run every cell and return the results dict (also written to ``args.out``)."""
    settings = _settings(args)
    contenders = select_contenders(args)
    env = environment()
    print(
        f"fastload throughput benchmark — {env['cpu_model']}, {env['cpu_count_usable']} cores, "
        f"{env['ram_total_gb']} GiB RAM, Python {env['python']}",
        flush=True,
    )
    for c in contenders:
        missing = missing_requirement(c)
        if missing:
            print(f"note: skipping {c.key} ({c.label}): {missing}", flush=True)
    temp = None if args.data_dir is not None else Path(tempfile.mkdtemp(prefix="fastload-bench-"))
    data_root = args.data_dir or temp
    assert data_root is not None
    try:
        datasets = _build_datasets(args, settings, data_root)
        runner = _Runner(args, settings, data_root / "cells")
        records = _run_cells(runner, contenders, datasets, args.workers)
        sweep_name = args.sweep_dataset or settings["datasets"][0]
        sweep_records: list[dict[str, Any]] = []
        if settings["sweep_workers"]:
            if sweep_name not in datasets:
                datasets[sweep_name] = _build(sweep_name, args, data_root)
            sweep_records = _run_sweep(
                runner, contenders, datasets[sweep_name], settings["sweep_workers"], records
            )
        sweep = (sweep_name, sweep_records)
        return _results(args, settings, env, contenders, datasets, records, sweep)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


PLOTS_MISSING = (
    "matplotlib is not installed, so the plots will be skipped (results.json and the tables are "
    "written); install it with `pip install 'fastload[bench]'`"
)


def can_plot() -> bool:
    """Whether matplotlib can be imported (checked before the run, not after it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, a broken package
        return False


def write_outputs(
    results: dict[str, Any], out: Path, *, plots: bool | None = None
) -> dict[str, Path]:
    """Write results.json, table.txt, table.md and (with matplotlib) the two PNGs; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "table": out / "table.txt",
        "markdown": out / "table.md",
    }
    write_json(results, paths["json"])
    paths["table"].write_text(format_table(results) + "\n")
    paths["markdown"].write_text(format_markdown(results) + "\n")
    if can_plot() if plots is None else plots:
        paths["bars"] = out / "throughput.png"
        paths["sweep"] = out / "throughput_vs_workers.png"
        plot_bars(results, paths["bars"])
        plot_sweep(results, paths["sweep"])
    return paths


def _list_contenders() -> None:
    for cls in CONTENDERS:
        c = cls()
        state = missing_requirement(c) or "available"
        print(f"{c.key:22s} {c.family:9s} {c.label:34s} {state}\n{'':33s}{c.how}")


def _special_mode(args: argparse.Namespace) -> str | None:
    """``remote``, ``cold``, ``ragged`` or ``lariat`` when one of those modes was asked for."""
    for mode in ("remote", "cold", "ragged"):
        if getattr(args, mode):
            return mode
    return "lariat" if args.dataset and "lariat" in args.dataset else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.throughput``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        _list_contenders()
        return 0
    if args.batch_size < 1 or args.workers < 0 or (args.events is not None and args.events < 2):
        raise SystemExit("--batch-size must be >= 1, --workers >= 0 and --events >= 2")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    mode = _special_mode(args)
    if mode is not None:
        # each special mode runs alone in its own module and writes <mode>.json
        module = importlib.import_module(f"{__package__}._{mode}")
        results = getattr(module, f"run_{mode}")(args)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json({"argv": args.argv, **results}, args.out / f"{mode}.json")
        print(f"wrote {args.out / f'{mode}.json'}")
        return 0
    plots = can_plot()
    if not plots:
        print(f"note: {PLOTS_MISSING}", flush=True)
    t0 = time.perf_counter()
    results = run(args)
    results["total_s"] = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    paths = write_outputs(results, args.out, plots=plots)
    print(format_table(results))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())} in {results['total_s']:.0f} s")
    if not plots:
        print(f"note: {PLOTS_MISSING}")
    failed = [r for r in results["results"] + results["sweep"] if r.get("status") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
