"""Readers of original files, one per format, with one small interface.

A reader opens one source (a ROOT file's tree or RNTuple, an HDF5 group, a
pandas HDF5 table, a Parquet file, a ``.npz`` file, or a ``.npy`` file /
directory of them) and reads rows ``[start, stop)`` of named keys:

* :meth:`SourceReader.names` lists the keys without reading data;
* :meth:`SourceReader.info` describes one key (:class:`KeyInfo`: rows, dtype,
  per-row shape, whether it is jagged) from metadata only;
* :meth:`SourceReader.read` returns ``{key: ndarray | Ragged}`` (jagged keys
  become :class:`fastload.Ragged`: flat values + per-event offsets);
* :meth:`SourceReader.jagged_counts` gives per-event lengths of a jagged key,
  cheaply where the format keeps them apart (ROOT count branches);
* :meth:`SourceReader.counter` names the key holding those lengths, where there is one.

A *record* key (a ROOT branch with sub-branches, an RNTuple or Parquet record or
collection of records) cannot be stored as one key; its :attr:`KeyInfo.members`
are the numeric keys below it, each of which is a key of its own (``collection =``
in a spec joins them into one field).

Heavy libraries (uproot, awkward, pyarrow, h5py, pandas) are imported when a reader of
their format is opened.  Every failure is raised as :class:`SourceFileError`
or :class:`SourceKeyError` naming the file (and the key).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fastload._messages import closest, missing_dependency
from fastload.errors import FastloadError, SourceFileError, SourceKeyError
from fastload.store import Ragged, fields_from_awkward

_EXTENSIONS = {
    ".root": "root",
    ".parquet": "parquet",
    ".parq": "parquet",
    ".pq": "parquet",
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
    stored (strings, objects, records); ``typename`` then says what they are.  A
    record's ``members`` are the storable keys below it (in the source's order),
    ``skipped`` the others below it as ``(key, typename)``.
    """

    name: str
    length: int
    dtype: np.dtype | None
    shape: tuple[int, ...] = ()
    jagged: bool = False
    typename: str = ""
    members: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def record(self) -> bool:
        """True for a record or collection key (its members are keys of their own)."""
        return bool(self.members or self.skipped)


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
        ``"root"``, ``"hdf5"``, ``"pandas"``, ``"parquet"``, ``"npy"`` or ``"npz"``; inferred
        when ``None``.
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
        "parquet": lambda: ParquetReader(p),
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
    """A TTree or RNTuple read with uproot; jagged branches become ragged.

    Keys are uproot's full paths: ``evt/P3/P3.Px`` for a sub-branch of a split object,
    ``_collection0.Muon_pt`` for a member of an RNTuple collection.  A branch with
    sub-branches (a split object, a TClonesArray) and an RNTuple record or collection
    are record keys whose members are the numeric keys below them; so is a TTree
    counter branch, whose members are the jagged branches it counts.
    """

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
        self._counted: dict[str, list[str]] | None = None
        self._name_set: set[str] | None = None

    def _find_tree(self, tree: str | None) -> tuple[Any, str]:
        trees = root_trees(self._file)
        if tree is None:
            if len(trees) != 1:
                raise SourceKeyError(
                    f'{str(self.path)!r} holds {len(trees)} trees ({trees}); name one with [source] tree = "NAME"'
                )
            tree = trees[0]
        if tree not in trees:
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

    def _below(self, name: str) -> list[str]:
        """Keys under record key ``name`` (``name/...`` in a TTree, ``name....`` in an RNTuple)."""
        sep = "." if self.is_rntuple else "/"
        return [k for k in self.names() if k.startswith(name + sep)]

    def _record_info(self, name: str, typename: str, below: Sequence[str]) -> KeyInfo:
        members: list[str] = []
        skipped: list[tuple[str, str]] = []
        for key in below:
            info = self.info(key)
            if info.dtype is not None:
                members.append(key)
            elif not info.record:  # a nested record's own members are listed already
                skipped.append((key, info.typename))
        return KeyInfo(
            name,
            self.n_entries,
            None,
            typename=typename,
            members=tuple(members),
            skipped=tuple(skipped),
        )

    def _describe(self, name: str) -> KeyInfo:
        if self.is_rntuple:
            top, path = self._tree[name].to_akform()  # (RecordForm of this field, its path)
            info = _info_from_form(name, self.n_entries, _project_form(top, list(path)))
            if info.typename.startswith("record"):
                return self._record_info(name, info.typename, self._below(name))
            return info
        from uproot.interpretation.jagged import AsJagged
        from uproot.interpretation.numerical import AsDtype

        branch = self._tree[name]
        interp = branch.interpretation
        if isinstance(interp, AsJagged) and isinstance(interp.content, AsDtype):
            dt = interp.content.to_dtype
            return KeyInfo(name, self.n_entries, _native(dt.base), tuple(dt.shape), jagged=True)
        if isinstance(interp, AsDtype):
            dt = interp.to_dtype
            info = KeyInfo(name, self.n_entries, _native(dt.base), tuple(dt.shape))
            counted = self._counted_by().get(name)
            if counted and not info.shape and info.dtype is not None and info.dtype.kind in "iu":
                # a counter branch (``nJet``; ``Coll`` of a TClonesArray): storable itself and
                # the record of the jagged branches it counts
                return replace(info, members=tuple(counted))
            return info
        if len(branch.branches):  # a split object or collection: its leaves are keys of their own
            return self._record_info(name, f"record {branch.typename}", self._below(name))
        return KeyInfo(name, self.n_entries, None, typename=str(branch.typename))

    def _read_one(self, name: str, start: int, stop: int) -> np.ndarray | Ragged:
        array = self._tree[name].array(entry_start=start, entry_stop=stop, library="ak")
        return _from_awkward(array, self.info(name), self.what)

    def _key_of(self, branch: Any) -> str | None:
        """The full key (``evt/N``) of a branch object, walking up to the tree."""
        parts = []
        node = branch
        while node is not None and node is not self._tree and hasattr(node, "parent"):
            parts.append(str(node.name))
            node = node.parent
        key = "/".join(reversed(parts))
        if self._name_set is None:
            self._name_set = set(self.names())
        return key if key in self._name_set else None

    def _counter_branch(self, name: str) -> str | None:
        """The key of the count branch of jagged TTree key ``name``, if it is a plain integer."""
        from uproot.interpretation.numerical import AsDtype

        count = getattr(self._tree[name], "count_branch", None)
        if count is None:
            return None
        interp = getattr(count, "interpretation", None)
        # a counter is an integer per event; anything else (a group, an object) is not used
        if not isinstance(interp, AsDtype) or interp.to_dtype.shape:
            return None
        if interp.to_dtype.kind not in "iu":
            return None
        return self._key_of(count)

    def _counted_by(self) -> dict[str, list[str]]:
        """``{counter key: [jagged keys it counts]}`` of a TTree, from the branches' metadata."""
        if self._counted is None:
            from uproot.interpretation.jagged import AsJagged

            counted: dict[str, list[str]] = {}
            for key in self.names():
                branch = self._tree[key]
                if isinstance(getattr(branch, "interpretation", None), AsJagged):
                    counter = self._counter_branch(key)
                    if counter is not None:
                        counted.setdefault(counter, []).append(key)
            self._counted = counted
        return self._counted

    def counter(self, name: str) -> str | None:
        if self.is_rntuple:
            # a member of a collection shares the collection's offsets
            parts = name.split(".")
            for i in range(len(parts) - 1, 0, -1):
                parent = ".".join(parts[:i])
                if parent in self.names() and self.info(parent).record:
                    top, path = self._tree[parent].to_akform()
                    if _is_list_form(_project_form(top, list(path))):
                        return parent
            return None
        if not self.info(name).jagged:
            return None
        return self._counter_branch(name)

    def jagged_counts(self, name: str, start: int, stop: int) -> np.ndarray:
        counter = None if self.is_rntuple else self.counter(name)
        if counter is not None:
            try:
                return np.asarray(
                    self._tree[counter].array(entry_start=start, entry_stop=stop, library="np"),
                    dtype=np.int64,
                )
            except Exception as exc:
                raise SourceFileError(
                    f"cannot read count branch {counter!r} entries {start}..{stop} of {self.what}: {exc}"
                ) from exc
        return super().jagged_counts(name, start, stop)

    def close(self) -> None:
        self._file.close()


_TREE_CLASSES = ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def root_trees(file: Any) -> list[str]:
    """Names of the TTrees and RNTuples of an open uproot file (any directory depth)."""
    classes = {k.split(";")[0]: v for k, v in file.classnames().items()}
    return [k for k, v in classes.items() if v in _TREE_CLASSES]


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _strip_form(form: Any) -> Any:
    """An awkward form without option and index nodes (missing values are checked on reading)."""
    import awkward as ak

    f = ak.forms
    while isinstance(
        form,
        (f.IndexedOptionForm, f.IndexedForm, f.UnmaskedForm, f.ByteMaskedForm, f.BitMaskedForm),
    ):
        form = form.content
    return form


def _is_list_form(form: Any) -> bool:
    import awkward as ak

    return isinstance(_strip_form(form), (ak.forms.ListOffsetForm, ak.forms.ListForm))


def _project_form(form: Any, path: Sequence[str]) -> Any:
    """The form of ``form[path[0]][path[1]]...``: records projected through lists, as awkward does."""
    import awkward as ak

    form = _strip_form(form)
    if not path:
        return form
    if isinstance(form, ak.forms.RecordForm):
        return _project_form(form.content(path[0]), path[1:])
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm, ak.forms.RegularForm)):
        return form.copy(content=_project_form(form.content, path))
    raise KeyError(f"{path[0]!r} is not a member of {form.type}")


def _info_from_form(name: str, length: int, form: Any) -> KeyInfo:
    """Describe an awkward form: numbers, fixed-size arrays of numbers, or one level of lists.

    Records (and lists of records) are described as ``typename = "record ..."`` with no dtype;
    their readers fill in the members.
    """
    import awkward as ak

    def fixed(f: Any) -> tuple[np.dtype, tuple[int, ...]] | None:
        shape: list[int] = []
        f = _strip_form(f)
        while isinstance(f, ak.forms.RegularForm):
            shape.append(int(f.size))
            f = _strip_form(f.content)
        if isinstance(f, ak.forms.NumpyForm):
            dt = np.dtype(ak.types.numpytype.primitive_to_dtype(f.primitive))
            if dt.kind not in "biuf":
                return None
            return dt, (*shape, *f.inner_shape)
        return None

    form = _strip_form(form)
    got = fixed(form)
    if got is not None:
        return KeyInfo(name, length, got[0], got[1])
    is_list = isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm))
    if is_list and form.parameter("__array__") not in ("string", "bytestring"):
        got = fixed(form.content)
        if got is not None:
            return KeyInfo(name, length, got[0], got[1], jagged=True)
        if isinstance(_strip_form(form.content), ak.forms.RecordForm):
            return KeyInfo(name, length, None, typename=f"record {form.type}")
    if isinstance(form, ak.forms.RecordForm):
        return KeyInfo(name, length, None, typename=f"record {form.type}")
    return KeyInfo(name, length, None, typename=str(form.type))


def _from_awkward(array: Any, info: KeyInfo, what: str) -> np.ndarray | Ragged:
    """One key's awkward array as the reader returns it (options without None are accepted)."""
    parts = fields_from_awkward(info.name, array, where=f"key {info.name!r} of {what}")
    if len(parts) != 1:
        raise SourceKeyError(f"key {info.name!r} of {what} is a record; convert its members")
    value = next(iter(parts.values()))
    if info.jagged != isinstance(value, Ragged):
        raise SourceFileError(
            f"key {info.name!r} of {what} was described as {'jagged' if info.jagged else 'fixed'} "
            f"but reads as {type(value).__name__}"
        )
    if isinstance(value, Ragged):
        values, offsets = value.rebased()
        values = np.ascontiguousarray(values, dtype=info.dtype).reshape(-1, *info.shape)
        return Ragged(values, offsets)
    return np.ascontiguousarray(value, dtype=info.dtype)


# --------------------------------------------------------------------- Parquet
class ParquetReader(SourceReader):
    """Columns of a Parquet file, read with awkward (pyarrow) one row group at a time.

    Keys are the columns; a record column's members are keys too, with dotted paths
    (``jets.pt`` of ``jets: var * {pt, eta}``).  Rows ``[start, stop)`` are read from the
    row groups that hold them, all keys of one call at once, and the last row groups read
    are kept for the next call (blocks rarely align with row groups).
    """

    format = "parquet"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            import awkward as ak
        except ModuleNotFoundError:
            raise missing_dependency("awkward", "parquet") from None
        try:
            import pyarrow.parquet  # noqa: F401  (awkward reads Parquet through pyarrow)
        except ModuleNotFoundError:
            raise missing_dependency("pyarrow", "parquet") from None
        try:
            meta = ak.metadata_from_parquet(str(path))
        except Exception as exc:
            raise _open_failed(path, "Parquet", exc) from exc
        self._form = meta["form"]
        self.n_rows = int(meta["num_rows"])
        counts = [int(c) for c in (meta.get("col_counts") or [self.n_rows])]
        self._group_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._paths: dict[str, tuple[str, ...]] = {}
        self._walk(self._form, ())
        self._cache: tuple[tuple[int, ...], tuple[str, ...], Any] | None = None

    def _walk(self, form: Any, path: tuple[str, ...]) -> None:
        import awkward as ak

        inner = _strip_form(form)
        while isinstance(inner, (ak.forms.ListOffsetForm, ak.forms.ListForm, ak.forms.RegularForm)):
            inner = _strip_form(inner.content)
        if path:
            self._paths[".".join(path)] = path
        if isinstance(inner, ak.forms.RecordForm) and inner.parameter("__array__") is None:
            for member in inner.fields:
                self._walk(inner.content(member), (*path, member))

    def names(self) -> list[str]:
        return list(self._paths)

    def _describe(self, name: str) -> KeyInfo:
        info = _info_from_form(name, self.n_rows, _project_form(self._form, self._paths[name]))
        if not info.typename.startswith("record"):
            return info
        members: list[str] = []
        skipped: list[tuple[str, str]] = []
        for key in self.names():
            if key.startswith(name + "."):
                sub = self.info(key)
                if sub.dtype is not None:
                    members.append(key)
                elif not sub.record:
                    skipped.append((key, sub.typename))
        return replace(info, members=tuple(members), skipped=tuple(skipped))

    def counter(self, name: str) -> str | None:
        parts = self._paths[name]
        for i in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:i])
            if _is_list_form(_project_form(self._form, parts[:i])):
                return parent
        return None

    def _rows(self, names: Sequence[str], start: int, stop: int) -> Any:
        import awkward as ak

        starts = self._group_starts
        n_groups = len(starts) - 1
        # the row groups holding rows [start, stop): from the one holding ``start`` to the one
        # holding ``stop - 1`` (one group for an empty range, none for an empty file)
        first = min(int(np.searchsorted(starts, start, side="right")) - 1, n_groups - 1)
        last = int(np.searchsorted(starts, max(stop - 1, start), side="right"))
        groups = tuple(range(max(first, 0), min(max(last, first + 1), n_groups)))
        columns = tuple(sorted(set(names)))
        if (
            self._cache is None
            or self._cache[0] != groups
            or not set(columns) <= set(self._cache[1])
        ):
            array = ak.from_parquet(str(self.path), columns=list(columns), row_groups=list(groups))
            self._cache = (groups, columns, array)
        array = self._cache[2]
        base = int(starts[groups[0]]) if groups else 0
        return array[start - base : stop - base]

    def read(self, names: Sequence[str], start: int, stop: int) -> dict[str, np.ndarray | Ragged]:
        for name in names:
            if self.info(name).dtype is None:
                raise SourceKeyError(f"key {name!r} of {self.what} is a record; read its members")
        try:
            rows = self._rows(names, start, stop)
        except Exception as exc:
            raise SourceFileError(
                f"cannot read rows {start}..{stop} of {self.what}: {type(exc).__name__}: {exc}"
            ) from exc
        out: dict[str, np.ndarray | Ragged] = {}
        for name in names:
            array = rows
            for part in self._paths[name]:
                array = array[part]
            try:
                out[name] = _from_awkward(array, self.info(name), self.what)
            except FastloadError as exc:
                raise SourceFileError(
                    f"rows {start}..{stop} (entries counted from {start}): {exc}"
                ) from exc
        return out

    def close(self) -> None:
        self._cache = None


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
