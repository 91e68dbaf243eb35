"""Version of fastload: the single source (pyproject.toml reads it as a dynamic attribute).

A literal rather than ``importlib.metadata.version``: the metadata lookup costs
~40 ms, paid by every prefetch worker at start-up.
"""

from __future__ import annotations

__version__ = "0.1.0"
