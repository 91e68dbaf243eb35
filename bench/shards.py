"""Warm throughput of a sharded store against the same store unsharded (docs/store-format.md).

``python -m bench.shards [--events 40000] [--shard-chunks 8] [--epochs 3] [--workers 2]``

Writes one TopTagging-shaped store (float32 constituents (200, 4), zero padded past
20-100 real ones, int64 labels) twice -- ``shard_chunks=0`` and ``shard_chunks=N`` --
into a temporary directory, reads each once to warm the page cache, then alternates
epochs of a ``fl.Loader`` (process workers) over the two and reports the median
samples/s of each, their ratio, the chunk/shard file counts and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import fastload as fl


def _make(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 200, 4), np.float32)
    real = rng.integers(20, 101, n)
    for i in range(0, n, 4096):  # blockwise: bounded temporaries
        block = rng.normal(size=(min(4096, n - i), 200, 4)).astype(np.float32)
        block[np.arange(200)[None, :] >= real[i : i + len(block), None]] = 0
        X[i : i + len(block)] = block
    return {"X": X, "y": rng.integers(0, 2, n).astype(np.int64)}


def _files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file() and "/c/" in str(p))


def _epoch(split: fl.store.Split, batch: int, workers: int, seed: int) -> float:
    t0 = time.perf_counter()
    n = 0
    with fl.Loader(split, batch, seed=seed, workers=workers, backend="process") as loader:
        for b in loader:
            n += len(b["y"])
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print one line per store plus the ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--shard-chunks", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    data = _make(args.events)
    with tempfile.TemporaryDirectory(prefix="fastload-shards-") as tmp:
        paths = {}
        for label, factor in (("unsharded", 0), ("sharded", args.shard_chunks)):
            paths[label] = Path(tmp) / f"{label}.zarr"
            fl.write_arrays(paths[label], {"train": data}, chunk_len=1024, shard_chunks=factor)
        splits = {k: fl.open_store(p)["train"] for k, p in paths.items()}
        for split in splits.values():  # warm the page cache
            split.read("X", 0, len(split))
        rates: dict[str, list[float]] = {k: [] for k in splits}
        for epoch in range(args.epochs):
            for label, split in splits.items():
                rates[label].append(_epoch(split, args.batch_size, args.workers, epoch))
        med = {k: statistics.median(v) for k, v in rates.items()}
        for label in splits:
            size = sum(p.stat().st_size for p in paths[label].rglob("*") if p.is_file())
            print(
                f"{label:10s} files={_files(paths[label]):5d} bytes={size / 1e6:7.1f} MB "
                f"samples/s={med[label]:,.0f} (epochs: {', '.join(f'{r:,.0f}' for r in rates[label])})"
            )
        print(f"ratio sharded/unsharded = {med['sharded'] / med['unsharded']:.3f}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
