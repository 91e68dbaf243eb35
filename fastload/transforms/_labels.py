"""Categorical transforms: code remapping and one-hot encodings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastload import _validate
from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_name,
    get_array,
    iter_blocks,
    require_field,
)


def _one_hot(indices: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    """One-hot along a new last axis; indices outside 0..n_classes-1 give a zero row."""
    flat = indices.reshape(-1)
    out = np.zeros((flat.size, n_classes), dtype=dtype)
    valid = np.nonzero((flat >= 0) & (flat < n_classes))[0]
    out[valid, flat[valid]] = 1
    return out.reshape(*indices.shape, n_classes)


def _integral(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """int64 view of integer-valued data, and where floats were not integral (None: all ok)."""
    if x.dtype.kind != "f":
        return x.astype(np.int64, copy=False), None
    ok = np.isfinite(x)
    ok &= np.rint(np.where(ok, x, 0)) == x
    return np.rint(np.where(ok, x, 0)).astype(np.int64), ok


def _as_int_indices(x: np.ndarray) -> np.ndarray:
    """Class indices; non-integral or non-finite floats become -1 ("no class")."""
    ints, ok = _integral(x)
    return ints if ok is None else np.where(ok, ints, -1)


def _check_dtype(dtype: DTypeLike, owner: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"{owner}: dtype {dtype!r} is not a numpy dtype") from None
    if dt.kind not in "biuf":
        raise ConfigError(f"{owner}: dtype must be bool, integer or float, got {dt}")
    return dt


class OneHot(Transform):
    """One-hot encode integer class indices along a new last axis.

    Parameters
    ----------
    field : str
        Input ``(B, *S)`` integer indices (floats holding integers accepted).
    n_classes : int
        Length of the new axis.
    out : str, optional
        Output ``(B, *S, n_classes)``; default: replace ``field``.
    dtype : dtype-like, default float32
        Output dtype.

    Notes
    -----
    Indices outside ``0..n_classes-1`` (e.g. ``-1`` padding, or the "unknown"
    index of :class:`RemapPDG`) give an all-zero row, like ``tf.one_hot`` and
    pd4ml's ``np_onehot``.  Use :class:`OneHotLabels` to reject them instead.
    """

    def __init__(
        self,
        field: str,
        n_classes: int,
        *,
        out: str | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        self.field = check_name(field, "field", type(self).__name__)
        self.n_classes = _validate.integer(
            n_classes, name="n_classes", minimum=1, owner=type(self).__name__
        )
        self.out = check_name(out, "out", type(self).__name__) if out is not None else self.field
        self.dtype = _check_dtype(dtype, type(self).__name__)

    def _indices_spec(self, inputs: Specs) -> FieldSpec:
        return require_field(inputs, self.field, self, kinds="iuf")

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = self._indices_spec(inputs)
        return {**inputs, self.out: FieldSpec((*spec.shape, self.n_classes), self.dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        idx = _as_int_indices(get_array(batch, self.field, self))
        return {**batch, self.out: _one_hot(idx, self.n_classes, self.dtype)}


class OneHotLabels(OneHot):
    """One-hot encode class labels ``(B,)`` (or ``(B, 1)``) into ``(B, n_classes)``.

    Parameters
    ----------
    field : str, default "y"
        Input labels, integers in ``0..n_classes-1``.
    n_classes : int
        Number of classes.
    out : str, optional
        Output ``(B, n_classes)``; default: replace ``field``.
    dtype : dtype-like, default float32
        Output dtype.

    Raises
    ------
    ConfigError
        From ``__call__`` if a label is outside ``0..n_classes-1`` (a wrong
        ``n_classes`` would otherwise silently train on zero targets).
    """

    def __init__(
        self,
        field: str = "y",
        n_classes: int = 2,
        *,
        out: str | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(field, n_classes, out=out, dtype=dtype)

    def _indices_spec(self, inputs: Specs) -> FieldSpec:
        spec = require_field(inputs, self.field, self, ndim=(0, 1), kinds="biuf")
        if spec.shape not in ((), (1,)):
            raise ConfigError(
                f"OneHotLabels: field {self.field!r} has per-sample shape {spec.shape}; "
                "labels must be one integer per sample (use OneHot for other shapes)"
            )
        return FieldSpec((), spec.dtype)

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        labels = get_array(batch, self.field, self)
        idx = _as_int_indices(labels.reshape(labels.shape[0]))
        bad = (idx < 0) | (idx >= self.n_classes)
        if np.any(bad):
            raise ConfigError(
                f"OneHotLabels: field {self.field!r} holds label "
                f"{labels.reshape(-1)[np.argmax(bad)]!r}, outside 0..{self.n_classes - 1}; "
                "set n_classes to the number of classes of the dataset"
            )
        return {**batch, self.out: _one_hot(idx, self.n_classes, self.dtype)}


class RemapPDG(Transform):
    """Map particle codes to dense indices ``0..len(codes)-1`` by a lookup table.

    pd4ml's Belle preprocessing maps the (already compacted) PDG column to
    ``0..181`` in order of decreasing frequency on the training data, then
    one-hot encodes with 182 classes; build that with ``RemapPDG(...,
    codes=pdg_codes_by_frequency(train_X, column=-1))`` + :class:`OneHot`
    (or use :data:`PD4ML_BELLE_PDG_CODES`).

    Parameters
    ----------
    field : str
        Input ``(B, *S)`` codes, or ``(B, *S, F)`` with ``column`` set.
    codes : sequence of int
        ``codes[i]`` maps to ``i``.  Distinct integers.
    column : int, optional
        Read the codes from this column of the last axis of ``field``.
    out : str, optional
        Output ``(B, *S)`` int64 indices.  Default: replace ``field``; must be
        given when ``column`` is set (the other columns would be lost).

    Notes
    -----
    Codes not in the table (including 0, the padding of pd4ml's arrays)
    map to ``len(codes)``, which :class:`OneHot` with ``n_classes=len(codes)``
    turns into an all-zero row, as pd4ml does.
    """

    def __init__(
        self,
        field: str,
        codes: Sequence[int] | ArrayLike,
        *,
        column: int | None = None,
        out: str | None = None,
    ) -> None:
        self.field = check_name(field, "field", "RemapPDG")
        table = np.asarray(codes)
        if table.ndim != 1 or table.size == 0 or table.dtype.kind not in "iu":
            raise ConfigError(
                f"RemapPDG: codes must be a non-empty 1-d sequence of integers, got {codes!r}"
            )
        if np.unique(table).size != table.size:
            raise ConfigError("RemapPDG: codes contain duplicates; each code needs one index")
        self.codes = table.astype(np.int64)
        self.column = None if column is None else int(column)
        if self.column is not None and out is None:
            raise ConfigError(
                "RemapPDG: give out= when column is set, so the other columns of "
                f"{field!r} are not replaced by the indices"
            )
        self.out = check_name(out, "out", "RemapPDG") if out is not None else self.field

    @property
    def unknown_index(self) -> int:
        """Index given to codes not in the table (``len(codes)``)."""
        return int(self.codes.size)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, kinds="iuf")
        shape = spec.shape
        if self.column is not None:
            if not shape or not -shape[-1] <= self.column < shape[-1]:
                raise ConfigError(
                    f"RemapPDG: column {self.column} is out of range for field {self.field!r} "
                    f"with per-sample shape {shape}"
                )
            shape = shape[:-1]
        return {**inputs, self.out: FieldSpec(shape, np.int64)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        if self.column is not None:
            x = x[..., self.column]
        return {**batch, self.out: remap_codes(x, self.codes)}


def remap_codes(values: ArrayLike, codes: ArrayLike) -> np.ndarray:
    """Vectorised lookup: position of each value in ``codes``, ``len(codes)`` if absent.

    Parameters
    ----------
    values : array-like
        Codes to map (integers, or floats holding integers).
    codes : array-like of int
        The table; ``codes[i]`` maps to ``i``.

    Returns
    -------
    numpy.ndarray
        int64 indices, shape of ``values``.
    """
    table = np.asarray(codes, dtype=np.int64)
    v, ok = _integral(np.asarray(values))
    order = np.argsort(table, kind="stable")
    sorted_codes = table[order]
    pos = np.clip(np.searchsorted(sorted_codes, v), 0, table.size - 1)
    found = sorted_codes[pos] == v
    if ok is not None:
        found &= ok
    return np.where(found, order[pos], table.size).astype(np.int64)


def pdg_codes_by_frequency(
    data: object,
    *,
    column: int | None = None,
    exclude: Iterable[int] = (0,),
    block_rows: int = 65536,
) -> np.ndarray:
    """Codes ordered by decreasing frequency, for :class:`RemapPDG`.

    Parameters
    ----------
    data : array-like or iterable of array-like
        Training data (one array, read ``block_rows`` samples at a time, or
        an iterable of blocks).
    column : int, optional
        Count only this column of the last axis (e.g. ``-1`` for pd4ml's
        Belle features, whose last column is the PDG code).
    exclude : iterable of int, default (0,)
        Codes never counted (0 is pd4ml's padding).
    block_rows : int, default 65536
        Samples read at a time from a single array.

    Returns
    -------
    numpy.ndarray
        int64 codes, most frequent first; equal counts ordered by code value.
    """
    counts: Counter[int] = Counter()
    for block in iter_blocks(data, block_rows):
        values, ok = _integral(block[..., column] if column is not None else block)
        uniq, n = np.unique(values if ok is None else values[ok], return_counts=True)
        counts.update(dict(zip(uniq.tolist(), n.tolist(), strict=True)))
    skip = {int(e) for e in exclude}
    ranked = sorted((c for c in counts if c not in skip), key=lambda c: (-counts[c], c))
    return np.asarray(ranked, dtype=np.int64)
