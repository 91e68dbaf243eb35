"""Benchmark models, in PyTorch and in Keras 3, built from one :class:`ModelSpec`.

=============  ==========================================================  ===============
kind           architecture                                                used for
=============  ==========================================================  ===============
fcn            12 x Dense(256) + ReLU, sigmoid/softmax/linear head         every dataset
gcn            Dense(256) + PReLU, GCN blocks (256, BN, PReLU, dropout      graphs, images
               0.2), masked global average pool, dense head
particlenet    EdgeConv on the given kNN, then on a dynamic kNN graph      Top Tagging
cnn            3 conv layers + BN, global pool, dense                      Spinodal, EoS
resnet         conv stem + 2 residual blocks on the 9x9 station grid       air showers
calo           3D CNN on ECAL + dense on HCAL                              LCD
tpc            one conv branch per wire plane (3 x conv + max-pool),       LArIAT
               concatenated, dense head
=============  ==========================================================  ===============

Layout::

    _spec.py          ModelSpec, Head, shared sizes (framework-free)
    torch_models.py   PyTorch modules (imports torch)
    keras_models.py   Keras functional models (imports keras/TensorFlow)

Frameworks are imported only by :func:`build`.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastload._messages import missing_dependency
from fastload.errors import ConfigError

from ._spec import KINDS, Head, ModelSpec

__all__ = ["KINDS", "Head", "ModelSpec", "build", "framework_module"]

FRAMEWORKS = {"torch": ".torch_models", "tf": ".keras_models"}  # relative to this package
#: framework -> (the package it needs, the fastload extra that installs it)
_NEEDS = {"torch": ("torch", "torch"), "tf": ("tensorflow", "tf")}


def framework_module(framework: str) -> Any:
    """``bench.models.torch_models`` or ``bench.models.keras_models`` (imported now)."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"framework must be one of {sorted(FRAMEWORKS)}, got {framework!r}")
    package, extra = _NEEDS[framework]
    try:
        return importlib.import_module(FRAMEWORKS[framework], __package__)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in (package, "keras"):
            raise
        raise missing_dependency(package, extra) from None


def build(framework: str, spec: ModelSpec) -> Any:
    """The model of ``spec`` in ``framework`` (``"torch"`` or ``"tf"``)."""
    return framework_module(framework).build(spec)
