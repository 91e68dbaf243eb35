"""Row-block streaming of ``.npz`` members, never unpickling."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fastload.errors import SchemaError, SourceFileError

from ._files import missing_key, require_file


class NpzArchive:
    """A ``.npz`` archive whose members are read row block by row block.

    ``np.load`` would decompress a whole member (several GB for pd4ml's
    TopTagging) into memory on first access.  Instead each member's ``.npy``
    header is parsed with :mod:`numpy.lib.format` and its rows are read
    sequentially from the zip stream, so memory stays at one block whatever
    the member size, stored or deflated.  Members in Fortran order or in
    ``.npy`` format 3.0 cannot be streamed by rows; they are loaded whole
    through ``np.load(path, allow_pickle=False)`` instead (one key at a time).
    Object arrays are refused: reading them would unpickle untrusted data.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zipfile

        self.path = require_file(path, ".npz file")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            size = self.path.stat().st_size
            raise SourceFileError(
                f"{str(self.path)!r} ({size} bytes) is not a readable .npz (zip) archive: {exc}; "
                "it is truncated, still downloading or not an npz file — download it again"
            ) from exc
        self.keys = [n[: -len(".npy")] for n in self._zip.namelist() if n.endswith(".npy")]
        self._members: list[NpzMember] = []

    def close(self) -> None:
        """Close every member stream and the archive (idempotent)."""
        for member in self._members:
            member.close()
        self._zip.close()

    def member(self, key: str) -> NpzMember:
        """The member ``key`` (without ``.npy``), or SourceKeyError with a closest-name hint."""
        if key not in self.keys:
            raise missing_key(key, self.keys, f"npz archive {str(self.path)!r}")
        member = NpzMember(self, key)
        self._members.append(member)
        return member


class NpzMember:
    """One array of an :class:`NpzArchive`: ``shape``, ``dtype`` and row-block reads."""

    def __init__(self, archive: NpzArchive, key: str) -> None:
        self.archive = archive
        self.key = key
        self.where = f"{key!r} in {str(archive.path)!r}"
        self._fh: Any = None
        self._row = 0  # next row the open stream will return
        self._whole: np.ndarray | None = None
        fmt = np.lib.format
        try:
            with self._open() as fh:
                version = fmt.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(fh)
                else:
                    shape, fortran, dtype = self._load_whole().shape, False, self._whole.dtype
                self._data_offset = fh.tell()
        except (ValueError, EOFError, OSError) as exc:
            raise SourceFileError(
                f"{self.where}: unreadable .npy header ({exc}); the archive is corrupt"
            ) from exc
        if dtype.hasobject:
            raise SchemaError(
                f"{self.where} holds Python objects (dtype {dtype}); reading it would unpickle untrusted "
                "data, which fastload refuses — re-save the array with a numeric dtype"
            )
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran = bool(fortran)
        self.row_nbytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise SchemaError(f"{self.where} is a scalar, expected an array with one row per event")
        return self.shape[0]

    def _open(self) -> Any:
        return self.archive._zip.open(f"{self.key}.npy")

    def _load_whole(self) -> np.ndarray:
        if self._whole is None:
            try:
                with np.load(self.archive.path, mmap_mode=None, allow_pickle=False) as npz:
                    self._whole = np.asarray(npz[self.key])
            except (ValueError, OSError, EOFError) as exc:
                raise SourceFileError(f"cannot load {self.where}: {exc}") from exc
        return self._whole

    def read_all(self) -> np.ndarray:
        """The whole member (for small arrays such as detector geometry)."""
        return self.read(0, self.shape[0]) if self.shape else self._load_whole()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``; sequential calls stream, a backward jump reopens the member."""
        import zipfile
        import zlib as _zlib

        if self.fortran or self._whole is not None:
            return self._load_whole()[start:stop]
        n = max(0, min(stop, self.shape[0]) - start)
        try:
            if self._fh is None or start < self._row:
                self.close()
                self._fh = self._open()
                self._fh.seek(self._data_offset)
                self._row = 0
            if start > self._row:
                self._fh.seek(self._data_offset + start * self.row_nbytes)
                self._row = start
            want = n * self.row_nbytes
            buf = self._fh.read(want)
        except (zipfile.BadZipFile, EOFError, _zlib.error, OSError) as exc:
            self.close()
            raise SourceFileError(
                f"cannot read rows {start}..{stop} of {self.where}: {exc}; the archive is truncated or "
                "corrupt — download it again"
            ) from exc
        if len(buf) != want:
            self.close()
            raise SourceFileError(
                f"{self.where} is truncated: rows {start}..{stop} need {want} bytes, got {len(buf)}; "
                "download the file again"
            )
        self._row = start + n
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
