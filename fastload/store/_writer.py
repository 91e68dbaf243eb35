"""Streaming, atomic writer of format-v1 stores.

Invariants
----------
* Memory is bounded by one appended block plus less than one chunk per column:
  whole chunks are written as soon as they are complete, only the tail waits
  (see :class:`~fastload.store._columns.ChunkedColumn`).
* A local store is written under a hidden temporary name beside the target
  (see :mod:`fastload.store._paths`) and renamed into place by
  :meth:`StoreWriter.close`; on any error the temporary directory is removed.
  An existing store being replaced stays in place until the new one is complete.
* The schema's ``complete`` flag is written last, so even a store written in
  place (remote URLs) never looks complete when it is not.
* Every block is validated before anything of it is written: field set, equal
  lengths, shape, dtype (safe casts only), and finiteness of float fields.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

import numpy as np
import zarr

from fastload import _validate
from fastload._version import __version__
from fastload.errors import (
    ConfigError,
    EmptyDatasetError,
    SchemaError,
    StoreWriteError,
)
from fastload.store._awkward import fields_from_awkward, is_awkward
from fastload.store._columns import ChunkedColumn
from fastload.store._layout import ArrayLayout, StoreLayout
from fastload.store._paths import is_remote, local_path
from fastload.store._placement import (
    Identity,
    install,
    refuse_existing,
    remove_stale_temporaries,
    require_fsspec,
    store_identity,
    temporary_path,
)
from fastload.store._provenance import now_iso, source_entry
from fastload.store._ragged import Ragged
from fastload.store._schema import (
    ATTR_KEY,
    CONSTANTS_GROUP,
    DEFAULT_CHUNK_BYTES,
    FORMAT_VERSION,
    ROLES,
    SHARDED_FORMAT_VERSION,
    STORABLE_KINDS,
    FieldInfo,
    Schema,
    SplitInfo,
    check_task,
    new_store_id,
)
from fastload.store._shards import shard_array

#: ``{field: array | Ragged | ak.Array}``, or an ``ak.Array`` of records (see StoreWriter.append);
#: ``Any`` because awkward is optional and never imported to type a block
Block = Any

#: Names that would collide with Zarr's own metadata file.
_RESERVED_NAMES = ("zarr.json",)


def _check_name(kind: str, name: object, path: str, error: type[Exception] = SchemaError) -> str:
    """Split, field and constant names become directory names: keep them plain."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or name in _RESERVED_NAMES
    ):
        raise error(
            f"invalid {kind} name {name!r} for store {path!r}: use a non-empty string without "
            f"'/' or '\\', not starting with '.', and not one of {_RESERVED_NAMES}"
        )
    return name


def _declarations(
    fields: Mapping[str, Mapping[str, Any]] | None, path: str
) -> dict[str, dict[str, Any]]:
    """The ``fields=`` option, checked: plain names and known roles."""
    declared = {k: dict(v) for k, v in (fields or {}).items()}
    for fname, decl in declared.items():
        _check_name("field", fname, path, ConfigError)
        role = decl.get("role", "input")
        if role not in ROLES:
            raise ConfigError(
                f"fields[{fname!r}]: role must be one of {ROLES}, got {role!r} (store {path!r})"
            )
    return declared


def _expand_awkward(block: Block, where: str) -> dict[str, np.ndarray | Ragged]:
    """``block`` with each ``ak.Array`` replaced by its fields (see fields_from_awkward)."""
    if is_awkward(block):  # a whole block as one record array: its members are the fields
        if not block.fields:
            raise SchemaError(
                f"{where}: a block given as an ak.Array must be a record array (its members "
                f"become the fields), got {block.type}; give {{name: array}} instead"
            )
        return fields_from_awkward("", block, where=where)
    if not isinstance(block, Mapping):
        raise SchemaError(
            f"{where}: a block is {{field: array | Ragged | ak.Array}} or an ak.Array of "
            f"records, got {type(block).__name__}"
        )
    if not any(is_awkward(v) for v in block.values()):
        return dict(block)
    out: dict[str, np.ndarray | Ragged] = {}
    origin: dict[str, str] = {}
    for key, value in block.items():
        parts = (
            fields_from_awkward(key, value, where=f"field {key!r} of {where}")
            if is_awkward(value)
            else {key: value}
        )
        for name, part in parts.items():
            if name in out:
                raise SchemaError(
                    f"{where}: the block's {origin[name]!r} and {key!r} both give field {name!r} "
                    "(a record member's field is named by fastload.store.field_name of "
                    "'parent.member'); rename one of them"
                )
            out[name], origin[name] = part, key
    return out


def _mean_rows(block: Mapping[str, Any]) -> dict[str, float]:
    """Mean value rows per sample of each non-empty ragged field of ``block``."""
    return {
        name: (int(v.offsets[-1]) - int(v.offsets[0])) / len(v)
        for name, v in block.items()
        if isinstance(v, Ragged) and len(v)
    }


@dataclass(frozen=True)
class _Header:
    """What a store says about itself besides its data (checked options of create_store)."""

    name: str
    task: str
    labels: list[str]
    declared: dict[str, dict[str, Any]]
    converter: str | None
    converter_version: str | None


class StoreOptions(TypedDict, total=False):
    """The keyword options of :func:`create_store` (meanings and defaults there), typed."""

    name: str | None
    task: str
    codec: str
    clevel: int
    shuffle: str
    chunk_bytes: int
    chunk_len: int | Mapping[str, int] | None
    shard_chunks: int | None
    value_chunk_len: int | Mapping[str, int] | None
    fields: Mapping[str, Mapping[str, Any]] | None
    labels: Iterable[str]
    converter: str | None
    converter_version: str | None
    overwrite: bool
    allow_nonfinite: bool


class _ValueColumn:
    """A ragged field's ``values`` column, whose chunk length waits for sample chunk 0's rows.

    Rows appended before :meth:`settle` are held (copied: the caller may reuse its
    block); ``settle(rows)`` creates the real column with the value chunk length
    ``make_column(rows)`` chooses and passes them on.  The store is so a function of
    its data and ``chunk_len`` alone, however the samples were split into blocks.
    """

    def __init__(self, make_column: Callable[[int], ChunkedColumn]) -> None:
        self._make_column = make_column
        self.column: ChunkedColumn | None = None
        self._held: list[np.ndarray] = []
        self.total = 0  # rows appended so far, held or passed on

    def settle(self, event_chunk_rows: int) -> None:
        """Fix the chunk length from the rows of sample chunk 0 (idempotent)."""
        if self.column is not None:
            return
        self.column = self._make_column(int(event_chunk_rows))
        for rows in self._held:
            self.column.append(rows)
        self._held = []

    def append(self, rows: np.ndarray) -> None:
        if self.column is None:
            self._held.append(np.array(rows, copy=True))
        else:
            self.column.append(rows)
        self.total += len(rows)

    def flush(self) -> None:
        self.settle(self.total)  # fewer samples than one chunk: all of them are chunk 0
        assert self.column is not None
        self.column.flush()


class _SplitWriter:
    """Columns of one split: dense fields, ragged values + offsets."""

    def __init__(self, group: zarr.Group, chunk_len: int, arrays: list[ArrayLayout]) -> None:
        self.group = group
        self.chunk_len = chunk_len
        self.arrays = {a.key: a for a in arrays}  # values' chunk lengths updated on settling
        self.n = 0
        self.dense: dict[str, ChunkedColumn] = {}
        self.values: dict[str, _ValueColumn] = {}
        self.offsets: dict[str, ChunkedColumn] = {}
        self.max_len: dict[str, int] = {}

    def columns(self) -> list[ChunkedColumn | _ValueColumn]:
        return [*self.dense.values(), *self.values.values(), *self.offsets.values()]

    def flush(self) -> None:
        for col in self.columns():
            col.flush()


class StoreWriter:
    """Write a store block by block.

    Open one with :func:`create_store`, which checks and documents the options.
    """

    def __init__(
        self,
        path: str,
        layout: StoreLayout,
        header: _Header,
        *,
        overwrite: bool,
        allow_nonfinite: bool,
    ) -> None:
        self._state = "init"  # init -> open -> closed | aborted
        self.path = path
        self._layout = layout  # the fields join it once the first block has fixed them
        self.name = header.name
        self.task = header.task
        self.labels = list(header.labels)
        self._declared = header.declared
        self.allow_nonfinite = allow_nonfinite
        self.store_id = new_store_id()
        self._shuffles: dict[str, str] = {}  # array path -> what shuffle="auto" chose
        self._shards: dict[str, int] = {}  # array path -> chunks per shard (sharded arrays)
        self._fields: dict[str, FieldInfo] = {}
        self._splits: dict[str, _SplitWriter] = {}
        self._sources: list[dict[str, Any]] = []
        self._source_meta: dict[str, Any] = {
            "converter": header.converter,
            "converter_version": header.converter_version,
            "fastload_version": __version__,
        }
        self._overwrite = bool(overwrite)
        self._remote = is_remote(self.path)
        if self._remote and layout.shard_chunks:
            raise ConfigError(
                f"shard_chunks={layout.shard_chunks} for {self.path!r}: sharding is done on a "
                "local store only (it packs the chunk files before the store is renamed into "
                "place); write the store locally and upload it, or pass shard_chunks=0"
            )
        self._target: Path | None = None if self._remote else local_path(self.path)
        self._tmp: Path | None = None
        self._seen: Identity = None  # the store at the target when this writer started
        self._prepare_location()
        try:
            self._root = zarr.open_group(self._write_url, mode="w")
            self._root.attrs[ATTR_KEY] = self._schema(complete=False).to_json()
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError):
                raise StoreWriteError(f"cannot write store {self.path!r}: {exc}") from exc
            raise
        self._state = "open"

    # ------------------------------------------------------------------ setup
    def _prepare_location(self) -> None:
        from fastload.store._reader import probe_store

        require_fsspec(self.path)
        refuse_existing(probe_store(self.path), self.path, overwrite=self._overwrite)
        if self._remote:
            self._write_url = self.path
            return
        assert self._target is not None
        parent = self._target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(
                f"cannot create the directory {str(parent)!r} for store {self.path!r}: {exc}"
            ) from exc
        if not os.access(parent, os.W_OK):
            raise StoreWriteError(
                f"cannot write store {self.path!r}: directory {str(parent)!r} is not writable"
            )
        self._seen = store_identity(self._target)
        remove_stale_temporaries(self._target)
        self._tmp = temporary_path(self._target)
        self._write_url = str(self._tmp)

    # --------------------------------------------------------------- writing
    def add_source(self, path: str | os.PathLike[str], *, checksum: str = "sha256") -> None:
        """Record a source file (path, name, size, checksum) in the store's provenance.

        Parameters
        ----------
        path
            A readable local file.
        checksum
            Any :func:`hashlib.new` algorithm name; the digest is stored under that key.
        """
        self._check_open()
        self._sources.append(source_entry(path, checksum))

    def put_constant(self, name: str, value: np.ndarray) -> None:
        """Store a small per-dataset array (station positions, fitted statistics, ...).

        Constants live in the root's ``constants`` group, written whole (no streaming).
        """
        self._check_open()
        _check_name("constant", name, self.path)
        arr = np.asarray(value)
        if arr.dtype.kind not in STORABLE_KINDS:
            raise SchemaError(
                f"constant {name!r} of {self.path!r}: dtype {arr.dtype} cannot be stored; "
                "use a bool, integer, float or complex array"
            )
        group = self._root.require_group(CONSTANTS_GROUP)
        group.create_array(name, data=arr.astype(arr.dtype.newbyteorder("<")), overwrite=True)

    def append(self, split: str, block: Block) -> None:
        """Append a block of samples to ``split``; every field of the store must be present.

        Parameters
        ----------
        split
            Split name (``"train"``, ``"val"``, ``"test"``, ...); created on first use.
        block
            ``{field: array}`` with equal leading lengths; dense fields are arrays
            ``(m, *shape)``, ragged fields are :class:`~fastload.Ragged`.  An ``ak.Array``
            becomes the fields of :func:`fastload.store.fields_from_awkward`: numbers and
            fixed-size lists a dense field, one level of variable-length lists a ragged
            field, a record one field per member named ``field_name("NAME.member")``
            (``jets.pt`` -> ``jets_pt``); the whole block may be an ``ak.Array`` of
            records, whose members are then the fields.  The first block fixes the field set, per-sample
            shapes and dtypes (unless declared).  The writer copies what it keeps, so the
            caller may reuse its buffers.

        Raises
        ------
        SchemaError
            The block disagrees with the store's fields (names, lengths, shapes, dtypes), or
            an ``ak.Array`` holds what a store cannot (strings, None, lists of lists).
        NonFiniteError
            A float field holds NaN or inf and ``allow_nonfinite`` is not set.
        """
        self._check_open()
        _check_name("split", split, self.path)
        if split == CONSTANTS_GROUP:
            raise SchemaError(f"split name {split!r} is reserved for constants in {self.path!r}")
        block = _expand_awkward(block, f"split {split!r} of {self.path!r}")
        if not block:
            raise SchemaError(f"split {split!r} of {self.path!r}: empty block (no fields)")
        m = self._block_length(split, block)
        # the first block fixes the fields only once it has passed validation
        fields = self._fields or self._infer_fields(block)
        missing = set(fields) - set(block)
        extra = set(block) - set(fields)
        if missing or extra:
            raise SchemaError(
                f"split {split!r} of {self.path!r}: block fields {sorted(block)} differ from the store's "
                f"{sorted(fields)} (missing {sorted(missing)}, unexpected {sorted(extra)})"
            )
        prepared = {
            k: fields[k].conform(
                v,
                where=f"field {k!r} of split {split!r} in {self.path!r}",
                allow_nonfinite=self.allow_nonfinite,
            )
            for k, v in block.items()
        }
        if not self._fields:
            self._fields = fields
            self._layout = self._layout.with_fields(fields)
        if m == 0:
            return
        sw = self._split_writer(split, prepared)
        for fname, data in prepared.items():
            if isinstance(data, Ragged):  # rebased by conform: offsets start at 0
                values_col, offsets_col = sw.values[fname], sw.offsets[fname]
                offsets_col.append(data.offsets[1:] + values_col.total)
                if sw.n + m >= sw.chunk_len:  # sample chunk 0 is complete: its rows are known
                    first = max(0, sw.chunk_len - sw.n)
                    values_col.settle(values_col.total + int(data.offsets[first]))
                values_col.append(data.values)
                sw.max_len[fname] = max(sw.max_len[fname], int(data.counts.max(initial=0)))
            else:
                sw.dense[fname].append(data)
        sw.n += m

    def _block_length(self, split: str, block: Block) -> int:
        lengths: dict[str, int] = {}
        for k, v in block.items():
            if isinstance(v, Ragged):
                lengths[k] = len(v)
            elif np.ndim(v) == 0:
                raise SchemaError(
                    f"field {k!r} of split {split!r} in {self.path!r} is a scalar; dense fields "
                    "need a leading sample axis (shape (m, ...))"
                )
            else:
                lengths[k] = int(np.shape(v)[0])
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise SchemaError(
                f"split {split!r}: fields have unequal lengths ({detail}) in {self.path!r}"
            )
        return next(iter(lengths.values()))

    def _infer_fields(self, block: Block) -> dict[str, FieldInfo]:
        fields: dict[str, FieldInfo] = {}
        for fname, value in block.items():
            _check_name("field", fname, self.path)
            decl = self._declared.get(fname, {})
            ragged = isinstance(value, Ragged)
            sample = value.values if ragged else np.asarray(value)
            shape = tuple(int(s) for s in decl.get("shape", sample.shape[1:]))
            dtype = np.dtype(decl.get("dtype", sample.dtype))
            if dtype.kind not in STORABLE_KINDS:
                raise SchemaError(
                    f"field {fname!r} of {self.path!r}: dtype {dtype} cannot be stored; "
                    "use bool, integer, float or complex arrays"
                )
            fields[fname] = FieldInfo(
                name=fname,
                shape=shape,
                dtype=dtype.newbyteorder("<"),  # stores are little-endian whatever the host
                role=str(
                    decl.get("role", "label" if fname in ("y", "label", "labels") else "input")
                ),
                ragged=ragged,
                doc=str(decl.get("doc", "")),
            )
        undeclared = set(self._declared) - set(fields)
        if undeclared:
            raise SchemaError(
                f"declared fields {sorted(undeclared)} are missing from the data for {self.path!r}"
            )
        return fields

    def _split_writer(self, split: str, first_block: Mapping[str, Any]) -> _SplitWriter:
        if split in self._splits:
            return self._splits[split]
        chunk_len = self._layout.split_chunk_len(split, _mean_rows(first_block))
        group = self._root.create_group(split)
        sw = _SplitWriter(group, chunk_len, self._layout.arrays(split, chunk_len))
        for array in list(sw.arrays.values()):
            parent = group if not array.part else group.require_group(array.field)
            if array.part == "values":
                sw.values[array.field] = _ValueColumn(self._value_column(split, sw, parent, array))
            else:
                columns = sw.dense if not array.part else sw.offsets
                columns[array.field] = self._column(parent, array)
        for fname in sw.offsets:
            sw.offsets[fname].append(np.zeros(1, dtype=np.int64))  # offsets start at 0
            sw.max_len[fname] = 0
        self._splits[split] = sw
        return sw

    def _value_column(
        self, split: str, sw: _SplitWriter, group: zarr.Group, array: ArrayLayout
    ) -> Callable[[int], ChunkedColumn]:
        """What makes ``array``'s column once the rows of sample chunk 0 are known."""

        def make(event_chunk_rows: int) -> ChunkedColumn:
            rows = {array.field: float(event_chunk_rows)}
            settled = next(
                a for a in self._layout.arrays(split, sw.chunk_len, rows) if a.key == array.key
            )
            sw.arrays[array.key] = settled
            return self._column(group, settled)

        return make

    def _column(self, group: zarr.Group, array: ArrayLayout) -> ChunkedColumn:
        """A column whose array is created when its first chunk is known (for ``shuffle="auto"``)."""

        def make_array(first_chunk: np.ndarray) -> zarr.Array:
            shuffle = self._layout.shuffle_for(array, first_chunk)
            if self._layout.shuffle == "auto":
                self._shuffles[array.key] = shuffle
            return self._layout.create_array(group, array, 0, shuffle)

        return ChunkedColumn(make_array, array.chunk_len, array.row_shape, array.dtype)

    # -------------------------------------------------------------- finishing
    def _schema(self, *, complete: bool) -> Schema:
        splits = {
            k: SplitInfo(k, sw.n, sw.chunk_len, dict(sw.max_len)) for k, sw in self._splits.items()
        }
        source = {**self._source_meta, "files": list(self._sources), "created": now_iso()}
        return Schema(
            format=SHARDED_FORMAT_VERSION if self._shards else FORMAT_VERSION,
            name=self.name,
            task=self.task,
            fields=self._fields,
            splits=splits,
            labels=self.labels,
            source=source,
            complete=complete,
            codec=self._layout.codec_record(self._shuffles, self._shards),
            store_id=self.store_id,
        )

    def close(self) -> str:
        """Flush, mark complete and move the store into place.

        Returns
        -------
        str
            The store's path, as given.

        Raises
        ------
        EmptyDatasetError
            No block held any sample; nothing is written.
        StoreExistsError
            Another writer put a complete store at the path meanwhile (and ``overwrite``
            is not set), or, with ``overwrite``, replaced the store this writer started
            from: one of two racing writers wins, the other's data are discarded.
        """
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise StoreWriteError(f"the writer for {self.path!r} was aborted; nothing was written")
        try:
            if not self._splits:
                raise EmptyDatasetError(
                    f"no samples were written to {self.path!r}; refusing to create an empty store"
                )
            for split, sw in self._splits.items():
                sw.flush()
                self._shard(split, sw)
                sw.group.attrs[ATTR_KEY] = SplitInfo(
                    split, sw.n, sw.chunk_len, dict(sw.max_len)
                ).to_json()
            self._root.attrs[ATTR_KEY] = self._schema(complete=True).to_json()
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.path

    def _shard(self, split: str, sw: _SplitWriter) -> None:
        """Pack the split's arrays that are to be sharded (local stores; see _shards.py)."""
        if self._remote:
            return  # written in place: no packing pass (shard_chunks > 0 was refused)
        assert self._tmp is not None
        rows = {
            **{f"{split}/{f}": c.total for f, c in sw.dense.items()},
            **{f"{split}/{f}/values": c.total for f, c in sw.values.items()},
            **{f"{split}/{f}/offsets": c.total for f, c in sw.offsets.items()},
        }
        for key, factor in self._layout.shard_factors(sw.arrays.values(), rows).items():
            shard_array(self._tmp / key, factor)
            self._shards[key] = factor

    def _commit(self) -> None:
        if self._remote:
            return
        assert self._target is not None
        assert self._tmp is not None
        install(self._tmp, self._target, self.path, overwrite=self._overwrite, seen=self._seen)

    def abort(self) -> None:
        """Discard everything written so far (idempotent; a closed store is kept)."""
        if self._state in ("closed", "aborted"):
            return
        self._state = "aborted"
        self._discard()

    def _discard(self) -> None:
        if self._remote:
            # in-place remote writes stay marked incomplete; remove what we can
            with contextlib.suppress(Exception):
                zarr.open_group(self.path, mode="w")
            return
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _check_open(self) -> None:
        if self._state != "open":
            raise SchemaError(f"the writer for {self.path!r} is {self._state}; open a new one")

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # a writer dropped without close() must not leave a half-written temporary behind
        with contextlib.suppress(Exception):
            if getattr(self, "_state", "closed") == "open":
                self.abort()


def create_store(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    task: str = "classification",
    codec: str = "lz4",
    clevel: int = 5,
    shuffle: str = "auto",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    chunk_len: int | Mapping[str, int] | None = None,
    shard_chunks: int | None = None,
    value_chunk_len: int | Mapping[str, int] | None = None,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Iterable[str] = (),
    converter: str | None = None,
    converter_version: str | None = None,
    overwrite: bool = False,
    allow_nonfinite: bool = False,
) -> StoreWriter:
    """Open a streaming writer for a new store at ``path``.

    Parameters
    ----------
    path
        Target directory (``NAME.zarr``), ``file://`` URL, or fsspec URL (written in
        place; needs ``fastload[s3]``).
    name
        Dataset name; default: the directory name without ``.zarr``.
    task
        ``"classification"`` or ``"regression"``.
    codec, clevel
        Blosc compressor (``"lz4"``, ``"zstd"``, ``"blosclz"``, ``"zlib"``) and level (0-9).
    shuffle
        ``"auto"`` (default: per array, byte shuffle only where it shrinks the array's
        first chunk by more than 10% with lz4/blosclz, or at all with zstd/zlib, since
        unshuffling doubles LZ4's decode time), ``"byte"``, ``"bit"`` or ``"none"``.
    chunk_bytes
        Upper bound on the uncompressed bytes of a chunk (default 4 MiB).
    chunk_len
        Samples per chunk, an int or ``{split: int}``; overrides ``chunk_bytes``.
    shard_chunks
        Zarr v3 sharding, chunks per shard file: ``None`` (default) shards each array of
        more than 10 000 chunks by 64 (``fastload.store._shards.SHARD_THRESHOLD``,
        ``DEFAULT_SHARD_CHUNKS``), ``0`` never shards, ``N >= 1`` shards every array by
        ``N``.  A store with a sharded array is format 2 (docs/store-format.md).  Local
        stores only: a URL target is written unsharded, and ``N >= 1`` there is an error.
    value_chunk_len
        Rows per chunk of the ragged fields' ``values``, an int or ``{field: int}``.  By
        default each split's value chunks are sized from the field's rows in sample
        chunk 0: a quarter of them rounded down to a power of two, within
        512 KiB..``chunk_bytes`` (docs/store-format.md), so that reading a sample chunk
        decodes few rows it does not need.
    fields
        Declarations ``{name: {"role", "doc", "dtype", "shape"}}``; undeclared fields
        take their dtype and shape from the first block.
    labels
        Class names (index = label value).
    converter, converter_version
        Recorded in the provenance.
    overwrite
        Replace a complete store at ``path`` (never anything that is not a store).
    allow_nonfinite
        Store NaN and inf instead of raising :class:`~fastload.errors.NonFiniteError`.

    Returns
    -------
    StoreWriter
        Use as a context manager: the store appears at ``path`` only when the block exits
        without an exception.

    Raises
    ------
    ConfigError
        An option is invalid (the message names it).
    StoreExistsError
        A complete store exists at ``path`` (and ``overwrite`` is not set), or ``path``
        holds something that is not a fastload store.
    StoreWriteError
        The location cannot be written.
    ModuleNotFoundError
        ``path`` is a URL and fsspec is missing (the message names ``fastload[s3]``).
    """
    text = os.fspath(path)
    with _validate.on_behalf_of("fl.create_store"):
        layout = StoreLayout(
            codec=codec,
            clevel=clevel,
            shuffle=shuffle,
            chunk_bytes=chunk_bytes,
            chunk_len=chunk_len,
            shard_chunks=shard_chunks,
            value_chunk_len=value_chunk_len,
        )
        header = _Header(
            name=name or Path(text.rstrip("/")).name.removesuffix(".zarr"),
            task=check_task(task),
            labels=[str(x) for x in labels],
            declared=_declarations(fields, text),
            converter=converter,
            converter_version=converter_version,
        )
        overwrite = _validate.flag(overwrite, name="overwrite")
        allow_nonfinite = _validate.flag(allow_nonfinite, name="allow_nonfinite")
    return StoreWriter(text, layout, header, overwrite=overwrite, allow_nonfinite=allow_nonfinite)


def write_arrays(
    path: str | os.PathLike[str],
    splits: Mapping[str, Block],
    **options: Unpack[StoreOptions],
) -> str:
    """Write whole in-memory arrays as a store in one call.

    Parameters
    ----------
    path
        Target location, as for :func:`create_store`.
    splits
        ``{split: {field: array | Ragged | ak.Array}}`` (an ``ak.Array`` as for
        :meth:`StoreWriter.append`).
    **options
        The keyword options of :func:`create_store` (:class:`StoreOptions`): ``name``,
        ``task``, ``codec``, ``clevel``, ``shuffle``, ``chunk_bytes``, ``chunk_len``,
        ``shard_chunks``, ``value_chunk_len``,
        ``fields``, ``labels``, ``converter``, ``converter_version``, ``overwrite``,
        ``allow_nonfinite``.

    Returns
    -------
    str
        The store's path.

    Raises
    ------
    TypeError
        An unknown option.
    ConfigError, StoreExistsError, StoreWriteError, SchemaError, NonFiniteError
        As for :func:`create_store` and :meth:`StoreWriter.append`.
    """
    with create_store(path, **options) as writer:
        for split, block in splits.items():
            writer.append(split, block)
    return writer.path
