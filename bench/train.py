"""Training benchmark: real training steps fed by fastload, against an in-memory baseline.

``python -m bench.train --framework torch|tf --model fcn|gcn|ref --dataset NAME``

1. Generates a synthetic dataset in its original layout (``fastload.synthetic``)
   and converts it with the dataset's converter (``converters``), once per
   ``(dataset, events, seed)`` under ``OUT/data``.
2. Trains the model for ``--steps`` steps from a ``fl.Loader`` (transforms in
   the workers) through ``loader.torch()`` or ``loader.tf()``, timing every
   step: *wait* is the time spent getting the batch, *compute* the rest.
3. Trains a fresh model for the same steps from in-memory tensors holding the
   same preprocessed training set (random batches by index), the ceiling a
   loader can reach.
4. Evaluates on the test split (AUC for classification, R^2 for regression)
   and writes ``OUT/train_<framework>_<model>_<dataset>.json``.

Reported per run: samples/s, data-wait fraction (wait / (wait + compute),
after ``warmup`` steps), peak RSS of the process and of its process tree
(psutil; shared memory counts once per process that maps it), GPU utilisation
sampled during the run (NVML, else ``nvidia-smi``; ``None`` without a GPU),
the loss curve and the test metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import fastload as fl
from fastload.errors import ConfigError

from ._siblings import converters_module
from .models import ModelSpec, framework_module
from .models.recipes import DATASETS, Recipe, recipe

PD4ML_DATASETS = ("TopTagging", "Spinodal", "EOSL", "Airshower", "Belle")
FRAMEWORKS = ("torch", "tf")
#: generator options per dataset (LArIAT: no 3D deposit files, the model reads the wire images)
GENERATE_OPTIONS: dict[str, dict[str, Any]] = {"LArIAT": {"with_3d": False}}
MODELS = ("fcn", "gcn", "ref", "gcn-ragged")


@dataclass
class TrainConfig:
    """One benchmark run (the command-line options)."""

    framework: str
    model: str
    dataset: str
    steps: int = 200
    batch_size: int = 256
    workers: int = 2
    events: int = 20000
    seed: int = 0
    lr: float = 1e-3
    warmup: int = 10
    threads: int = 0
    device: str = "cpu"
    baseline: bool = True
    evaluate: bool = True
    out: Path = Path("results/train")
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        self.dataset = dataset_name(self.dataset)
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"--framework must be one of {FRAMEWORKS}, got {self.framework!r}")
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {MODELS}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("steps", "batch_size", "events"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)!r}"
                )
        if not 0 <= self.warmup < self.steps:
            raise ConfigError(
                f"--warmup must be in [0, steps), got {self.warmup} with {self.steps} steps"
            )
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0: automatic), got {self.threads}")
        self.out = Path(self.out)
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else self.out / "data"


def dataset_name(name: str) -> str:
    """The entry of :data:`DATASETS` that ``name`` names, case-insensitively (``lariat``: ``LArIAT``)."""
    for known in DATASETS:
        if known.lower() == str(name).lower():
            return known
    return name  # TrainConfig refuses it with the list of names


# --------------------------------------------------------------------------- data
def prepare_store(dataset: str, events: int, seed: int, data_dir: Path) -> Path:
    """A converted store of ``events`` synthetic events; generated and converted on first use."""
    path = data_dir / f"{dataset}-{events}-s{seed}.zarr"
    with contextlib.suppress(fl.errors.StoreError):
        fl.open_store(path)
        return path
    from fastload.synthetic import generate

    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{dataset}-originals-") as src:
        generate(dataset, src, n=events, seed=seed, **GENERATE_OPTIONS.get(dataset, {}))
        if dataset in PD4ML_DATASETS:
            convert_pd4ml = converters_module("pd4ml").convert_pd4ml
            convert_pd4ml(dataset, src, path, overwrite=True, quiet=True)
        elif dataset == "LCD":
            convert_lcd = converters_module("lcd").convert_lcd
            convert_lcd(src, path, overwrite=True, quiet=True)
        elif dataset == "LArIAT":  # the 2D wire images only: the model does not read deposits
            convert_lariat = converters_module("lariat").convert_lariat
            convert_lariat(src, path, with_3d=False, overwrite=True, quiet=True)
        else:  # pragma: no cover - DATASETS and the branches above agree
            raise ConfigError(f"no converter for {dataset!r}")
    return path


def model_spec(rcp: Recipe, loader: fl.Loader) -> ModelSpec:
    specs = loader.output_specs
    fields = {f for v in rcp.roles.values() for f in ((v,) if isinstance(v, str) else v)}
    return ModelSpec(
        kind=rcp.kind,
        roles=rcp.roles,
        shapes={f: specs[f].shape for f in fields},
        dtypes={f: specs[f].dtype.name for f in fields},
        head=rcp.head,
        grid=rcp.grid,
    )


def materialise(
    split: fl.Split, rcp: Recipe, batch_size: int, workers: int
) -> dict[str, np.ndarray]:
    """The whole split, preprocessed by the recipe's transform, as in-memory arrays."""
    parts: dict[str, list[np.ndarray]] = {}
    with fl.Loader(
        split,
        batch_size,
        shuffle=False,
        workers=workers,
        fields=rcp.fields,
        transform=rcp.transform,
        copy=True,
    ) as loader:
        for batch in loader:
            for name, value in batch.items():
                parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


# --------------------------------------------------------------------------- metrics
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class."""
    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate_scores(task: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC and accuracy (binary), macro one-vs-rest AUC and accuracy (multiclass), R^2 (regression)."""
    labels = np.asarray(labels).reshape(-1)
    if task == "binary":
        s = scores.reshape(-1)
        return {
            "auc": roc_auc(labels, s),
            "accuracy": float(np.mean((s > 0.5) == labels.astype(bool))),
        }
    if task == "multiclass":
        aucs = [roc_auc(labels == c, scores[:, c]) for c in range(scores.shape[1])]
        return {
            "auc": float(np.nanmean(aucs)),
            "accuracy": float(np.mean(scores.argmax(axis=1) == labels)),
        }
    s = scores.reshape(-1)
    residual = np.sum((labels - s) ** 2)
    total = np.sum((labels - labels.mean()) ** 2)
    return {
        "r2": float(1.0 - residual / total) if total > 0 else float("nan"),
        "correlation": float(np.corrcoef(labels, s)[0, 1]) if labels.size > 1 else float("nan"),
    }


def confusion(labels: np.ndarray, scores: np.ndarray) -> list[list[int]]:
    """Counts ``[true class][predicted class]`` (argmax of ``scores``) of a multiclass test."""
    n = scores.shape[1]
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (np.asarray(labels).reshape(-1).astype(np.int64), scores.argmax(axis=1)), 1)
    return out.tolist()


def group_accuracy(labels: np.ndarray, scores: np.ndarray, groups: dict[str, list[int]]) -> float:
    """Accuracy of the predicted class's group (``{group: [class, ...]}``), e.g. shower vs track."""
    group_of = np.full(scores.shape[1], -1, dtype=np.int64)
    for g, members in enumerate(groups.values()):
        group_of[list(members)] = g
    truth = group_of[np.asarray(labels).reshape(-1).astype(np.int64)]
    return float(np.mean(group_of[scores.argmax(axis=1)] == truth))


# --------------------------------------------------------------------------- sampling
class ResourceSampler:
    """Background sampling of RSS (process, process tree) and GPU utilisation."""

    def __init__(self, interval_s: float = 0.1, gpu: bool = False) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak_rss = 0
        self.peak_tree_rss = 0
        self.gpu_samples: list[float] = []
        self.gpu_method: str | None = None
        self._gpu = _GpuProbe() if gpu else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        if self._gpu is not None:
            self.gpu_method = self._gpu.method
            self._gpu.close()

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            rss = self.process.memory_info().rss
            tree = rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    tree += child.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_tree_rss = max(self.peak_tree_rss, tree)
        if self._gpu is not None:
            value = self._gpu.utilisation()
            if value is not None:
                self.gpu_samples.append(value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def report(self) -> dict[str, Any]:
        gpu = self.gpu_samples
        return {
            "peak_rss_mb": round(self.peak_rss / 1e6, 1),
            "peak_rss_tree_mb": round(self.peak_tree_rss / 1e6, 1),
            "gpu_util_mean_pct": round(float(np.mean(gpu)), 1) if gpu else None,
            "gpu_util_max_pct": round(float(np.max(gpu)), 1) if gpu else None,
            "gpu_util_source": self.gpu_method if gpu else "n/a",
        }


class _GpuProbe:
    """GPU 0 utilisation in percent through NVML, else ``nvidia-smi``; None when neither works."""

    def __init__(self) -> None:
        self.method: str | None = None
        self._nvml: Any = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
            self.method = "nvml"
        except Exception:  # not installed, no driver, no device: try nvidia-smi
            if shutil.which("nvidia-smi"):
                self.method = "nvidia-smi"

    def utilisation(self) -> float | None:
        if self.method == "nvml":
            with contextlib.suppress(Exception):
                return float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        elif self.method == "nvidia-smi":
            with contextlib.suppress(Exception):
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-i",
                        "0",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                )
                return float(out.stdout.strip().splitlines()[0])
        return None

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


# --------------------------------------------------------------------------- timing
@dataclass
class StepLog:
    """Per-step wait (getting the batch) and compute (the training step) in seconds, and the loss."""

    wait_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)

    def summary(self, batch_size: int, warmup: int) -> dict[str, Any]:
        wait = np.asarray(self.wait_s[warmup:])
        compute = np.asarray(self.compute_s[warmup:])
        total = float(wait.sum() + compute.sum())
        loss = np.asarray(self.loss)
        window = max(1, len(loss) // 10)
        return {
            "measured_steps": int(wait.size),
            "samples_per_s": round(wait.size * batch_size / total, 1) if total > 0 else None,
            "data_wait_fraction": round(float(wait.sum()) / total, 4) if total > 0 else None,
            "wait_ms_mean": round(float(wait.mean()) * 1e3, 3) if wait.size else None,
            "wait_ms_p95": round(float(np.percentile(wait, 95)) * 1e3, 3) if wait.size else None,
            "step_ms_mean": round(float((wait + compute).mean()) * 1e3, 3) if wait.size else None,
            "loss_first": round(float(loss[:window].mean()), 5),
            "loss_last": round(float(loss[-window:].mean()), 5),
            "loss_curve": [round(float(v), 5) for v in _downsample(loss, 50)],
        }


def _downsample(values: np.ndarray, n: int) -> np.ndarray:
    """Means of ``n`` equal consecutive groups (the whole curve when it is short)."""
    if values.size <= n:
        return values
    return np.array([g.mean() for g in np.array_split(values, n)])


def timed_steps(batches: Iterator[Any], step: Callable[[Any], float], steps: int) -> StepLog:
    """Run ``steps`` training steps, timing the wait for each batch apart from the step."""
    log = StepLog()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss = step(batch)  # returns a Python float: the step has finished
        t2 = time.perf_counter()
        log.wait_s.append(t1 - t0)
        log.compute_s.append(t2 - t1)
        log.loss.append(loss)
    return log


def epochs(iterable: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``iterable``, epoch after epoch, forever."""
    while True:
        empty = True
        for item in iterable:
            empty = False
            yield item
        if empty:
            raise ConfigError(
                "the training loader delivers no batch: too few events for the batch size"
            )


def random_batches(
    arrays: dict[str, Any], n: int, batch_size: int, seed: int, take: Callable[..., Any]
) -> Iterator[Any]:
    """In-memory baseline: each epoch a permutation, cut into full batches gathered with ``take``."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield take(arrays, order[start : start + batch_size])


# --------------------------------------------------------------------------- frameworks
def compute_threads(cfg: TrainConfig) -> int:
    """Intra-op threads of the training step: ``--threads``, or the cores the workers leave free.

    On a small machine the framework's default (one thread per core) fights the
    loader's workers for the cores, and oversubscribed OpenMP threads spin:
    a step can become many times slower than with fewer threads.
    """
    if cfg.threads:
        return cfg.threads
    return max(1, (os.cpu_count() or 1) - cfg.workers)


class _TorchRunner:
    def __init__(self, cfg: TrainConfig, spec: ModelSpec, label: str) -> None:
        import torch

        self.torch = torch
        self.cfg, self.spec, self.label = cfg, spec, label
        self.mod = framework_module("torch")
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(compute_threads(cfg))
        self.threads = torch.get_num_threads()

    def new_model(self) -> tuple[Any, Callable[[Any], float]]:
        torch, mod = self.torch, self.mod
        model = mod.build(self.spec).to(self.device)
        optimiser = torch.optim.Adam(model.parameters(), lr=self.cfg.lr)
        loss_fn = mod.loss_fn(self.spec)

        def step(batch: dict[str, Any]) -> float:
            model.train()
            loss = loss_fn(model(batch), mod.target(self.spec, batch[self.label]))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            return float(loss.item())

        return model, step

    def loader_batches(self, loader: fl.Loader) -> Iterable[Any]:
        return loader.torch(device=None if self.device.type == "cpu" else self.device)

    def memory_batches(self, arrays: dict[str, np.ndarray]) -> Iterator[Any]:
        torch = self.torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
        n = len(next(iter(arrays.values())))

        def take(t: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
            index = torch.from_numpy(idx).to(self.device)
            return {k: v.index_select(0, index) for k, v in t.items()}

        return random_batches(tensors, n, self.cfg.batch_size, self.cfg.seed + 1, take)

    def predict(self, model: Any, loader: fl.Loader) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        model.eval()
        outputs, labels = [], []
        with torch.no_grad():
            for batch in self.loader_batches(loader):
                outputs.append(self.mod.scores(self.spec, model(batch)))
                labels.append(batch[self.label].cpu().numpy().copy())
        return np.concatenate(outputs), np.concatenate(labels)

    def versions(self) -> dict[str, str]:
        info = {"torch": self.torch.__version__}
        if self.device.type == "cuda":
            info["gpu"] = self.torch.cuda.get_device_name(self.device)
        return info


class _TfRunner:
    def __init__(self, cfg: TrainConfig, spec: ModelSpec, label: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        self.tf, self.keras = tf, keras
        self.cfg, self.spec, self.label = cfg, spec, label
        self.mod = framework_module("tf")
        self.x = {f: f for f in spec.fields}
        keras.utils.set_random_seed(cfg.seed)
        with contextlib.suppress(RuntimeError):  # only possible before TF's runtime starts
            tf.config.threading.set_intra_op_parallelism_threads(compute_threads(cfg))
            tf.config.threading.set_inter_op_parallelism_threads(compute_threads(cfg))
        self.threads = tf.config.threading.get_intra_op_parallelism_threads()

    def new_model(self) -> tuple[Any, Callable[[Any], float]]:
        model = self.mod.build(self.spec)
        model.compile(
            optimizer=self.keras.optimizers.Adam(self.cfg.lr), loss=self.mod.loss_fn(self.spec)
        )

        def step(batch: tuple[Any, Any]) -> float:
            x, y = batch
            return float(model.train_on_batch(x, y))

        return model, step

    def loader_batches(self, loader: fl.Loader) -> Iterable[Any]:
        # repeat=True: one tf.data iterator for the whole run, as with
        # model.fit(steps_per_epoch=...); its prefetch thread crosses epoch ends
        return loader.tf(x=self.x, y=self.label, repeat=True)

    def memory_batches(self, arrays: dict[str, np.ndarray]) -> Iterator[Any]:
        tf = self.tf
        tensors = {k: tf.constant(v) for k, v in arrays.items() if k in self.x or k == self.label}
        n = len(next(iter(arrays.values())))

        def take(t: dict[str, Any], idx: np.ndarray) -> tuple[Any, Any]:
            index = tf.constant(idx)
            return {k: tf.gather(t[k], index) for k in self.x}, tf.gather(t[self.label], index)

        return random_batches(tensors, n, self.cfg.batch_size, self.cfg.seed + 1, take)

    def predict(self, model: Any, loader: fl.Loader) -> tuple[np.ndarray, np.ndarray]:
        outputs, labels = [], []
        for x, y in loader.tf(x=self.x, y=self.label):
            outputs.append(self.mod.scores(self.spec, model(x, training=False)))
            labels.append(y.numpy())
        return np.concatenate(outputs), np.concatenate(labels)

    def versions(self) -> dict[str, str]:
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__}


# --------------------------------------------------------------------------- run
def _host() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastload": fl.__version__,
    }


def _train_phase(
    batches: Iterator[Any], step: Callable[[Any], float], cfg: TrainConfig, gpu: bool
) -> dict[str, Any]:
    with ResourceSampler(gpu=gpu) as sampler:
        log = timed_steps(batches, step, cfg.steps)
    return {**log.summary(cfg.batch_size, cfg.warmup), **sampler.report()}


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Run one benchmark; returns the result dict (also written as JSON under ``cfg.out``)."""
    store_path = prepare_store(cfg.dataset, cfg.events, cfg.seed, cfg.data_dir)
    if cfg.model == "gcn-ragged":
        return _run_ragged(cfg, store_path)
    store = fl.open_store(store_path)
    rcp = recipe(cfg.dataset, cfg.model, store["train"])
    train, test = rcp.view(store["train"]), rcp.view(store["test"])  # e.g. LArIAT's energy cut
    gpu = cfg.device.startswith("cuda")
    loader_options = {"fields": rcp.fields, "transform": rcp.transform, "workers": cfg.workers}
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "host": _host(),
        "data": {
            "store": str(store_path),
            "train": len(train),
            "test": len(test),
            "kind": rcp.kind,
        },
    }
    with fl.Loader(
        train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True, **loader_options
    ) as loader:
        spec = model_spec(rcp, loader)
        runner: _TorchRunner | _TfRunner = (
            _TorchRunner(cfg, spec, rcp.label)
            if cfg.framework == "torch"
            else _TfRunner(cfg, spec, rcp.label)
        )
        result["host"].update(runner.versions())
        result["host"]["compute_threads"] = runner.threads
        result["data"]["inputs"] = {f: [list(spec.shapes[f]), spec.dtypes[f]] for f in spec.fields}
        model, step = runner.new_model()
        batches = epochs(runner.loader_batches(loader))
        try:
            result["fastload"] = _train_phase(batches, step, cfg, gpu)
        finally:
            batches.close()  # ends the loader epoch in progress
        result["fastload"]["epochs"] = round(cfg.steps / max(len(loader), 1), 2)
    if cfg.evaluate:
        with fl.Loader(test, cfg.batch_size, shuffle=False, **loader_options) as loader:
            scores, labels = runner.predict(model, loader)
        result["fastload"]["test"] = evaluate_scores(spec.head.task, labels, scores)
        if spec.head.task == "multiclass":
            result["fastload"]["test_confusion"] = confusion(labels, scores)
        if "groups" in rcp.notes:  # e.g. LArIAT: showers vs tracks
            result["fastload"]["test"]["group_accuracy"] = group_accuracy(
                labels, scores, rcp.notes["groups"]
            )
    del model
    if cfg.baseline:
        arrays = materialise(train, rcp, cfg.batch_size, cfg.workers)
        model, step = runner.new_model()
        result["in_memory"] = _train_phase(runner.memory_batches(arrays), step, cfg, gpu)
        del arrays, model
        fast, mem = result["fastload"]["samples_per_s"], result["in_memory"]["samples_per_s"]
        result["fastload_vs_in_memory"] = round(fast / mem, 3) if fast and mem else None
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / f"train_{cfg.framework}_{cfg.model}_{cfg.dataset}.json"
    path.write_text(json.dumps(_plain(result), indent=2, allow_nan=False))
    result["path"] = str(path)
    return result


def _run_ragged(cfg: TrainConfig, padded: Path) -> dict[str, Any]:
    """``--model gcn-ragged``: the GCN of ``bench/_train_ragged.py`` over ragged batches."""
    from . import _train_ragged as R

    if cfg.dataset != "TopTagging":
        raise ConfigError(f"--model gcn-ragged runs on TopTagging, got --dataset {cfg.dataset}")
    store_path = R.ragged_store(padded)
    store = fl.open_store(store_path)
    train, test = store["train"], store["test"]
    runner = R.runner(cfg.framework, cfg.seed, cfg.lr, compute_threads(cfg))
    options = R.loader_options(cfg.workers)
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "host": {**_host(), **runner.versions(), "compute_threads": runner.threads},
        "data": {"store": str(store_path), "train": len(train), "test": len(test), "kind": "gcn"},
    }
    model, step = runner.new_model()
    with fl.Loader(
        train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True, **options
    ) as loader:
        batches = R.batches(loader, repeat=True)
        try:
            result["fastload"] = _train_phase(batches, step, cfg, cfg.device.startswith("cuda"))
        finally:
            batches.close()
        result["fastload"]["epochs"] = round(cfg.steps / max(len(loader), 1), 2)
    if cfg.evaluate:
        scores, labels = [], []
        with fl.Loader(test, cfg.batch_size, shuffle=False, **options) as loader:
            for g, y in R.batches(loader, repeat=False):
                scores.append(runner.scores(model, g))
                labels.append(y)
        result["fastload"]["test"] = evaluate_scores(
            "binary", np.concatenate(labels), np.concatenate(scores)
        )
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / f"train_{cfg.framework}_{cfg.model}_{cfg.dataset}.json"
    path.write_text(json.dumps(_plain(result), indent=2, allow_nan=False))
    result["path"] = str(path)
    return result


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars as Python numbers, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_line(result: dict[str, Any]) -> str:
    cfg, fast = result["config"], result["fastload"]
    parts = [
        f"{cfg['framework']} {cfg['model']}({result['data']['kind']}) {cfg['dataset']}:",
        f"{fast['samples_per_s']} samples/s,",
        f"data wait {100 * (fast['data_wait_fraction'] or 0):.1f}%,",
        f"loss {fast['loss_first']} -> {fast['loss_last']},",
        f"peak RSS {fast['peak_rss_mb']} MB (tree {fast['peak_rss_tree_mb']} MB)",
    ]
    test = fast.get("test", {})
    parts += [f"{k} {v:.3f}" for k, v in test.items()]
    if "in_memory" in result:
        parts.append(
            f"| in-memory {result['in_memory']['samples_per_s']} samples/s "
            f"(fastload/in-memory {result['fastload_vs_in_memory']})"
        )
    return " ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument(
        "--model",
        choices=MODELS,
        required=True,
        help="fcn, gcn, ref (the dataset's reference model) or gcn-ragged (TopTagging: a GCN "
        "over ragged batches, bench/_train_ragged.py; no in-memory baseline)",
    )
    p.add_argument(
        "--dataset",
        type=dataset_name,
        choices=DATASETS,
        required=True,
        help="case-insensitive (lariat = LArIAT)",
    )
    p.add_argument("--steps", type=int, default=200, help="training steps per phase (default 200)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="fastload worker processes")
    p.add_argument("--events", type=int, default=20000, help="synthetic events (all splits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the timing")
    p.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: cores minus workers)"
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--out", type=Path, default=Path("results/train"))
    p.add_argument(
        "--data-dir", type=Path, default=None, help="cache of generated stores (default OUT/data)"
    )
    a = p.parse_args(argv)
    return TrainConfig(
        framework=a.framework,
        model=a.model,
        dataset=a.dataset,
        steps=a.steps,
        batch_size=a.batch_size,
        workers=a.workers,
        events=a.events,
        seed=a.seed,
        lr=a.lr,
        warmup=min(a.warmup, a.steps - 1),
        threads=a.threads,
        device=a.device,
        baseline=not a.no_baseline,
        evaluate=not a.no_eval,
        out=a.out,
        data_dir=a.data_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        result = run(cfg)
    except (ConfigError, ImportError) as exc:  # ImportError: a framework, named with its extra
        print(f"bench.train: error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(result))
    print(f"wrote {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
