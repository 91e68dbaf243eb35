"""An in-memory split: numpy arrays (and ragged fields) as a Loader source.

``fl.from_arrays({"X": X, "y": y})`` reads like a store split — same chunks,
same plan, same batches — without writing a store: for tests, notebooks and
data that fits in memory.  Process workers receive the arrays *by value* (each
worker holds its own copy, pickled once when it starts), so for data larger
than a few hundred MB write a store (``fl.write_arrays``) or use
``backend="thread"``, whose workers share the consumer's arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastload import _validate
from fastload.errors import ConfigError, FieldNotFoundError, SchemaError
from fastload.store import FieldInfo, Ragged, choose_chunk_len

__all__ = ["MemorySplit", "from_arrays"]

_log = logging.getLogger("fastload")

#: process workers each get a pickled copy: past this, say so
_LARGE_BYTES = 1 << 30


def from_arrays(
    arrays: Mapping[str, Any],
    *,
    chunk_len: int | None = None,
    name: str = "memory",
) -> MemorySplit:
    """A Loader source over in-memory arrays (a :class:`~fastload.Source`).

    Parameters
    ----------
    arrays
        Field name -> a numpy array ``(n, *row_shape)`` (numbers or bool) or a
        :class:`~fastload.Ragged` of ``n`` variable-length samples.  Every field
        has the same ``n``.  The arrays are copied once into read-only arrays,
        so changing the originals later changes nothing a loader delivers.
    chunk_len
        Samples per chunk (the unit of decoding and of the shuffle window);
        default: what a store written with ``fl.write_arrays`` would use.
    name
        The source's name (messages, ``fl.Mix`` labels).
    """
    return MemorySplit(arrays, chunk_len=chunk_len, name=name)


class MemorySplit:
    """In-memory samples with the store split's reading interface; see :func:`from_arrays`."""

    def __init__(
        self, arrays: Mapping[str, Any], *, chunk_len: int | None = None, name: str = "memory"
    ) -> None:
        owner = "fl.from_arrays"
        if not isinstance(arrays, Mapping) or not arrays:
            raise ConfigError(f"{owner}: arrays must be a non-empty mapping name -> array")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{owner}: name must be a non-empty string, got {name!r}")
        self.name = name
        self._dense: dict[str, np.ndarray] = {}
        self._ragged: dict[str, Ragged] = {}
        self._fields: dict[str, FieldInfo] = {}
        lengths: dict[str, int] = {}
        for field, value in arrays.items():
            if not isinstance(field, str) or not field:
                raise ConfigError(f"{owner}: field names must be non-empty strings, got {field!r}")
            lengths[field] = self._add(owner, field, value)
        if len(set(lengths.values())) > 1:
            raise SchemaError(f"{owner}: fields have different lengths: {lengths}")
        self._n = next(iter(lengths.values()))
        if chunk_len is None:
            chunk_len = choose_chunk_len(
                max(info.spec.sample_nbytes for info in self._fields.values())
            )
        self._chunk_len = _validate.integer(chunk_len, name="chunk_len", minimum=1, owner=owner)
        self._max_len = {f: int(np.diff(r.offsets).max(initial=0)) for f, r in self._ragged.items()}

    def _add(self, owner: str, field: str, value: Any) -> int:
        if isinstance(value, Ragged):
            offsets = value.offsets - value.offsets[0]
            values = _frozen(value.values[value.offsets[0] : value.offsets[-1]], owner, field)
            self._ragged[field] = Ragged(values, _frozen(offsets, owner, field))
            self._fields[field] = _info(field, values.shape[1:], values.dtype, ragged=True)
            return len(value)
        array = _frozen(value, owner, field)
        if array.ndim == 0:
            raise SchemaError(f"{owner}: field {field!r} is a scalar; give one value per sample")
        self._dense[field] = array
        self._fields[field] = _info(field, array.shape[1:], array.dtype, ragged=False)
        return int(array.shape[0])

    # ------------------------------------------------------------ the Source
    def __len__(self) -> int:
        return self._n

    @property
    def chunk_len(self) -> int:
        return self._chunk_len

    @property
    def n_chunks(self) -> int:
        return -(-self._n // self._chunk_len)

    @property
    def fields(self) -> dict[str, FieldInfo]:
        return dict(self._fields)

    def max_len(self, field: str) -> int:
        self._field(field)
        return self._max_len.get(field, 0)

    def decoder(self, field: str) -> ArrayDecoder | RaggedArrayDecoder:
        self._field(field)
        if field in self._ragged:
            r = self._ragged[field]
            return RaggedArrayDecoder(field, r.values, r.offsets, self._chunk_len)
        return ArrayDecoder(field, self._dense[field], self._chunk_len)

    # ------------------------------------------------------------ reading
    def read(self, field: str, start: int = 0, stop: int | None = None) -> np.ndarray | Ragged:
        """Samples ``[start, stop)`` of ``field`` (a read-only view; a Ragged for a ragged field)."""
        self._field(field)
        start, stop, _ = slice(start, stop).indices(self._n)
        if field in self._ragged:
            r = self._ragged[field]
            return Ragged(r.values, r.offsets[start : max(start, stop) + 1])
        return self._dense[field][start:stop]

    def arrays(self, fields: Any = None) -> dict[str, np.ndarray | Ragged]:
        """Every field (or those named), whole: ``{name: read(name)}``."""
        return {f: self.read(f) for f in (fields or tuple(self._fields))}

    def _field(self, field: str) -> None:
        if field not in self._fields:
            raise FieldNotFoundError(
                f"field {field!r} not in {self!r} (fields: {list(self._fields)})"
            )

    def __repr__(self) -> str:
        return (
            f"<fastload.MemorySplit {self.name!r} n={self._n} chunk_len={self._chunk_len} "
            f"fields={list(self._fields)}>"
        )


class ArrayDecoder:
    """Chunk ``c`` of an in-memory array, copied into the caller's buffer."""

    ragged = False

    def __init__(self, field: str, array: np.ndarray, chunk_len: int) -> None:
        self.field = field
        self.array = array
        self.chunk_len = chunk_len
        self.shape = array.shape
        self.dtype = array.dtype

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_len)

    def chunk_rows(self, chunk: int) -> int:
        return max(0, min(self.chunk_len, self.shape[0] - chunk * self.chunk_len))

    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        """Copy chunk ``chunk`` into ``out`` (>= ``chunk_len`` rows); return its rows."""
        _check_chunk(self.field, chunk, self.n_chunks)
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != self.dtype
            or out.shape[1:] != self.shape[1:]
            or out.shape[0] < self.chunk_len
        ):
            got = f"{out.dtype}{out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ConfigError(
                f"buffer for chunks of field {self.field!r} must be a {self.dtype} array of "
                f"shape ({self.chunk_len}, *{self.shape[1:]}) or more rows; got {got}"
            )
        rows = self.chunk_rows(chunk)
        start = chunk * self.chunk_len
        out[:rows] = self.array[start : start + rows]
        return rows

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.array.flags.writeable = False  # unpickled arrays come back writeable


class RaggedArrayDecoder:
    """Chunk ``c`` of an in-memory ragged field: its value rows and rebased offsets."""

    ragged = True

    def __init__(self, field: str, values: np.ndarray, offsets: np.ndarray, chunk_len: int) -> None:
        self.field = field
        self.values = values
        self.offsets = offsets
        self.event_chunk_len = chunk_len
        self._capacity: int | None = None

    @property
    def n_chunks(self) -> int:
        return -(-(self.offsets.size - 1) // self.event_chunk_len)

    def capacity_rows(self) -> int:
        """Value rows of the widest chunk (computed once)."""
        if self._capacity is None:
            a = np.arange(self.n_chunks, dtype=np.int64) * self.event_chunk_len
            b = np.minimum(a + self.event_chunk_len, self.offsets.size - 1)
            self._capacity = int((self.offsets[b] - self.offsets[a]).max(initial=0))
        return self._capacity

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> None:
        """Copy the chunk's value rows into ``values_out``, its rebased offsets into ``offsets_out``."""
        _check_chunk(self.field, chunk, self.n_chunks)
        a = chunk * self.event_chunk_len
        b = min(a + self.event_chunk_len, self.offsets.size - 1)
        if (
            values_out.shape[0] < self.capacity_rows()
            or offsets_out.shape[0] < b - a + 1
            or values_out.dtype != self.values.dtype
            or values_out.shape[1:] != self.values.shape[1:]
        ):
            raise ConfigError(
                f"buffers {values_out.dtype}{values_out.shape} and {offsets_out.shape[0]} offsets "
                f"for field {self.field!r} need {self.capacity_rows()} rows of "
                f"{self.values.dtype}{self.values.shape[1:]} and {b - a + 1} offsets"
            )
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        values_out[: hi - lo] = self.values[lo:hi]
        offsets_out[: b - a + 1] = self.offsets[a : b + 1] - lo

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.values.flags.writeable = False
        self.offsets.flags.writeable = False


def _check_chunk(field: str, chunk: int, n_chunks: int) -> None:
    if not 0 <= chunk < n_chunks:
        raise IndexError(f"chunk {chunk} out of range for field {field!r} ({n_chunks} chunks)")


def _frozen(value: Any, owner: str, field: str) -> np.ndarray:
    array = np.array(value, copy=True, order="C")  # ours: later edits of the input change nothing
    if array.dtype.kind not in "biuf":
        raise SchemaError(
            f"{owner}: field {field!r} has dtype {array.dtype}; fastload fields hold numbers or "
            "bool (integers, unsigned, floats)"
        )
    if array.nbytes > _LARGE_BYTES:
        _log.info(
            "fl.from_arrays: field %r holds %.1f GiB; process workers each receive a copy "
            "(write a store with fl.write_arrays for data this large)",
            field,
            array.nbytes / 2**30,
        )
    array.flags.writeable = False
    return array


def _info(field: str, shape: tuple[int, ...], dtype: np.dtype, *, ragged: bool) -> FieldInfo:
    return FieldInfo(
        name=field, shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype), ragged=ragged
    )
