"""The converters package next to ``bench``, wherever the two live.

In a checkout they are the top-level packages ``bench`` and ``converters``; installed under
``fastload`` they are ``fastload.bench`` and ``fastload.converters``. A relative import cannot
reach a sibling top-level package, so the name is derived from this package's own.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def converters_module(name: str) -> ModuleType:
    """``converters.<name>`` (or ``fastload.converters.<name>``), imported now."""
    parent = (__package__ or "bench").rpartition(".")[0]
    prefix = f"{parent}.converters" if parent else "converters"
    return importlib.import_module(f"{prefix}.{name}")
