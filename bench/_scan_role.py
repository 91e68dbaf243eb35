"""One process of ``python -m bench.scan``: a feed, or a training reading a feed or a Loader.

``python -m bench._scan_role SPEC.json`` with ``spec["role"]`` one of:

* ``"feed"``: runs ``fl.Feed(store['train'], ...)`` until its stdin closes;
* ``"loader"``: a training with its own ``fl.Loader`` (2 workers);
* ``"consumer"``: a training attached to the feed (``fl.attach``);
* with ``spec["model"] == "fcn"`` the trainings are torch FCNs instead of byte
  sums (``"compute"`` and ``"memory"`` roles too; see :mod:`bench._scan_fcn`).

A training prints ``ready`` once its loader or consumer exists, waits for a
line on stdin (the parent's start signal, so every training of a setup starts
together), iterates epochs through the byte-summing :class:`Consumer` of
bench.throughput until a second line (the stop signal), and prints one JSON
line: samples and time of the measured window (after the warm-up), the time
it spent waiting for batches, its pid.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._data import BenchData
from ._measure import Consumer


def _timed(it: Any, stop: threading.Event) -> Any:
    """``(t_asked, t_got, batch)`` for each batch of ``it`` until ``stop`` is set."""
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield t0, time.perf_counter(), batch
        del batch


def open_feed(spec: dict[str, Any], source: Any, **options: Any) -> Any:
    """The scan's broadcast feed (in the feed process, or hosted by a training)."""
    if spec.get("ahead"):
        options["ahead"] = spec["ahead"]
    import fastload as fl

    return fl.Feed(
        source,
        spec["batch_size"],
        shuffle=True,
        seed=spec["seed"],
        workers=spec["workers"],
        name=spec["name"],
        min_consumers=spec["consumers"],
        memory_cache=bool(spec.get("memory_cache")),
        **options,
    )


def _feed(spec: dict[str, Any]) -> int:
    import fastload as fl

    source = fl.open_store(spec["store"])["train"]
    options: dict[str, Any] = {}
    if spec.get("model") == "fcn":
        from ._scan_fcn import feed_options

        options = feed_options(spec["store"])
    with open_feed(spec, source, **options) as feed:
        print(json.dumps({"ready": True, "workers": feed.worker_pids()}), flush=True)
        sys.stdin.readline()  # the parent closes stdin (or writes a line) to stop the feed
    return 0


def _training(spec: dict[str, Any]) -> int:
    import fastload as fl

    data = BenchData.from_json(spec["data"])
    if spec["role"] == "loader":
        source: Any = fl.Loader(
            fl.open_store(spec["store"])["train"],
            spec["batch_size"],
            shuffle=True,
            seed=spec["seed"],
            workers=spec["workers"],
            memory_cache=bool(spec.get("memory_cache")),
        )
    else:
        source = fl.attach(
            spec["name"], batch_size=spec["batch_size"], seed=spec["seed"], label=spec["label"]
        )
    consumer = Consumer(data.batch_spec(), spec["batch_size"])
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # start
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    window_start = time.perf_counter() + spec["warmup_s"]
    samples = 0
    waited = 0.0
    counted_from: float | None = None
    epochs = 0
    verdicts = []
    try:
        while not stop.is_set():
            if spec["role"] == "loader":
                source.set_epoch(epochs)
            it = iter(source)
            for batch in _timed(it, stop):
                t0, t1, batch = batch
                consumer(batch)
                rows = len(next(iter(batch.values())))
                del batch
                if t0 >= window_start:
                    if counted_from is None:
                        counted_from = t0
                    samples += rows
                    waited += t1 - t0
            if stop.is_set():
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                break
            verdicts.append(consumer.end_epoch(data))
            epochs += 1
        stopped = time.perf_counter()
    finally:
        source.close()
    wall = stopped - counted_from if counted_from is not None else 0.0
    print(
        json.dumps(
            {
                "samples": int(samples),
                "window_s": wall,
                "wait_s": waited,
                "epochs_done": epochs,
                "epoch_verdicts": verdicts,
                "bytes_summed": consumer.nbytes,
            }
        ),
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    if spec["role"] == "feed":
        return _feed(spec)
    if spec.get("model") == "fcn":
        from ._scan_fcn import training

        return training(spec)
    return _training(spec)


if __name__ == "__main__":
    raise SystemExit(main())
