"""Open and validate format-v1 stores: :func:`open_store`, :class:`Store`, :class:`Split`.

A :class:`Store` is built only after :func:`open_store` has checked the schema
against the arrays (cheap checks: metadata, the last chunk file of each array
and at most two offsets per ragged field), so code holding a handle can trust
``len(split)``, ``split.chunk_len`` and the fields' shapes and dtypes.  A ragged
field's offsets (and its recorded ``max_len``) are verified in full when a split
first reads them.  Metadata and chunks are read only as regular files inside the
store (:mod:`fastload.store._files`); chunks decode through
:mod:`fastload.store._decoder`.  Handles pickle by location: a worker process
re-opens (and re-validates) the store instead of receiving arrays.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import zarr

from fastload._messages import closest
from fastload.errors import (
    ConfigError,
    CorruptStoreError,
    FastloadError,
    FieldNotFoundError,
    IncompleteStoreError,
    SplitNotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from fastload.store._cache import DEFAULT_CACHE_BYTES, ChunkCache
from fastload.store._decoder import ChunkDecoder, RaggedDecoder
from fastload.store._files import MAX_METADATA_BYTES, StoreFiles
from fastload.store._paths import (
    canonical,
    is_remote,
    leftover_temporaries,
    local_path,
    zarr_location,
)
from fastload.store._ragged import Ragged
from fastload.store._schema import (
    ATTR_KEY,
    CONSTANTS_GROUP,
    READ_FORMATS,
    FieldInfo,
    Schema,
    SplitInfo,
)

log = logging.getLogger(__name__)


def _read_metadata(files: StoreFiles, key: str) -> dict[str, Any] | None:
    """The JSON of metadata file ``key`` (a regular file inside the store), or None if absent."""
    raw = files.read(key, MAX_METADATA_BYTES)
    if raw is None:
        return None
    try:
        meta = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptStoreError(f"{files.where(key)} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CorruptStoreError(f"{files.where(key)} is not a JSON object")
    return meta


def _read_root_attrs(files: StoreFiles) -> dict[str, Any] | None:
    """The root group's attributes, or None when there is no Zarr v3 group at the store's root.

    Raises what reading raises: a missing optional package (fsspec), an
    unreachable endpoint, a root ``zarr.json`` that is not a regular file.
    """
    try:
        meta = _read_metadata(files, "zarr.json")
    except CorruptStoreError:
        if files.exists("zarr.json"):  # a regular file holding garbage: not a group
            return None
        raise
    if meta is None or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def _files(path: str, cache: ChunkCache | None = None) -> StoreFiles:
    return StoreFiles(path, cache=cache)


def probe_store(path: str | os.PathLike[str]) -> str:
    """Classify what is at ``path`` without validating arrays.

    Returns
    -------
    str
        ``"missing"`` (nothing, or an empty directory), ``"complete"`` or
        ``"incomplete"`` (a fastload store by its ``complete`` flag), or
        ``"foreign"`` (a file, or a directory that is not a fastload store).
    """
    text = os.fspath(path)
    if not is_remote(text) and not local_path(text).exists():
        return "missing"
    if not is_remote(text) and not local_path(text).is_dir():
        return "foreign"
    files = _files(text)
    try:
        attrs = _read_root_attrs(files)
    except CorruptStoreError:  # e.g. zarr.json is a symlink or a FIFO: not one of ours
        return "foreign"
    finally:
        files.close()
    if attrs is None:
        if is_remote(text):
            return "missing"
        local = local_path(text)
        return "foreign" if local.is_file() or any(local.iterdir()) else "missing"
    meta = attrs.get(ATTR_KEY)
    if not isinstance(meta, dict):
        return "foreign"
    return "complete" if meta.get("complete") else "incomplete"


class Split:
    """One split of a store: ``len(split)`` samples in chunks of ``split.chunk_len``.

    Dense fields read chunk by chunk (:meth:`read_chunk`); every field reads by
    sample range (:meth:`read`), ragged ones as :class:`~fastload.Ragged`.  A
    split is a :class:`fastload.Source` (``name``, ``len``, ``chunk_len``,
    ``n_chunks``, ``fields``, :meth:`max_len`, :meth:`decoder`; and ``url``),
    what :class:`fastload.Loader` and :class:`fastload.Mix` read.
    """

    def __init__(self, store: Store, info: SplitInfo) -> None:
        self.store = store
        self.info = info
        self.name = info.name

    def __len__(self) -> int:
        return self.info.n

    def __repr__(self) -> str:
        return f"<fastload.Split {self.store.path!r}[{self.name!r}] n={len(self)} fields={list(self.fields)}>"

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # worker processes re-open the store from its path instead of receiving arrays
        return (_open_split, (self.store.path, self.name, self.store.cache))

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.info.n

    def select(self, rows: Any, *, name: str | None = None) -> Any:
        """A filtered view: the samples ``rows`` (a boolean mask or indices), itself a Source.

        E.g. ``split.select(split.read("energy") > 0.61)``; see :class:`fastload.Selection`.
        """
        from fastload._selection import Selection

        return Selection(self, rows, name=name)

    @property
    def url(self) -> str:
        """The store's location (``store.path``), as messages name it."""
        return self.store.path

    @property
    def chunk_len(self) -> int:
        """Samples per chunk, shared by every dense field of the split."""
        return self.info.chunk_len

    @property
    def n_chunks(self) -> int:
        """Sample chunks; the last one may be partial."""
        return -(-self.info.n // self.info.chunk_len)

    @property
    def fields(self) -> dict[str, FieldInfo]:
        """The store's fields (every split has all of them)."""
        return self.store.fields

    def max_len(self, field: str) -> int:
        """Longest sample of a ragged field in this split (0 for a dense field).

        For a ragged field, the recorded value is checked against the offsets
        (read and verified on first use): a wrong one would truncate samples or
        size buffers for samples that do not exist.
        """
        if not self._field(field).ragged:
            return 0
        self.offsets(field)
        return self.info.max_len[field]

    def _field(self, field: str) -> FieldInfo:
        try:
            return self.store.fields[field]
        except KeyError:
            raise FieldNotFoundError(
                f"field {field!r} not in store {self.store.path!r}{closest(field, list(self.store.fields))}"
                f" (fields: {list(self.store.fields)})"
            ) from None

    def reader(self, field: str, part: str | None = None) -> ChunkDecoder:
        """Chunk decoder of a dense field, or of a ragged field's ``"values"`` or ``"offsets"``."""
        info = self._field(field)
        if info.ragged:
            part = part or "values"
            if part not in ("values", "offsets"):
                raise ConfigError(
                    f"ragged field {field!r} has parts 'values' and 'offsets', not {part!r}"
                )
            key = f"{self.name}/{field}/{part}"
        else:
            if part is not None:
                raise ConfigError(
                    f"field {field!r} of {self.store.path!r} is dense; it has no part {part!r}"
                )
            key = f"{self.name}/{field}"
        return self.store._decoder(key)

    def decoder(self, field: str) -> ChunkDecoder | RaggedDecoder:
        """What loader workers decode ``field`` with: chunk ``c`` holds samples of sample chunk ``c``.

        A :class:`~fastload.store.ChunkDecoder` for a dense field; for a ragged
        one a :class:`~fastload.store.RaggedDecoder` over the field's verified
        offsets, with event chunks of ``chunk_len`` samples.  Both pickle small.
        """
        if self._field(field).ragged:
            return RaggedDecoder(self.reader(field, "values"), self.offsets(field), self.chunk_len)
        return self.reader(field)

    def read_chunk(self, field: str, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decode sample chunk ``chunk`` of a dense field.

        Parameters
        ----------
        field
            A dense field.
        chunk
            Chunk index, ``0 <= chunk < n_chunks``.
        out
            Writeable C-contiguous buffer of the field's dtype, shape
            ``(chunk_len, *shape)`` (or more rows); allocated when None.

        Returns
        -------
        numpy.ndarray
            The chunk's valid rows, a view of ``out`` (fewer than ``chunk_len`` for a
            partial last chunk).
        """
        info = self._field(field)
        if info.ragged:
            raise ConfigError(
                f"field {field!r} of {self.store.path!r} is ragged; read_chunk decodes dense fields. "
                f"Use split.read({field!r}, start, stop) for a range of samples"
            )
        return self.reader(field).read_chunk(chunk, out)

    def offsets(self, field: str) -> np.ndarray:
        """The full offsets array ``(n+1,)`` of a ragged field (read once, then cached)."""
        info = self._field(field)
        if not info.ragged:
            raise ConfigError(f"field {field!r} of {self.store.path!r} is dense; it has no offsets")
        key = f"{self.name}/{field}/offsets"
        if key not in self.store._offsets:
            offsets = self.reader(field, "offsets").read_rows(0, self.info.n + 1)
            n_values = self.reader(field, "values").shape[0]
            where = f"store {self.store.path!r}, split {self.name!r}, field {field!r}"
            lengths = np.diff(offsets)
            if offsets[0] != 0 or offsets[-1] != n_values or np.any(lengths < 0):
                raise CorruptStoreError(
                    f"{where}: offsets are not non-decreasing from 0 to {n_values} (the number "
                    f"of values) in {self.store._files.where(key)}; re-convert the store"
                )
            longest = int(lengths.max(initial=0))
            recorded = self.info.max_len.get(field)
            if recorded != longest:
                raise CorruptStoreError(
                    f"{where}: the schema records max_len={recorded} but the longest sample has "
                    f"{longest} rows (offsets in {self.store._files.where(key)}); the store's "
                    "metadata is damaged, re-convert it"
                )
            offsets.flags.writeable = False  # shared by every reader of this split
            self.store._offsets[key] = offsets
        return self.store._offsets[key]

    def read(self, field: str, start: int = 0, stop: int | None = None) -> np.ndarray | Ragged:
        """Samples ``[start, stop)`` of a field (clipped to the split).

        Returns
        -------
        numpy.ndarray or Ragged
            An array ``(stop - start, *shape)``, or for a ragged field a
            :class:`~fastload.Ragged` whose offsets start at 0.
        """
        n = self.info.n
        stop = n if stop is None else min(stop, n)
        start = max(0, min(start, stop))
        info = self._field(field)
        if not info.ragged:
            return self.reader(field).read_rows(start, stop)
        offsets = self.offsets(field)[start : stop + 1]
        values = self.reader(field, "values").read_rows(int(offsets[0]), int(offsets[-1]))
        return Ragged(values, offsets - offsets[0])

    def arrays(self, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray | Ragged]:
        """Every sample of the selected fields (default: all), in memory."""
        return {f: self.read(f) for f in (fields or tuple(self.fields))}


class Store:
    """A validated, read-only handle on a format-v1 store; ``store[split]`` gives a :class:`Split`.

    Build it with :func:`open_store`.
    """

    def __init__(self, path: str, group: zarr.Group, schema: Schema, files: StoreFiles) -> None:
        self.path = path
        self.schema = schema
        self._group = group
        self._files = files
        self._decoders: dict[str, ChunkDecoder] = {}
        self._offsets: dict[str, np.ndarray] = {}

    def _decoder(self, key: str) -> ChunkDecoder:
        if key not in self._decoders:
            self._decoders[key] = ChunkDecoder.of(self._files, key, self._group[key])
        return self._decoders[key]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={s.n}" for k, s in self.schema.splits.items())
        return f"<fastload.Store {self.path!r} name={self.name!r} {sizes}>"

    @property
    def name(self) -> str:
        """Dataset name."""
        return self.schema.name

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.schema.task

    @property
    def labels(self) -> list[str]:
        """Class names (may be empty)."""
        return list(self.schema.labels)

    @property
    def provenance(self) -> dict[str, Any]:
        """Source files with checksums, converter, versions, creation time."""
        return self.schema.source

    @property
    def checksums(self) -> bool:
        """True when every chunk of every field carries a CRC32C verified on read.

        Stores written before checksums were added read unverified (sizes are
        still checked); re-convert them to add checksums.
        """
        return all(d.checksum for d in self._decoders.values() if d.fast)

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names, in the order they were first written."""
        return tuple(self.schema.splits)

    @property
    def fields(self) -> dict[str, FieldInfo]:
        """Fields by name."""
        return self.schema.fields

    @cached_property
    def constants(self) -> Mapping[str, np.ndarray]:
        """Small per-dataset arrays stored beside the splits."""
        if CONSTANTS_GROUP not in self._group:
            return {}
        group = self._group[CONSTANTS_GROUP]
        return {name: np.asarray(arr[...]) for name, arr in group.arrays()}

    def __getitem__(self, split: str) -> Split:
        if split not in self.schema.splits:
            raise SplitNotFoundError(
                f"split {split!r} not in store {self.path!r}{closest(split, list(self.splits))} "
                f"(splits: {list(self.splits)})"
            )
        return Split(self, self.schema.splits[split])

    def __contains__(self, split: object) -> bool:
        return split in self.schema.splits

    def __iter__(self) -> Iterator[str]:
        return iter(self.schema.splits)

    @property
    def cache(self) -> ChunkCache | None:
        """The local chunk cache of a remote store opened with ``cache_dir``, else None."""
        return self._files.cache

    def __reduce__(self) -> tuple[Any, tuple[str, ChunkCache | None]]:
        return (_reopen, (self.path, self.cache))


def _reopen(path: str, cache: ChunkCache | None = None) -> Store:
    return _open_store(canonical(path), cache)


def _open_split(path: str, split: str, cache: ChunkCache | None = None) -> Split:
    return _reopen(path, cache)[split]


def open_store(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_bytes: int | None = None,
) -> Store:
    """Open a store read-only after validating its schema against its arrays.

    Parameters
    ----------
    path
        Local directory, ``file://`` URL or fsspec URL of the store.
    cache_dir
        For a remote (fsspec) store: a local directory that caches the chunks
        read, shared by every Loader, worker and feed of the node that passes it
        (see :mod:`fastload.store._cache`; created with mode 0700).  Ignored for
        local stores.  Metadata is always read from the store.
    cache_bytes
        Size limit of ``cache_dir`` (default 10 GiB); the least recently used
        chunks are evicted past it.

    Returns
    -------
    Store
        A handle whose ``path`` is absolute for local stores.

    Raises
    ------
    StoreNotFoundError
        Nothing exists at ``path`` (the message names a temporary an interrupted
        writer left beside it, if any).
    StoreError
        ``path`` holds something that is not a fastload store.
    UnsupportedFormatError
        The store's format version is unknown to this fastload.
    IncompleteStoreError
        The store was never finished (an interrupted in-place write).
    CorruptStoreError
        An array or group is missing or disagrees with the schema.
    CacheError
        ``cache_dir`` cannot be created or is open to other users
        (:class:`~fastload.errors.CacheFullError`, raised by reads, when its disk is full).
    """
    text = canonical(path)
    cache = None
    if cache_dir is not None:
        if is_remote(text):
            cache = ChunkCache(
                cache_dir, DEFAULT_CACHE_BYTES if cache_bytes is None else cache_bytes
            )
            cache.prepare()  # a directory open to others fails here, not in a worker
        else:
            log.info("store %r is local: cache_dir %r is not used", text, os.fspath(cache_dir))
    elif cache_bytes is not None:
        raise ConfigError("cache_bytes sets the size of cache_dir; pass cache_dir too")
    return _open_store(text, cache)


def _open_store(text: str, cache: ChunkCache | None) -> Store:
    if not is_remote(text) and not local_path(text).exists():
        leftovers = leftover_temporaries(local_path(text))
        hint = (
            f"; an interrupted write left the temporary {str(leftovers[0])!r} — re-run the "
            "conversion (the next writer removes it)"
            if leftovers
            else "; convert the data first (python -m converters ...) or check the path"
        )
        raise StoreNotFoundError(f"no store at {text!r}{hint}")
    if not is_remote(text) and not local_path(text).is_dir():
        raise StoreError(f"{text!r} is not a Zarr v3 group (a file, not a directory)")
    files = _files(text, cache)
    try:
        return _open(text, files)
    except BaseException:
        files.close()
        raise


def _open(text: str, files: StoreFiles) -> Store:
    attrs = _read_root_attrs(files)
    if attrs is None:
        if is_remote(text):
            raise StoreNotFoundError(
                f"no store at {text!r} (no zarr.json there); check the URL, or convert the data first"
            )
        raise StoreError(
            f"{text!r} is not a Zarr v3 group (no readable zarr.json); is it a fastload store?"
        )
    meta = attrs.get(ATTR_KEY)
    if not isinstance(meta, dict):
        raise StoreError(
            f"{text!r} is a Zarr group but not a fastload store (no attrs[{ATTR_KEY!r}])"
        )
    version = meta.get("format")
    if version not in READ_FORMATS or isinstance(version, bool):
        raise UnsupportedFormatError(
            f"store {text!r} has format version {version!r}; this fastload reads versions "
            f"{', '.join(map(str, READ_FORMATS))} "
            "(upgrade fastload or re-convert the data)"
        )
    if not meta.get("complete"):
        raise IncompleteStoreError(
            f"store {text!r} is incomplete (its writer did not finish); delete it and re-run the conversion"
        )
    try:
        schema = Schema.from_json(meta)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CorruptStoreError(
            f"store {text!r} has a malformed schema in {files.where('zarr.json')}: {exc!r}"
        ) from exc
    try:
        group = zarr.open_group(zarr_location(text), mode="r", zarr_format=3)
    except Exception as exc:  # zarr's own errors: the root metadata did not parse as a group
        raise CorruptStoreError(
            f"{files.where('zarr.json')} is not valid Zarr v3 group metadata: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    store = Store(text, group, schema, files)
    _validate_arrays(store)
    if not store.checksums:
        log.info(
            "store %r has no chunk checksums (written before fastload added them): chunk sizes "
            "are checked on read, flipped bits are not detected; re-convert it to add them",
            text,
        )
    return store


def _validate_arrays(store: Store) -> None:
    """Check every split and field against the schema; raise CorruptStoreError on the first mismatch."""
    path, schema = store.path, store.schema
    if not schema.splits:
        raise CorruptStoreError(f"store {path!r} has no splits")
    if not schema.fields:
        raise CorruptStoreError(f"store {path!r} has no fields")
    for split, sinfo in schema.splits.items():
        _validate_split(store, sinfo)
        for finfo in schema.fields.values():
            where = f"store {path!r}, split {split!r}, field {finfo.name!r}"
            if finfo.ragged:
                _validate_ragged(where, store, sinfo, finfo)
            else:
                _validate_dense(where, store, sinfo, finfo)


def _member(store: Store, key: str, kind: type, where: str) -> Any:
    """The group or array at ``key``, its ``zarr.json`` read as a regular file inside the store."""
    what = "array" if kind is zarr.Array else "group"
    meta_key = f"{key}/zarr.json"
    # fastload reads the metadata first, as untrusted input: zarr would follow a symlink
    # or block on a FIFO in its place
    meta = _read_metadata(store._files, meta_key)
    if meta is None:
        raise CorruptStoreError(f"{where}: {what} {key!r} is missing; re-convert the store")
    try:
        node = store._group[key]
    except KeyError:
        node = None
    except Exception as exc:  # zarr's ValueError, UnknownCodecError, TypeError, ...
        raise CorruptStoreError(
            f"{where}: {store._files.where(meta_key)} is not valid Zarr v3 metadata: "
            f"{type(exc).__name__}: {exc}; re-convert the store"
        ) from exc
    if not isinstance(node, kind):
        raise CorruptStoreError(f"{where}: {what} {key!r} is missing; re-convert the store")
    return node


def _array(store: Store, key: str, where: str) -> tuple[zarr.Array, ChunkDecoder]:
    """The array at ``key`` and its decoder; the array's last chunk file must exist."""
    arr = _member(store, key, zarr.Array, where)
    try:
        decoder = store._decoder(key)
    except FastloadError:
        raise
    except Exception as exc:
        raise CorruptStoreError(
            f"{where}: {store._files.where(key + '/zarr.json')} is not usable: "
            f"{type(exc).__name__}: {exc}; re-convert the store"
        ) from exc
    if decoder.fast and decoder.n_chunks > 0:
        # a shape edited to claim more chunks than were written fails here, not when a
        # reader allocates for them
        last = decoder.n_chunks - 1
        if not store._files.exists(decoder.chunk_key(last)):
            # the message a read of that chunk gives: the same damage, the same error
            raise decoder._corrupt(last, "is missing")
    return arr, decoder


def _validate_split(store: Store, sinfo: SplitInfo) -> None:
    where = f"store {store.path!r}, split {sinfo.name!r}"
    if sinfo.n < 1 or sinfo.chunk_len < 1:
        raise CorruptStoreError(
            f"{where}: n={sinfo.n}, chunk_len={sinfo.chunk_len}; both must be >= 1"
        )
    split_group = _member(store, sinfo.name, zarr.Group, where)
    own = split_group.attrs.get(ATTR_KEY)
    if isinstance(own, dict) and (
        own.get("n") != sinfo.n
        or own.get("chunk_len") != sinfo.chunk_len
        or ("max_len" in own and own.get("max_len") != sinfo.max_len)
    ):
        raise CorruptStoreError(
            f"{where}: the split group records n={own.get('n')}, chunk_len={own.get('chunk_len')}, "
            f"max_len={own.get('max_len')} but the root schema says n={sinfo.n}, "
            f"chunk_len={sinfo.chunk_len}, max_len={sinfo.max_len}"
        )


def _check_rows(where: str, arr: zarr.Array, finfo: FieldInfo) -> None:
    if tuple(arr.shape[1:]) != finfo.shape or np.dtype(arr.dtype) != finfo.dtype:
        raise CorruptStoreError(
            f"{where}: array is {np.dtype(arr.dtype)}{tuple(arr.shape[1:])} per sample, "
            f"the schema says {finfo.dtype}{finfo.shape}"
        )


def _validate_dense(where: str, store: Store, sinfo: SplitInfo, finfo: FieldInfo) -> None:
    arr, _ = _array(store, f"{sinfo.name}/{finfo.name}", where)
    _check_rows(where, arr, finfo)
    if arr.shape[0] != sinfo.n:
        raise CorruptStoreError(
            f"{where}: {arr.shape[0]} samples but the split records n={sinfo.n} (field length mismatch)"
        )
    if int(arr.chunks[0]) != sinfo.chunk_len:
        raise CorruptStoreError(
            f"{where}: chunk length {arr.chunks[0]} differs from the split's {sinfo.chunk_len}"
        )


def _validate_ragged(where: str, store: Store, sinfo: SplitInfo, finfo: FieldInfo) -> None:
    key = f"{sinfo.name}/{finfo.name}"
    _member(store, key, zarr.Group, where)
    values, _ = _array(store, f"{key}/values", where)
    offsets, offsets_decoder = _array(store, f"{key}/offsets", where)
    _check_rows(where, values, finfo)
    if offsets.ndim != 1 or np.dtype(offsets.dtype) != np.dtype("<i8"):
        raise CorruptStoreError(
            f"{where}: offsets must be 1-D int64, found {offsets.dtype}{offsets.shape}"
        )
    if offsets.shape != (sinfo.n + 1,):
        raise CorruptStoreError(
            f"{where}: {offsets.shape[0]} offsets for {sinfo.n} samples (expected n+1)"
        )
    # the ends only: a full check reads every offset, done lazily by Split.offsets
    first = int(offsets_decoder.read_rows(0, 1)[0])
    last = int(offsets_decoder.read_rows(sinfo.n, sinfo.n + 1)[0])
    if first != 0 or last != values.shape[0]:
        raise CorruptStoreError(
            f"{where}: offsets run from {first} to {last} but must run from 0 to {values.shape[0]} "
            "(the number of values); ragged offsets are inconsistent"
        )
    recorded = sinfo.max_len.get(finfo.name)
    if not isinstance(recorded, int) or not 0 <= recorded <= values.shape[0]:
        raise CorruptStoreError(
            f"{where}: max_len={recorded!r} is impossible for {values.shape[0]} value rows; the "
            "store's metadata is damaged, re-convert it"
        )
