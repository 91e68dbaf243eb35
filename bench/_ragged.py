"""``python -m bench.throughput --ragged``: AHCAL hits as ragged batches, against RAM.

Three ways to feed the same consumer (one ``sum()`` over every array of the
batch: the values and offsets of a ragged field, each dense field), one after
the other in this process, each for ``--max-seconds`` (at least one epoch):

``in-memory ragged``
    The reference: values + offsets of every event preloaded in RAM; each batch
    is gathered from a random permutation (``np.concatenate`` of the events'
    row slices, their offsets by ``cumsum``).
``fastload ragged``
    ``fl.Loader(store, ragged={"hits": "offsets"})``: the batch's rows back to
    back plus ``B + 1`` offsets, zero-copy from the workers' shared memory.
``fastload ragged, memory_cache``
    The same with ``memory_cache=True``: the first epoch decodes each chunk
    once into shared memory, later epochs copy rows from there (the baseline
    holds the decoded events in RAM too).
``fastload padded``
    The default: ``hits`` padded to the longest event plus ``hits_len``.

Every epoch's sum of the hit values is checked against the dataset's (exactly
the same samples, whatever the order).  The ratio reported is fastload ragged
over the in-memory ragged baseline, in samples per second.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl

from ._data import build_dataset, default_events
from ._epochs import Feed, timed_epochs


def _consume(batch: dict[str, Any]) -> tuple[int, float]:
    """Read every byte of a batch; (samples, sum of the hit values)."""
    hits_sum = 0.0
    rows = 0
    for name, value in batch.items():
        if isinstance(value, fl.Ragged):
            total = float(value.values.sum(dtype=np.float64))
            value.offsets.sum()
            rows = len(value)
        else:
            total = float(value.sum(dtype=np.float64))
            rows = value.shape[0]
        if name == "hits":
            hits_sum = total
    return rows, hits_sum


def _in_memory(split: fl.Split, batch_size: int, seed: int) -> Callable[[int], Iterator[dict]]:
    hits = split.read("hits")
    values, offsets = hits.rebased()
    dense = {name: split.read(name) for name in ("y", "energy")}
    n = len(split)

    def epoch(e: int) -> Iterator[dict]:
        order = np.random.default_rng([seed, e]).permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            starts, stops = offsets[idx], offsets[idx + 1]
            out_offsets = np.zeros(idx.size + 1, dtype=np.int64)
            np.cumsum(stops - starts, out=out_offsets[1:])
            rows = np.concatenate([values[a:b] for a, b in zip(starts, stops, strict=True)])
            batch: dict[str, Any] = {"hits": fl.Ragged(rows, out_offsets)}
            batch.update({name: column[idx] for name, column in dense.items()})
            yield batch

    return epoch


def _measure(epochs: Feed, seconds: float, want: float | None) -> dict[str, Any]:
    return timed_epochs(epochs, _consume, seconds, want, "the hit values")


def run_ragged(args: argparse.Namespace) -> dict[str, Any]:
    """Build AHCAL, run the three feeds, print a table; the results dict."""
    if args.dataset and set(args.dataset) != {"ahcal"}:
        raise SystemExit("--ragged runs on AHCAL only (the ragged dataset): use --dataset ahcal")
    n = args.events or default_events("ahcal", quick=args.quick)
    seconds = args.max_seconds if args.max_seconds is not None else (2.0 if args.quick else 10.0)
    temp = None if args.data_dir is not None else Path(tempfile.mkdtemp(prefix="fastload-bench-"))
    root = args.data_dir or temp
    assert root is not None
    try:
        data = build_dataset("ahcal", n, root, seed=args.seed, progress=False)
        split = fl.open_store(data.store)["train"]
        want = float(split.read("hits").values.sum(dtype=np.float64))
        bs, workers = args.batch_size, args.workers
        results: dict[str, Any] = {
            "dataset": "ahcal",
            "events": len(split),
            "batch_size": bs,
            "workers": workers,
            "mean_hits": float(np.diff(split.offsets("hits")).mean()),
            "max_hits": split.max_len("hits"),
        }
        results["in-memory ragged"] = _measure(_in_memory(split, bs, args.seed), seconds, want)
        for key, options in (
            ("fastload ragged", {"ragged": {"hits": "offsets"}}),
            (
                "fastload ragged, memory_cache",
                {"ragged": {"hits": "offsets"}, "memory_cache": True},
            ),
            ("fastload padded", {}),
        ):
            loader = fl.Loader(split, bs, workers=workers, seed=args.seed, **options)
            with loader:

                def epochs(e: int, loader: fl.Loader = loader) -> Iterator[dict]:
                    loader.set_epoch(e)
                    return iter(loader)

                results[key] = _measure(epochs, seconds, want)
        base = results["in-memory ragged"]["samples_per_s"]
        results["ratio"] = results["fastload ragged"]["samples_per_s"] / base
        results["ratio_cached"] = results["fastload ragged, memory_cache"]["samples_per_s"] / base
        results["ratio_padded"] = results["fastload padded"]["samples_per_s"] / base
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print(
        f"AHCAL ragged: {results['events']:,} events, {results['mean_hits']:.0f} hits on average "
        f"(max {results['max_hits']}), batch {bs}, {workers} workers"
    )
    for key in (
        "in-memory ragged",
        "fastload ragged",
        "fastload ragged, memory_cache",
        "fastload padded",
    ):
        r = results[key]
        print(
            f"  {key:30s} {r['samples_per_s']:10,.0f} samples/s  ({r['epochs']} epochs, "
            f"first batch {r['first_batch_s'] * 1e3:.0f} ms)"
        )
    print(
        f"  fastload ragged / in-memory ragged = {results['ratio']:.2f}x "
        f"(with memory_cache: {results['ratio_cached']:.2f}x; padded: {results['ratio_padded']:.2f}x)"
    )
    return results
