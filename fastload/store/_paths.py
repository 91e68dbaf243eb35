"""Store locations: local paths vs URLs, and the temporaries of atomic writes.

A local store ``DIR/NAME.zarr`` is written as ``DIR/.NAME.zarr.fastload-tmp-PID-HEX``
and renamed into place when complete.  The writer's process id is part of the
name so that a later writer can tell a temporary whose writer died (remove it)
from one that is still being written (leave it alone).  A store being replaced
is first moved aside under a name of the same form (``...-PID-oldHEX``), so a
crash between the two renames also leaves only a removable temporary.
"""

from __future__ import annotations

import os
import shutil
import uuid
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


def temporary_path(target: Path, *, suffix: str = "") -> Path:
    """A fresh hidden sibling of ``target`` owned by this process."""
    return target.parent / f"{_prefix(target)}{os.getpid()}-{suffix}{uuid.uuid4().hex[:8]}"


def leftover_temporaries(target: Path) -> list[Path]:
    """Temporaries of ``target`` (of live or dead writers), sorted by name."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(_prefix(target) + "*"))


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of ``target`` whose writer process is gone; return them."""
    import psutil

    removed = []
    prefix = _prefix(target)
    for entry in leftover_temporaries(target):
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not psutil.pid_exists(int(pid_text)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
