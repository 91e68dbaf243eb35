"""Store locations: local paths vs URLs, and the temporaries of atomic writes.

A local store ``DIR/NAME.zarr`` is written under a hidden sibling whose name starts
``DIR/.NAME.zarr.fastload-tmp-`` and renamed into place when complete; how the
writers name, sweep and install temporaries is in :mod:`fastload.store._placement`.
Readers only need to find leftovers (:func:`leftover_temporaries`) to name them
in errors.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_MARK = ".fastload-tmp-"


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for fsspec URLs such as ``s3://bucket/x.zarr``; ``file://`` URLs count as local."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | os.PathLike[str]) -> Path:
    """The local filesystem path of a plain path or a ``file://`` URL."""
    text = os.fspath(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def zarr_location(path: str | os.PathLike[str]) -> str:
    """What to hand to ``zarr.open_group``: a local path string, or the remote URL as is."""
    return os.fspath(path) if is_remote(path) else str(local_path(path))


def canonical(path: str | os.PathLike[str]) -> str:
    """An absolute form of a store location, valid from any working directory.

    Handles are pickled by location (worker processes re-open the store), so a
    relative path must not depend on the current directory of the reader.
    """
    text = os.fspath(path)
    if is_remote(text) or text.startswith("file://"):
        return text
    return os.path.abspath(text)


def _prefix(target: Path) -> str:
    return f".{target.name}{TMP_MARK}"


def leftover_temporaries(target: Path) -> list[Path]:
    """Temporaries of ``target`` (of live or dead writers), sorted by name."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(_prefix(target) + "*"))
