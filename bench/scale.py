"""The 20 TB plan's arithmetic (docs/scale.md), from measured inputs.

``python -m bench.scale`` prints every derived figure of docs/scale.md with the
formula that gives it, from the inputs below (each measured on the development
machine; docs/scale.md says by which command, at which load).  Override any
input with ``--set NAME=VALUE`` (e.g. ``--set gpu_events_per_s_lariat=4000`` for
a measured GPU step rate) and the whole plan follows.

``python -m bench.scale --measure`` first re-measures, on one core, the two
inputs that need no data files — the CPU time of ``lariat_preprocess()`` per
event and the time and memory of planning one epoch of ``--plan-samples``
one-sample chunks — and uses them.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

MB = 1e6
TB = 1e12

#: Inputs of the plan: name -> (value, where it comes from).  docs/scale.md has the commands.
INPUTS: dict[str, tuple[float, str]] = {
    "dataset_tb": (20.0, "LArIAT sample (docs/datasets.md), read as decoded float16 bytes"),
    "event_bytes": (3_932_160, "LArIAT event: 2 x 240 x 4096 float16 (docs/datasets.md)"),
    "dense_arrays": (9, "LArIAT store: features + 8 scalar arrays, each one chunk per event"),
    "reduced_event_bytes": (245_760, "reduced planes: 2 x 240 x 256 float16"),
    "lcd_event_bytes": (68_500, "LCD event: ECAL 25^3 + HCAL 5x5x60 float32 + labels"),
    # store bytes / decoded bytes (LZ4, clevel 5)
    "ratio_clean": (1 / 132.28, "synthetic LArIAT, no noise (converters lariat --no-3d)"),
    "ratio_noisy": (1 / 1.81, "synthetic LArIAT + noise sigma 3 ADC (converters lariat --no-3d)"),
    "ratio_reduced": (1 / 1.11, "reduced planes of the noisy events, float16 (fl.write_arrays)"),
    "ratio_lcd": (1 / 6.43, "synthetic LCD (converters lcd)"),
    "gzip_input_ratio_noisy": (0.3386, "gzip-4 .2d.h5 bytes / decoded bytes, noisy synthetic"),
    # conversion: decoded MB per CPU-second, marginal (240-event run minus 48-event run)
    "convert_serial_mb_per_cpu_s": (75.0, "converters lariat --workers 0 --no-3d, noisy"),
    "convert_generic_mb_per_cpu_s": (115.0, "converters generic lariat.toml --serial, noisy"),
    "convert_dask_mb_per_cpu_s": (84.0, "converters generic lariat.toml --workers 2 (Dask), noisy"),
    "shard_chunks": (64, "DEFAULT_SHARD_CHUNKS (docs/store-format.md)"),
    # reading, CPU seconds per event on one core
    "decode_cpu_s_per_event": (3.08e-3, "Split.read_chunk('features'), noisy store, one core"),
    "reduction_cpu_s_per_event": (7.60e-3, "lariat_preprocess(), one core (bench.scale --measure)"),
    "decode_reduced_cpu_s_per_event": (117e-6, "Split.read_chunk of both reduced planes, one core"),
    "decode_lcd_cpu_s_per_event": (24.9e-6, "Split.read_chunk ECAL + HCAL, one core"),
    # the node and the GPUs
    "gpus_per_node": (8, "the plan's node"),
    "gpu_events_per_s_lariat": (2_000.0, "ASSUMPTION (docs/scale.md): one GPU on the tpc CNN"),
    "gpu_events_per_s_lcd": (20_000.0, "ASSUMPTION (docs/scale.md): one GPU on the LCD 3D CNN"),
    "node_worker_cores": (64, "cores per node left for loader workers"),
    "nvme_gb_s": (3.0, "one NVMe drive, sequential read (typical, not measured here)"),
    "nic_gbit_s": (100.0, "node network link, Gbit/s (25 or 100 GbE)"),
    "s3_get_per_s_per_prefix": (5_500, "AWS S3 documented GET rate per partitioned prefix"),
    "request_latency_s": (0.020, "object-store latency per request (bench --remote default)"),
    "requests_in_flight_per_worker": (8, "REMOTE_THREADS (fastload/store/_readahead.py)"),
    "reduced_chunk_len": (32, "chunk_len write_arrays chose for the reduced planes (4 MiB chunks)"),
    "max_cached_indexes": (65_536, "MAX_CACHED_INDEXES per array and process (store/_shards.py)"),
    "plan_peak_bytes_per_sample": (285.0, "Loader.plan() peak 1,426 MB / 5M samples (--measure)"),
}


_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(formula: str, names: Mapping[str, float]) -> float:
    """The value of an arithmetic ``formula`` over ``names`` (+ - * /, parentheses, ``ceil``, ``max``).

    The plan's formulas are printed as they are computed, so the two cannot drift apart;
    anything but names, numbers, the four operations, ``ceil(x)`` and ``max(a, b, ...)`` is refused.
    """

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            args = [ev(a) for a in node.args]
            if node.func.id == "ceil" and len(args) == 1:
                return float(math.ceil(args[0]))
            if node.func.id == "max" and len(args) >= 2:
                return max(args)
        raise ValueError(f"unsupported expression in plan formula {formula!r}: {ast.dump(node)}")

    return ev(ast.parse(formula, mode="eval"))


def plan(inputs: Mapping[str, float]) -> list[tuple[str, float, str]]:
    """Every derived figure of the plan: ``(name, value, formula)``, in the order of docs/scale.md."""
    v = dict(inputs)
    out: list[tuple[str, float, str]] = []

    def add(name: str, formula: str) -> float:
        value = _evaluate(formula, v)
        out.append((name, value, formula))
        v[name] = value
        return value

    add("events", "dataset_tb * 1e12 / event_bytes")
    # 1. conversion
    add("convert_core_h_per_tb", "1e6 / convert_serial_mb_per_cpu_s / 3600")
    add("convert_core_h_per_tb_generic", "1e6 / convert_generic_mb_per_cpu_s / 3600")
    add("convert_core_h_per_tb_dask", "1e6 / convert_dask_mb_per_cpu_s / 3600")
    add("convert_core_h_total", "dataset_tb * convert_core_h_per_tb")
    add("convert_core_h_total_dask", "dataset_tb * convert_core_h_per_tb_dask")
    add("convert_core_h_per_tb_input", "convert_core_h_per_tb / gzip_input_ratio_noisy")
    add("reduce_core_h_total", "events * reduction_cpu_s_per_event / 3600")
    # 2. files and bytes
    add("chunk_files", "events * dense_arrays")
    add("shard_files", "dense_arrays * ceil(events / shard_chunks)")
    add("store_tb_clean", "dataset_tb * ratio_clean")
    add("store_tb_noisy", "dataset_tb * ratio_noisy")
    add("shard_mb_noisy", "shard_chunks * event_bytes * ratio_noisy / 1e6")
    add("reduced_store_tb", "events * reduced_event_bytes * ratio_reduced / 1e12")
    # 3. rate per node
    add("node_events_per_s_lariat", "gpus_per_node * gpu_events_per_s_lariat")
    add("node_gb_s_raw_decoded", "node_events_per_s_lariat * event_bytes / 1e9")
    add("node_gb_s_raw_noisy", "node_gb_s_raw_decoded * ratio_noisy")
    add("node_gb_s_raw_clean", "node_gb_s_raw_decoded * ratio_clean")
    add("node_gb_s_reduced", "node_events_per_s_lariat * reduced_event_bytes * ratio_reduced / 1e9")
    add("node_events_per_s_lcd", "gpus_per_node * gpu_events_per_s_lcd")
    add("node_gb_s_lcd", "node_events_per_s_lcd * lcd_event_bytes * ratio_lcd / 1e9")
    # 4. cores, disks, network per node
    add(
        "cores_raw",
        "node_events_per_s_lariat * (decode_cpu_s_per_event + reduction_cpu_s_per_event)",
    )
    add(
        "raw_events_per_s_at_worker_cores",
        "node_worker_cores / (decode_cpu_s_per_event + reduction_cpu_s_per_event)",
    )
    add("cores_reduced", "node_events_per_s_lariat * decode_reduced_cpu_s_per_event")
    add("cores_lcd", "node_events_per_s_lcd * decode_lcd_cpu_s_per_event")
    add("nvme_raw", "node_gb_s_raw_noisy / nvme_gb_s")
    add("nvme_reduced", "node_gb_s_reduced / nvme_gb_s")
    add("nic_raw", "node_gb_s_raw_noisy * 8 / nic_gbit_s")
    add("nic_reduced", "node_gb_s_reduced * 8 / nic_gbit_s")
    add("nic_lcd", "node_gb_s_lcd * 8 / nic_gbit_s")
    add("epoch_minutes_one_node", "events / node_events_per_s_lariat / 60")
    # 5. where it breaks: requests
    add("requests_per_s_raw", "node_events_per_s_lariat * 2")
    add("prefixes_needed", "requests_per_s_raw / s3_get_per_s_per_prefix")
    add("requests_per_s_reduced", "node_events_per_s_lariat / reduced_chunk_len * 2")
    add(
        "shards_index_uncached_fraction",
        "max(0, ceil(events / shard_chunks) - max_cached_indexes) / ceil(events / shard_chunks)",
    )
    add("plan_peak_gb_one_rank", "events * plan_peak_bytes_per_sample / 1e9")
    add("events_per_s_per_worker_remote_sync", "1 / request_latency_s")
    add("events_per_s_per_worker_remote_ahead", "requests_in_flight_per_worker / request_latency_s")
    return out


def measure_reduction(events: int = 16, ticks: int = 4096, repeats: int = 3) -> dict[str, float]:
    """CPU and wall seconds per event of ``lariat_preprocess()`` on a batch of ``events``, this thread."""
    from fastload.transforms import lariat_preprocess

    rng = np.random.default_rng(0)
    batch = rng.integers(-5, 40, size=(events, 2, 240, ticks)).astype(np.float16)
    fn = lariat_preprocess()
    fn({"features": batch[:1].copy()})  # warm-up
    cpu, wall = [], []
    for _ in range(repeats):
        data = {"features": batch.copy()}
        c0, w0 = time.process_time(), time.perf_counter()
        fn(data)
        cpu.append((time.process_time() - c0) / events)
        wall.append((time.perf_counter() - w0) / events)
    return {"reduction_cpu_s_per_event": min(cpu), "reduction_wall_s_per_event": min(wall)}


def measure_plan(
    samples: int = 5_000_000, chunk_len: int = 1, batch_size: int = 32
) -> dict[str, float]:
    """Time and peak traced memory of planning epochs of ``samples`` one-byte samples (``workers=0``).

    ``plan_first_seconds``: ``fl.Loader(...)`` plus ``plan(0)`` (the first epoch's plan and
    chunk table); ``plan_next_seconds``: ``plan(1)``, a later epoch's.  ``plan_peak_mb`` is the
    tracemalloc peak over both (numpy allocations included), ``plan_held_mb`` the plan's arrays.
    """
    import fastload as fl

    source = fl.from_arrays({"y": np.zeros(samples, np.int8)}, chunk_len=chunk_len)
    tracemalloc.start()
    t0 = time.perf_counter()
    loader = fl.Loader(source, batch_size, shuffle=True, workers=0)
    try:
        p = loader.plan(0)
        t1 = time.perf_counter()
        p1 = loader.plan(1)
        t2 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        held = p.source.nbytes + p.index.nbytes + p.batch_bounds.nbytes
        if p.n_samples != samples or p1.n_samples != samples:
            raise RuntimeError(f"plans of {p.n_samples}, {p1.n_samples} samples for {samples}")
    finally:
        loader.close()
    return {
        "plan_first_seconds": t1 - t0,
        "plan_next_seconds": t2 - t1,
        "plan_peak_mb": peak / MB,
        "plan_held_mb": held / MB,
    }


def measure(plan_samples: int = 5_000_000, reduction_events: int = 16) -> dict[str, Any]:
    """Both measurements, pinned to one core (the previous affinity restored), with the load average."""
    pin = hasattr(os, "sched_setaffinity")
    before = os.sched_getaffinity(0) if pin else set()
    if pin:
        os.sched_setaffinity(0, {min(before)})
    try:
        measured: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        measured.update(measure_reduction(reduction_events))
        measured.update(measure_plan(plan_samples))
    finally:
        if pin:
            os.sched_setaffinity(0, before)
    return measured


def _format(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the plan; ``--measure`` re-measures the reduction and the plan first."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override an input"
    )
    parser.add_argument(
        "--measure", action="store_true", help="re-measure reduction and plan on one core"
    )
    parser.add_argument("--plan-samples", type=int, default=5_000_000)
    parser.add_argument("--reduction-events", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    inputs = {k: float(val) for k, (val, _) in INPUTS.items()}
    notes = {k: why for k, (_, why) in INPUTS.items()}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in inputs:
            parser.error(f"--set {item!r}: expected NAME=VALUE with NAME one of {sorted(inputs)}")
        inputs[name] = float(value)
        notes[name] = "--set"
    measured: dict[str, Any] = {}
    if args.measure:
        measured = measure(args.plan_samples, args.reduction_events)
        inputs["reduction_cpu_s_per_event"] = measured["reduction_cpu_s_per_event"]
        notes["reduction_cpu_s_per_event"] = "measured now (--measure)"
    rows = plan(inputs)
    if args.json:
        json.dump(
            {"inputs": inputs, "measured": measured, "plan": {k: x for k, x, _ in rows}},
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    print("inputs:")
    for k, x in inputs.items():
        print(f"  {k:36s} {_format(x):>14s}  {notes[k]}")
    if measured:
        print("measured (one core):")
        for k, x in measured.items():
            print(f"  {k:36s} {x if isinstance(x, list) else _format(x)}")
    print("plan:")
    for k, x, formula in rows:
        print(f"  {k:36s} {_format(x):>14s}  = {formula}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
