"""``python -m bench.throughput --cold``: fastload on a cold page cache, against the disk itself.

On a TopTagging-shaped store (``--events``, default 306,000 jets: ~226 MB of
compressed chunk files), in this process, ``--repeats`` times (default 3):

``disk sequential``
    Every chunk file's pages evicted (``posix_fadvise(POSIX_FADV_DONTNEED)``,
    no root needed), then each file read with plain ``read()`` in path order:
    the rate the disk gives these bytes, measured in the same run.
``fastload cold``
    Pages evicted again, then one epoch of ``fl.Loader(store["train"],
    --batch-size, workers=--workers)`` (workers already started by an earlier
    epoch); its rate is the store's compressed bytes over the epoch's time.
``fastload warm``
    One more epoch right after, every page cached.

The consumer touches one value per batch (this measures reading, not a
consumer).  Reported: medians, and ``cold / disk``.  ``--readahead-bytes``
sets the loader's window (``0``: none); the eviction itself is checked (a
re-read after eviction must be slower than a cached one, else the table says
so: a filesystem that ignores the advice, or a disk behind a host cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import fastload as fl

from ._data import build_dataset

#: default jets: the issue's TopTagging-shaped store (~226 MB compressed)
COLD_EVENTS = 306_000


def store_files(store: str) -> list[Path]:
    """Every file of the store (chunk files and metadata), in path order."""
    return sorted(p for p in Path(store).rglob("*") if p.is_file())


def evict(files: list[Path]) -> None:
    """Drop the page-cache pages of ``files`` (``POSIX_FADV_DONTNEED``; clean pages only)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_sequential(files: list[Path]) -> tuple[int, float]:
    """Read every file with plain ``read()``, one after the other: (bytes, seconds)."""
    total = 0
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return total, time.perf_counter() - t0


def _epoch(loader: fl.Loader, epoch: int) -> tuple[int, float]:
    loader.set_epoch(epoch)
    samples = 0
    t0 = time.perf_counter()
    for batch in loader:
        x = batch["X"]
        float(x[0, 0, 0])  # touch the batch
        samples += x.shape[0]
        del batch, x
    return samples, time.perf_counter() - t0


def run_cold(args: argparse.Namespace) -> dict[str, Any]:
    """Build the store, run the three measurements ``--repeats`` times; print and return them."""
    n = args.events or COLD_EVENTS
    repeats = args.repeats or 3
    temp = None if args.data_dir is not None else Path(tempfile.mkdtemp(prefix="fastload-bench-"))
    root = args.data_dir or temp
    assert root is not None
    load_start = os.getloadavg()
    try:
        data = build_dataset("toptagging", n, root, seed=args.seed, progress=False)
        files = store_files(data.store)
        nbytes = sum(p.stat().st_size for p in files)
        read_sequential(files)  # cached
        _, cached_s = read_sequential(files)
        evict(files)
        _, evicted_s = read_sequential(files)
        split = fl.open_store(data.store)["train"]
        options: dict[str, Any] = {}
        if args.readahead_bytes is not None:
            options["readahead_bytes"] = args.readahead_bytes
        if args.prefetch is not None:
            options["prefetch"] = args.prefetch
        rows: dict[str, list[float]] = {"disk": [], "cold": [], "warm": []}
        with fl.Loader(
            split, args.batch_size, workers=args.workers, seed=args.seed, **options
        ) as loader:
            epoch = 0
            _epoch(loader, epoch)  # starts the workers
            for _ in range(repeats):
                evict(files)
                got, seconds = read_sequential(files)
                rows["disk"].append(got / seconds)
                evict(files)
                epoch += 1
                samples, seconds = _epoch(loader, epoch)
                if samples != len(split):
                    raise RuntimeError(f"an epoch delivered {samples} samples of {len(split)}")
                rows["cold"].append(nbytes / seconds)
                epoch += 1
                _, seconds = _epoch(loader, epoch)
                rows["warm"].append(nbytes / seconds)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    results = {
        "dataset": "toptagging",
        "events": n,
        "store_bytes": nbytes,
        "files": len(files),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "readahead_bytes": args.readahead_bytes,
        "repeats": repeats,
        "eviction_check": {"cached_read_s": cached_s, "evicted_read_s": evicted_s},
        "eviction_works": evicted_s > 2 * cached_s,
        "bytes_per_s": rows,
        "median_bytes_per_s": med,
        "cold_over_disk": med["cold"] / med["disk"],
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    mb = 1e6
    print(
        f"TopTagging cold: {n:,} jets, {nbytes / mb:.0f} MB in {len(files)} files, batch "
        f"{args.batch_size}, {args.workers} workers, readahead_bytes="
        f"{'default' if args.readahead_bytes is None else args.readahead_bytes}, {repeats} repeats"
    )
    print(
        f"  eviction check: cached re-read {cached_s * 1e3:.0f} ms, after eviction "
        f"{evicted_s * 1e3:.0f} ms{'' if results['eviction_works'] else '  (EVICTION NOT EFFECTIVE)'}"
    )
    for key, label in (
        ("disk", "disk sequential read()"),
        ("cold", "fastload cold"),
        ("warm", "fastload warm"),
    ):
        spread = ", ".join(f"{v / mb:.0f}" for v in rows[key])
        print(f"  {label:24s} {med[key] / mb:8.0f} MB/s  ({spread})")
    print(
        f"  fastload cold / disk = {results['cold_over_disk']:.2f}x; load average "
        f"{results['load_average_start']} -> {results['load_average_end']}"
    )
    return results
