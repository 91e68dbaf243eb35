"""The benchmark models in PyTorch; each ``forward`` takes a batch ``dict[str, Tensor]``.

Models return logits ``(B,)`` (binary), ``(B, n_classes)`` (multiclass) or
values ``(B,)`` (regression); the sigmoid/softmax lives in the loss
(``BCEWithLogitsLoss``/``CrossEntropyLoss``), which is numerically safer.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

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

Batch = dict[str, torch.Tensor]


def _size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


class _Head(nn.Module):
    def __init__(self, width: int, units: int, task: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, units)
        self.squeeze = task != "multiclass"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(h)
        return out.squeeze(-1) if self.squeeze else out


def _masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the node axis (1) of the real nodes only."""
    if mask is None:
        return h.mean(dim=1)
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _per_channel(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Apply BatchNorm1d/PReLU (channels on dim 1) to node features ``(B, N, C)``."""
    return module(h.transpose(1, 2)).transpose(1, 2)


class FCN(nn.Module):
    """The shared FCN: inputs flattened and concatenated, 12 x Dense(256) + ReLU, head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.fields = spec.fields_of("inputs")
        width = sum(_size(spec.shapes[f]) for f in self.fields)
        layers: list[nn.Module] = []
        for _ in range(FCN_DEPTH):
            layers += [nn.Linear(width, FCN_WIDTH), nn.ReLU()]
            width = FCN_WIDTH
        self.body = nn.Sequential(*layers)
        self.head = _Head(width, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = torch.cat([batch[f].flatten(1).float() for f in self.fields], dim=1)
        return self.head(self.body(x))


class GraphConv(nn.Module):
    """Kipf & Welling graph convolution ``A_hat (H W) + b`` with a given (normalised) adjacency."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(c_in, c_out)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        hw = self.linear(h)
        if adj.dim() == 3:
            return torch.bmm(adj, hw)  # one (N, N) adjacency per sample
        # one shared (N, N) adjacency: a single (N, N) @ (N, B*C) product instead of B small ones
        b, n, c = hw.shape
        mixed = adj @ hw.transpose(0, 1).reshape(n, b * c)
        return mixed.reshape(n, b, c).transpose(0, 1)


class _GCNBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = GraphConv(c_in, c_out)
        self.norm = nn.BatchNorm1d(c_out)
        self.act = nn.PReLU(c_out)
        self.drop = nn.Dropout(GCN_DROPOUT)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = _per_channel(self.norm, self.conv(h, adj))
        return self.drop(_per_channel(self.act, h))


class GCN(nn.Module):
    """The shared GCN: Dense(256) + PReLU, graph-convolution blocks, masked mean pool, head.

    The adjacency is a batch field (e.g. ``KNNAdjacency(out_dense=...)``) or, for
    images, the constant normalised 8-neighbour grid (``grid_adjacency``).
    """

    def __init__(self, spec: ModelSpec, blocks: int = GCN_BLOCKS) -> None:
        super().__init__()
        self.nodes = spec.field_of("nodes")
        self.adjacency = spec.field_of("adjacency")
        self.mask = spec.field_of("mask")
        _n_nodes, n_features = spec.shapes[self.nodes]
        if self.adjacency is None:
            assert spec.grid is not None  # checked by ModelSpec
            self.register_buffer("grid", torch.from_numpy(grid_adjacency(*spec.grid)))
        self.pre = nn.Linear(n_features, GCN_WIDTH)
        self.pre_act = nn.PReLU(GCN_WIDTH)
        self.blocks = nn.ModuleList(_GCNBlock(GCN_WIDTH, GCN_WIDTH) for _ in range(blocks))
        self.head = _Head(GCN_WIDTH, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        h = batch[self.nodes].float()
        adj = batch[self.adjacency].float() if self.adjacency is not None else self.grid
        mask = batch[self.mask] if self.mask is not None else None
        h = _per_channel(self.pre_act, self.pre(h))
        for block in self.blocks:
            h = block(h, adj)
        return self.head(_masked_mean(h, mask))


def knn_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Neighbour features ``(B, N, k, C)`` of ``x`` ``(B, N, C)`` at indices ``idx`` ``(B, N, k)``."""
    b, n, k = idx.shape
    flat = idx.reshape(b, n * k, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, flat).reshape(b, n, k, x.shape[-1])


def knn_indices(x: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest other real nodes of every node in feature space ``x`` ``(B, N, C)``."""
    d = torch.cdist(x, x)
    n = x.shape[1]
    far = torch.finfo(d.dtype).max
    d = d.masked_fill(~mask.unsqueeze(1), far)  # padded nodes are nobody's neighbour
    d = d.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), far)
    return d.topk(min(k, n), dim=-1, largest=False).indices


class EdgeConv(nn.Module):
    """ParticleNet's EdgeConv: MLP on ``(x_i, x_j - x_i)`` edges, mean over neighbours, shortcut."""

    def __init__(self, c_in: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = 2 * c_in
        for c_out in channels:
            self.linears.append(nn.Linear(c, c_out, bias=False))
            self.norms.append(nn.BatchNorm1d(c_out))
            c = c_out
        self.shortcut = nn.Linear(c_in, c, bias=False)
        self.shortcut_norm = nn.BatchNorm1d(c)

    def forward(self, x: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        neighbours = knn_gather(x, idx)
        centre = x.unsqueeze(2).expand_as(neighbours)
        e = torch.cat([centre, neighbours - centre], dim=-1)
        for linear, norm in zip(self.linears, self.norms, strict=True):
            e = linear(e)
            e = torch.relu(norm(e.reshape(-1, e.shape[-1])).reshape(e.shape))
        s = self.shortcut(x)
        s = self.shortcut_norm(s.reshape(-1, s.shape[-1])).reshape(s.shape)
        return torch.relu(e.mean(dim=2) + s) * mask.unsqueeze(-1).to(x.dtype)


class ParticleNet(nn.Module):
    """A small ParticleNet (EdgeConv on given kNN, then on a dynamic kNN graph), for Top Tagging."""

    def __init__(
        self, spec: ModelSpec, channels: tuple[tuple[int, ...], ...] = EDGE_CONV_CHANNELS
    ) -> None:
        super().__init__()
        self.features, self.mask, self.knn = (spec.field_of(r) for r in ("features", "mask", "knn"))
        self.k = spec.shapes[self.knn][-1]
        c = spec.shapes[self.features][-1]
        self.input_norm = nn.BatchNorm1d(c)
        self.convs = nn.ModuleList()
        for block in channels:
            self.convs.append(EdgeConv(c, block))
            c = block[-1]
        self.fc = nn.Sequential(nn.Linear(c, EDGE_CONV_FC), nn.ReLU(), nn.Dropout(0.1))
        self.head = _Head(EDGE_CONV_FC, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        mask = batch[self.mask].bool()
        x = batch[self.features].float()
        x = self.input_norm(x.reshape(-1, x.shape[-1])).reshape(x.shape) * mask.unsqueeze(-1)
        idx = batch[self.knn].long()  # KNNAdjacency(fill="self"): always in range
        for i, conv in enumerate(self.convs):
            if i > 0:  # later blocks: kNN in the learned feature space (dynamic graph)
                idx = knn_indices(x, mask, self.k)
            x = conv(x, idx, mask)
        return self.head(self.fc(_masked_mean(x, mask)))


def _conv_bn(c_in: int, c_out: int, dims: int = 2) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    return nn.Sequential(conv(c_in, c_out, 3, padding=1, bias=False), norm(c_out), nn.ReLU())


class ImageCNN(nn.Module):
    """A small CNN for the Spinodal (20x20) and EoS (24x24) histograms."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.image = spec.field_of("image")
        self.body = nn.Sequential(
            _conv_bn(1, 16),
            _conv_bn(16, 32),
            nn.MaxPool2d(2),
            _conv_bn(32, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
        )
        self.head = _Head(64, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.body(batch[self.image].float().unsqueeze(1)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(h)))


class ShowerResNet(nn.Module):
    """A small ResNet over the 9x9 air-shower station grid (channels: trace bins + time)."""

    def __init__(self, spec: ModelSpec, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.grids = spec.fields_of("grids")
        channels = sum(spec.shapes[f][-1] for f in self.grids)
        self.stem = _conv_bn(channels, width)
        self.blocks = nn.Sequential(*(_ResidualBlock(width) for _ in range(blocks)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = _Head(width, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = torch.cat([batch[f].float() for f in self.grids], dim=-1)  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2)
        return self.head(self.pool(self.blocks(self.stem(x))))


class CaloNet(nn.Module):
    """LCD calorimeter images: a 3D CNN on ECAL (25^3) and a dense branch on HCAL (5x5x60)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.ecal, self.hcal = spec.field_of("ecal"), spec.field_of("hcal")
        ecal_shape = spec.shapes[self.ecal]
        self.ecal_branch = nn.Sequential(
            nn.Conv3d(1, 8, 4, stride=2),
            nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            ecal_out = self.ecal_branch(torch.zeros(1, 1, *ecal_shape)).shape[1]
        self.ecal_fc = nn.Sequential(nn.Linear(ecal_out, 64), nn.ReLU())
        self.hcal_fc = nn.Sequential(nn.Linear(_size(spec.shapes[self.hcal]), 64), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(128, 64), nn.ReLU())
        self.head = _Head(64, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.ecal_fc(self.ecal_branch(batch[self.ecal].float().unsqueeze(1)))
        h = self.hcal_fc(batch[self.hcal].float().flatten(1))
        return self.head(self.fc(torch.cat([e, h], dim=1)))


class TPCNet(nn.Module):
    """LArIAT wire planes: one conv branch per plane (LArTPCDNN's two-branch CNN, smaller).

    A branch: a 4x4 stride-4 stem convolution, two blocks of a 2x2 max pool and a
    3x3 convolution, and a max pool onto a 3x4 grid (:func:`tpc_pool`); the
    flattened branches are concatenated into a dense layer and the head.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.planes = spec.fields_of("planes")
        self.branches = nn.ModuleList()
        width = 0
        for name in self.planes:
            stem, *rest = TPC_FILTERS
            layers: list[nn.Module] = [nn.Conv2d(1, stem, TPC_STEM, stride=TPC_STEM), nn.ReLU()]
            c_in = stem
            for c_out in rest:
                layers += [nn.MaxPool2d(2), nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
                c_in = c_out
            h, w = spec.shapes[name]
            layers += [nn.MaxPool2d(tpc_pool(h, w)), nn.Flatten()]
            branch = nn.Sequential(*layers)
            with torch.no_grad():
                width += branch(torch.zeros(1, 1, h, w)).shape[1]
            self.branches.append(branch)
        self.fc = nn.Sequential(nn.Linear(width, TPC_DENSE), nn.ReLU(), nn.Dropout(0.1))
        self.head = _Head(TPC_DENSE, spec.head.units, spec.head.task)

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = [
            branch(batch[name].float().unsqueeze(1))
            for name, branch in zip(self.planes, self.branches, strict=True)
        ]
        return self.head(self.fc(torch.cat(parts, dim=1)))


_BUILDERS: dict[str, type[nn.Module]] = {
    "fcn": FCN,
    "gcn": GCN,
    "particlenet": ParticleNet,
    "cnn": ImageCNN,
    "resnet": ShowerResNet,
    "calo": CaloNet,
    "tpc": TPCNet,
}


def build(spec: ModelSpec) -> nn.Module:
    """The PyTorch model described by ``spec``."""
    return _BUILDERS[spec.kind](spec)


def loss_fn(spec: ModelSpec) -> nn.Module:
    """The loss matching the head: BCE with logits, cross entropy or mean squared error."""
    task = spec.head.task
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    if task == "multiclass":
        return nn.CrossEntropyLoss()
    return nn.MSELoss()


def target(spec: ModelSpec, y: torch.Tensor) -> torch.Tensor:
    """Labels in the dtype and shape the loss wants."""
    if spec.head.task == "multiclass":
        return y.long().reshape(-1)
    return y.float().reshape(-1)


def scores(spec: ModelSpec, output: torch.Tensor) -> np.ndarray:
    """Probabilities (classification) or values (regression) as numpy."""
    with torch.no_grad():
        if spec.head.task == "binary":
            output = torch.sigmoid(output)
        elif spec.head.task == "multiclass":
            output = torch.softmax(output, dim=-1)
        return output.detach().cpu().numpy()
