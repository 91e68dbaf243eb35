"""Summaries, the printed table, ``results.json`` and the PNG plots of a benchmark run."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

#: version of the results.json layout
RESULTS_SCHEMA = 1

_PACKAGES = (
    "numpy",
    "zarr",
    "numcodecs",
    "h5py",
    "fastload",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "tensorstore",
    "spdl",
    "torchdata",
    "webdataset",
    "blosc2",
    "litdata",
    "psutil",
    "matplotlib",
)

_FAMILY_COLOURS = {
    "reference": "#7f7f7f",
    "baseline": "#1f77b4",
    "peer": "#ff7f0e",
    "fastload": "#2ca02c",
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Date, host, CPU, RAM, GPU and library versions, for results.json."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_count_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "ram_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
        # other programs competing for the CPU make every number worse: record how busy it was
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "python": sys.version.split()[0],
        "versions": versions,
    }


def summarise(record: dict[str, Any]) -> dict[str, Any] | None:
    """Median/min/max over the repeats of one cell, or None for a skipped/failed cell."""
    reps = record.get("repeats") or []
    if record.get("status") != "ok" or not reps:
        return None

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in reps))

    rates = [r["samples_per_s"] for r in reps]
    mbs = [r["mb_per_s"] for r in reps]
    pss = [r["pss_total_peak_mb"] for r in reps if r.get("pss_total_peak_mb") is not None]
    checks = [c for r in reps for c in r["epoch_checks"]]
    bad = sorted({c for c in checks if c != "ok"})
    return {
        "samples_per_s": med("samples_per_s"),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "mb_per_s": med("mb_per_s"),
        "mb_per_s_min": min(mbs),
        "mb_per_s_max": max(mbs),
        "ttfb_s": med("ttfb_s"),
        "cpu_s_per_gb": med("cpu_s_per_gb"),
        "rss_consumer_peak_mb": max(r["rss_consumer_peak_mb"] for r in reps),
        "rss_total_peak_mb": max(r["rss_total_peak_mb"] for r in reps),
        "pss_total_peak_mb": max(pss) if pss else None,
        "epochs_completed": sum(r["epochs_completed"] for r in reps),
        "epoch_check": "; ".join(bad) if bad else ("ok" if checks else "no full epoch"),
        "samples_per_epoch": _samples_per_epoch(reps),
        "signature_hash": reps[0]["signature_hash"],
        "signature": reps[0]["signature"],
    }


def _samples_per_epoch(reps: Sequence[dict[str, Any]]) -> int | None:
    """Samples of the first complete epoch of any repeat (None when none completed)."""
    for r in reps:
        if r["epoch_samples"]:
            return int(r["epoch_samples"][0])
    return None


# --------------------------------------------------------------------------- table
def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def format_table(results: dict[str, Any]) -> str:
    """The human-readable table of a results dict, one block per dataset."""
    cfg = results["config"]
    env = results["environment"]
    load = env.get("load_average_1_5_15")
    lines = [
        f"{env['cpu_model']}, {env['cpu_count_usable']} usable cores, {env['ram_total_gb']} GiB RAM"
        + (
            f"; load average {load[0]} at start (other programs make every number worse)"
            if load
            else ""
        )
    ]
    for name, info in results["datasets"].items():
        recs = [r for r in results["results"] if r["dataset"] == name]
        epoch_mb = info["n"] * info["sample_nbytes"] / 1e6
        lines.append("")
        lines.append(
            f"{info['title']}: {info['n']:,} samples x {info['sample_nbytes'] / 1e3:.1f} kB = {epoch_mb:.0f} MB "
            f"per epoch | batch {cfg['batch_size']}, workers {cfg['workers']}, repeats {cfg['repeats']}"
        )
        header = (
            f"{'contender':34s} {'samples/s':>10s} {'(min-max)':>15s} {'MB/s':>7s} {'x mem':>6s} "
            f"{'TTFB s':>7s} {'RSS MB':>7s} {'tot RSS':>8s} {'tot PSS':>8s} {'CPU s/GB':>9s}  epoch check"
        )
        lines += [header, "-" * len(header)]
        mem = next(
            (r["summary"] for r in recs if r["contender"] == "in-memory" and r.get("summary")), None
        )
        skipped = []
        for r in recs:
            s = r.get("summary")
            if s is None:
                skipped.append(f"  {r['status']}: {r['label']} — {r.get('note', '')}")
                continue
            ratio = f"{s['samples_per_s'] / mem['samples_per_s']:.2f}" if mem else "-"
            pss = f"{s['pss_total_peak_mb']:.0f}" if s["pss_total_peak_mb"] is not None else "-"
            rng = f"({_fmt_rate(s['samples_per_s_min'])}-{_fmt_rate(s['samples_per_s_max'])})"
            lines.append(
                f"{r['label'][:34]:34s} {_fmt_rate(s['samples_per_s']):>10s} {rng:>15s} {s['mb_per_s']:7.0f} "
                f"{ratio:>6s} {s['ttfb_s']:7.2f} {s['rss_consumer_peak_mb']:7.0f} {s['rss_total_peak_mb']:8.0f} "
                f"{pss:>8s} {s['cpu_s_per_gb']:9.2f}  {s['epoch_check']}"
            )
        lines += skipped
    if results.get("sweep"):
        lines.append("")
        lines.append(f"Worker sweep on {results['sweep_dataset']} (MB/s, median):")
        workers = sorted({r["workers"] for r in results["sweep"]})
        lines.append(f"{'contender':34s} " + " ".join(f"{w:>8d}" for w in workers))
        for label in dict.fromkeys(r["label"] for r in results["sweep"]):
            cells = {
                r["workers"]: r.get("summary") for r in results["sweep"] if r["label"] == label
            }
            row = " ".join(
                f"{cells[w]['mb_per_s']:8.0f}" if cells.get(w) else f"{'-':>8s}" for w in workers
            )
            lines.append(f"{label[:34]:34s} {row}")
    return "\n".join(lines)


def format_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (one per dataset, plus the worker sweep), for docs/benchmarks.md."""
    env = results["environment"]
    cfg = results["config"]
    load = env.get("load_average_1_5_15")
    out = [
        f"Machine: {env['cpu_model']}, {env['cpu_count_usable']} usable cores, {env['ram_total_gb']} GiB RAM, "
        f"{env['platform']}; Python {env['python']}; {env['date']}"
        + (f"; load average at start {load[0]}" if load else "")
        + (f", at end {env['load_average_at_end'][0]}" if env.get("load_average_at_end") else ""),
        "",
        f"Command: `{results.get('command', 'python -m bench.throughput')}` — batch {cfg['batch_size']}, "
        f"workers {cfg['workers']}, {cfg['repeats']} repeats (median, min–max), "
        f"{cfg['min_seconds']}–{cfg['max_seconds']} s per session.",
    ]
    for name, info in results["datasets"].items():
        recs = [r for r in results["results"] if r["dataset"] == name]
        if not recs:
            continue
        mem = next(
            (r["summary"] for r in recs if r["contender"] == "in-memory" and r.get("summary")), None
        )
        out += [
            "",
            f"**{info['title']}** — {info['n']:,} samples × {info['sample_nbytes'] / 1e3:.1f} kB "
            f"({info['n'] * info['sample_nbytes'] / 1e6:.0f} MB per epoch)",
            "",
            "| contender | samples/s (min–max) | MB/s | × in-memory | TTFB s | RSS MB | total PSS MB | CPU s/GB | epoch check |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in recs:
            s = r.get("summary")
            if s is None:
                out.append(f"| {r['label']} | {r['status']}: {r.get('note', '')} | | | | | | | |")
                continue
            ratio = f"{s['samples_per_s'] / mem['samples_per_s']:.2f}" if mem else "–"
            pss = f"{s['pss_total_peak_mb']:.0f}" if s["pss_total_peak_mb"] is not None else "–"
            out.append(
                f"| {r['label']} | {_fmt_rate(s['samples_per_s'])} ({_fmt_rate(s['samples_per_s_min'])}–"
                f"{_fmt_rate(s['samples_per_s_max'])}) | {s['mb_per_s']:.0f} | {ratio} | {s['ttfb_s']:.2f} | "
                f"{s['rss_consumer_peak_mb']:.0f} | {pss} | {s['cpu_s_per_gb']:.2f} | {s['epoch_check']} |"
            )
    if results.get("sweep"):
        workers = sorted({r["workers"] for r in results["sweep"]})
        title = results["datasets"].get(results.get("sweep_dataset", ""), {}).get("title", "")
        out += [
            "",
            f"**Worker sweep** ({title}, MB/s, median)",
            "",
            "| contender | " + " | ".join(f"{w} workers" for w in workers) + " |",
            "|---|" + "---:|" * len(workers),
        ]
        for label in dict.fromkeys(r["label"] for r in results["sweep"]):
            cells = {
                r["workers"]: r.get("summary") for r in results["sweep"] if r["label"] == label
            }
            row = " | ".join(
                f"{cells[w]['mb_per_s']:.0f}" if cells.get(w) else "–" for w in workers
            )
            out.append(f"| {label} | {row} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- files
def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=str))


def plot_bars(results: dict[str, Any], path: Path) -> None:
    """Horizontal MB/s bars (median, min-max whiskers) per dataset, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    per = {
        n: [r for r in results["results"] if r["dataset"] == n and r.get("summary")] for n in names
    }
    rows = max(1, max((len(v) for v in per.values()), default=1))
    fig, axes = plt.subplots(
        len(names), 1, figsize=(9, 0.32 * rows * len(names) + 1.2 * len(names)), squeeze=False
    )
    for ax, name in zip(axes[:, 0], names, strict=True):
        recs = per[name]
        if not recs:
            ax.set_axis_off()
            continue
        y = list(range(len(recs)))[::-1]
        med = [r["summary"]["mb_per_s"] for r in recs]
        lo = [r["summary"]["mb_per_s"] - r["summary"]["mb_per_s_min"] for r in recs]
        hi = [r["summary"]["mb_per_s_max"] - r["summary"]["mb_per_s"] for r in recs]
        colours = [_FAMILY_COLOURS.get(r["family"], "#333333") for r in recs]
        ax.barh(y, med, xerr=[lo, hi], color=colours, capsize=2)
        ax.set_yticks(y, [r["label"] for r in recs], fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_plain_numbers())
        ax.set_xlabel("MB/s delivered to the consumer (log scale; median, min-max)")
        info = results["datasets"][name]
        ax.set_title(
            f"{info['title']} — {info['n']:,} samples, {info['sample_nbytes'] / 1e3:.1f} kB each",
            fontsize=10,
        )
        for yy, m, r in zip(y, med, recs, strict=True):
            ax.text(r["summary"]["mb_per_s_max"] * 1.08, yy, f"{m:.0f}", va="center", fontsize=7)
        ax.set_xlim(right=max(r["summary"]["mb_per_s_max"] for r in recs) * 2.5)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=f) for f, c in _FAMILY_COLOURS.items()]
    fig.legend(handles=handles, fontsize=7, loc="upper right", ncol=len(handles), frameon=False)
    fig.suptitle(_subtitle(results), fontsize=8, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(results: dict[str, Any], path: Path) -> None:
    """MB/s against the worker count for the sweep contenders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sweep = [r for r in results.get("sweep", []) if r.get("summary")]
    markers = "osD^v<>ph*"
    for i, label in enumerate(dict.fromkeys(r["label"] for r in sweep)):
        pts = sorted((r["workers"], r["summary"]["mb_per_s"]) for r in sweep if r["label"] == label)
        family = next(r["family"] for r in sweep if r["label"] == label)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=markers[i % len(markers)],
            label=label,
            color=f"C{i}",
            linestyle="-" if family == "fastload" else "--",
        )
    mem = next(
        (
            r
            for r in results["results"]
            if r["dataset"] == results.get("sweep_dataset")
            and r["contender"] == "in-memory"
            and r.get("summary")
        ),
        None,
    )
    if mem:
        ax.axhline(mem["summary"]["mb_per_s"], color="#7f7f7f", linestyle=":", label="in memory")
    ax.set_xlabel("workers")
    ax.set_ylabel("MB/s (median)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain_numbers())
    ax.yaxis.set_minor_formatter(_plain_numbers(only_leading=(2, 5)))
    title = results["datasets"].get(results.get("sweep_dataset", ""), {}).get("title", "")
    ax.set_title(f"Throughput vs workers — {title}", fontsize=10)
    if sweep:
        ax.set_xticks(sorted({r["workers"] for r in sweep}))
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no sweep results", ha="center", transform=ax.transAxes)
    fig.suptitle(_subtitle(results), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plain_numbers(only_leading: tuple[int, ...] | None = None) -> Any:
    """Log-axis tick labels as plain numbers (300, 1000) instead of powers of ten.

    ``only_leading`` keeps just the ticks whose leading digit is listed (for minor ticks).
    """
    from matplotlib.ticker import FuncFormatter

    def label(v: float, _pos: int) -> str:
        if v <= 0 or (only_leading and int(f"{v:e}"[0]) not in only_leading):
            return ""
        return f"{v:g}"

    return FuncFormatter(label)


def _subtitle(results: dict[str, Any]) -> str:
    env = results["environment"]
    return (
        f"{env['cpu_model']}, {env['cpu_count_usable']} usable cores, {env['ram_total_gb']} GiB RAM — "
        f"{env['date']}"
    )
