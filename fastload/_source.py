"""The Source contract: what the order layer and the prefetch engine need from an input.

A :class:`fl.Loader <fastload.Loader>` (or a :class:`fl.Mix <fastload.Mix>`)
reads any object that has the members of :class:`Source`; two implementations
ship with fastload: a Zarr store's split (``store["train"]``,
:class:`fastload.Split`) and an in-memory split (:func:`fastload.from_arrays`,
:class:`fastload.MemorySplit`).  ``fastload.testing.SourceTests`` is the
conformance suite an implementation should pass.

Samples are numbered ``0 .. len(source) - 1`` and grouped into *chunks* of
``chunk_len`` consecutive samples (the last may be shorter): chunk ``c`` holds
samples ``[c * chunk_len, min((c + 1) * chunk_len, len(source)))``.  The engine
decodes whole chunks, so a chunk is the unit of reading, and the order layer
shuffles within windows of chunks (docs/order.md).

What each part of fastload reads, and so all a source must provide:

* the order layer plans epochs from ``len(source)`` and ``chunk_len`` alone;
* the loader numbers the chunks of all its sources consecutively from ``n_chunks``;
* the loader, the mix and the engine read ``fields`` (shape, dtype, raggedness)
  to select fields, check that mixed sources agree and size the shared-memory
  slots, and ``max_len(field)`` to pad a ragged field;
* workers receive ``decoder(field)`` for each selected field -- pickled with
  cloudpickle for process workers, deep-copied for each thread worker -- and call
  only the members of :class:`DenseChunkDecoder` or, for a field whose
  ``ragged`` is true, :class:`RaggedChunkDecoder`.

``url`` (a string naming where the data are) is optional, on a source and on
its decoders: messages name it when it is there, the source's ``repr`` otherwise.
``offsets(field)`` (the ``len + 1`` row offsets of a ragged field, from 0) is
optional too: a loader reads it only for a field delivered as values + offsets
(``fl.Loader(..., ragged={field: "offsets"})``), whose batch offsets the
coordinator writes before any worker copies rows.

This module sits at the bottom of the package beside ``_spec.py``: the store, the
engine, the loader and the mix import it; it imports nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from fastload.errors import ConfigError

__all__ = [
    "DenseChunkDecoder",
    "FieldLike",
    "RaggedChunkDecoder",
    "Source",
    "check_buffer",
    "check_chunk",
    "check_source",
    "describe",
    "missing_members",
]


class FieldLike(Protocol):
    """One field of a source as :attr:`Source.fields` describes it (:class:`fastload.FieldInfo` is one)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-sample shape without the sample axis; for a ragged field, one row of its values."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the field (of its value rows, for a ragged field)."""
        ...

    @property
    def ragged(self) -> bool:
        """True when samples have a variable number of rows (values + offsets)."""
        ...


@runtime_checkable
class DenseChunkDecoder(Protocol):
    """Decodes chunks of a dense field into a caller's buffer (:class:`fastload.store.ChunkDecoder` is one).

    Must survive ``pickle``/``cloudpickle`` and ``copy.deepcopy`` and decode the
    same afterwards.
    """

    @property
    def chunk_len(self) -> int:
        """Rows per chunk: the source's ``chunk_len``."""
        ...

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row (one sample): the field's ``shape``."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """dtype of the rows: the field's ``dtype``."""
        ...

    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        """Fill ``out[:rows]`` with the samples of chunk ``chunk``; return ``rows``.

        ``rows = min(chunk_len, len - chunk * chunk_len)``.  ``out`` is a writeable
        C-contiguous array of ``dtype`` with rows of ``row_shape`` and at least
        ``chunk_len`` rows; rows past ``rows`` may be overwritten (a store decodes its
        whole last chunk) and mean nothing.  Anything else -- a buffer of another
        dtype or row shape, with too few rows, strided or read-only, a ``chunk``
        outside ``[0, n_chunks)``, damaged data -- raises a
        :class:`~fastload.errors.FastloadError` before the buffer holds wrong rows:
        a decoder never returns without having written every row it reports.
        """
        ...


@runtime_checkable
class RaggedChunkDecoder(Protocol):
    """Decodes chunks of a ragged field into values + offsets buffers (:class:`fastload.store.RaggedDecoder` is one).

    Pickling and copying as for :class:`DenseChunkDecoder`.
    """

    @property
    def chunk_len(self) -> int:
        """Samples per chunk: the source's ``chunk_len``."""
        ...

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one value row: the field's ``shape``."""
        ...

    @property
    def dtype(self) -> np.dtype:
        """dtype of the value rows: the field's ``dtype``."""
        ...

    def capacity_rows(self) -> int:
        """Value rows a buffer must hold to decode any chunk of the field."""
        ...

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> int:
        """Decode chunk ``chunk``; return its number of samples ``rows``.

        ``values_out``: a writeable C-contiguous ``dtype`` array with rows of
        ``row_shape`` and at least :meth:`capacity_rows` rows; ``offsets_out``: a
        writeable C-contiguous int64 array of at least ``chunk_len + 1`` entries.
        Afterwards sample ``i`` of the chunk (``0 <= i < rows``) is
        ``values_out[offsets_out[i]:offsets_out[i + 1]]``; ``offsets_out[:rows + 1]``
        is non-decreasing but need not start at 0.  Errors as for
        :meth:`DenseChunkDecoder.decode_into`.
        """
        ...


@runtime_checkable
class Source(Protocol):
    """An input a Loader reads: length, chunking, fields and per-field chunk decoders.

    Its answers must not change while a loader uses it: plans, resume states and
    slot sizes are computed from them once.
    """

    #: a short name for messages and ``repr(loader)`` (a store split: its split name)
    name: str

    def __len__(self) -> int:
        """Number of samples."""
        ...

    @property
    def chunk_len(self) -> int:
        """Samples per chunk (>= 1), for every field of the source."""
        ...

    @property
    def n_chunks(self) -> int:
        """``ceil(len / chunk_len)``: every chunk but the last is full."""
        ...

    @property
    def fields(self) -> Mapping[str, FieldLike]:
        """Every field, by name."""
        ...

    def max_len(self, field: str) -> int:
        """Most rows of any sample of a ragged field (0 for a dense one)."""
        ...

    def decoder(self, field: str) -> DenseChunkDecoder | RaggedChunkDecoder:
        """The decoder of ``field``: a :class:`RaggedChunkDecoder` exactly when the field is ragged."""
        ...


#: the members of a Source, in the order an error lists the missing ones
SOURCE_MEMBERS = ("name", "__len__", "chunk_len", "n_chunks", "fields", "max_len", "decoder")


def missing_members(source: object) -> list[str]:
    """The members of :class:`Source` that ``source`` lacks (empty: it has them all)."""
    missing = []
    for member in SOURCE_MEMBERS:
        # len() looks __len__ up on the type; the rest on the object
        where = type(source) if member == "__len__" else source
        try:
            present = hasattr(where, member)
        except Exception:  # a property raising something other than AttributeError
            present = False
        if not present:
            missing.append(member)
    return missing


def check_source(source: object, *, owner: str, what: str, or_else: str = "") -> None:
    """Raise a ConfigError naming the missing members when ``source`` is not a Source.

    ``owner`` and ``what`` name the caller and its parameter (``"fl.Mix"``,
    ``"sources['gamma']"``); ``or_else`` what else the parameter takes (``"a fl.Mix"``).
    """
    missing = missing_members(source)
    if missing:
        also = f", or {or_else}" if or_else else ""
        raise ConfigError(
            f"{owner}: {what} must be a source (a store split such as store['train'], "
            f"fl.from_arrays({{...}}), or an object with the members of fastload.Source){also}; "
            f"got {type(source).__name__}, without {', '.join(missing)}"
        )


def describe(source: object) -> str:
    """How a message names a source: its ``url`` (a store's path) when it has one, else its repr."""
    url = getattr(source, "url", None)
    return repr(url) if isinstance(url, str) else repr(source)


def check_chunk(chunk: object, n_chunks: int, where: str) -> int:
    """``chunk`` as an int in ``[0, n_chunks)``; a :class:`ConfigError` naming ``where`` otherwise."""
    if isinstance(chunk, (bool, np.bool_)) or not isinstance(chunk, (int, np.integer)):
        raise ConfigError(f"chunk index must be an integer, got {chunk!r} (reading {where})")
    if not 0 <= chunk < n_chunks:
        raise ConfigError(f"chunk {chunk} out of range for {where} ({n_chunks} chunks)")
    return int(chunk)


def check_buffer(
    out: object, dtype: np.dtype, row_shape: tuple[int, ...], min_rows: int, what: str
) -> None:
    """Raise :class:`ConfigError` unless ``out`` can take ``min_rows`` rows of ``dtype`` and ``row_shape``.

    A decoder writes raw bytes: a buffer of another dtype or row shape, or a
    strided one, would silently hold reinterpreted or misplaced values.
    """
    if (
        isinstance(out, np.ndarray)
        and out.ndim >= 1
        and out.dtype == dtype
        and out.shape[1:] == tuple(row_shape)
        and out.shape[0] >= min_rows
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        return
    got = (
        f"{out.dtype}{out.shape} (C-contiguous={out.flags.c_contiguous}, "
        f"writeable={out.flags.writeable})"
        if isinstance(out, np.ndarray)
        else type(out).__name__
    )
    raise ConfigError(
        f"buffer for {what} must be a writeable C-contiguous {np.dtype(dtype)} array of shape "
        f"({min_rows}, *{tuple(row_shape)}) or more rows; got {got}"
    )


def known_row_counts(source: object, field: str) -> np.ndarray | None:
    """Rows of every sample of ragged ``field``, from ``source.offsets(field)`` (read-only).

    ``None`` when the source has no ``offsets`` method (it is optional in the
    contract); a :class:`ConfigError` when what it returns is not ``len + 1``
    non-decreasing offsets.
    """
    offsets_of = getattr(source, "offsets", None)
    if not callable(offsets_of):
        return None
    offsets = np.asarray(offsets_of(field), dtype=np.int64)
    n = len(source)  # type: ignore[arg-type]
    if offsets.shape != (n + 1,):
        raise ConfigError(
            f"{describe(source)}.offsets({field!r}) has shape {offsets.shape}, expected ({n + 1},)"
        )
    counts = np.diff(offsets)
    if counts.size and int(counts.min()) < 0:
        raise ConfigError(f"{describe(source)}.offsets({field!r}) decreases")
    counts.flags.writeable = False
    return counts
