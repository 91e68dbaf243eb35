"""Readers of original files, one per format, with one small interface.

A reader opens one source (a ROOT file's tree or RNTuple, an HDF5 group, a
pandas HDF5 table, a ``.npz`` file, or a ``.npy`` file / directory of them)
and reads rows ``[start, stop)`` of named keys:

* :meth:`SourceReader.names` lists the keys without reading data;
* :meth:`SourceReader.info` describes one key (:class:`KeyInfo`: rows, dtype,
  per-row shape, whether it is jagged) from metadata only;
* :meth:`SourceReader.read` returns ``{key: ndarray | Ragged}`` (jagged keys
  become :class:`fastload.Ragged`: flat values + per-event offsets);
* :meth:`SourceReader.jagged_counts` gives per-event lengths of a jagged key,
  cheaply where the format keeps them apart (ROOT count branches).

Heavy libraries (uproot, awkward, h5py, pandas) are imported when a reader of
their format is opened.  Every failure is raised as :class:`SourceFileError`
or :class:`SourceKeyError` naming the file (and the key).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fastload._messages import closest, missing_dependency
from fastload.errors import SourceFileError, SourceKeyError
from fastload.store import Ragged

_EXTENSIONS = {
    ".root": "root",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".npy": "npy",
    ".npz": "npz",
}


@dataclass(frozen=True)
class KeyInfo:
    """A key of a source: ``length`` rows of ``shape`` items of ``dtype``.

    For a jagged key, ``length`` counts events and ``shape`` is the shape of one
    element of an event's list.  ``dtype`` is ``None`` for keys that cannot be
    stored (strings, objects); ``typename`` then says what they are.
    """

    name: str
    length: int
    dtype: np.dtype | None
    shape: tuple[int, ...] = ()
    jagged: bool = False
    typename: str = ""


def infer_format(path: Path, declared: str | None) -> str:
    """The format of ``path``: the declared one, else from its extension (a directory is npy)."""
    if declared is not None:
        return declared
    if path.is_dir():
        return "npy"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise SourceFileError(
            f"cannot tell the format of {str(path)!r} from its extension; set [source] format = "
            f"one of {sorted(set(_EXTENSIONS.values()) | {'pandas'})}"
        )
    return fmt


def open_reader(
    path: str | Path,
    fmt: str | None = None,
    *,
    tree: str | None = None,
    group: str | None = None,
    key: str | None = None,
) -> SourceReader:
    """Open ``path`` with the reader of its format.

    Parameters
    ----------
    path
        A file, or for ``npy`` a directory of ``.npy`` files (keys = file stems).
    fmt
        ``"root"``, ``"hdf5"``, ``"pandas"``, ``"npy"`` or ``"npz"``; inferred when ``None``.
    tree, group, key
        The TTree/RNTuple (ROOT), group (HDF5) or table key (pandas) holding the events.
    """
    p = Path(path)
    fmt = infer_format(p, fmt)
    if not p.exists():
        raise SourceFileError(f"source {str(p)!r} does not exist")
    readers: dict[str, Any] = {
        "root": lambda: RootReader(p, tree),
        "hdf5": lambda: Hdf5Reader(p, group),
        "pandas": lambda: PandasReader(p, key),
        "npy": lambda: NpyReader(p),
        "npz": lambda: NpzReader(p),
    }
    return readers[fmt]()


class SourceReader:
    """Base class: one open source; use as a context manager."""

    format = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._info: dict[str, KeyInfo] = {}

    @property
    def what(self) -> str:
        """How messages name this source."""
        return repr(str(self.path))

    def names(self) -> list[str]:
        """All keys of the source."""
        raise NotImplementedError

    def _describe(self, name: str) -> KeyInfo:
        raise NotImplementedError

    def info(self, name: str) -> KeyInfo:
        """Describe key ``name`` from metadata; :class:`SourceKeyError` if it does not exist."""
        if name not in self._info:
            names = self.names()
            if name not in names:
                listing = ", ".join(repr(n) for n in names[:12]) + (
                    ", ..." if len(names) > 12 else ""
                )
                raise SourceKeyError(
                    f"key {name!r} not found in {self.what}{closest(name, names)} (keys: {listing})"
                )
            self._info[name] = self._describe(name)
        return self._info[name]

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray | Ragged:
        raise NotImplementedError

    def read(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray | Ragged]:
        """Rows ``[start, stop)`` of each key; jagged keys as :class:`~fastload.Ragged`."""
        out: dict[str, np.ndarray | Ragged] = {}
        for name in names:
            self.info(name)
            try:
                out[name] = self._read_one(name, start, stop)
            except (SourceFileError, SourceKeyError):
                raise
            except Exception as exc:
                raise SourceFileError(
                    f"cannot read key {name!r} rows {start}..{stop} of {self.what}: {type(exc).__name__}: {exc}"
                ) from exc
        return out

    def counter(self, name: str) -> str | None:
        """The key holding the list lengths of jagged key ``name``, where the format has one."""
        return None

    def jagged_counts(self, name: str, start: int, stop: int) -> np.ndarray:
        """Per-event list lengths of jagged key ``name`` for events ``[start, stop)``."""
        value = self.read([name], start, stop)[name]
        if not isinstance(value, Ragged):
            raise SourceKeyError(f"key {name!r} of {self.what} is not jagged")
        return value.counts

    def close(self) -> None:
        """Release the file handle (idempotent)."""

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open_failed(path: Path, fmt: str, exc: BaseException) -> SourceFileError:
    return SourceFileError(f"cannot open {str(path)!r} as {fmt}: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------- ROOT
def _root_package(exc: ModuleNotFoundError) -> str:
    return "awkward" if (exc.name or "").split(".")[0] == "awkward" else "uproot"


class RootReader(SourceReader):
    """A TTree or RNTuple read with uproot; jagged branches become ragged."""

    format = "root"

    def __init__(self, path: Path, tree: str | None) -> None:
        super().__init__(path)
        try:
            import awkward  # noqa: F401  (uproot's arrays; imported here for the install hint)
            import uproot
        except ModuleNotFoundError as exc:
            raise missing_dependency(_root_package(exc), "root") from None
        try:
            self._file = uproot.open(path)
        except Exception as exc:
            raise _open_failed(path, "a ROOT file", exc) from exc
        try:
            self._tree, self.tree_name = self._find_tree(tree)
        except BaseException:
            self._file.close()
            raise
        self.is_rntuple = "RNTuple" in type(self._tree).__name__
        self.n_entries = int(self._tree.num_entries)
        self._names: list[str] | None = None

    def _find_tree(self, tree: str | None) -> tuple[Any, str]:
        classes = {k.split(";")[0]: v for k, v in self._file.classnames().items()}
        trees = [
            k
            for k, v in classes.items()
            if v in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")
        ]
        if tree is None:
            if len(trees) != 1:
                raise SourceKeyError(
                    f'{str(self.path)!r} holds {len(trees)} trees ({trees}); name one with [source] tree = "NAME"'
                )
            tree = trees[0]
        if tree not in classes:
            raise SourceKeyError(
                f"tree {tree!r} not found in {str(self.path)!r}{closest(tree, trees)} (trees: {trees})"
            )
        try:
            return self._file[tree], tree
        except Exception as exc:
            raise SourceFileError(
                f"cannot read tree {tree!r} of {str(self.path)!r}: {exc}"
            ) from exc

    @property
    def what(self) -> str:
        kind = "RNTuple" if self.is_rntuple else "tree"
        return f"{kind} {self.tree_name!r} of {str(self.path)!r}"

    def names(self) -> list[str]:
        if self._names is None:
            self._names = list(self._tree.keys())
        return self._names

    def _describe(self, name: str) -> KeyInfo:
        if self.is_rntuple:
            record = self._tree[name].to_akform()[0]  # (RecordForm of this one field, names)
            return _info_from_form(name, self.n_entries, record.contents[0])
        from uproot.interpretation.jagged import AsJagged
        from uproot.interpretation.numerical import AsDtype

        branch = self._tree[name]
        interp = branch.interpretation
        if isinstance(interp, AsJagged) and isinstance(interp.content, AsDtype):
            dt = interp.content.to_dtype
            return KeyInfo(name, self.n_entries, _native(dt.base), tuple(dt.shape), jagged=True)
        if isinstance(interp, AsDtype):
            dt = interp.to_dtype
            return KeyInfo(name, self.n_entries, _native(dt.base), tuple(dt.shape))
        return KeyInfo(name, self.n_entries, None, typename=str(branch.typename))

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray | Ragged:
        array = self._tree[name].array(entry_start=start, entry_stop=stop, library="ak")
        return _from_awkward(array, self.info(name))

    def counter(self, name: str) -> str | None:
        count = None if self.is_rntuple else getattr(self._tree[name], "count_branch", None)
        return None if count is None else str(count.name)

    def jagged_counts(self, name: str, start: int, stop: int) -> np.ndarray:
        if not self.is_rntuple:
            count = getattr(self._tree[name], "count_branch", None)
            if count is not None:
                try:
                    return np.asarray(
                        count.array(entry_start=start, entry_stop=stop, library="np"),
                        dtype=np.int64,
                    )
                except Exception as exc:
                    raise SourceFileError(
                        f"cannot read count branch {count.name!r} entries {start}..{stop} of {self.what}: {exc}"
                    ) from exc
        return super().jagged_counts(name, start, stop)

    def close(self) -> None:
        self._file.close()


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _info_from_form(name: str, length: int, form: Any) -> KeyInfo:
    """Describe an awkward form: numbers, fixed-size arrays of numbers, or one level of lists."""
    import awkward as ak

    def fixed(f: Any) -> tuple[np.dtype, tuple[int, ...]] | None:
        shape: list[int] = []
        while isinstance(f, ak.forms.RegularForm):
            shape.append(int(f.size))
            f = f.content
        if isinstance(f, ak.forms.NumpyForm):
            dt = np.dtype(ak.types.numpytype.primitive_to_dtype(f.primitive))
            return dt, (*shape, *f.inner_shape)
        return None

    got = fixed(form)
    if got is not None:
        return KeyInfo(name, length, got[0], got[1])
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm)):
        got = fixed(form.content)
        if got is not None:
            return KeyInfo(name, length, got[0], got[1], jagged=True)
    return KeyInfo(name, length, None, typename=str(form.type))


def _from_awkward(array: Any, info: KeyInfo) -> np.ndarray | Ragged:
    import awkward as ak

    if not info.jagged:
        return np.ascontiguousarray(ak.to_numpy(array), dtype=info.dtype)
    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    values = np.ascontiguousarray(ak.to_numpy(ak.flatten(array, axis=1)), dtype=info.dtype)
    return Ragged.from_counts(values.reshape(-1, *info.shape), counts)


# --------------------------------------------------------------------- HDF5
class Hdf5Reader(SourceReader):
    """Datasets of one HDF5 group (h5py); variable-length datasets are jagged."""

    format = "hdf5"

    def __init__(self, path: Path, group: str | None) -> None:
        super().__init__(path)
        import h5py

        try:
            self._file = h5py.File(path, "r")
        except Exception as exc:
            raise _open_failed(path, "HDF5", exc) from exc
        self.group_name = group or "/"
        if self.group_name not in self._file:
            self._file.close()
            raise SourceKeyError(
                f"group {self.group_name!r} not found in {str(path)!r}; set [source] group"
            )
        self._group = self._file[self.group_name]
        self._names: list[str] | None = None

    @property
    def what(self) -> str:
        return f"group {self.group_name!r} of {str(self.path)!r}"

    def names(self) -> list[str]:
        if self._names is None:
            import h5py

            found: list[str] = []
            self._group.visititems(
                lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None
            )
            self._names = found
        return self._names

    def _describe(self, name: str) -> KeyInfo:
        import h5py

        ds = self._group[name]
        if ds.ndim == 0:
            return KeyInfo(name, 0, None, typename="scalar dataset")
        base = h5py.check_vlen_dtype(ds.dtype)
        if base is not None:
            ok = base.kind in "biuf"
            return KeyInfo(
                name, int(ds.shape[0]), base if ok else None, (), jagged=ok, typename=str(base)
            )
        ok = ds.dtype.kind in "biuf"
        return KeyInfo(
            name,
            int(ds.shape[0]),
            _native(ds.dtype) if ok else None,
            tuple(ds.shape[1:]),
            typename=str(ds.dtype),
        )

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray | Ragged:
        info = self.info(name)
        data = self._group[name][start:stop]
        if info.jagged:
            return (
                Ragged.from_list([np.asarray(x, dtype=info.dtype) for x in data])
                if len(data)
                else Ragged(np.zeros(0, dtype=info.dtype), np.zeros(1, dtype=np.int64))
            )
        return np.asarray(data, dtype=info.dtype)

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------- pandas
class PandasReader(SourceReader):
    """Columns of one pandas table in an HDF5 file (``DataFrame.to_hdf``, fixed or table format)."""

    format = "pandas"

    def __init__(self, path: Path, key: str | None) -> None:
        super().__init__(path)
        try:
            import pandas as pd
            import tables  # noqa: F401  (pandas needs PyTables for HDF5; fail with the install hint)
        except ModuleNotFoundError as exc:
            raise missing_dependency(
                "tables" if exc.name == "tables" else "pandas", "pandas"
            ) from None
        try:
            self._store = pd.HDFStore(path, mode="r")
        except Exception as exc:
            raise _open_failed(path, "a pandas HDF5 store", exc) from exc
        keys = list(self._store.keys())
        if key is None:
            if len(keys) != 1:
                self._store.close()
                raise SourceKeyError(
                    f"{str(path)!r} holds {len(keys)} tables ({keys}); name one with [source] key"
                )
            key = keys[0]
        if ("/" + key.lstrip("/")) not in keys:
            self._store.close()
            raise SourceKeyError(
                f"table {key!r} not found in {str(path)!r}{closest('/' + key.lstrip('/'), keys)} (tables: {keys})"
            )
        self.key = key
        storer = self._store.get_storer(key)
        self._table = bool(getattr(storer, "is_table", False))
        self.n_rows = int(storer.nrows if self._table else storer.shape[0])
        self._empty = self._store.select(key, start=0, stop=0)

    @property
    def what(self) -> str:
        return f"table {self.key!r} of {str(self.path)!r}"

    def names(self) -> list[str]:
        return [str(c) for c in self._empty.columns]

    def _describe(self, name: str) -> KeyInfo:
        dtype = self._empty[name].dtype
        ok = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
        return KeyInfo(name, self.n_rows, dtype if ok else None, typename=str(dtype))

    def read(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray | Ragged]:
        for name in names:
            self.info(name)
        try:
            if self._table:
                frame = self._store.select(self.key, start=start, stop=stop, columns=list(names))
            else:
                frame = self._store.select(self.key, start=start, stop=stop)
        except Exception as exc:
            raise SourceFileError(
                f"cannot read rows {start}..{stop} of {self.what}: {type(exc).__name__}: {exc}"
            ) from exc
        return {n: frame[n].to_numpy() for n in names}

    def close(self) -> None:
        self._store.close()


# --------------------------------------------------------------------- numpy
class NpyReader(SourceReader):
    """A ``.npy`` file (key = its stem) or a directory of them, memory-mapped."""

    format = "npy"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        if not files:
            raise SourceFileError(f"directory {str(path)!r} holds no .npy files")
        self._files = {f.stem: f for f in files}
        self._arrays: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return list(self._files)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            try:
                self._arrays[name] = np.load(self._files[name], mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise _open_failed(self._files[name], "npy", exc) from exc
        return self._arrays[name]

    def _describe(self, name: str) -> KeyInfo:
        arr = self._array(name)
        ok = arr.dtype.kind in "biuf" and arr.ndim > 0
        return KeyInfo(
            name,
            int(arr.shape[0]) if arr.ndim else 0,
            _native(arr.dtype) if ok else None,
            tuple(arr.shape[1:]),
            typename=str(arr.dtype),
        )

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.array(self._array(name)[start:stop], dtype=self.info(name).dtype)

    def close(self) -> None:
        self._arrays.clear()


class NpzReader(SourceReader):
    """Members of a ``.npz`` archive; shapes come from the member headers, data on first use.

    A member is decompressed whole the first time it is read (zip members cannot be
    sliced), so keep single ``.npz`` files to what fits comfortably in memory.
    """

    format = "npz"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
            self._members = {
                n.removesuffix(".npy"): n for n in self._zip.namelist() if n.endswith(".npy")
            }
        except Exception as exc:
            raise _open_failed(path, "npz", exc) from exc
        self._arrays: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return list(self._members)

    def _describe(self, name: str) -> KeyInfo:
        try:
            with self._zip.open(self._members[name]) as fh:
                version = np.lib.format.read_magic(fh)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _fortran, dtype = reader(fh)
        except Exception as exc:
            raise SourceFileError(
                f"cannot read the header of {name!r} in {str(self.path)!r}: {exc}"
            ) from exc
        ok = dtype.kind in "biuf" and len(shape) > 0
        return KeyInfo(
            name,
            int(shape[0]) if shape else 0,
            _native(dtype) if ok else None,
            tuple(shape[1:]),
            typename=str(dtype),
        )

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray:
        if name not in self._arrays:
            with self._zip.open(self._members[name]) as fh:
                self._arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
        return np.asarray(self._arrays[name][start:stop], dtype=self.info(name).dtype)

    def close(self) -> None:
        self._arrays.clear()
        self._zip.close()


def read_counts(reader: SourceReader, key: str, *, offsets: bool) -> np.ndarray:
    """Per-event counts of a flat-values field, from a counts key or an offsets key (n+1 entries)."""
    info = reader.info(key)
    if info.dtype is None or info.dtype.kind not in "iu" or info.shape:
        raise SourceKeyError(
            f"key {key!r} of {reader.what} must be a 1-D integer array of {'offsets' if offsets else 'counts'}"
        )
    data = np.asarray(reader.read([key], 0, info.length)[key], dtype=np.int64)
    if not offsets:
        if data.size and data.min() < 0:
            raise SourceFileError(f"counts key {key!r} of {reader.what} holds negative counts")
        return data
    if data.size == 0 or data[0] != 0 or np.any(np.diff(data) < 0):
        raise SourceFileError(
            f"offsets key {key!r} of {reader.what} must start at 0 and never decrease"
        )
    return np.diff(data)
