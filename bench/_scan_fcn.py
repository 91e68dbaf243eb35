"""The FCN trainings of ``python -m bench.scan --model fcn``: a learning-rate scan.

Each training is one process with one torch FCN (bench.train's recipe
``fcn``/``TopTagging``: pd4ml's constituent features computed by the
transform, 12 x Dense(256)), its own learning rate and ``--threads`` intra-op
threads.  Where its batches come from is the setup:

* ``compute``: one preprocessed batch, fed again at every step: no data
  pipeline at all.  Its step time is the ceiling and its memory the floor a
  training needs without data (what the other setups' *data PSS* is counted
  from);
* ``memory``: the whole preprocessed training split in RAM (torch tensors),
  random batches by index — bench.train's in-memory baseline, per training;
* ``loader``: its own ``fl.Loader`` (transform in its workers);
* ``consumer``: attached to the setup's one ``fl.Feed`` (transform in the
  feed's workers, once for all trainings);
* ``host``: runs that ``fl.Feed`` in its own process (the feed's threads beside
  the training, its workers its children) and attaches to it like the others:
  a scan without a feed process of its own.

Every step is timed: *wait* is the time to get the batch (``next()``),
*step* the rest (forward, backward, optimiser; the loss is read, so the step
has finished).  The training prints one JSON line at the stop signal: samples
and seconds of the measured window, the wait and step seconds, its learning
rate and mean loss over the first and last tenth of the window's steps.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl

from ._scan_role import open_feed
from .models.recipes import Recipe, recipe
from .train import TrainConfig, _TorchRunner, epochs, materialise, model_spec, prepare_store

DATASET = "TopTagging"
MODEL = "fcn"


def store_path(events: int, seed: int, data_dir: Path) -> Path:
    """The converted TopTagging store the FCN trainings read (made on first use)."""
    return prepare_store(DATASET, events, seed, data_dir)


def fcn_recipe(store: str) -> tuple[fl.Split, Recipe]:
    """The training split and bench.train's FCN recipe (the same in every process of a setup)."""
    train = fl.open_store(store)["train"]
    return train, recipe(DATASET, MODEL, train)


def feed_options(store: str) -> dict[str, Any]:
    """What the feed process passes to ``fl.Feed`` besides the scan's common settings."""
    _, rcp = fcn_recipe(store)
    return {"fields": rcp.fields, "transform": rcp.transform}


def _source(spec: dict[str, Any], train: fl.Split, rcp: Recipe) -> Any:
    """The training's loader or feed consumer (``None`` for the in-process setups)."""
    if spec["role"] == "loader":
        return fl.Loader(
            train,
            spec["batch_size"],
            shuffle=True,
            seed=spec["seed"],
            workers=spec["workers"],
            fields=rcp.fields,
            transform=rcp.transform,
        )
    if spec["role"] in ("consumer", "host"):
        return fl.attach(
            spec["name"], batch_size=spec["batch_size"], seed=spec["seed"], label=spec["label"]
        )
    return None


def _batches(spec: dict[str, Any], runner: _TorchRunner, source: Any, train: Any, rcp: Any) -> Any:
    if source is not None:
        return epochs(runner.loader_batches(source))
    arrays = materialise(train, rcp, spec["batch_size"], workers=0)
    if spec["role"] == "compute":
        one = next(runner.memory_batches({k: v[: spec["batch_size"]] for k, v in arrays.items()}))
        del arrays
        return itertools.repeat(one)
    return runner.memory_batches(arrays)


def training(spec: dict[str, Any]) -> int:
    """Run one training of a setup; see the module docstring for the protocol."""
    train, rcp = fcn_recipe(spec["store"])
    cfg = TrainConfig(
        framework="torch",
        model=MODEL,
        dataset=DATASET,
        batch_size=spec["batch_size"],
        workers=spec["workers"],
        seed=spec["seed"],
        lr=spec["lr"],
        threads=spec["threads"],
        steps=2,
        warmup=0,
    )
    hosted = (
        open_feed(spec, train, fields=rcp.fields, transform=rcp.transform)
        if spec["role"] == "host"
        else None
    )
    source = _source(spec, train, rcp)
    try:
        if source is not None:
            spec_of_model = model_spec(rcp, source)
        else:
            with fl.Loader(
                train, spec["batch_size"], fields=rcp.fields, transform=rcp.transform
            ) as probe:
                spec_of_model = model_spec(rcp, probe)
        runner = _TorchRunner(cfg, spec_of_model, rcp.label)
        _, step = runner.new_model()
        batches = _batches(spec, runner, source, train, rcp)
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # start
        result = _timed_window(batches, step, spec["warmup_s"], spec["batch_size"])
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # ends the loader's or consumer's epoch in progress
    finally:
        if source is not None:
            source.close()
        if hosted is not None:
            hosted.close()
    print(json.dumps({**result, "lr": spec["lr"]}), flush=True)
    return 0


def _timed_window(
    batches: Iterator[Any], step: Any, warmup_s: float, batch_size: int
) -> dict[str, Any]:
    """Train until the stop line on stdin; time the steps that start after ``warmup_s``."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    window_start = time.perf_counter() + warmup_s
    waits: list[float] = []
    steps: list[float] = []
    losses: list[float] = []
    counted_from: float | None = None
    finished = time.perf_counter()
    while not stop.is_set():
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss = step(batch)
        finished = time.perf_counter()
        del batch
        if t0 >= window_start:
            counted_from = t0 if counted_from is None else counted_from
            waits.append(t1 - t0)
            steps.append(finished - t1)
            losses.append(loss)
    window = finished - counted_from if counted_from is not None else 0.0
    tenth = max(1, len(losses) // 10)
    return {
        "samples": len(waits) * batch_size,
        "window_s": window,
        "wait_s": float(np.sum(waits)),
        "step_s": float(np.sum(steps)),
        "steps": len(waits),
        "loss_first": float(np.mean(losses[:tenth])) if losses else None,
        "loss_last": float(np.mean(losses[-tenth:])) if losses else None,
    }
