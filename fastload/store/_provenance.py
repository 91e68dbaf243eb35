"""Provenance of a store: source files with checksums, converter, versions, time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any

from fastload.errors import SourceFileError

_READ_BLOCK = 8 * 2**20


def file_checksum(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in bounded blocks.

    Parameters
    ----------
    path
        A readable local file.
    algorithm
        Any :func:`hashlib.new` name (``"sha256"``, ``"md5"``, ...).

    Returns
    -------
    str
        The hexadecimal digest.
    """
    try:
        digest = hashlib.new(algorithm)
    except ValueError as exc:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}: {exc}") from exc
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_READ_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise SourceFileError(
            f"cannot read source file {str(path)!r} to checksum it: {exc}"
        ) from exc
    return digest.hexdigest()


def source_entry(path: str | os.PathLike[str], algorithm: str = "sha256") -> dict[str, Any]:
    """A provenance record for one source file: path, name, size and checksum."""
    p = Path(path).absolute()  # a relative path says nothing once the store is moved
    digest = file_checksum(p, algorithm)  # raises SourceFileError for a missing file
    return {
        "path": str(p),
        "name": p.name,
        "size": p.stat().st_size,
        algorithm: digest,
    }


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
