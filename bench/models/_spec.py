"""What a benchmark model is built from, shared by the PyTorch and the Keras versions.

A :class:`ModelSpec` names the model family, which batch fields feed which
role (node features, adjacency, mask, ...) with their per-sample shapes, and
the head.  Both frameworks build the same architecture from it, so a result
in one framework can be compared with the other.  No framework is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastload.errors import ConfigError

#: The shared fully connected network: 12 dense layers of 256 units, ReLU.
FCN_DEPTH = 12
FCN_WIDTH = 256
#: The shared graph convolutional network: blocks of 256 channels.
GCN_WIDTH = 256
GCN_BLOCKS = 3
GCN_DROPOUT = 0.2
#: ParticleNet-style EdgeConv: channels per block (ParticleNet-Lite uses 32 and 64).
EDGE_CONV_CHANNELS = ((32, 32, 32), (64, 64, 64))
EDGE_CONV_FC = 128

KINDS = ("fcn", "gcn", "particlenet", "cnn", "resnet", "calo", "tpc")
TASKS = ("binary", "multiclass", "regression")

#: Inputs each model family reads: role -> required?
ROLES: dict[str, dict[str, bool]] = {
    "fcn": {"inputs": True},
    "gcn": {"nodes": True, "adjacency": False, "mask": False},
    "particlenet": {"features": True, "mask": True, "knn": True},
    "cnn": {"image": True},
    "resnet": {"grids": True},
    "calo": {"ecal": True, "hcal": True},
    "tpc": {"planes": True},
}
#: LArIAT two-plane CNN (LArTPCDNN's two-branch design, CPU-sized): a 4x4 stride-4 stem
#: convolution (wire x tick patches), then blocks of a 2x2 max pool and a 3x3 convolution
TPC_STEM = 4
TPC_FILTERS = (8, 16, 32)
TPC_DENSE = 64


def tpc_pool(h: int, w: int) -> tuple[int, int]:
    """The last max pool of a tpc branch on an ``(h, w)`` plane: onto a 3x4 grid (at least 1x1).

    The map it pools is the plane after the stem (``h // 4``) and the two 2x2 pools:
    (240, 256) planes give 15x16, pooled by (5, 4).
    """
    fh, fw = h // TPC_STEM // 4, w // TPC_STEM // 4
    return max(1, fh // 3), max(1, fw // 4)


@dataclass(frozen=True)
class Head:
    """Output layer: one logit (binary), ``n_classes`` logits (multiclass) or one value (regression)."""

    task: str
    n_classes: int = 2

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"head task must be one of {TASKS}, got {self.task!r}")
        if self.task == "multiclass" and self.n_classes < 2:
            raise ConfigError(f"a multiclass head needs n_classes >= 2, got {self.n_classes}")

    @property
    def units(self) -> int:
        return self.n_classes if self.task == "multiclass" else 1


@dataclass(frozen=True)
class ModelSpec:
    """A model family, its inputs by role and its head.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    roles : Mapping[str, str | tuple[str, ...]]
        Role -> batch field (``"inputs"`` and ``"grids"`` take a tuple of fields).
    shapes : Mapping[str, tuple[int, ...]]
        Per-sample shape of every field named in ``roles``.
    dtypes : Mapping[str, str]
        numpy dtype name of every field named in ``roles``.
    head : Head
    grid : tuple[int, int] | None
        GCN only: image grid whose 8-neighbour adjacency is a model constant
        (used when no ``adjacency`` field is given).
    """

    kind: str
    roles: Mapping[str, Any]
    shapes: Mapping[str, tuple[int, ...]]
    dtypes: Mapping[str, str]
    head: Head
    grid: tuple[int, int] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"model kind must be one of {KINDS}, got {self.kind!r}")
        wanted = ROLES[self.kind]
        unknown = set(self.roles) - set(wanted)
        missing = [r for r, required in wanted.items() if required and r not in self.roles]
        if unknown or missing:
            raise ConfigError(
                f"{self.kind} model: unknown roles {sorted(unknown)}, missing roles {missing}; "
                f"it takes {list(wanted)}"
            )
        for name in self.fields:
            if name not in self.shapes or name not in self.dtypes:
                raise ConfigError(f"{self.kind} model: no shape/dtype given for field {name!r}")
        if self.kind == "gcn" and "adjacency" not in self.roles and self.grid is None:
            raise ConfigError("gcn model needs an adjacency field or a constant grid=(h, w)")

    @property
    def fields(self) -> tuple[str, ...]:
        """Every batch field the model reads, in role order."""
        out: list[str] = []
        for value in self.roles.values():
            out.extend((value,) if isinstance(value, str) else value)
        return tuple(dict.fromkeys(out))

    def field_of(self, role: str) -> str | None:
        value = self.roles.get(role)
        return value if isinstance(value, str) or value is None else None

    def fields_of(self, role: str) -> tuple[str, ...]:
        value = self.roles.get(role, ())
        return (value,) if isinstance(value, str) else tuple(value)
