"""Helpers that build parts of fastload's error messages (private: not API)."""

from __future__ import annotations

import difflib


def missing_dependency(module: str, extra: str) -> ModuleNotFoundError:
    """Build the error raised when an optional dependency is not installed."""
    return ModuleNotFoundError(
        f"{module!r} is required for this feature; install it with "
        f"`pip install 'fastload[{extra}]'` (or `pip install {module}`)"
    )


def closest(name: str, candidates: list[str] | tuple[str, ...], n: int = 3) -> str:
    """Return a ``"; closest: 'a', 'b'"`` hint for error messages, or ``""``."""
    hits = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return "; closest: " + ", ".join(repr(h) for h in hits) if hits else ""
