"""``python -m bench.train --model gcn-ragged --dataset TopTagging``: a GCN over ragged batches.

The jets' constituents are a ragged field (``Loader(ragged={"particles":
"offsets"})``): rows back to back plus ``B + 1`` offsets, no padding.  The
loader's workers turn each batch into a graph batch (:func:`graph_transform`,
:func:`loader_options`): pd4ml's four features per constituent (log pT, log E,
eta and phi relative to the jet), the leading 100 in stored order (by pT), and a
k = 7 nearest-neighbour ``edge_index`` in (eta, phi) with self-loops
(``fastload.transforms.KnnEdges``); the consumer only derives the node-to-jet
``batch`` and ``counts`` from the offsets (:func:`worker_graph`).  The result
equals :func:`graph_batch`, the same graph built in the consumer, exactly
(``tests/test_train_ragged.py``).  The model (``TorchRaggedGCN`` in
:func:`torch_model`, :class:`TfRunner`'s Keras layers) is pd4ml's GCN without the
padding: three graph convolutions ``h' = relu(W . mean of h over the
in-neighbours)`` as a scatter-add over ``edge_index`` (``torch.index_add_`` /
``tf.math.unsorted_segment_sum``), a mean over each jet's nodes, a dense head.

The converted TopTagging store holds the constituents zero-padded to 200;
:func:`ragged_store` writes them once as a ragged field (the real particles
only, in stored order) next to it, the store a user with ragged data has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl
import fastload.transforms as T
from fastload.errors import ConfigError

MAX_PARTICLES = 100
K_NEIGHBOURS = 7
WIDTH = 64
BLOCKS = 3


# --------------------------------------------------------------------------- data
def ragged_store(padded: Path) -> Path:
    """The TopTagging store ``padded`` with ``X`` as a ragged field ``particles`` (written once)."""
    path = padded.with_name(padded.stem + "-ragged.zarr")
    with contextlib.suppress(fl.errors.StoreError):
        fl.open_store(path)
        return path
    store = fl.open_store(padded)
    splits: dict[str, dict[str, Any]] = {}
    for name in ("train", "test"):
        split = store[name]
        x = np.asarray(split.read("X"))
        real = x[..., 0] > 0  # E > 0: a constituent; the converter pads with zero rows
        splits[name] = {
            "particles": fl.Ragged.from_counts(x[real], real.sum(axis=1)),
            "y": np.asarray(split.read("y")),
        }
    fl.write_arrays(path, splits, task="classification", labels=["QCD", "top"])
    return path


def node_features(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pd4ml's four features of every constituent and its (eta, phi) relative to the jet.

    ``values`` are (E, px, py, pz) rows, ``offsets`` the jets' ``B + 1`` row offsets from 0
    (the jet is the sum of the rows given).  Returns ``x`` (N, 4) float32 (log pT, log E,
    etarel, phirel) and ``coords`` (N, 2) float64 (etarel, phirel, the kNN's coordinates).
    """
    v = values.astype(np.float64)
    e, px, py, pz = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
    counts = np.diff(offsets)
    batch = np.repeat(np.arange(counts.size), counts)
    jet = np.zeros((counts.size, 4))
    np.add.at(jet, batch, v)
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    phi = np.arctan2(py, px)
    jet_pt = np.hypot(jet[:, 1], jet[:, 2])
    jet_eta = np.arcsinh(jet[:, 3] / np.maximum(jet_pt, 1e-12))
    jet_phi = np.arctan2(jet[:, 2], jet[:, 1])
    etarel = eta - jet_eta[batch]
    phirel = T.wrap_angle(phi - jet_phi[batch])
    x = np.stack(
        [np.log(np.maximum(pt, 1e-8)), np.log(np.maximum(e, 1e-8)), etarel, phirel], axis=1
    )
    return x.astype(np.float32), np.stack([etarel, phirel], axis=1)


def graph_batch(particles: fl.Ragged) -> dict[str, np.ndarray]:
    """Node features ``x`` (N, 4), ``edge_index`` (2, E), node-to-jet ``batch`` (N,), ``counts`` (B,).

    The consumer-side form; :func:`graph_transform` builds the same in the workers.
    """
    r = T.truncate_rows(particles, MAX_PARTICLES, key=None)  # stored order: leading pT first
    values, offsets = r.rebased()
    x, coords = node_features(values, offsets)
    counts = np.diff(offsets)
    edges = T.knn_edges(fl.Ragged(coords, offsets), 0, 1, K_NEIGHBOURS, self_loops=True)
    return {
        "x": x,
        "edge_index": edges,
        "batch": np.repeat(np.arange(counts.size), counts).astype(np.int64),
        "counts": counts.astype(np.int64),
    }


class NodeFeatures(T.Transform):
    """The worker-side :func:`node_features`: ragged ``x`` (rows of 4, float32) and ``coords``.

    Replaces the ragged (E, px, py, pz) field ``field`` by ``x`` and ``coords`` ((etarel,
    phirel) float64 rows, what :class:`fastload.transforms.KnnEdges` takes: the kNN of
    :func:`graph_batch` runs on the float64 coordinates, not on ``x``'s float32 copies), with
    ``field``'s offsets and row bounds.
    """

    def __init__(self, field: str = "particles") -> None:
        self.field = field

    def output_spec(self, inputs: Mapping[str, fl.FieldSpec]) -> dict[str, fl.FieldSpec]:
        spec = inputs.get(self.field)
        if spec is None or not spec.ragged or spec.shape != (4,) or spec.dtype.kind != "f":
            raise ConfigError(
                f"NodeFeatures: needs a ragged float field {self.field!r} of (E, px, py, pz) "
                f"rows, got {spec}"
            )
        bounds = {"ragged": True, "max_len": spec.max_len, "max_rows": spec.max_rows}
        rest = {k: v for k, v in inputs.items() if k != self.field}
        return {
            **rest,
            "x": fl.FieldSpec((4,), np.float32, **bounds),
            "coords": fl.FieldSpec((2,), np.float64, **bounds),
        }

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        values, offsets = batch[self.field].rebased()
        x, coords = node_features(values, offsets)
        rest = {k: v for k, v in batch.items() if k != self.field}
        return {
            **rest,
            "x": fl.Ragged(x, offsets.copy()),
            "coords": fl.Ragged(coords, offsets.copy()),
        }


def graph_transform() -> T.Compose:
    """:func:`graph_batch` as a worker transform: ``particles`` -> ragged ``x`` and ``edge_index``.

    ``edge_index`` rows are ``(source, target)`` in batch-wide row numbers of ``x`` (what
    ``KnnEdges`` emits); :func:`worker_graph` turns a delivered batch into
    :func:`graph_batch`'s dict.
    """
    return T.Compose(
        [
            T.TruncateRows("particles", MAX_PARTICLES, key=None),  # stored order: leading pT
            NodeFeatures("particles"),
            T.KnnEdges("coords", K_NEIGHBOURS, eta=0, phi=1, self_loops=True),
            T.Drop(["coords"]),
        ]
    )


def worker_graph(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`graph_batch`'s dict from a batch of a loader with ``transform=graph_transform()``.

    Only conversions: ``batch`` and ``counts`` from ``x``'s offsets; ``edge_index`` is
    ``batch["edge_index"]``'s rows transposed, already in batch-wide numbers of ``x``'s rows
    (``KnnEdges``), so no per-jet offset is added.  Copies: nothing keeps the loader's slot.
    """
    x, offsets = batch["x"].rebased()
    edges, edge_offsets = batch["edge_index"].rebased()
    counts = np.diff(offsets)
    # jet i's edges join rows of jet i: batch-wide numbers, as KnnEdges documents
    jet = np.repeat(np.arange(counts.size), np.diff(edge_offsets))
    lo, hi = offsets[jet, None], offsets[jet + 1, None]
    if not ((edges >= lo) & (edges < hi)).all():
        raise ValueError("edge_index: an edge joins rows outside its jet's rows of x")
    return {
        "x": x.copy(),
        "edge_index": np.ascontiguousarray(edges.T),
        "batch": np.repeat(np.arange(counts.size, dtype=np.int64), counts),
        "counts": counts.astype(np.int64),
    }


def loader_options(workers: int) -> dict[str, Any]:
    """``fl.Loader`` options of the ragged GCN: ``particles`` as offsets, the graph built in the workers."""
    return {"ragged": {"particles": "offsets"}, "transform": graph_transform(), "workers": workers}


def batches(loader: fl.Loader, *, repeat: bool) -> Any:
    """Graph batches and labels (epoch after epoch with ``repeat``) from ``loader``.

    ``loader`` runs :func:`graph_transform` in its workers (:func:`loader_options`).
    """
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for b in loader:
            yield worker_graph(b), np.asarray(b["y"]).copy()
        if not repeat:
            return
        epoch += 1


# --------------------------------------------------------------------------- torch
def torch_model() -> Any:
    import torch
    from torch import nn

    class TorchRaggedGCN(nn.Module):
        """pd4ml's GCN on a graph batch: mean aggregation over ``edge_index``, mean pooling."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(4, WIDTH)
            self.convs = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(BLOCKS))
            self.head = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1))

        def forward(self, g: dict[str, torch.Tensor]) -> torch.Tensor:
            src, dst = g["edge_index"][0], g["edge_index"][1]
            n = g["x"].shape[0]
            deg = torch.zeros(n).index_add_(0, dst, torch.ones(dst.shape[0])).clamp(min=1)
            h = torch.relu(self.embed(g["x"]))
            for conv in self.convs:
                agg = torch.zeros_like(h).index_add_(0, dst, h[src]) / deg[:, None]
                h = torch.relu(conv(agg))
            b = g["counts"].shape[0]
            pooled = torch.zeros(b, WIDTH).index_add_(0, g["batch"], h)
            pooled = pooled / g["counts"].clamp(min=1)[:, None].to(h.dtype)
            return self.head(pooled).squeeze(1)

    return TorchRaggedGCN()


class TorchRunner:
    def __init__(self, seed: int, lr: float, threads: int) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.lr = lr

    def new_model(self) -> tuple[Any, Any]:
        torch = self.torch
        model = torch_model()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(batch: tuple[dict[str, np.ndarray], np.ndarray]) -> float:
            g, y = batch
            model.train()
            loss = loss_fn(model(self._tensors(g)), torch.from_numpy(y).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.item())

        return model, step

    def _tensors(self, g: dict[str, np.ndarray]) -> dict[str, Any]:
        return {k: self.torch.from_numpy(v) for k, v in g.items()}

    def scores(self, model: Any, g: dict[str, np.ndarray]) -> np.ndarray:
        model.eval()
        with self.torch.no_grad():
            return self.torch.sigmoid(model(self._tensors(g))).numpy()

    def versions(self) -> dict[str, str]:
        return {"torch": self.torch.__version__}


# --------------------------------------------------------------------------- tf
class TfRunner:
    def __init__(self, seed: int, lr: float, threads: int) -> None:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        self.tf, self.keras = tf, keras
        keras.utils.set_random_seed(seed)
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.threads = tf.config.threading.get_intra_op_parallelism_threads()
        self.lr = lr
        self.signature = [
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((2, None), tf.int64),
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None,), tf.int64),
        ]

    def _layers(self) -> dict[str, Any]:
        layers = self.keras.layers
        return {
            "embed": layers.Dense(WIDTH, activation="relu"),
            "convs": [layers.Dense(WIDTH, activation="relu") for _ in range(BLOCKS)],
            "hidden": layers.Dense(WIDTH, activation="relu"),
            "out": layers.Dense(1),
        }

    def new_model(self) -> tuple[Any, Any]:
        tf = self.tf
        net = self._layers()

        def forward(x: Any, edge_index: Any, batch: Any, counts: Any) -> Any:
            src, dst = edge_index[0], edge_index[1]
            n = tf.shape(x)[0]
            deg = tf.math.unsorted_segment_sum(tf.ones_like(dst, tf.float32), dst, n)
            deg = tf.maximum(deg, 1.0)[:, None]
            h = net["embed"](x)
            for conv in net["convs"]:
                agg = tf.math.unsorted_segment_sum(tf.gather(h, src), dst, n) / deg
                h = conv(agg)
            b = tf.shape(counts)[0]
            pooled = tf.math.unsorted_segment_sum(h, batch, b)
            pooled = pooled / tf.maximum(tf.cast(counts, tf.float32), 1.0)[:, None]
            return tf.squeeze(net["out"](net["hidden"](pooled)), 1)

        forward(*(tf.zeros((1, 4)), tf.zeros((2, 1), tf.int64)), tf.zeros((1,), tf.int64),
                tf.ones((1,), tf.int64))  # fmt: skip
        variables = [v for layer in (net["embed"], *net["convs"], net["hidden"], net["out"])
                     for v in layer.trainable_variables]  # fmt: skip
        opt = self.keras.optimizers.Adam(self.lr)
        bce = self.keras.losses.BinaryCrossentropy(from_logits=True)

        @tf.function(input_signature=[*self.signature, tf.TensorSpec((None,), tf.float32)])
        def train(x: Any, edge_index: Any, batch: Any, counts: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = bce(y, forward(x, edge_index, batch, counts))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        predict = tf.function(forward, input_signature=self.signature)

        def step(item: tuple[dict[str, np.ndarray], np.ndarray]) -> float:
            g, y = item
            return float(train(*self._args(g), tf.constant(y, tf.float32)))

        return predict, step

    @staticmethod
    def _args(g: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        return g["x"], g["edge_index"], g["batch"], g["counts"]

    def scores(self, model: Any, g: dict[str, np.ndarray]) -> np.ndarray:
        return self.tf.sigmoid(model(*self._args(g))).numpy()

    def versions(self) -> dict[str, str]:
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__}


def runner(framework: str, seed: int, lr: float, threads: int) -> TorchRunner | TfRunner:
    if framework == "torch":
        return TorchRunner(seed, lr, threads)
    if framework == "tf":
        return TfRunner(seed, lr, threads)
    raise ConfigError(f"gcn-ragged runs with --framework torch or tf, got {framework!r}")
