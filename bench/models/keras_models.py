"""The benchmark models in Keras 3 (functional API, inputs by field name).

Each model takes a dict ``{field: tensor}`` — feed it ``loader.tf(x={f: f for f in
spec.fields}, y=...)`` — and returns logits ``(B, 1)`` (binary), ``(B, n_classes)``
(multiclass) or values ``(B, 1)`` (regression); losses take ``from_logits=True``.
The architectures mirror :mod:`bench.models.torch_models`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import layers, ops

from fastload.transforms import grid_adjacency

from ._spec import (
    EDGE_CONV_CHANNELS,
    EDGE_CONV_FC,
    FCN_DEPTH,
    FCN_WIDTH,
    GCN_BLOCKS,
    GCN_DROPOUT,
    GCN_WIDTH,
    TPC_DENSE,
    TPC_FILTERS,
    TPC_STEM,
    ModelSpec,
    tpc_pool,
)

# A distance that keeps padded nodes and the node itself out of every kNN list.
_FAR = 1e30
# Keras' default momentum (0.99) leaves the moving statistics far from the batch
# statistics after a short run, so inference-mode outputs are poor; 0.9 matches
# PyTorch's default (its momentum=0.1 weighs the new batch by 0.1).
_BN_MOMENTUM = 0.9


def _batch_norm() -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=_BN_MOMENTUM)


class GraphConv(layers.Layer):
    """Kipf & Welling graph convolution ``A_hat (H W)``; ``A_hat`` a batch input or a constant."""

    def __init__(self, units: int, constant: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = layers.Dense(units)
        self.constant = None if constant is None else np.asarray(constant, dtype=np.float32)

    def call(self, h: Any, adj: Any = None) -> Any:
        hw = self.dense(h)
        if adj is None:
            return ops.einsum("ij,bjc->bic", ops.convert_to_tensor(self.constant), hw)
        return ops.matmul(ops.cast(adj, hw.dtype), hw)


class MaskedMean(layers.Layer):
    """Mean over nodes (axis 1) of the real nodes (``real`` bool ``(B, N)``), or of all nodes."""

    def call(self, h: Any, real: Any = None) -> Any:
        if real is None:
            return ops.mean(h, axis=1)
        m = ops.expand_dims(ops.cast(real, h.dtype), -1)
        return ops.sum(h * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


class ApplyMask(layers.Layer):
    """Zero the features of padded nodes."""

    def call(self, h: Any, real: Any) -> Any:
        return h * ops.expand_dims(ops.cast(real, h.dtype), -1)


class DynamicKNN(layers.Layer):
    """Indices ``(B, N, k)`` of the ``k`` nearest other real nodes in feature space."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, x: Any, real: Any) -> Any:
        sq = ops.sum(x * x, axis=-1)
        d = sq[:, :, None] + sq[:, None, :] - 2.0 * ops.matmul(x, ops.transpose(x, (0, 2, 1)))
        d = ops.where(ops.expand_dims(ops.cast(real, "bool"), 1), d, _FAR)
        n = ops.shape(x)[1]
        d = d + ops.eye(n, dtype=d.dtype) * _FAR
        _, idx = ops.top_k(-d, self.k)
        return idx


class EdgeConv(layers.Layer):
    """ParticleNet's EdgeConv: MLP on ``(x_i, x_j - x_i)`` edges, mean over neighbours, shortcut."""

    def __init__(self, channels: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.denses = [layers.Dense(c, use_bias=False) for c in channels]
        self.norms = [_batch_norm() for _ in channels]
        self.shortcut = layers.Dense(channels[-1], use_bias=False)
        self.shortcut_norm = _batch_norm()

    def call(self, x: Any, idx: Any, real: Any, training: Any = None) -> Any:
        n, k, c = ops.shape(idx)[1], idx.shape[-1], x.shape[-1]
        flat = ops.reshape(ops.cast(idx, "int32"), (-1, n * k, 1))
        neighbours = ops.reshape(ops.take_along_axis(x, flat, axis=1), (-1, n, k, c))
        centre = ops.repeat(ops.expand_dims(x, 2), k, axis=2)
        e = ops.concatenate([centre, neighbours - centre], axis=-1)
        for dense, norm in zip(self.denses, self.norms, strict=True):
            e = ops.relu(norm(dense(e), training=training))
        s = self.shortcut_norm(self.shortcut(x), training=training)
        out = ops.relu(ops.mean(e, axis=2) + s)
        return out * ops.expand_dims(ops.cast(real, out.dtype), -1)


def _inputs(spec: ModelSpec) -> dict[str, Any]:
    return {
        f: keras.Input(shape=tuple(spec.shapes[f]), dtype=spec.dtypes[f], name=f)
        for f in spec.fields
    }


def _head(h: Any, spec: ModelSpec) -> Any:
    return layers.Dense(spec.head.units, name="head")(h)


def _fcn(spec: ModelSpec, inputs: dict[str, Any]) -> Any:
    parts = [layers.Flatten()(ops.cast(inputs[f], "float32")) for f in spec.fields_of("inputs")]
    h = parts[0] if len(parts) == 1 else layers.Concatenate()(parts)
    for _ in range(FCN_DEPTH):
        h = layers.Dense(FCN_WIDTH, activation="relu")(h)
    return _head(h, spec)


def _gcn(spec: ModelSpec, inputs: dict[str, Any], blocks: int = GCN_BLOCKS) -> Any:
    adj_field, mask_field = spec.field_of("adjacency"), spec.field_of("mask")
    adj = inputs[adj_field] if adj_field is not None else None
    constant = grid_adjacency(*spec.grid) if adj is None and spec.grid is not None else None
    real = inputs[mask_field] if mask_field is not None else None
    h = layers.Dense(GCN_WIDTH)(ops.cast(inputs[spec.field_of("nodes")], "float32"))
    h = layers.PReLU(shared_axes=[1])(h)
    for _ in range(blocks):
        h = GraphConv(GCN_WIDTH, constant)(h, adj)
        h = _batch_norm()(h)
        h = layers.PReLU(shared_axes=[1])(h)
        h = layers.Dropout(GCN_DROPOUT)(h)
    return _head(MaskedMean()(h, real), spec)


def _particlenet(spec: ModelSpec, inputs: dict[str, Any]) -> Any:
    real = inputs[spec.field_of("mask")]
    idx = inputs[spec.field_of("knn")]
    k = spec.shapes[spec.field_of("knn")][-1]
    x = _batch_norm()(inputs[spec.field_of("features")])
    x = ApplyMask()(x, real)
    for i, channels in enumerate(EDGE_CONV_CHANNELS):
        if i > 0:
            idx = DynamicKNN(k)(x, real)
        x = EdgeConv(channels)(x, idx, real)
    h = layers.Dense(EDGE_CONV_FC, activation="relu")(MaskedMean()(x, real))
    return _head(layers.Dropout(0.1)(h), spec)


def _conv_bn(x: Any, filters: int) -> Any:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    return layers.ReLU()(_batch_norm()(x))


def _cnn(spec: ModelSpec, inputs: dict[str, Any]) -> Any:
    field = spec.field_of("image")
    x = layers.Reshape((*spec.shapes[field], 1))(inputs[field])
    x = _conv_bn(_conv_bn(x, 16), 32)
    x = _conv_bn(layers.MaxPooling2D(2)(x), 64)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(layers.Dense(64, activation="relu")(x))
    return _head(x, spec)


def _resnet(spec: ModelSpec, inputs: dict[str, Any], width: int = 64, blocks: int = 2) -> Any:
    grids = [inputs[f] for f in spec.fields_of("grids")]
    x = grids[0] if len(grids) == 1 else layers.Concatenate(axis=-1)(grids)
    x = _conv_bn(x, width)
    for _ in range(blocks):
        h = _conv_bn(x, width)
        h = _batch_norm()(layers.Conv2D(width, 3, padding="same", use_bias=False)(h))
        x = layers.ReLU()(layers.Add()([x, h]))
    return _head(layers.GlobalAveragePooling2D()(x), spec)


def _calo(spec: ModelSpec, inputs: dict[str, Any]) -> Any:
    ecal_field, hcal_field = spec.field_of("ecal"), spec.field_of("hcal")
    e = layers.Reshape((*spec.shapes[ecal_field], 1))(inputs[ecal_field])
    e = layers.Conv3D(8, 4, strides=2, activation="relu")(e)
    e = layers.Conv3D(16, 3, strides=2, activation="relu")(e)
    e = layers.Dense(64, activation="relu")(layers.Flatten()(e))
    h = layers.Dense(64, activation="relu")(layers.Flatten()(inputs[hcal_field]))
    x = layers.Dense(64, activation="relu")(layers.Concatenate()([e, h]))
    return _head(x, spec)


def _tpc(spec: ModelSpec, inputs: dict[str, Any]) -> Any:
    branches = []
    stem, *rest = TPC_FILTERS
    for name in spec.fields_of("planes"):
        h, w = spec.shapes[name]
        x = layers.Reshape((h, w, 1))(ops.cast(inputs[name], "float32"))
        x = layers.Conv2D(stem, TPC_STEM, strides=TPC_STEM, activation="relu")(x)
        for filters in rest:
            x = layers.MaxPooling2D(2)(x)
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(tpc_pool(h, w))(x)
        branches.append(layers.Flatten()(x))
    x = branches[0] if len(branches) == 1 else layers.Concatenate()(branches)
    x = layers.Dropout(0.1)(layers.Dense(TPC_DENSE, activation="relu")(x))
    return _head(x, spec)


_BUILDERS = {
    "fcn": _fcn,
    "gcn": _gcn,
    "particlenet": _particlenet,
    "cnn": _cnn,
    "resnet": _resnet,
    "calo": _calo,
    "tpc": _tpc,
}


def build(spec: ModelSpec) -> keras.Model:
    """The Keras model described by ``spec`` (inputs: a dict by field name)."""
    inputs = _inputs(spec)
    return keras.Model(inputs=inputs, outputs=_BUILDERS[spec.kind](spec, inputs), name=spec.kind)


def loss_fn(spec: ModelSpec) -> keras.losses.Loss:
    """The loss matching the head (on logits)."""
    task = spec.head.task
    if task == "binary":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    if task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def scores(spec: ModelSpec, output: Any) -> np.ndarray:
    """Probabilities (classification) or values (regression) as numpy."""
    out = np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float64)
    if spec.head.task == "binary":
        return 1.0 / (1.0 + np.exp(-out.reshape(-1)))
    if spec.head.task == "multiclass":
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return out.reshape(-1)


def n_parameters(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))
