"""Opening source files with errors that name the file, the key and what to do."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastload._messages import closest
from fastload.errors import SourceFileError, SourceKeyError


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path if it is a readable file, else raise SourceFileError."""
    p = Path(path)
    if not p.exists():
        raise SourceFileError(
            f"{what} {str(p)!r} does not exist; check the path (see docs/converting.md)"
        )
    if not p.is_file():
        raise SourceFileError(f"{what} {str(p)!r} is not a file")
    if not os.access(p, os.R_OK):
        raise SourceFileError(f"{what} {str(p)!r} is not readable (permissions)")
    return p


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path if it is a directory, else raise SourceFileError."""
    p = Path(path)
    if not p.exists():
        raise SourceFileError(
            f"{what} {str(p)!r} does not exist; check the path (see docs/converting.md)"
        )
    if not p.is_dir():
        raise SourceFileError(f"{what} {str(p)!r} is not a directory")
    return p


def missing_key(key: str, available: Sequence[str], where: str) -> SourceKeyError:
    """A SourceKeyError for ``key`` with a closest-name hint and the available names."""
    shown = list(available)[:20]
    more = f" and {len(available) - 20} more" if len(available) > 20 else ""
    return SourceKeyError(
        f"{key!r} not found in {where}{closest(key, list(available))} (has: {shown}{more})"
    )


def open_hdf5(path: str | os.PathLike[str]) -> Any:
    """Open an HDF5 file read-only, turning h5py's errors into SourceFileError."""
    import h5py

    p = require_file(path, "HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        size = p.stat().st_size
        raise SourceFileError(
            f"cannot open {str(p)!r} as HDF5 ({size} bytes): {exc}; the file is truncated, still "
            "downloading or not an HDF5 file — download it again"
        ) from exc


def h5_dataset(h5: Any, key: str) -> Any:
    """``h5[key]`` as an h5py Dataset, or SourceKeyError naming the file and the closest key."""
    import h5py

    try:
        node = h5[key]
    except KeyError:
        names: list[str] = []
        h5.visit(names.append)
        raise missing_key(key, names, f"HDF5 file {h5.filename!r}") from None
    if not isinstance(node, h5py.Dataset):
        raise SourceKeyError(f"{key!r} in {h5.filename!r} is a group, not a dataset")
    return node


def h5_read(dataset: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of an h5py dataset; read errors become SourceFileError."""
    try:
        return dataset[start:stop]
    except (OSError, RuntimeError) as exc:
        raise SourceFileError(
            f"cannot read rows {start}..{stop} of {dataset.name!r} in {dataset.file.filename!r}: {exc}; "
            "the file is probably truncated or corrupt — download it again"
        ) from exc
