"""The Source contract: what the order layer and the prefetch engine need from an input.

A :class:`fl.Loader <fastload.Loader>` (or a :class:`fl.Mix <fastload.Mix>`)
reads any object that has these members; two implementations ship with
fastload: a Zarr store's split (``store["train"]``, :class:`fastload.store.Split`)
and an in-memory split (:func:`fastload.from_arrays`).  ``fastload.testing.SourceTests``
is the conformance suite a new implementation should pass.

Samples are numbered ``0 .. len(source) - 1`` and grouped into *chunks* of
``chunk_len`` consecutive samples (the last may be shorter): chunk ``c`` holds
samples ``[c * chunk_len, min((c + 1) * chunk_len, len(source)))``.  The engine
decodes whole chunks, so a chunk is the unit of reading, and the order layer
shuffles within windows of chunks (docs/order.md).

Decoders are what workers run: :meth:`Source.decoder` returns a small picklable
object per field (process workers receive it through cloudpickle) that fills a
caller's buffer with one chunk.  Dense decoders have ``ragged = False``::

    chunk_len: int                 # rows of a full chunk
    shape: tuple[int, ...]         # (len(source), *row_shape)
    dtype: numpy.dtype
    decode_into(chunk, out) -> int # fill out[:rows] (out: >= chunk_len rows), return rows

Ragged decoders (variable-length samples stored as values + offsets) have
``ragged = True``::

    event_chunk_len: int           # samples per chunk (== the source's chunk_len)
    values: has .shape (total_rows, *row_shape) and .dtype
    capacity_rows() -> int         # value rows a buffer needs for the widest chunk
    decode_into(chunk, values_out, offsets_out)
        # values_out[: offsets_out[n]] = the chunk's value rows, offsets_out[: n + 1]
        # = their offsets relative to values_out (n = samples in the chunk)

A decoder either fills exactly those rows or raises a
:class:`~fastload.errors.FastloadError` naming what it could not read; it never
leaves part of a buffer unwritten and returns normally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["FieldLike", "Source"]


class FieldLike(Protocol):
    """Per-sample description of one field (:class:`fastload.store.FieldInfo` is one)."""

    name: str
    shape: tuple[int, ...]  # per sample; for a ragged field, one row of its values
    dtype: np.dtype
    ragged: bool
    role: str  # "input", "label", ... (see docs/store-format.md)


@runtime_checkable
class Source(Protocol):
    """An input a Loader reads: length, chunking, fields and per-field chunk decoders."""

    #: a short name for messages and for a Mix's labels (e.g. the split's name)
    name: str

    def __len__(self) -> int:
        """Number of samples."""
        ...

    @property
    def chunk_len(self) -> int:
        """Samples per chunk, for every field of the source."""
        ...

    @property
    def n_chunks(self) -> int:
        """``ceil(len / chunk_len)``."""
        ...

    @property
    def fields(self) -> Mapping[str, FieldLike]:
        """Every field, by name."""
        ...

    def max_len(self, field: str) -> int:
        """Longest sample of a ragged field (0 for a dense one)."""
        ...

    def decoder(self, field: str) -> Any:
        """The picklable chunk decoder of ``field`` (see the module docstring)."""
        ...


def describe(source: object) -> str:
    """How a message names a source: its store path for a split, else its repr."""
    store = getattr(source, "store", None)
    path = getattr(store, "path", None)
    return repr(path) if path is not None else repr(source)


def check_source(source: object, *, owner: str, what: str) -> None:
    """Raise a ConfigError naming the missing members when ``source`` is not a Source."""
    from fastload.errors import ConfigError

    missing = [
        member
        for member in ("name", "__len__", "chunk_len", "n_chunks", "fields", "max_len", "decoder")
        if not hasattr(source, member)
    ]
    if missing:
        raise ConfigError(
            f"{owner}: {what} must be a source — a store split (store['train']), "
            f"fl.from_arrays({{...}}) or an object with the Source members "
            f"(fastload.Source) — got {type(source).__name__} without {missing}"
        )
