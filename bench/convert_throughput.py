"""Conversion throughput and compression ratio: TopTagging (pd4ml npz) -> store, lz4 vs zstd.

``python -m bench.convert_throughput [--events 100000] [--codecs lz4,zstd] [--repeats 3] [--json out.json]``

Writes a synthetic ``1_top_tagging_2M.npz`` with ``--events`` jets (80% train,
20% test) once, then converts it ``--repeats`` times per codec.  Reported per
codec (median over repeats): uncompressed MB (1e6 bytes) of the store's
fields, seconds of the conversion proper (reading the npz, SHA-256 of the
source for provenance, validation, compression, writing), MB/s, seconds of
the read-back verification, and the compression ratio (uncompressed bytes /
bytes on disk).  The source file is in the page cache (it was just written),
so the numbers measure the converter, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _host() -> dict[str, Any]:
    import numcodecs
    import numpy as np
    import zarr

    import fastload

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "fastload": fastload.__version__,
    }


def run(events: int, codecs: list[str], repeats: int, workdir: Path) -> dict[str, Any]:
    """Generate the source once, convert it per codec ``repeats`` times; return the results."""
    from fastload.synthetic import make_toptagging_pd4ml

    from ._siblings import converters_module

    convert_pd4ml = converters_module("pd4ml").convert_pd4ml

    n_test = events // 5
    t0 = time.perf_counter()
    src = make_toptagging_pd4ml(workdir / "orig", n_train=events - n_test, n_test=n_test, seed=0)
    generate_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    for codec in codecs:
        runs = []
        for _ in range(repeats):
            dst = workdir / f"TopTagging-{codec}.zarr"
            shutil.rmtree(dst, ignore_errors=True)
            t0 = time.perf_counter()
            report = convert_pd4ml("TopTagging", src, dst, codec=codec, quiet=True)
            total_s = time.perf_counter() - t0
            runs.append((report, total_s))
        conv_s = statistics.median(r.seconds for r, _ in runs)
        verify_s = statistics.median(t - r.seconds for r, t in runs)
        report = runs[0][0]
        results[codec] = {
            "events": sum(report.counts.values()),
            "uncompressed_mb": round(report.bytes_uncompressed / 1e6, 1),
            "stored_mb": round(report.bytes_stored / 1e6, 1),
            "ratio": round(report.ratio, 3),
            "convert_s": round(conv_s, 3),
            "convert_mb_per_s": round(report.bytes_uncompressed / 1e6 / conv_s, 1),
            "verify_s": round(verify_s, 3),
            "repeats": repeats,
            "convert_s_all": [round(r.seconds, 3) for r, _ in runs],
        }
    return {
        "benchmark": "convert_throughput",
        "dataset": "TopTagging (synthetic pd4ml npz, stored members)",
        "source_mb": round(src.stat().st_size / 1e6, 1),
        "generate_s": round(generate_s, 2),
        "results": results,
        "host": _host(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints a table and optionally writes JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.convert_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--events", type=int, default=100_000, help="jets in the synthetic source (default 100000)"
    )
    parser.add_argument(
        "--codecs", default="lz4,zstd", help="comma-separated codecs (default lz4,zstd)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="conversions per codec (default 3)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        out = run(args.events, codecs, max(1, args.repeats), Path(tmp))
    print(f"TopTagging, {args.events} jets, source {out['source_mb']} MB")
    print(
        f"{'codec':<6}{'MB':>10}{'stored MB':>11}{'ratio':>7}{'convert s':>11}{'MB/s':>8}{'verify s':>10}"
    )
    for codec, r in out["results"].items():
        print(
            f"{codec:<6}{r['uncompressed_mb']:>10}{r['stored_mb']:>11}{r['ratio']:>7}"
            f"{r['convert_s']:>11}{r['convert_mb_per_s']:>8}{r['verify_s']:>10}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
