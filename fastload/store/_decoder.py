"""The one chunk decoder: chunk file bytes -> verified -> numcodecs -> the caller's buffer.

:class:`ChunkDecoder` reads one array along its first axis and
:class:`RaggedDecoder` a ragged field (values + offsets).  ``Split.read`` and
``Split.read_chunk`` use them, and the loader ships them (picklable, small) to
its workers, so every path reads and verifies chunks the same way.

Why not zarr's indexing: zarr-python decodes lz4 chunks at 0.5-1.6 GB/s here,
while reading a chunk file and letting Blosc decode it into a preallocated
buffer (a shared-memory slot, a worker's scratch) runs at 5-10 GB/s.

What a chunk must pass before a byte reaches the caller's buffer (fastload's
layout: codecs ``bytes(little) -> blosc [-> crc32c]``, default chunk keys,
chunks spanning whole rows):

1. the file is a regular file inside the store (:mod:`fastload.store._files`);
2. with a ``crc32c`` codec (stores written since the checksum was added), the
   trailing 4-byte CRC32C of the encoded bytes matches: a flipped bit anywhere
   in the file is caught;
3. the Blosc header's decoded size equals the chunk's size (``chunk_len`` rows
   of the array's row shape and dtype) and its compressed size equals the
   frame's length: a shorter valid frame, a truncated file, or metadata edited
   to another chunk length, dtype or row shape never leaves part of the buffer
   undecoded (stale memory) or reinterpreted.

Every failure is a :class:`~fastload.errors.CorruptStoreError` naming the chunk
file.  Arrays in another layout (other codecs, key encodings or chunk shapes)
read through zarr's public indexing; for them too a missing chunk file is an
error, since format 1 writes every chunk.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import numpy as np

from fastload._source import check_buffer, check_chunk
from fastload.errors import ConfigError, CorruptStoreError, FastloadError, StoreError
from fastload.store._files import FileStamp, StoreFiles
from fastload.store._paths import zarr_location
from fastload.store._shards import ShardReader, inner_layout

#: Blosc1 frame header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes.
_BLOSC_HEADER = struct.Struct("<BBBBIII")
#: Bytes Blosc may add to a chunk when it cannot compress it (numcodecs.blosc.MAX_OVERHEAD).
_BLOSC_OVERHEAD = 16
#: Largest chunk a store may declare: a bigger one is edited metadata, not data.
MAX_CHUNK_BYTES = 2**31
#: Chunk files a decoder remembers as verified; past it (a store far larger than
#: memory, re-read from disk each epoch) the rest are verified on every read.
MAX_VERIFIED_CHUNKS = 1 << 16


def _crc32c() -> Any:
    """The CRC32C function of the read path: ``buffer -> int``.

    ``crc32c`` (a dependency) releases the GIL while it hashes, so the thread
    backend's workers and the consumer keep running; ``google_crc32c`` (what
    zarr's codec uses) holds it — measured on a 3 MB chunk, a busy thread beside
    it kept 0.42 of its speed against 0.89 with ``crc32c``, at the same 21-23
    GB/s.  Both compute the same Castagnoli CRC (tests/store/test_checksums.py).
    """
    try:
        import crc32c
    except ImportError:  # a platform without crc32c wheels: correct, only GIL-bound
        import google_crc32c

        return google_crc32c.value
    return crc32c.crc32c


def fast_layout(meta: dict[str, Any], shape: tuple[int, ...], chunks: tuple[int, ...]) -> bool:
    """True when a chunk file is ``blosc(little-endian C-order rows)[+crc32c]`` under ``c/i/0/..``."""
    codecs = meta.get("codecs", [])
    names = [c.get("name") for c in codecs if isinstance(c, dict)]
    if names not in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"]):
        return False
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    encoding = meta.get("chunk_key_encoding", {})
    separator = (encoding.get("configuration") or {}).get("separator", "/")
    return (
        endian in ("little", None)
        and encoding.get("name") == "default"
        and separator == "/"
        and tuple(chunks[1:]) == tuple(shape[1:])
    )


class ChunkDecoder:
    """Decodes chunks of one array along its first axis into caller buffers.

    Build it with :meth:`of` (or ``split.reader(field)``).  Picklable: a copy
    in another process re-opens the store root and refuses a replaced store.

    Attributes
    ----------
    url, key
        Store location and the array's path inside it (``"train/X"``).
    shape, dtype, chunk_len
        The array's shape and dtype, and rows per chunk.
    fast
        True when chunks are decoded directly (fastload's layout), False when
        they go through zarr's indexing.
    checksum
        True when every chunk carries a CRC32C that is verified on read.
    """

    def __init__(
        self,
        files: StoreFiles,
        key: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunk_len: int,
        *,
        fast: bool,
        checksum: bool,
        zarr_chunks: tuple[int, ...] | None = None,
        shard_factor: int = 0,
    ) -> None:
        self.files = files
        self.key = key
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunk_len = int(chunk_len)
        self.fast = bool(fast)
        self.checksum = bool(checksum)
        self.zarr_chunks = tuple(zarr_chunks) if zarr_chunks is not None else None
        self.row_shape = self.shape[1:]
        row_items = int(np.prod(self.row_shape, dtype=np.int64))
        self.chunk_nbytes = self.chunk_len * row_items * self.dtype.itemsize
        self._suffix = "".join("/0" for _ in self.row_shape)
        self._array: Any = None
        self._crc: Any = None
        # chunk -> stamp of the file version whose checksum passed here (this process)
        self._verified: dict[int, FileStamp] = {}
        # [shards] a sharded array: its chunks are byte ranges of shard files (see _shards.py)
        self.shard_factor = int(shard_factor)
        self._shards: ShardReader | None = None
        if self.shard_factor:
            limit = self.chunk_nbytes + _BLOSC_OVERHEAD + (4 if self.checksum else 0)
            self._shards = ShardReader(
                key, self.shard_factor, self.n_chunks, limit, len(self.shape)
            )

    @classmethod
    def of(cls, files: StoreFiles, key: str, array: Any) -> ChunkDecoder:
        """The decoder of the opened zarr array ``array`` at ``key`` of the store ``files`` reads."""
        meta = array.metadata.to_dict()
        shape = tuple(int(s) for s in array.shape)
        chunks = tuple(int(c) for c in array.metadata.chunk_grid.chunk_shape)
        names = [c.get("name") for c in meta.get("codecs", []) if isinstance(c, dict)]
        fast, factor = fast_layout(meta, shape, chunks), 0
        sharded = None if fast else inner_layout(meta, shape, chunks)  # [shards]
        if sharded is not None and fast_layout(sharded[0], shape, sharded[1]):
            meta, chunks, factor, fast = sharded[0], sharded[1], sharded[2], True
            names = [c.get("name") for c in meta.get("codecs", []) if isinstance(c, dict)]
        decoder = cls(
            files,
            key,
            shape,
            np.dtype(array.dtype),
            chunks[0],
            fast=fast,
            checksum="crc32c" in names,
            zarr_chunks=chunks,
            shard_factor=factor,
        )
        if decoder.fast and decoder.chunk_nbytes > MAX_CHUNK_BYTES:
            raise CorruptStoreError(
                f"{files.where(key)}/zarr.json declares chunks of {decoder.chunk_nbytes} bytes "
                f"(more than {MAX_CHUNK_BYTES}); its metadata is damaged, re-convert the store"
            )
        return decoder

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_verified"] = {}  # a worker verifies what it reads itself
        state["_crc"] = None
        return state

    @property
    def url(self) -> str:
        """Location of the store holding the array."""
        return self.files.url

    @property
    def n_chunks(self) -> int:
        """Chunks along the first axis (the last one may be partial)."""
        return -(-self.shape[0] // self.chunk_len)

    def chunk_key(self, chunk: int) -> str:
        """Store key of chunk ``chunk``'s file (fastload's layout: default chunk keys).

        For a sharded array, the key of the shard file that holds the chunk.
        """
        if self._shards is not None:  # [shards]
            return self._shards.shard_key(chunk)
        return f"{self.key}/c/{chunk}{self._suffix}"

    def chunk_file(self, chunk: int) -> str:
        """Path or URL of chunk ``chunk``'s file (for messages)."""
        return self.files.where(self.chunk_key(chunk))

    def chunk_rows(self, chunk: int) -> int:
        """Valid rows of chunk ``chunk``: ``chunk_len``, or fewer for the last chunk."""
        return max(0, min(self.chunk_len, self.shape[0] - chunk * self.chunk_len))

    rows_in = chunk_rows

    # ---------------------------------------------------------------- decoding
    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        """Decode chunk ``chunk`` into ``out`` (C-contiguous, >= ``chunk_len`` rows); return its rows.

        The workers' entry point (:class:`fastload.DenseChunkDecoder`).  A whole
        chunk is decoded, even the last one: rows past the returned count are the
        chunk's padding.  A chunk index outside ``[0, n_chunks)``, or a buffer of
        another dtype or row shape, with too few rows, strided or read-only, is a
        :class:`~fastload.errors.ConfigError` raised before anything is written:
        Blosc writes raw bytes, which such a buffer would hold reinterpreted.  (The
        checks cost about 2 us against ~550 us to decode a 4 MiB chunk.)
        """
        chunk = check_chunk(chunk, self.n_chunks, self._where)
        self._check_out(out)
        _single_threaded_blosc()
        self._decode(chunk, out)
        return self.chunk_rows(chunk)

    @property
    def _where(self) -> str:
        return f"{self.key!r} in {self.url!r}"

    def _check_chunk(self, chunk: int) -> None:
        # read_chunk's check: an IndexError, as indexing out of range gives
        if not 0 <= chunk < self.n_chunks:
            raise IndexError(
                f"chunk {chunk} out of range for {self.key!r} ({self.n_chunks} chunks)"
            )

    def read_chunk(self, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decode chunk ``chunk`` into ``out``; return the view of its valid rows.

        Parameters
        ----------
        chunk
            Chunk index, ``0 <= chunk < n_chunks``.
        out
            Writeable C-contiguous array of this array's dtype and row shape with at
            least ``chunk_len`` rows (a whole chunk is decoded, even the last one);
            allocated when None.
        """
        self._check_chunk(chunk)
        if out is None:
            out = _allocate(
                (self.chunk_len, *self.row_shape), self.dtype, self.files.where(self.key)
            )
        else:
            self._check_out(out)
        self._decode(chunk, out)
        return out[: self.chunk_rows(chunk)]

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` decoded chunk by chunk (``stop`` is clipped to the length)."""
        stop = min(stop, self.shape[0])
        start = max(0, start)
        n = max(0, stop - start)
        where = self.files.where(self.key)
        if out is None:
            out = _allocate((n, *self.row_shape), self.dtype, where)
        if n == 0:
            return out
        scratch: np.ndarray | None = None
        first, last = start // self.chunk_len, (stop - 1) // self.chunk_len
        for chunk in range(first, last + 1):
            c0 = chunk * self.chunk_len
            lo, hi = max(start, c0), min(stop, c0 + self.chunk_len)
            target = out[lo - start : hi - start]
            if hi - lo == self.chunk_len and target.flags.c_contiguous:
                self._decode(chunk, target)  # whole chunk: decode in place
            else:
                if scratch is None:
                    scratch = _allocate((self.chunk_len, *self.row_shape), self.dtype, where)
                self._decode(chunk, scratch)
                target[...] = scratch[lo - c0 : hi - c0]
        return out

    # ------------------------------------------------------------- read-ahead
    def read_ahead(self, chunk: int, window_bytes: int) -> bool:
        """Start reading chunk ``chunk``'s file ahead of its decoding; False when the window is full.

        The workers call it for the chunks they decode next, in order, and stop at
        the first False.  At most ``window_bytes`` of compressed bytes are held
        ahead per store (see :mod:`fastload.store._readahead`); decoding reads and
        verifies the bytes as without read-ahead.  Arrays in another tool's layout
        and sharded arrays (whose chunks are byte ranges of a shard file; reading
        those ranges ahead is not built yet) are not read ahead (True: nothing to
        wait for).
        """
        if not self.fast or self._shards is not None or not 0 <= chunk < self.n_chunks:
            return True
        limit = self.chunk_nbytes + _BLOSC_OVERHEAD + (4 if self.checksum else 0)
        ahead = self.files.read_ahead(int(window_bytes))
        return bool(ahead.want(self.chunk_key(chunk), limit, f"{self.key}/c"))

    def close_read_ahead(self) -> None:
        """Forget the chunks read ahead and stop the read-ahead's I/O threads (idempotent)."""
        self.files.close_read_ahead()

    def _decode(self, chunk: int, out: np.ndarray) -> None:
        if not self.fast:
            self._decode_zarr(chunk, out)
            return
        if self._shards is not None:  # [shards] a byte range of the shard file
            raw, stamp = self._shards.read(self.files, chunk)
            self.decode_bytes(chunk, raw, out, stamp=stamp)
            return
        key = self.chunk_key(chunk)
        limit = self.chunk_nbytes + _BLOSC_OVERHEAD + (4 if self.checksum else 0)
        raw, stamp = self.files.read_stamped(key, limit, base=f"{self.key}/c")
        if raw is None:
            # format 1 writes every chunk (write_empty_chunks): a missing file is damage,
            # and filling it with the fill value would feed zeros to training silently
            raise self._corrupt(chunk, "is missing")
        self.decode_bytes(chunk, raw, out, stamp=stamp)

    def decode_bytes(
        self,
        chunk: int,
        raw: bytes | memoryview,
        out: np.ndarray,
        *,
        stamp: FileStamp | None = None,
    ) -> None:
        """Verify the encoded bytes ``raw`` of chunk ``chunk`` and decode them into ``out``.

        ``stamp``: the version of the local file ``raw`` was read from.  Its
        checksum is verified once per decoder (so once per worker process) and
        file version; every other check runs on every read.
        """
        frame = memoryview(raw)
        if self.checksum:
            if len(frame) < 4:
                raise self._corrupt(chunk, f"is truncated ({len(frame)} bytes, no checksum)")
            stored = int.from_bytes(frame[-4:], "little")
            frame = frame[:-4]
            if stamp is None or self._verified.get(chunk) != stamp:
                self._verify(chunk, frame, stored, stamp)
        if len(frame) < _BLOSC_HEADER.size:
            raise self._corrupt(chunk, f"is truncated ({len(frame)} bytes, no Blosc header)")
        _, _, _, _, nbytes, _, cbytes = _BLOSC_HEADER.unpack_from(frame)
        if nbytes != self.chunk_nbytes:
            raise self._corrupt(
                chunk,
                f"decodes to {nbytes} bytes, but a chunk of {self.chunk_len} rows of "
                f"{self.dtype}{self.row_shape} is {self.chunk_nbytes} bytes",
            )
        if cbytes != len(frame):
            raise self._corrupt(
                chunk, f"holds {len(frame)} bytes of a {cbytes}-byte Blosc frame (truncated?)"
            )
        flat = out.reshape(-1).view(np.uint8)[: self.chunk_nbytes]  # a view: out is C-contiguous
        if flat.size < self.chunk_nbytes:
            raise ConfigError(
                f"buffer of {flat.size} bytes for chunk {chunk} of {self.key!r} needs "
                f"{self.chunk_nbytes}"
            )
        from numcodecs import blosc

        try:
            blosc.decompress(frame, flat)
        except Exception as exc:
            raise self._corrupt(chunk, f"cannot be decoded ({exc})") from exc

    def _verify(self, chunk: int, frame: memoryview, stored: int, stamp: FileStamp | None) -> None:
        if self._crc is None:
            self._crc = _crc32c()
        body = np.frombuffer(frame, dtype=np.uint8)
        body.flags.writeable = False  # google_crc32c takes read-only buffers only (no copy)
        if self._crc(body) != stored:
            raise self._corrupt(chunk, "fails its CRC32C checksum (its bytes changed)")
        if stamp is not None and len(self._verified) < MAX_VERIFIED_CHUNKS:
            self._verified[chunk] = stamp

    def _decode_zarr(self, chunk: int, out: np.ndarray) -> None:
        """Another tool's layout: check that the chunk files exist, then zarr's public indexing."""
        start = chunk * self.chunk_len
        rows = self.chunk_rows(chunk)
        where = self.files.where(self.key)
        try:
            if self._array is None:
                import zarr

                group = zarr.open_group(zarr_location(self.url), mode="r", zarr_format=3)
                self._array = group[self.key]
            meta = self._array.metadata
            grid = self.zarr_chunks or tuple(int(c) for c in meta.chunk_grid.chunk_shape)
            lo, hi = start // grid[0], (start + max(rows, 1) - 1) // grid[0]
            others = [range(-(-s // c)) for s, c in zip(self.shape[1:], grid[1:], strict=True)]
            for coords in itertools.product(range(lo, hi + 1), *others):
                key = f"{self.key}/{meta.encode_chunk_key(coords)}"
                if not self.files.exists(key):
                    raise CorruptStoreError(
                        f"chunk file {self.files.where(key)} is missing; format-1 stores hold "
                        "every chunk, so the store is damaged: re-convert it"
                    )
            out[:rows] = self._array[start : start + rows]
        except FastloadError:
            raise
        except MemoryError as exc:
            raise StoreError(f"{where}: chunk {chunk} is too large to read: {exc}") from exc
        except Exception as exc:  # zarr's ValueError, UnknownCodecError, ...
            raise CorruptStoreError(
                f"chunk {chunk} of {where} cannot be read: {type(exc).__name__}: {exc}; the "
                "store is damaged, re-convert it"
            ) from exc

    def _corrupt(self, chunk: int, what: str) -> CorruptStoreError:
        if self._shards is not None:  # [shards]
            where = self._shards.describe(self.files, chunk)
        else:
            where = f"chunk file {self.chunk_file(chunk)}"
        return CorruptStoreError(
            f"chunk {chunk} of {self.key!r}: {where} {what}; the "
            "store is damaged or was modified, re-convert it"
        )

    def _check_out(self, out: np.ndarray) -> None:
        check_buffer(out, self.dtype, self.row_shape, self.chunk_len, f"chunks of {self._where}")


class RaggedDecoder:
    """A ragged field of one split: event chunks of ``event_chunk_len`` events.

    Event chunk ``c`` covers events ``[c*E, (c+1)*E)`` whose value rows
    ``offsets[a]..offsets[b]`` span whole value chunks ``v0..v1``; those value
    chunks are decoded back to back into the caller's buffer, so rows are
    addressed relative to ``v0 * values.chunk_len``.  ``offsets`` are the
    field's verified offsets (``Split.offsets``).  Implements
    :class:`fastload.RaggedChunkDecoder`.
    """

    def __init__(self, values: ChunkDecoder, offsets: np.ndarray, event_chunk_len: int) -> None:
        self.values = values
        self.offsets = offsets
        self.event_chunk_len = int(event_chunk_len)
        self._capacity: int | None = None

    @property
    def url(self) -> str:
        """Location of the store holding the field."""
        return self.values.url

    @property
    def chunk_len(self) -> int:
        """Events per chunk (``event_chunk_len``, the split's ``chunk_len``)."""
        return self.event_chunk_len

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one value row."""
        return self.values.row_shape

    @property
    def dtype(self) -> np.dtype:
        """dtype of the value rows."""
        return self.values.dtype

    @property
    def n_chunks(self) -> int:
        """Event chunks (the last one may be partial)."""
        return -(-(self.offsets.size - 1) // self.event_chunk_len)

    def value_chunk_span(self, chunk: int) -> tuple[int, int]:
        """Value chunks ``[v0, v1)`` holding the rows of event chunk ``chunk``."""
        a = chunk * self.event_chunk_len
        b = min(a + self.event_chunk_len, self.offsets.size - 1)
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        vlen = self.values.chunk_len
        if hi <= lo:
            return lo // vlen, lo // vlen  # empty: no value chunk needed
        return lo // vlen, (hi - 1) // vlen + 1

    def capacity_rows(self) -> int:
        """Value rows a buffer must hold for the widest event chunk (computed once)."""
        if self._capacity is None:
            a = np.arange(self.n_chunks, dtype=np.int64) * self.event_chunk_len
            b = np.minimum(a + self.event_chunk_len, self.offsets.size - 1)
            lo, hi = self.offsets[a], self.offsets[b]
            vlen = self.values.chunk_len
            spans = np.where(hi > lo, (hi - 1) // vlen + 1 - lo // vlen, 0)
            self._capacity = int(spans.max(initial=0)) * vlen
        return self._capacity

    def read_ahead(self, chunk: int, window_bytes: int) -> bool:
        """Read the value chunks of event chunk ``chunk`` ahead (see :meth:`ChunkDecoder.read_ahead`)."""
        if not 0 <= chunk < self.n_chunks:
            return True
        v0, v1 = self.value_chunk_span(chunk)
        return all(self.values.read_ahead(vc, window_bytes) for vc in range(v0, v1))

    def close_read_ahead(self) -> None:
        """Stop reading ahead (see :meth:`ChunkDecoder.close_read_ahead`)."""
        self.values.close_read_ahead()

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> int:
        """Fill ``values_out`` with the chunk's value rows and ``offsets_out`` (E+1) with buffer-relative offsets.

        Returns the chunk's number of events.  ``values_out`` needs
        :meth:`capacity_rows` rows, ``offsets_out`` ``event_chunk_len + 1`` int64
        entries; a chunk index out of range or an unfit buffer is a
        :class:`~fastload.errors.ConfigError` raised before anything is written
        (see :meth:`ChunkDecoder.decode_into`).
        """
        where = f"ragged field {self.values.key.rpartition('/')[0]!r} in {self.url!r}"
        chunk = check_chunk(chunk, self.n_chunks, where)
        check_buffer(
            values_out, self.dtype, self.row_shape, self.capacity_rows(), f"values of {where}"
        )
        check_buffer(
            offsets_out, np.dtype(np.int64), (), self.event_chunk_len + 1, f"offsets of {where}"
        )
        v0, v1 = self.value_chunk_span(chunk)
        vlen = self.values.chunk_len
        for k, vc in enumerate(range(v0, v1)):
            self.values.decode_into(vc, values_out[k * vlen : (k + 1) * vlen])
        a = chunk * self.event_chunk_len
        b = min(a + self.event_chunk_len, self.offsets.size - 1)
        offsets_out[: b - a + 1] = self.offsets[a : b + 1] - v0 * vlen
        return b - a


def _allocate(shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as exc:
        raise StoreError(
            f"{where}: cannot allocate {dtype}{shape} ({exc}); are the store's sizes damaged?"
        ) from exc


def preload_decoding() -> None:
    """Import what decoding a chunk needs (Blosc, CRC32C) now rather than on the first chunk.

    For a process that forks workers (fastload's zygote): they inherit it imported.
    """
    _single_threaded_blosc()
    _crc32c()


def _single_threaded_blosc() -> None:
    # loader workers already decode in parallel: Blosc's own threads would oversubscribe
    from numcodecs import blosc

    blosc.use_threads = False
