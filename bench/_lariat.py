"""``python -m bench.throughput --dataset lariat``: LArIAT events reduced in the workers, against RAM.

LArIAT events are 2 planes x 240 wires x 4096 ticks of float16 (3.9 MB); the
model sees them after LArTPCDNN's reduction
(:func:`fastload.transforms.lariat_preprocess`: tick sums of 8, the 256-tick
window with the most charge, tanh-log, two (240, 256) float32 planes, 0.5 MB).
Four feeds of the same consumer (one ``sum()`` of each plane and of the
labels; of raw float16 events, of their bits), one after the other in this
process, each for ``--max-seconds`` (at least one epoch), every epoch's sum
checked (the planes against the in-memory feed's, raw events against the store's):

``in-memory``
    The reference: the raw float16 events and labels held in RAM
    (``split.read``); each batch is gathered from a random permutation and
    reduced **in the consumer** by the same transform.
``fastload``
    ``fl.Loader(store, transform=lariat_preprocess())``: each worker decodes
    its events (one-event chunks, straight into the batch slot) and reduces
    them; the consumer gets the reduced planes.
``fastload raw``
    The same loader without the transform: the raw-event rate (events/s and
    GB/s of float16 delivered).
``DLKit-style``
    LArTPCDNN/DLKit's generator design: ``--workers`` processes read batches of
    consecutive events from the original gzip-compressed ``.2d.h5`` files
    (h5py), reduce them and put the pickled batch on one
    ``multiprocessing.Queue`` (:class:`bench.baselines.pipe_queue.PipeSession`);
    batches come from the files in a shuffled order, not class-balanced.

The store is written by ``converters lariat`` from ``fastload.synthetic``
originals (one split, no 3D deposits), under ``--data-dir`` (reused) or a
temporary folder; it is small enough to fit in RAM, which the in-memory
reference needs.  Also reported: bytes written per event by the one-event-chunk
decode path (:func:`bytes_written_per_event`), which should equal the event's
bytes: each event decoded straight into its batch slot, no scratch copy.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl
from fastload.transforms import lariat_preprocess

from ._contender import RunConfig, epoch_seed
from ._epochs import Feed, timed_epochs
from ._siblings import converters_module
from .baselines.pipe_queue import PipeSession

PLANES = ("induction", "collection")
#: synthetic events of a full run and of --quick (a full run holds ~1 GB of float16 in RAM)
DEFAULT_EVENTS, QUICK_EVENTS = 240, 48
FEEDS = ("in-memory", "fastload", "fastload raw", "DLKit-style")


def build_lariat(n: int, root: Path, seed: int = 0) -> tuple[Path, Path]:
    """``(originals folder, store)`` of ``n`` synthetic events (12 classes), made once under ``root``."""
    from fastload.synthetic import generate

    folder = root / f"lariat-n{n}-seed{seed}"
    originals, store = folder / "originals", folder / "store.zarr"
    if (folder / ".complete").is_file():
        return originals, store
    shutil.rmtree(folder, ignore_errors=True)
    generate("lariat", originals, n=n, seed=seed, with_3d=False)
    convert = converters_module("lariat").convert_lariat
    convert(
        originals,
        store,
        with_3d=False,
        split={"train": 1.0, "val": 0.0, "test": 0.0},
        overwrite=True,
        quiet=True,
    )
    (folder / ".complete").write_text("")
    return originals, store


def _consume(batch: dict[str, Any]) -> tuple[int, float]:
    """Read every array of a batch; (samples, checksum of the planes or of the raw features)."""
    total = 0.0
    for name, value in batch.items():
        s = _checksum(np.asarray(value))
        if name in PLANES or name == "features":
            total += s
    return len(batch["y"]), total


def _checksum(array: np.ndarray) -> float:
    """float64 sum of the values; of float16 (raw events), the exact sum of their bits.

    numpy converts float16 at ~3.5 ns a value here: a float sum of each raw event made
    the consumer, not the loader, the bound of the raw rate (4 ms per 3.9 MB event,
    against 1 ms for the bits; both read every byte).
    """
    if array.dtype == np.float16:
        return float(array.view(np.uint16).sum(dtype=np.uint64))
    return float(array.sum(dtype=np.float64))


def _in_memory(split: fl.Split, batch_size: int, seed: int) -> tuple[Feed, float]:
    """The in-memory feed, and the checksum of the raw events it holds (what the raw feed must sum to)."""
    features = split.read("features")  # raw float16 events in RAM
    labels = split.read("y")
    transform = lariat_preprocess(outs=PLANES)
    n = len(split)

    def epoch(e: int) -> Iterator[dict[str, np.ndarray]]:
        order = np.random.default_rng([seed, e]).permutation(n)
        for lo in range(0, n, batch_size):
            idx = np.sort(order[lo : lo + batch_size])
            yield transform({"features": features[idx], "y": labels[idx]})

    return epoch, _checksum(features)


class LariatH5Reader:
    """Events ``[start, stop)`` (global over the files, inside one file) read with h5py and reduced.

    Picklable before use: files open in the worker on first read.
    """

    def __init__(self, files: list[tuple[str, int, int]]) -> None:
        self.paths = [p for p, _, _ in files]
        self.classes = [c for _, _, c in files]
        self.offsets = np.concatenate([[0], np.cumsum([n for _, n, _ in files])]).astype(np.int64)
        self.transform = lariat_preprocess(outs=PLANES)
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        import h5py

        k = int(np.searchsorted(self.offsets, start, side="right") - 1)
        if k not in self._open:
            self._open[k] = h5py.File(self.paths[k], "r")
        f = self._open[k]
        key = "features" if "features" in f else "images"
        a, b = start - int(self.offsets[k]), stop - int(self.offsets[k])
        raw = f[key][a:b]
        return self.transform({"features": raw, "y": np.full(b - a, self.classes[k], np.int64)})

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open = {}


def _file_ranges(offsets: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Batches of consecutive events, never across a file boundary."""
    out = []
    for a, b in itertools.pairwise(offsets):
        out += [(int(s), int(min(s + batch_size, b))) for s in range(int(a), int(b), batch_size)]
    return out


def _dlkit(originals: Path, cfg: RunConfig) -> tuple[PipeSession, Feed]:
    import h5py

    files = []
    for p2, _p3, cls in converters_module("lariat").find_files(originals):
        with h5py.File(p2, "r") as f:
            key = "features" if "features" in f else "images"  # the later files' name
            files.append((str(p2), int(f[key].shape[0]), int(cls)))
    reader = LariatH5Reader(files)
    ranges = _file_ranges(reader.offsets, cfg.batch_size)

    def epoch_ranges(e: int) -> list[tuple[int, int]]:
        order = np.random.default_rng(epoch_seed(cfg, e)).permutation(len(ranges))
        return [ranges[i] for i in order]

    session = PipeSession(cfg, lambda: reader, epoch_ranges)
    return session, session.epoch


def _measure(epochs: Feed, seconds: float, want: float | None) -> dict[str, Any]:
    return timed_epochs(epochs, _consume, seconds, want, "the planes")


def _loader_feed(loader: fl.Loader) -> Feed:
    def epochs(e: int) -> Iterator[dict[str, np.ndarray]]:
        loader.set_epoch(e)
        return iter(loader)

    return epochs


@contextlib.contextmanager
def _counting_decodes(log: list[tuple[int, bool]]) -> Iterator[None]:
    """Record ``(bytes, into a view)`` of every dense chunk decode in this process."""
    from fastload.store._decoder import ChunkDecoder

    original = ChunkDecoder.decode_into

    def decode_into(self: Any, chunk: int, out: np.ndarray) -> int:
        rows = original(self, chunk, out)
        if self.key.rsplit("/", 1)[-1] == "features":
            log.append((int(out[: self.chunk_len].nbytes), out.base is not None))
        return rows

    ChunkDecoder.decode_into = decode_into  # type: ignore[method-assign]
    try:
        yield
    finally:
        ChunkDecoder.decode_into = original  # type: ignore[method-assign]


def bytes_written_per_event(split: fl.Split, batch_size: int) -> dict[str, Any]:
    """Bytes written per event of ``features`` in one epoch of ``Loader(split, workers=0)``.

    Every decode of a ``features`` chunk is recorded in this process (workers=0
    runs the workers' code inline): a decode straight into a batch slot (a
    view of the shared arena) writes the event once; a decode into the
    worker's own scratch buffer is followed by a copy into the slot, so it
    writes the event twice.
    """
    log: list[tuple[int, bool]] = []
    with (
        _counting_decodes(log),
        fl.Loader(split, batch_size, workers=0, fields=("features", "y")) as loader,
    ):
        n = sum(len(b["y"]) for b in loader)
    decoded = sum(b for b, _ in log)
    via_scratch = sum(b for b, into_slot in log if not into_slot)
    event = int(np.prod(split.fields["features"].shape)) * np.dtype(np.float16).itemsize
    return {
        "events": n,
        "event_nbytes": event,
        "decodes": len(log),
        "decoded_into_slot": sum(1 for _, into_slot in log if into_slot),
        "bytes_written_per_event": (decoded + via_scratch) / max(n, 1),
    }


def run_lariat(args: argparse.Namespace) -> dict[str, Any]:
    """Build LArIAT, run the four feeds, print a table; the results dict."""
    if set(args.dataset or ()) != {"lariat"}:
        raise SystemExit("--dataset lariat runs alone: leave out the other --dataset names")
    n = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    seconds = args.max_seconds if args.max_seconds is not None else (2.0 if args.quick else 10.0)
    bs, workers = args.batch_size, args.workers
    temp = None if args.data_dir is not None else Path(tempfile.mkdtemp(prefix="fastload-bench-"))
    root = args.data_dir or temp
    assert root is not None
    try:
        t0 = time.perf_counter()
        originals, store = build_lariat(n, Path(root), seed=args.seed)
        split = fl.open_store(store)["train"]
        event_nbytes = int(np.prod(split.fields["features"].shape)) * 2
        results: dict[str, Any] = {
            "dataset": "lariat",
            "events": len(split),
            "event_nbytes": event_nbytes,
            "batch_size": bs,
            "workers": workers,
            "chunk_len": split.chunk_len,
            "data_s": time.perf_counter() - t0,
        }
        memory, want_raw = _in_memory(split, bs, args.seed)
        results["in-memory"] = _measure(memory, seconds, None)
        want = results["in-memory"]["epoch_sum"]
        del memory
        reduce = lariat_preprocess(outs=PLANES)
        with fl.Loader(
            split, bs, workers=workers, seed=args.seed, fields=("features", "y"), transform=reduce
        ) as loader:
            results["fastload"] = _measure(_loader_feed(loader), seconds, want)
        with fl.Loader(
            split, bs, workers=workers, seed=args.seed, fields=("features", "y")
        ) as loader:
            raw = results["fastload raw"] = _measure(_loader_feed(loader), seconds, want_raw)
        raw["gb_per_s"] = raw["samples_per_s"] * event_nbytes / 1e9
        cfg = RunConfig(batch_size=bs, workers=workers, seed=args.seed)
        session, feed = _dlkit(originals, cfg)
        with session:
            results["DLKit-style"] = _measure(feed, seconds, want)
        results["decode"] = bytes_written_per_event(split, bs)
        base = results["in-memory"]["samples_per_s"]
        fast = results["fastload"]["samples_per_s"]
        results["ratio"] = fast / base
        results["ratio_dlkit"] = fast / results["DLKit-style"]["samples_per_s"]
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print(
        f"LArIAT: {results['events']:,} events of {event_nbytes / 1e6:.2f} MB (float16, chunks of "
        f"{results['chunk_len']}), batch {bs}, {workers} workers"
    )
    for key in FEEDS:
        r = results[key]
        extra = f"  {r['gb_per_s']:.2f} GB/s of float16" if "gb_per_s" in r else ""
        print(
            f"  {key:13s} {r['samples_per_s']:9,.1f} events/s  ({r['epochs']} epochs, first batch "
            f"{r['first_batch_s'] * 1e3:.0f} ms){extra}"
        )
    d = results["decode"]
    print(
        f"  fastload / in-memory = {results['ratio']:.2f}x, fastload / DLKit-style = "
        f"{results['ratio_dlkit']:.2f}x; bytes written per event {d['bytes_written_per_event']:,.0f} "
        f"(event {d['event_nbytes']:,}; {d['decoded_into_slot']}/{d['decodes']} decodes into the slot)"
    )
    return results
