"""Worker-side chunk readers: small picklable descriptions of where chunks live.

A worker must not need the whole zarr machinery to read a local chunk: it
reads the chunk file and lets Blosc decode it straight into the arena.  So the
coordinator describes each (source, field) once, as a :class:`DenseChunks` or
:class:`RaggedChunks`, and ships that description to the workers.  Arrays
whose codecs are not plain ``bytes + blosc`` fall back to zarr inside the
worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.errors import CorruptStoreError


@dataclass
class DenseChunks:
    """Chunks of one dense array: ``url/key/c/<i>/0...``."""

    url: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    chunk_len: int
    fast: bool
    fill_value: Any

    def __post_init__(self) -> None:
        self._local: str | None = (
            None
            if "://" in self.url and not self.url.startswith("file://")
            else (self.url.removeprefix("file://"))
        )
        self._array: Any = None
        self._remote_store: Any = None
        self._blosc: Any = None
        self._raw: bytearray | None = None
        suffix = "/".join(["0"] * (len(self.shape) - 1))
        self._suffix = f"/{suffix}" if suffix else ""
        self.chunk_nbytes = (
            self.chunk_len
            * int(np.prod(self.shape[1:], dtype=np.int64))
            * np.dtype(self.dtype).itemsize
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("url", "key", "shape", "dtype", "chunk_len", "fast", "fill_value")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @classmethod
    def of(cls, reader: Any) -> DenseChunks:
        """Describe a store-side ``_ArrayReader``."""
        return cls(
            url=reader.fetcher.url,
            key=reader.key,
            shape=tuple(reader.shape),
            dtype=np.dtype(reader.dtype).str,
            chunk_len=reader.chunk_len,
            fast=reader._fast,
            fill_value=reader.fill_value if np.isscalar(reader.fill_value) else 0,
        )

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_len)

    def rows_in(self, chunk: int) -> int:
        return min(self.chunk_len, self.shape[0] - chunk * self.chunk_len)

    def _fetch(self, chunk: int) -> memoryview | bytes | None:
        key = f"{self.key}/c/{chunk}{self._suffix}"
        if self._local is not None:
            try:
                fd = os.open(f"{self._local}/{key}", os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                size = os.fstat(fd).st_size
                # one reused buffer: a fresh bytes object per chunk costs page faults
                if self._raw is None or len(self._raw) < size:
                    self._raw = bytearray(max(size, 2 * len(self._raw or b"")))
                view = memoryview(self._raw)[:size]
                got = 0
                while got < size:
                    n = os.readv(fd, [view[got:]])
                    if n == 0:
                        break
                    got += n
                return view[:got]
            finally:
                os.close(fd)
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        if self._remote_store is None:
            import zarr

            self._remote_store = zarr.open_group(self.url, mode="r").store
        buf = sync(self._remote_store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        """Decode chunk ``chunk`` into ``out`` (>= ``chunk_len`` rows); return its valid rows."""
        rows = self.rows_in(chunk)
        if not self.fast:
            if self._array is None:
                import zarr

                self._array = zarr.open_group(self.url, mode="r")[self.key]
            start = chunk * self.chunk_len
            out[:rows] = self._array[start : start + rows]
            return rows
        raw = self._fetch(chunk)
        if raw is None:
            # format 1 writes every chunk (write_empty_chunks): a missing file is damage,
            # and filling it with the fill value would feed zeros to training silently
            raise CorruptStoreError(
                f"chunk {chunk} of {self.key!r} in {self.url!r} is missing; the store is damaged, "
                "re-convert it"
            )
        if self._blosc is None:
            import numcodecs
            from numcodecs import blosc

            # workers already run in parallel: Blosc's own threads would oversubscribe
            blosc.use_threads = False
            self._blosc = numcodecs.Blosc()
        flat = out.reshape(-1).view(np.uint8)[: self.chunk_nbytes]
        try:
            self._blosc.decode(raw, out=flat)
        except Exception as exc:
            raise CorruptStoreError(
                f"chunk {chunk} of {self.key!r} in {self.url!r} cannot be decoded: {exc}"
            ) from exc
        return rows


@dataclass
class RaggedChunks:
    """A ragged field of one split: event chunks of ``event_chunk_len`` events.

    Event chunk ``c`` covers events ``[c*E, (c+1)*E)`` whose value rows
    ``offsets[a]..offsets[b]`` span whole value chunks ``v0..v1``; those value
    chunks are decoded back to back into a cache slot, so rows are addressed
    relative to ``v0 * values.chunk_len``.
    """

    values: DenseChunks
    offsets: np.ndarray
    event_chunk_len: int

    def value_chunk_span(self, chunk: int) -> tuple[int, int]:
        a = chunk * self.event_chunk_len
        b = min(a + self.event_chunk_len, self.offsets.size - 1)
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        vlen = self.values.chunk_len
        if hi <= lo:
            return lo // vlen, lo // vlen  # empty: no value chunk needed
        return lo // vlen, (hi - 1) // vlen + 1

    def capacity_rows(self) -> int:
        """Value rows a scratch buffer must hold for the widest event chunk (computed once)."""
        cached = self.__dict__.get("_capacity")
        if cached is None:
            cached = self.__dict__["_capacity"] = self._widest_span_rows()
        return cached

    def _widest_span_rows(self) -> int:
        n_chunks = -(-(self.offsets.size - 1) // self.event_chunk_len)
        a = np.arange(n_chunks, dtype=np.int64) * self.event_chunk_len
        b = np.minimum(a + self.event_chunk_len, self.offsets.size - 1)
        lo, hi = self.offsets[a], self.offsets[b]
        vlen = self.values.chunk_len
        spans = np.where(hi > lo, (hi - 1) // vlen + 1 - lo // vlen, 0)
        return int(spans.max(initial=0)) * vlen

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> None:
        """Fill ``values_out`` with the chunk's value rows and ``offsets_out`` (E+1) with slot-relative offsets."""
        v0, v1 = self.value_chunk_span(chunk)
        vlen = self.values.chunk_len
        for k, vc in enumerate(range(v0, v1)):
            self.values.decode_into(vc, values_out[k * vlen : (k + 1) * vlen])
        a = chunk * self.event_chunk_len
        b = min(a + self.event_chunk_len, self.offsets.size - 1)
        offsets_out[: b - a + 1] = self.offsets[a : b + 1] - v0 * vlen
