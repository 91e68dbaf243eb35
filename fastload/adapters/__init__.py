"""Framework adapters: torch tensors, ``tf.data`` datasets, Keras datasets, Lightning, JAX.

Importing this package imports no framework; each submodule imports its own
framework when it is first used (``fastload.adapters.torch`` on first access),
so ``import fastload`` stays free of torch, TensorFlow, Lightning and JAX.

Layout::

    torch.py      to_torch, TorchBatches, FastloadIterableDataset, distributed_loader
    tf.py         to_tf: a tf.data.Dataset with a complete element_spec
    keras.py      FastloadPyDataset: a keras.utils.PyDataset (any Keras 3 backend)
    lightning.py  FastloadDataModule: a LightningDataModule of distributed loaders
    jax.py        to_jax, JaxBatches: batches as jax.Array (zero-copy on the CPU)
    _select.py    framework-free: which fields form x / y / sample_weight

See docs/frameworks.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_SUBMODULES = ("jax", "keras", "lightning", "tf", "torch")

# Empty on purpose: ``from fastload.adapters import *`` must not import the frameworks.
__all__: list[str] = []


def __getattr__(name: str) -> ModuleType:
    # ``fastload.adapters.torch`` works after a plain ``import fastload.adapters``
    # without importing torch up front.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*(n for n in globals() if n.startswith("__")), *_SUBMODULES])
