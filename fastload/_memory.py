"""An in-memory split: numpy arrays (and ragged fields) as a Loader source.

``fl.from_arrays({"X": X, "y": y})`` reads like a store split -- same chunks,
same plan, same batches -- without writing a store: for tests, notebooks and
data that fit in memory several times over.  The arrays are validated as
:func:`fastload.write_arrays` validates them (equal lengths, bool, integer,
float or complex dtypes, per-sample shapes, no NaN or inf unless
``allow_nonfinite``) and copied once, C-contiguous, little-endian and read-only,
so changing the caller's arrays afterwards changes nothing a loader delivers.

What it costs: the decoders hold the arrays themselves.  Thread and inline
workers share them (a decoder's deep copy is itself); **process workers receive
them by value** -- the loader pickles its configuration once (one more copy in
the consumer, kept to start replacement workers) and every worker process
unpickles its own copy.  With ``backend="process"`` and ``w`` workers the
selected fields are in memory about ``w + 2`` times.  Write a store
(``fl.write_arrays``) for data that is not small, or use ``backend="thread"``.
Above 1 GiB, :func:`from_arrays` logs (INFO) that this is so; it refuses
nothing, since only the caller knows how much memory there is.

This module imports only numpy and fastload's bottom layer; the store package
(zarr) is imported when :func:`from_arrays` runs, for the field records, the
ragged type and the chunking rule it shares with the writer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload import _validate
from fastload._messages import closest
from fastload._source import check_buffer, check_chunk
from fastload.errors import ConfigError, EmptyDatasetError, FieldNotFoundError, SchemaError

if TYPE_CHECKING:
    from fastload.store import FieldInfo, Ragged

__all__ = ["ArrayDecoder", "MemorySplit", "RaggedArrayDecoder", "from_arrays"]

_log = logging.getLogger("fastload")
_OWNER = "fl.from_arrays"
#: above this, say that process workers each receive a copy
_LARGE_BYTES = 1 << 30
#: dtype kinds accepted: bool, int, uint, float, complex (the store's STORABLE_KINDS)
_KINDS = "biufc"


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class ArrayDecoder:
    """Chunks of one dense in-memory field (a :class:`~fastload.DenseChunkDecoder`).

    Copying one is free (the array is read-only and shared); pickling one
    pickles the array by value.
    """

    def __init__(self, data: np.ndarray, chunk_len: int, url: str, field: str) -> None:
        self.data = _frozen(data)
        self.chunk_len = int(chunk_len)
        self.url = url
        self.field = field

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.data.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """dtype of the field."""
        return self.data.dtype

    @property
    def n_chunks(self) -> int:
        """Chunks along the sample axis (the last one may be partial)."""
        return -(-self.data.shape[0] // self.chunk_len)

    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        """Copy chunk ``chunk``'s samples into ``out[:rows]``; return ``rows``."""
        where = f"field {self.field!r} of {self.url!r}"
        chunk = check_chunk(chunk, self.n_chunks, where)
        check_buffer(out, self.dtype, self.row_shape, self.chunk_len, f"chunks of {where}")
        lo = chunk * self.chunk_len
        hi = min(lo + self.chunk_len, self.data.shape[0])
        out[: hi - lo] = self.data[lo:hi]
        return hi - lo

    def __deepcopy__(self, memo: dict[int, Any]) -> ArrayDecoder:
        # nothing in it changes: a thread worker may share it (a copy would copy the data)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _frozen(self.data)  # unpickled arrays are writeable again


class RaggedArrayDecoder:
    """Chunks of one ragged in-memory field (a :class:`~fastload.RaggedChunkDecoder`).

    ``values`` holds the rows of every sample back to back and ``offsets``
    (``n + 1`` int64, from 0) where each sample starts.
    """

    def __init__(
        self, values: np.ndarray, offsets: np.ndarray, chunk_len: int, url: str, field: str
    ) -> None:
        self.values = _frozen(values)
        self.offsets = _frozen(offsets)
        self.chunk_len = int(chunk_len)
        self.url = url
        self.field = field
        starts = np.arange(self.n_chunks, dtype=np.int64) * self.chunk_len
        ends = np.minimum(starts + self.chunk_len, offsets.size - 1)
        self._capacity = int((offsets[ends] - offsets[starts]).max(initial=0))

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one value row."""
        return tuple(self.values.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """dtype of the value rows."""
        return self.values.dtype

    @property
    def n_chunks(self) -> int:
        """Chunks along the sample axis (the last one may be partial)."""
        return -(-(self.offsets.size - 1) // self.chunk_len)

    def capacity_rows(self) -> int:
        """Value rows of the widest chunk."""
        return self._capacity

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> int:
        """Copy chunk ``chunk``'s value rows to ``values_out`` and its offsets (from 0) to ``offsets_out``."""
        where = f"ragged field {self.field!r} of {self.url!r}"
        chunk = check_chunk(chunk, self.n_chunks, where)
        check_buffer(values_out, self.dtype, self.row_shape, self._capacity, f"values of {where}")
        check_buffer(offsets_out, np.dtype(np.int64), (), self.chunk_len + 1, f"offsets of {where}")
        a = chunk * self.chunk_len
        b = min(a + self.chunk_len, self.offsets.size - 1)
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        values_out[: hi - lo] = self.values[lo:hi]
        offsets_out[: b - a + 1] = self.offsets[a : b + 1] - lo
        return b - a

    def __deepcopy__(self, memo: dict[int, Any]) -> RaggedArrayDecoder:
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _frozen(self.values)
        _frozen(self.offsets)


class MemorySplit:
    """A split held in memory: a :class:`~fastload.Source` built by :func:`from_arrays`.

    Reads like a store split: ``len``, ``chunk_len``, ``n_chunks``, ``fields``
    (:class:`~fastload.FieldInfo`), :meth:`max_len`, :meth:`read` and
    :meth:`arrays` (read-only views of its copies of the arrays).
    """

    def __init__(
        self,
        columns: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]],
        fields: Mapping[str, FieldInfo],
        n: int,
        chunk_len: int,
        name: str,
    ) -> None:
        self._columns = dict(columns)
        self._fields = dict(fields)
        self._n = int(n)
        self._chunk_len = int(chunk_len)
        self.name = name
        self._max_len = {
            f: int(np.diff(column[1]).max(initial=0))
            for f, column in self._columns.items()
            if isinstance(column, tuple)
        }

    @property
    def url(self) -> str:
        """``"memory:NAME"``: where error messages say the data are."""
        return f"memory:{self.name}"

    def __len__(self) -> int:
        return self._n

    @property
    def n(self) -> int:
        """Number of samples."""
        return self._n

    @property
    def chunk_len(self) -> int:
        """Samples per chunk."""
        return self._chunk_len

    @property
    def n_chunks(self) -> int:
        """Sample chunks; the last one may be partial."""
        return -(-self._n // self._chunk_len)

    @property
    def fields(self) -> dict[str, FieldInfo]:
        """Fields by name, as a store describes them (role ``"label"`` for ``y``/``label``/``labels``)."""
        return dict(self._fields)

    def __repr__(self) -> str:
        return (
            f"<fastload.MemorySplit {self.name!r} n={self._n} chunk_len={self._chunk_len} "
            f"fields={list(self._fields)}>"
        )

    def _field(self, field: str) -> FieldInfo:
        try:
            return self._fields[field]
        except KeyError:
            raise FieldNotFoundError(
                f"field {field!r} not in {self.url!r}{closest(field, list(self._fields))} "
                f"(fields: {list(self._fields)})"
            ) from None

    def max_len(self, field: str) -> int:
        """Most rows of any sample of a ragged field (0 for a dense field)."""
        return self._max_len[field] if self._field(field).ragged else 0

    def offsets(self, field: str) -> np.ndarray:
        """The offsets ``(n + 1,)`` of a ragged field, from 0 (a read-only view)."""
        column = self._columns[self._field(field).name]
        if not isinstance(column, tuple):
            raise ConfigError(f"field {field!r} of {self.url!r} is dense; it has no offsets")
        return column[1]

    def decoder(self, field: str) -> ArrayDecoder | RaggedArrayDecoder:
        """What loader workers decode ``field`` with (it carries the field's arrays)."""
        column = self._columns[self._field(field).name]
        if isinstance(column, tuple):
            values, offsets = column
            return RaggedArrayDecoder(values, offsets, self._chunk_len, self.url, field)
        return ArrayDecoder(column, self._chunk_len, self.url, field)

    def read(self, field: str, start: int = 0, stop: int | None = None) -> np.ndarray | Ragged:
        """Samples ``[start, stop)`` of a field (clipped), as read-only views.

        Returns an array ``(stop - start, *shape)``, or a :class:`~fastload.Ragged`
        whose offsets start at 0 for a ragged field (as ``Split.read``).
        """
        from fastload.store import Ragged

        stop = self._n if stop is None else min(stop, self._n)
        start = max(0, min(start, stop))
        column = self._columns[self._field(field).name]
        if not isinstance(column, tuple):
            return column[start:stop]
        values, offsets = column
        lo, hi = int(offsets[start]), int(offsets[stop])
        return Ragged(values[lo:hi], offsets[start : stop + 1] - lo)

    def arrays(self, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray | Ragged]:
        """Every sample of the selected fields (default: all)."""
        return {f: self.read(f) for f in (fields or tuple(self._fields))}

    def select(self, rows: Any, *, name: str | None = None) -> Any:
        """A filtered view: the samples ``rows`` (a boolean mask or indices), itself a Source.

        E.g. ``split.select(split.read("energy") > 0.61)``; see :class:`fastload.Selection`.
        """
        from fastload._selection import Selection

        return Selection(self, rows, name=name)


def from_arrays(
    arrays: Mapping[str, np.ndarray | Ragged],
    *,
    chunk_len: int | None = None,
    name: str = "memory",
    allow_nonfinite: bool = False,
) -> MemorySplit:
    """A :class:`~fastload.Source` over in-memory arrays, for ``fl.Loader`` and ``fl.Mix``.

    Parameters
    ----------
    arrays
        ``{field: array}``: dense fields are arrays ``(n, *shape)`` of bool,
        integer, float or complex dtype; ragged fields are :class:`~fastload.Ragged`
        (delivered padded, with ``FIELD_len``, as from a store).  Every field has
        the same ``n >= 1``.
    chunk_len
        Samples per chunk, the unit of shuffling (chunks are permuted, samples
        shuffled inside windows of ``window_chunks`` chunks) and of worker tasks.
        Default: what :func:`fastload.write_arrays` would choose for the same
        arrays (chunks of about 4 MiB of the largest field), so a loader over
        ``from_arrays(a)`` plans the same epochs as over ``write_arrays(path,
        {"train": a})``.
    name
        The source's name in messages and ``repr(loader)``.
    allow_nonfinite
        Accept NaN and inf in float and complex fields (refused by default, as
        by the store writer).

    Returns
    -------
    MemorySplit
        Holds its own C-contiguous, little-endian, read-only copy of every array
        (the caller's arrays may change afterwards).  With ``backend="process"``
        every worker process receives a copy of the selected fields by value;
        meant for tests and data that fit in memory several times over.

    Raises
    ------
    SchemaError
        No field, unequal lengths, a scalar, an unsupported dtype, or (unless
        ``allow_nonfinite``) NaN or inf.
    EmptyDatasetError
        The arrays hold no sample.
    ConfigError
        ``chunk_len``, ``name`` or ``allow_nonfinite`` is invalid.
    """
    from fastload.store import FieldInfo, Ragged, StoreLayout

    if not isinstance(name, str) or not name:
        raise _validate.problem(_OWNER, "name", "a non-empty string", name)
    if chunk_len is not None:
        chunk_len = _validate.integer(chunk_len, name="chunk_len", minimum=1, owner=_OWNER)
    allow_nonfinite = _validate.flag(allow_nonfinite, name="allow_nonfinite", owner=_OWNER)
    if not isinstance(arrays, Mapping):
        raise SchemaError(
            f"{_OWNER}: arrays must be a mapping field -> array (or fl.Ragged), got "
            f"{type(arrays).__name__}"
        )
    if not arrays:
        raise SchemaError(f"{_OWNER}: arrays has no field; give at least one")
    fields: dict[str, FieldInfo] = {}
    columns: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}
    lengths: dict[str, int] = {}
    mean_rows: dict[str, float] = {}
    for fname, value in arrays.items():
        if not isinstance(fname, str) or not fname:
            raise SchemaError(f"{_OWNER}: field names must be non-empty strings, got {fname!r}")
        where = f"{_OWNER}: field {fname!r}"
        ragged = isinstance(value, Ragged)
        if isinstance(value, tuple):
            # (values, offsets) would be np.asarray'd into a dense field of 2 samples, or fail
            raise SchemaError(
                f"{where} is a tuple; pass a ragged field as fl.Ragged(values, offsets) and a "
                "dense one as an array"
            )
        sample = value.values if ragged else np.asarray(value)
        if sample.ndim == 0:
            raise SchemaError(
                f"{where} is a scalar; fields need a leading sample axis (shape (n, ...))"
            )
        if sample.dtype.kind not in _KINDS:
            raise SchemaError(
                f"{where}: dtype {sample.dtype} is not supported; use bool, integer, float or "
                "complex arrays"
            )
        info = FieldInfo(
            name=fname,
            shape=tuple(int(s) for s in sample.shape[1:]),
            dtype=sample.dtype.newbyteorder("<"),  # little-endian, as a store holds it
            role="label" if fname in ("y", "label", "labels") else "input",
            ragged=ragged,
        )
        conformed = info.conform(value, where=where, allow_nonfinite=allow_nonfinite)
        if isinstance(conformed, Ragged):
            values = np.array(conformed.values, dtype=info.dtype, order="C", copy=True)
            offsets = np.array(conformed.offsets, dtype=np.int64, order="C", copy=True)
            columns[fname] = (_frozen(values), _frozen(offsets))
            lengths[fname] = len(conformed)
            if len(conformed):
                mean_rows[fname] = int(offsets[-1]) / len(conformed)
        else:
            columns[fname] = _frozen(np.array(conformed, dtype=info.dtype, order="C", copy=True))
            lengths[fname] = int(conformed.shape[0])
        fields[fname] = info
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise SchemaError(f"{_OWNER}: fields have unequal lengths ({detail})")
    n = next(iter(lengths.values()))
    if n == 0:
        raise EmptyDatasetError(f"{_OWNER}: the arrays hold no sample (length 0)")
    if chunk_len is None:
        chunk_len = StoreLayout(fields=fields).split_chunk_len(name, mean_rows)
    nbytes = sum(
        sum(a.nbytes for a in c) if isinstance(c, tuple) else c.nbytes for c in columns.values()
    )
    if nbytes > _LARGE_BYTES:
        _log.info(
            "fl.from_arrays(name=%r) holds %.1f GiB; process workers each receive a copy of the "
            "fields they read (backend='thread' shares them; fl.write_arrays writes a store)",
            name,
            nbytes / 2**30,
        )
    return MemorySplit(columns, fields, n, chunk_len, name)
