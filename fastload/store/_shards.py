"""Sharded arrays: many chunks per file, Zarr v3's ``sharding_indexed`` codec.

A store with millions of chunk files (the 20 TB LArIAT sample: ~5 million 4 MiB
chunks) is what shared filesystems and object stores punish: every file costs a
metadata operation, an inode, a request.  A sharded array keeps the same inner
chunks -- the very bytes an unsharded store has in ``c/k/0/..``, codecs
``bytes -> blosc -> crc32c`` -- but packs ``S`` consecutive chunks into one
*shard* file, ``c/{k // S}/0/..``, followed by the shard index: ``S`` pairs of
little-endian uint64 ``(offset, nbytes)`` (``2**64 - 1`` twice for a chunk past
the array's end) and the index's own CRC32C (``index_codecs`` ``bytes`` +
``crc32c``, ``index_location`` ``"end"``).  Any Zarr v3 reader opens it.

Writing (local stores): the writers write chunk files exactly as for an
unsharded store, then :func:`shard_array` (serial) or :func:`stage` +
:func:`pack_shard` + :func:`finish` (parallel tasks) move the chunk directory
aside and pack it into shard files, so a sharded store is a pure function of
its unsharded chunk files: serial and Dask writers give byte-identical shards.

Reading: :class:`ShardReader`, used by
:class:`~fastload.store.ChunkDecoder` for a sharded array, reads and verifies
each shard's index once per shard file version and process (it is a few KiB),
then reads an inner chunk with one ``pread`` at its offset (one ranged GET for
a remote store).  The inner chunk then passes the decoder's usual checks (its
CRC32C, the Blosc header).  A damaged index -- failing its CRC32C, entries
outside the file's data, overlapping each other, larger than a chunk can be, or
missing for a chunk inside the array -- is a
:class:`~fastload.errors.CorruptStoreError` naming the shard file; nothing is
ever read outside the file, and only regular files inside the store are opened
(:mod:`fastload.store._files`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastload.errors import CorruptStoreError, StoreChangedError, StoreWriteError
from fastload.store._files import FileStamp, StoreFiles, _replaced_message, _stamp

#: Chunk files per array above which the writers shard it by default (``shard_chunks=None``).
#: Below it nothing changes (stores stay format 1, readable by any fastload); above it the
#: file count is what hurts: directory listings, inodes and per-file metadata round trips
#: on Lustre/EOS/NFS, one request per object on S3.  10 000 chunks of ~4 MiB is ~40 GB of
#: uncompressed data per array, where a dataset stops being "small".
SHARD_THRESHOLD = 10_000
#: Chunks per shard file when sharding by default: 64 chunks of at most 4 MiB is at most
#: 256 MiB uncompressed per shard (typically 50-150 MB on disk), large enough to cut the file
#: count 64-fold and small enough that a partial epoch or a resumed conversion wastes little.
DEFAULT_SHARD_CHUNKS = 64
#: Index entry of a chunk that is not in the shard (past the array's end).
EMPTY = 2**64 - 1
#: Where the chunk files wait while they are packed into shards (inside the array's directory).
STAGING = ".c-unsharded"
#: Shard indexes a reader keeps (per array and process; least recently used dropped first):
#: 16 B x 64 entries is 1 KiB each, 64 MiB at most.
MAX_CACHED_INDEXES = 1 << 16

_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


def index_nbytes(factor: int) -> int:
    """Bytes of a shard index of ``factor`` chunks: 16 per chunk plus its CRC32C."""
    return 16 * int(factor) + 4


def resolve_shard_chunks(option: int | None, n_chunks: int) -> int:
    """Chunks per shard of an array of ``n_chunks`` chunks under writer option ``option``; 0: not sharded.

    ``None`` (default): :data:`DEFAULT_SHARD_CHUNKS` above :data:`SHARD_THRESHOLD` chunks,
    else 0; ``0``: never; ``N >= 1``: always ``N`` (an array without chunks stays unsharded).
    """
    if n_chunks <= 0:
        return 0
    if option is None:
        return DEFAULT_SHARD_CHUNKS if n_chunks > SHARD_THRESHOLD else 0
    return int(option)


def _crc32c() -> Any:
    from fastload.store._decoder import _crc32c as crc

    return crc()


# ------------------------------------------------------------------ metadata
def sharded_metadata(meta: Mapping[str, Any], factor: int) -> dict[str, Any]:
    """The ``zarr.json`` of an unsharded fastload array ``meta`` once packed ``factor`` chunks per shard.

    The inner chunks keep the array's chunk shape and codecs; the chunk grid becomes the shard shape.
    """
    out = json.loads(json.dumps(meta))  # a deep copy, key order kept
    inner = list(out["chunk_grid"]["configuration"]["chunk_shape"])
    outer = [inner[0] * int(factor), *inner[1:]]
    out["chunk_grid"]["configuration"]["chunk_shape"] = outer
    out["codecs"] = [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": inner,
                "codecs": out["codecs"],
                "index_codecs": json.loads(json.dumps(_INDEX_CODECS)),
                "index_location": "end",
            },
        }
    ]
    return out


def inner_layout(
    meta: Mapping[str, Any], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> tuple[dict[str, Any], tuple[int, ...], int] | None:
    """For a sharded array fastload can read directly: ``(inner metadata, inner chunks, factor)``.

    ``meta`` is the array's ``zarr.json``, ``chunks`` its shard shape.  The inner
    metadata (codecs and chunk key encoding) is for
    :func:`fastload.store._decoder.fast_layout` to judge; None when the array is not
    sharded, or sharded in a way fastload leaves to zarr (another index codec or
    location, shards split along a row axis).
    """
    try:  # zarr's to_dict() gives tuples, zarr.json lists: compare as JSON
        codecs = json.loads(json.dumps(meta.get("codecs", [])))
    except (TypeError, ValueError):
        return None
    if not isinstance(codecs, list) or len(codecs) != 1 or not isinstance(codecs[0], dict):
        return None
    if codecs[0].get("name") != "sharding_indexed":
        return None
    config = codecs[0].get("configuration") or {}
    try:
        inner = tuple(int(c) for c in config["chunk_shape"])
    except (KeyError, TypeError, ValueError):
        return None
    if config.get("index_location", "end") != "end" or config.get("index_codecs") != _INDEX_CODECS:
        return None
    if len(inner) != len(chunks) or not inner or inner[0] < 1 or chunks[0] % inner[0]:
        return None
    if tuple(chunks[1:]) != tuple(inner[1:]):
        return None
    inner_meta = {
        "codecs": config.get("codecs", []),
        "chunk_key_encoding": meta.get("chunk_key_encoding", {}),
    }
    return inner_meta, inner, chunks[0] // inner[0]


# ------------------------------------------------------------------ writing (local)
def _chunk_path(base: Path, k: int, ndim: int) -> Path:
    return base.joinpath(str(k), *("0" for _ in range(ndim - 1)))


def _array_meta(array_dir: Path) -> dict[str, Any]:
    return json.loads((array_dir / "zarr.json").read_text())


def _n_chunks(meta: Mapping[str, Any]) -> tuple[int, int]:
    """``(chunks along axis 0, ndim)`` of an unsharded array's metadata."""
    shape = [int(s) for s in meta["shape"]]
    chunk = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
    return -(-shape[0] // chunk), len(shape)


def stage(array_dir: Path) -> None:
    """Move the array's chunk directory aside (``c`` -> :data:`STAGING`), once; idempotent."""
    chunks, staged = array_dir / "c", array_dir / STAGING
    if staged.exists():
        return
    if chunks.exists():
        os.replace(chunks, staged)
    else:
        staged.mkdir()
    (array_dir / "c").mkdir(exist_ok=True)


def is_staged(array_dir: Path) -> bool:
    """True once :func:`stage` has run on the array (its chunks are being packed)."""
    return (array_dir / STAGING).exists()


def pack_shard(array_dir: Path, shard: int, factor: int) -> None:
    """Write shard ``shard`` of a staged array from its chunk files, then delete them.

    Streams the chunk files into a temporary file and renames it into place, so a
    shard file that exists is whole; a rerun (resumed conversion) skips it.
    """
    meta = _array_meta(array_dir)
    n_chunks, ndim = _n_chunks(meta)
    staged = array_dir / STAGING
    target = _chunk_path(array_dir / "c", shard, ndim)
    members = range(shard * factor, min((shard + 1) * factor, n_chunks))
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        index = np.full((factor, 2), EMPTY, dtype="<u8")
        offset = 0
        try:
            with open(tmp, "wb") as out:
                for j, k in enumerate(members):
                    try:
                        data = _chunk_path(staged, k, ndim).read_bytes()
                    except FileNotFoundError:
                        raise StoreWriteError(
                            f"cannot shard {array_dir}: chunk file {k} is missing from "
                            f"{staged}; rerun the conversion"
                        ) from None
                    out.write(data)
                    index[j] = (offset, len(data))
                    offset += len(data)
                body = index.tobytes()
                out.write(body)
                out.write(int(_crc32c()(body)).to_bytes(4, "little"))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    for k in members:
        _chunk_path(staged, k, ndim).unlink(missing_ok=True)


def n_shards(array_dir: Path, factor: int) -> int:
    """Shard files of an (unsharded or staged) array at ``factor`` chunks per shard."""
    n_chunks, _ = _n_chunks(_array_meta(array_dir))
    return -(-n_chunks // factor)


def finish(array_dir: Path, factor: int) -> None:
    """Rewrite the array's ``zarr.json`` as sharded and drop the staging directory (after every shard)."""
    meta = _array_meta(array_dir)
    if meta["codecs"] and meta["codecs"][0].get("name") == "sharding_indexed":
        return  # finished by an earlier (interrupted) run
    for shard in range(n_shards(array_dir, factor)):  # cheap when every shard is there already
        pack_shard(array_dir, shard, factor)
    text = json.dumps(sharded_metadata(meta, factor), indent=2)  # zarr's own formatting
    tmp = array_dir / ".zarr.json.part"
    tmp.write_text(text)
    os.replace(tmp, array_dir / "zarr.json")
    shutil.rmtree(array_dir / STAGING, ignore_errors=True)


def shard_array(array_dir: Path, factor: int) -> None:
    """Pack a finished unsharded array into shards of ``factor`` chunks (the serial writer's path)."""
    stage(array_dir)
    for shard in range(n_shards(array_dir, factor)):
        pack_shard(array_dir, shard, factor)
    finish(array_dir, factor)


# ------------------------------------------------------------------ reading
class ShardReader:
    """Reads inner chunks of one sharded array; caches each shard's verified index.

    Parameters
    ----------
    key
        The array's path in the store (``"train/X"``).
    factor
        Chunks per shard.
    n_chunks
        Chunks of the array (inner chunks past it have empty index entries).
    chunk_limit
        Most bytes an encoded inner chunk may have.
    ndim
        Dimensions of the array (for the shard file's key).

    Picklable; a copy starts with an empty cache (each worker reads the indexes it needs).
    """

    def __init__(self, key: str, factor: int, n_chunks: int, chunk_limit: int, ndim: int) -> None:
        self.key = key
        self.factor = int(factor)
        self.n_chunks = int(n_chunks)
        self.chunk_limit = int(chunk_limit)
        self._suffix = "".join("/0" for _ in range(ndim - 1))
        self._indexes: OrderedDict[int, tuple[Any, np.ndarray]] = OrderedDict()
        self._indexes_lock = threading.Lock()  # read-ahead threads look indexes up too
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_indexes"], state["_indexes_lock"], state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._indexes = OrderedDict()
        self._indexes_lock = threading.Lock()
        self._local = threading.local()

    def _cached(self, shard: int) -> tuple[Any, np.ndarray] | None:
        with self._indexes_lock:
            entry = self._indexes.get(shard)
            if entry is not None:
                self._indexes.move_to_end(shard)
            return entry

    def _remember(self, shard: int, stamp: Any, index: np.ndarray) -> None:
        with self._indexes_lock:
            self._indexes[shard] = (stamp, index)
            self._indexes.move_to_end(shard)
            while len(self._indexes) > MAX_CACHED_INDEXES:
                self._indexes.popitem(last=False)

    def shard_key(self, chunk: int) -> str:
        """Store key of the shard file holding chunk ``chunk``."""
        return f"{self.key}/c/{chunk // self.factor}{self._suffix}"

    def describe(self, files: StoreFiles, chunk: int) -> str:
        """``"inner chunk j of shard file PATH"`` (for messages)."""
        return (
            f"inner chunk {chunk % self.factor} of shard file {files.where(self.shard_key(chunk))}"
        )

    def _corrupt(self, files: StoreFiles, chunk: int, what: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"shard file {files.where(self.shard_key(chunk))} of {self.key!r}: {what}; the "
            "store is damaged or was modified, re-convert it"
        )

    # ------------------------------------------------------------ index
    def _check_index(
        self, files: StoreFiles, chunk: int, raw: bytes | memoryview, size: int
    ) -> np.ndarray:
        """The shard's ``(factor, 2)`` index from its trailing bytes ``raw``, verified against ``size``."""
        n_index = index_nbytes(self.factor)
        if len(raw) != n_index:
            raise self._corrupt(
                files, chunk, f"is {size} bytes, shorter than its {n_index}-byte index"
            )
        body = bytes(raw[:-4])
        stored = int.from_bytes(raw[-4:], "little")
        if int(_crc32c()(body)) != stored:
            raise self._corrupt(files, chunk, "its index fails its CRC32C checksum")
        index = np.frombuffer(body, dtype="<u8").reshape(self.factor, 2)
        data_end = size - n_index  # the chunks lie in [0, data_end)
        first = (chunk // self.factor) * self.factor
        spans = []
        for j in range(self.factor):
            offset, nbytes = int(index[j, 0]), int(index[j, 1])
            inside = first + j < self.n_chunks
            if offset == EMPTY and nbytes == EMPTY:
                if inside:
                    raise self._corrupt(
                        files,
                        chunk,
                        f"its index has no entry for chunk {first + j} (inner chunk {j}); "
                        "format 1 and 2 stores hold every chunk",
                    )
                continue
            if nbytes > self.chunk_limit:
                raise self._corrupt(
                    files,
                    chunk,
                    f"its index gives inner chunk {j} {nbytes} bytes, more than the "
                    f"{self.chunk_limit} a chunk can hold",
                )
            if offset > data_end or nbytes > data_end - offset:
                raise self._corrupt(
                    files,
                    chunk,
                    f"its index puts inner chunk {j} at bytes {offset}..{offset + nbytes}, "
                    f"outside the file's {data_end} bytes of chunk data",
                )
            spans.append((offset, nbytes, j))
        spans.sort()
        for (o1, n1, j1), (o2, _, j2) in itertools.pairwise(spans):
            if o2 < o1 + n1:
                raise self._corrupt(
                    files, chunk, f"its index has inner chunks {j1} and {j2} overlapping"
                )
        return index

    def _index(
        self, files: StoreFiles, chunk: int, stamp: Any, read_tail: Any, size: int
    ) -> np.ndarray:
        shard = chunk // self.factor
        cached = self._cached(shard)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1]
        n_index = index_nbytes(self.factor)
        raw = read_tail(max(0, size - n_index), min(size, n_index)) if size >= n_index else b""
        index = self._check_index(files, chunk, raw if size >= n_index else b"", size)
        if stamp is not None:
            self._remember(shard, stamp, index)
        return index

    # ------------------------------------------------------------ chunks
    def locate(self, files: StoreFiles, chunk: int) -> tuple[str, int, int]:
        """``(shard key, offset, nbytes)`` of chunk ``chunk``'s bytes (reads the shard's index).

        For a reader that fetches byte ranges itself (read-ahead).
        """
        cached = self._cached(chunk // self.factor)
        if files.remote and cached is not None:
            index = cached[1]  # remote: no file versions to compare, the index is fetched once
        elif files.remote:
            fs, root = files._filesystem()
            path = f"{root}/{self.shard_key(chunk)}"
            size = int(fs.size(path))
            index = self._index(
                files,
                chunk,
                ("remote", size),
                lambda o, n: fs.cat_file(path, start=o, end=o + n),
                size,
            )
        else:
            fd = self._open(files, chunk)
            try:
                st = files._check_regular(self.shard_key(chunk), fd)
                index = self._index(
                    files, chunk, _stamp(st), lambda o, n: os.pread(fd, n, o), st.st_size
                )
            finally:
                os.close(fd)
        offset, nbytes = (int(v) for v in index[chunk % self.factor])
        return self.shard_key(chunk), offset, nbytes

    def _open(self, files: StoreFiles, chunk: int) -> int:
        key = self.shard_key(chunk)
        fd = files._open_local(key, base=f"{self.key}/c")
        if fd is None:
            if files._changed():
                raise StoreChangedError(_replaced_message(files.url))
            raise self._corrupt(files, chunk, "is missing")
        return fd

    def read(self, files: StoreFiles, chunk: int) -> tuple[memoryview | bytes, FileStamp | None]:
        """The encoded bytes of chunk ``chunk`` and the stamp of its shard file (None: remote or fresh).

        The local result is a view of a per-thread buffer, valid until this thread's next read.
        """
        if files.remote:
            key, offset, nbytes = self.locate(files, chunk)
            data = files.fetch_range(key, offset, nbytes, base=f"{self.key}/c")  # cached
            if len(data) != nbytes:
                raise self._corrupt(
                    files, chunk, f"gave {len(data)} of inner chunk's {nbytes} bytes"
                )
            return bytes(data), None
        fd = self._open(files, chunk)
        try:
            st = files._check_regular(self.shard_key(chunk), fd)
            stamp = _stamp(st)
            index = self._index(files, chunk, stamp, lambda o, n: os.pread(fd, n, o), st.st_size)
            offset, nbytes = (int(v) for v in index[chunk % self.factor])
            buf = getattr(self._local, "buf", None)
            if buf is None or len(buf) < nbytes:
                buf = self._local.buf = bytearray(max(nbytes, 2 * len(buf or b"")))
            view = memoryview(buf)[:nbytes]
            got = 0
            while got < nbytes:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    raise self._corrupt(
                        files, chunk, f"ends inside inner chunk {chunk % self.factor} (truncated)"
                    )
                got += n
            return view, stamp
        finally:
            os.close(fd)
