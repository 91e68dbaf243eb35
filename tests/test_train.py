"""The training benchmark (``python -m bench.train``) and the benchmark models.

A tiny run per framework trains the shared FCN on synthetic Top Tagging data
converted to a store: the loss must fall and the test AUC beat chance, which
only happens when batches and labels line up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastload.bench.models import Head, ModelSpec, build
from fastload.bench.train import TrainConfig, confusion, group_accuracy, main, roc_auc, run
from fastload.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-data")


def tiny(framework: str, out: Path, data_dir: Path, **overrides: object) -> TrainConfig:
    options: dict = {
        "framework": framework,
        "model": "fcn",
        "dataset": "TopTagging",
        "steps": 150,
        "batch_size": 64,
        "workers": 1,
        "events": 2000,
        "warmup": 5,
        "threads": 1,
        "out": out,
        "data_dir": data_dir,
    }
    options.update(overrides)
    return TrainConfig(**options)


def check_result(result: dict, framework: str) -> None:
    fast = result["fastload"]
    assert fast["measured_steps"] == 145
    assert fast["samples_per_s"] > 0
    assert 0.0 <= fast["data_wait_fraction"] <= 1.0
    assert fast["loss_last"] < 0.8 * fast["loss_first"]
    assert fast["test"]["auc"] > 0.6
    assert fast["peak_rss_tree_mb"] >= fast["peak_rss_mb"] > 0
    assert fast["gpu_util_source"] == "n/a"  # CPU run
    assert result["in_memory"]["samples_per_s"] > 0
    assert result["fastload_vs_in_memory"] > 0
    on_disk = json.loads(Path(result["path"]).read_text())
    assert on_disk["config"]["framework"] == framework
    assert on_disk["fastload"]["test"]["auc"] == pytest.approx(fast["test"]["auc"])


@pytest.mark.torch
def test_bench_train_torch_learns(tmp_path: Path, data_dir: Path) -> None:
    """torch FCN from fastload: loss falls, test AUC > 0.6, JSON written with every figure."""
    pytest.importorskip("torch")
    check_result(run(tiny("torch", tmp_path, data_dir)), "torch")


@pytest.mark.tf
def test_bench_train_tf_learns(tmp_path: Path, data_dir: Path) -> None:
    """Keras FCN from loader.tf(): loss falls, test AUC > 0.6, JSON written with every figure."""
    pytest.importorskip("tensorflow")
    check_result(run(tiny("tf", tmp_path, data_dir)), "tf")


def test_dataset_names_are_case_insensitive() -> None:
    """`--dataset lariat` names LArIAT (as `python -m fastload.synthetic lariat` does)."""
    cfg = TrainConfig(framework="torch", model="ref", dataset="lariat", out=Path("unused"))
    assert cfg.dataset == "LArIAT"
    with pytest.raises(ConfigError, match="--dataset must be one of"):
        TrainConfig(framework="torch", model="ref", dataset="lariatt", out=Path("unused"))


def test_confusion_and_group_accuracy() -> None:
    """Counts per (true, predicted) class; group accuracy forgives mistakes inside a group."""
    labels = np.array([0, 1, 2, 2, 3])
    scores = np.eye(4)[[1, 1, 2, 0, 3]]  # predicted: 1 1 2 0 3
    assert confusion(labels, scores) == [[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    groups = {"a": [0, 1], "b": [2, 3]}
    assert group_accuracy(labels, scores, groups) == pytest.approx(4 / 5)


def test_roc_auc_equals_pairwise_definition() -> None:
    """AUC = P(score_pos > score_neg) + P(tie) / 2, checked by brute force, ties included."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    brute = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert roc_auc(labels, scores) == pytest.approx(brute)
    assert roc_auc(labels, labels) == 1.0
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_bad_options_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown model/dataset combinations and bad numbers fail early with a message."""
    with pytest.raises(ConfigError, match="warmup"):
        TrainConfig(framework="torch", model="fcn", dataset="TopTagging", steps=5, warmup=5)
    with pytest.raises(ConfigError, match="framework"):
        TrainConfig(framework="jax", model="fcn", dataset="TopTagging")
    status = main(
        [
            "--framework",
            "torch",
            "--model",
            "gcn",
            "--dataset",
            "LCD",
            "--events",
            "8",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 2
    assert "LCD has no graph model" in capsys.readouterr().err


SPECS = [
    ModelSpec(
        "fcn",
        {"inputs": ("a", "b")},
        {"a": (5, 3), "b": (2,)},
        {"a": "float32", "b": "float32"},
        Head("binary"),
    ),
    ModelSpec(
        "gcn",
        {"nodes": "n", "adjacency": "adj", "mask": "m"},
        {"n": (10, 4), "adj": (10, 10), "m": (10,)},
        {"n": "float32", "adj": "float32", "m": "bool"},
        Head("binary"),
    ),
    ModelSpec(
        "gcn", {"nodes": "n"}, {"n": (12, 1)}, {"n": "float32"}, Head("regression"), grid=(3, 4)
    ),
    ModelSpec(
        "particlenet",
        {"features": "f", "mask": "m", "knn": "k"},
        {"f": (10, 7), "m": (10,), "k": (10, 3)},
        {"f": "float32", "m": "bool", "k": "int32"},
        Head("binary"),
    ),
    ModelSpec("cnn", {"image": "h"}, {"h": (20, 20)}, {"h": "float32"}, Head("binary")),
    ModelSpec(
        "resnet",
        {"grids": ("s", "t")},
        {"s": (9, 9, 8), "t": (9, 9, 1)},
        {"s": "float32", "t": "float32"},
        Head("regression"),
    ),
    ModelSpec(
        "calo",
        {"ecal": "e", "hcal": "h"},
        {"e": (25, 25, 25), "h": (5, 5, 6)},
        {"e": "float32", "h": "float32"},
        Head("multiclass", n_classes=4),
    ),
    ModelSpec(
        "tpc",
        {"planes": ("u", "v")},
        {"u": (24, 32), "v": (24, 32)},
        {"u": "float32", "v": "float32"},
        Head("multiclass", n_classes=12),
    ),
]


def fake_batch(spec: ModelSpec, n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for name in spec.fields:
        shape, dtype = (n, *spec.shapes[name]), spec.dtypes[name]
        if dtype == "bool":
            out[name] = np.arange(np.prod(shape)).reshape(shape) % 4 != 3
        elif dtype.startswith("int"):
            out[name] = rng.integers(0, spec.shapes[name][0], shape).astype(dtype)
        else:
            out[name] = rng.normal(size=shape).astype(dtype)
    return out


def expected_shape(spec: ModelSpec, n: int) -> tuple[int, ...]:
    return (n, spec.head.units) if spec.head.task == "multiclass" else (n,)


@pytest.mark.torch
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.head.task}")
def test_torch_models_forward_and_backward(spec: ModelSpec) -> None:
    """Every model family builds, maps a batch to (B,) / (B, classes) and back-propagates."""
    torch = pytest.importorskip("torch")
    model = build("torch", spec)
    batch = {k: torch.from_numpy(v) for k, v in fake_batch(spec).items()}
    out = model(batch)
    assert tuple(out.shape) == expected_shape(spec, 3)
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.tf
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.head.task}")
def test_keras_models_forward(spec: ModelSpec) -> None:
    """Every model family builds in Keras with named inputs and maps a batch to its head."""
    pytest.importorskip("keras")
    model = build("tf", spec)
    out = np.asarray(model(fake_batch(spec), training=False))  # a dict keyed by field name
    assert out.shape[0] == 3
    assert out.shape[-1] == spec.head.units
    assert np.all(np.isfinite(out))
