"""A filtered view of a source: ``split.select(mask_or_indices)``, itself a :class:`~fastload.Source`.

The selection is computed once (e.g. ``split.select(split.read("energy") > 0.61)``)
and fixed: sample ``i`` of the view is sample ``rows[i]`` of the base source
(``rows`` sorted, unique).  A Loader reading the view plans its epochs from
the view's length, so every selected sample is delivered exactly once per epoch
and every batch is full -- nothing is dropped inside a batch.

Chunks: the view has the base's ``chunk_len``; view chunk ``c`` holds the
selected samples ``rows[c * chunk_len : (c + 1) * chunk_len]``.  With
``chunk_len`` 1 (LArIAT's one-event chunks) a view chunk *is* a base chunk and
is decoded straight into the caller's buffer; otherwise the base chunks the
view chunk touches are decoded into a scratch buffer (per decoder, reused) and
the selected rows gathered from it, so a sparse selection of a store with long
chunks decodes more than it delivers.

Row counts: a view has ``offsets(field)`` exactly when its base has it (the
base's counts of the selected samples, summed from 0), so a ragged field of a
view can arrive as values + offsets and a view's chunks can be kept in a
loader's memory cache, as the base's can.

This module sits beside ``_source.py`` and imports only it (and errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fastload._source import (
    DenseChunkDecoder,
    FieldLike,
    RaggedChunkDecoder,
    Source,
    check_buffer,
    check_chunk,
    check_source,
    describe,
    known_row_counts,
)
from fastload.errors import ConfigError

__all__ = ["Selection"]


def selected_rows(rows: object, n: int, where: str) -> np.ndarray:
    """Sorted unique int64 indices from a boolean mask of length ``n`` or from indices."""
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ConfigError(f"{where}: a boolean mask must have shape ({n},), got {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ConfigError(
            f"{where}: select takes a boolean mask of shape ({n},) or a 1-D array of integer "
            f"sample indices, got {arr.dtype}{arr.shape}"
        )
    idx = arr.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ConfigError(f"{where}: indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    out = np.unique(idx)
    if out.size != idx.size:
        raise ConfigError(
            f"{where}: indices must be distinct (a view delivers each sample once per epoch); "
            "repeat samples with a fl.Mix or weights instead"
        )
    return out


class Selection:
    """Samples ``rows`` of ``base``, in base order, as a Source of their own.

    Parameters
    ----------
    base
        Any :class:`~fastload.Source` (a store split, a memory split, another selection).
    rows
        A boolean mask of ``len(base)`` or distinct integer indices (sorted here).
    name
        Name for messages; default ``"<base name>[selected]"``.
    """

    def __init__(self, base: Source, rows: object, *, name: str | None = None) -> None:
        check_source(base, owner="select", what="the base")
        self.base = base
        self.rows = selected_rows(rows, len(base), f"select on {describe(base)}")
        self.rows.setflags(write=False)
        self.name = name or f"{base.name}[selected]"

    def __len__(self) -> int:
        return int(self.rows.size)

    def __repr__(self) -> str:
        return f"Selection({len(self)} of {len(self.base)} samples of {describe(self.base)})"

    @property
    def url(self) -> str:
        base = getattr(self.base, "url", None)
        return f"{base if isinstance(base, str) else self.base.name}[{len(self)} selected]"

    @property
    def chunk_len(self) -> int:
        return int(self.base.chunk_len)

    @property
    def n_chunks(self) -> int:
        return -(-len(self) // self.chunk_len)

    @property
    def fields(self) -> Mapping[str, FieldLike]:
        return self.base.fields

    def max_len(self, field: str) -> int:
        return int(self.base.max_len(field))

    def __getattr__(self, name: str) -> Any:
        # ``offsets`` is optional in the Source contract: the view has it iff its base does,
        # so that loaders asking ``getattr(source, "offsets", None)`` learn the truth
        if name == "offsets" and callable(getattr(self.__dict__.get("base"), "offsets", None)):
            return self._offsets
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_offsets_of"}

    def _offsets(self, field: str) -> np.ndarray:
        """Offsets ``(len + 1,)`` of the selected samples' value rows of ragged ``field``, from 0."""
        cache: dict[str, np.ndarray] = self.__dict__.setdefault("_offsets_of", {})
        if field not in cache:
            counts = known_row_counts(self.base, field)
            if counts is None:  # pragma: no cover - __getattr__ checked the base has offsets
                raise AttributeError("offsets")
            offsets = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(counts[self.rows], out=offsets[1:])
            offsets.flags.writeable = False
            cache[field] = offsets
        return cache[field]

    def select(self, rows: object, *, name: str | None = None) -> Selection:
        """A selection of this selection (indices into this view)."""
        return Selection(
            self.base, self.rows[selected_rows(rows, len(self), repr(self))], name=name
        )

    def read(self, field: str) -> Any:
        """Every selected sample of ``field`` (dense: an array; ragged: a Ragged), via the decoders."""
        dec = self.decoder(field)
        spec = self.fields[field]
        if not spec.ragged:
            out = np.empty((len(self), *spec.shape), dtype=spec.dtype)
            buf = np.empty((self.chunk_len, *spec.shape), dtype=spec.dtype)
            for c in range(self.n_chunks):
                rows = dec.decode_into(c, buf)
                out[c * self.chunk_len : c * self.chunk_len + rows] = buf[:rows]
            return out
        from fastload.store import Ragged  # a reading convenience only

        assert isinstance(dec, _RaggedSelection)
        parts = []
        values = np.empty((dec.capacity_rows(), *spec.shape), dtype=spec.dtype)
        offsets = np.empty(self.chunk_len + 1, dtype=np.int64)
        for c in range(self.n_chunks):
            rows = dec.decode_into(c, values, offsets)
            parts += [values[offsets[i] : offsets[i + 1]].copy() for i in range(rows)]
        return (
            Ragged.from_list(parts) if parts else Ragged(values[:0].copy(), np.zeros(1, np.int64))
        )

    def decoder(self, field: str) -> DenseChunkDecoder | RaggedChunkDecoder:
        base = self.base.decoder(field)  # the base refuses an unknown field
        if self.fields[field].ragged:
            return _RaggedSelection(base, self.rows, self.chunk_len, self.max_len(field), self.url)  # type: ignore[arg-type]
        return _DenseSelection(base, self.rows, self.chunk_len, self.url)  # type: ignore[arg-type]


class _DenseSelection:
    """Decodes view chunks of a dense field: one base chunk per view chunk when ``chunk_len`` is 1."""

    def __init__(self, base: DenseChunkDecoder, rows: np.ndarray, chunk_len: int, url: str) -> None:
        self.base = base
        self.rows = rows
        self.chunk_len = chunk_len
        self.url = url
        self._scratch: np.ndarray | None = None

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.base.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.base.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}

    def decode_into(self, chunk: int, out: np.ndarray) -> int:
        n_chunks = -(-self.rows.size // self.chunk_len)
        chunk = check_chunk(chunk, n_chunks, self.url)
        check_buffer(
            out, self.dtype, self.row_shape, self.chunk_len, f"chunk {chunk} of {self.url}"
        )
        want = self.rows[chunk * self.chunk_len : (chunk + 1) * self.chunk_len]
        if self.chunk_len == 1:  # the base chunk is the sample: decode straight into the slot
            self.base.decode_into(int(want[0]), out)
            return 1
        if self._scratch is None:
            self._scratch = np.empty((self.chunk_len, *self.row_shape), dtype=self.dtype)
        base_chunk = want // self.chunk_len
        for c in np.unique(base_chunk):
            self.base.decode_into(int(c), self._scratch)
            hit = np.flatnonzero(base_chunk == c)
            out[hit] = self._scratch[want[hit] - int(c) * self.chunk_len]
        return int(want.size)


class _RaggedSelection:
    """Decodes view chunks of a ragged field (values gathered contiguously, offsets from 0)."""

    def __init__(
        self, base: RaggedChunkDecoder, rows: np.ndarray, chunk_len: int, max_len: int, url: str
    ) -> None:
        self.base = base
        self.rows = rows
        self.chunk_len = chunk_len
        self.max_len = max_len
        self.url = url
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.base.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.base.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_scratch": None}

    def capacity_rows(self) -> int:
        if self.chunk_len == 1:
            return int(self.base.capacity_rows())
        return max(1, self.chunk_len * self.max_len)

    def decode_into(self, chunk: int, values_out: np.ndarray, offsets_out: np.ndarray) -> int:
        n_chunks = -(-self.rows.size // self.chunk_len)
        chunk = check_chunk(chunk, n_chunks, self.url)
        where = f"chunk {chunk} of {self.url}"
        check_buffer(values_out, self.dtype, self.row_shape, self.capacity_rows(), where)
        check_buffer(offsets_out, np.dtype(np.int64), (), self.chunk_len + 1, f"offsets of {where}")
        want = self.rows[chunk * self.chunk_len : (chunk + 1) * self.chunk_len]
        if self.chunk_len == 1:
            self.base.decode_into(int(want[0]), values_out, offsets_out)
            return 1
        if self._scratch is None:
            self._scratch = (
                np.empty((self.base.capacity_rows(), *self.row_shape), dtype=self.dtype),
                np.empty(self.chunk_len + 1, dtype=np.int64),
            )
        values, offsets = self._scratch
        base_chunk = want // self.chunk_len
        pieces: dict[int, np.ndarray] = {}
        for c in np.unique(base_chunk):
            self.base.decode_into(int(c), values, offsets)
            for j in np.flatnonzero(base_chunk == c):
                r = int(want[j]) - int(c) * self.chunk_len
                pieces[int(j)] = values[offsets[r] : offsets[r + 1]].copy()
        pos = 0
        offsets_out[0] = 0
        for j in range(want.size):
            rows = pieces[j]
            values_out[pos : pos + len(rows)] = rows
            pos += len(rows)
            offsets_out[j + 1] = pos
        return int(want.size)
