"""Structural transforms: change dtype, shape or the set of fields, not values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_name,
    get_array,
    require_field,
)


class Cast(Transform):
    """Convert a field to another dtype (numpy ``astype``, unsafe casting allowed).

    Parameters
    ----------
    field : str
        Input field, any per-sample shape.
    dtype : numpy dtype-like
        Target dtype, e.g. ``"float32"``.
    out : str, optional
        Output field name; default: replace ``field``.

    Notes
    -----
    Input ``field`` ``(B, *S)`` of any dtype → ``out`` ``(B, *S)`` of ``dtype``.
    """

    def __init__(self, field: str, dtype: DTypeLike, *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "Cast")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise ConfigError(f"Cast: dtype {dtype!r} is not a numpy dtype ({exc})") from None
        if self.dtype.hasobject:
            raise ConfigError("Cast: object dtype cannot be placed in shared memory")
        self.out = check_name(out, "out", "Cast") if out is not None else self.field

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self)
        return {**inputs, self.out: FieldSpec(spec.shape, self.dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        return {**batch, self.out: x.astype(self.dtype, copy=False)}


class Drop(Transform):
    """Remove fields from the batch (e.g. raw inputs once features are derived).

    Parameters
    ----------
    fields : str or sequence of str
        Fields to remove; each must be present.
    """

    def __init__(self, fields: str | Sequence[str]) -> None:
        names = (fields,) if isinstance(fields, str) else tuple(fields)
        self.fields = tuple(check_name(f, "fields entry", "Drop") for f in names)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        for f in self.fields:
            require_field(inputs, f, self, ragged=None)
        return {k: v for k, v in inputs.items() if k not in self.fields}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        for f in self.fields:
            if f not in batch:  # any field, ragged ones too
                get_array(batch, f, self)  # the standard message
        return {k: v for k, v in batch.items() if k not in self.fields}


class Reshape(Transform):
    """Reshape each sample of a field, e.g. a 20x20 image into 400 graph nodes.

    Parameters
    ----------
    field : str
        Input field ``(B, *S)``.
    shape : sequence of int
        New per-sample shape with ``prod(shape) == prod(S)``; one entry may be
        ``-1`` (inferred).
    out : str, optional
        Output field name; default: replace ``field``.
    """

    def __init__(self, field: str, shape: Sequence[int], *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "Reshape")
        self.shape = tuple(int(s) for s in shape)
        if sum(s == -1 for s in self.shape) > 1 or any(s < -1 for s in self.shape):
            raise ConfigError(
                f"Reshape: shape {self.shape} may hold non-negative sizes and at most one -1"
            )
        self.out = check_name(out, "out", "Reshape") if out is not None else self.field

    def _resolved(self, spec: FieldSpec) -> tuple[int, ...]:
        size = int(np.prod(spec.shape, dtype=np.int64))
        known = int(np.prod([s for s in self.shape if s != -1], dtype=np.int64))
        shape = self.shape
        if -1 in shape and known > 0 and size % known == 0:
            shape = tuple(size // known if s == -1 else s for s in shape)
        if -1 in shape or int(np.prod(shape, dtype=np.int64)) != size:
            raise ConfigError(
                f"Reshape: field {self.field!r} has per-sample shape {spec.shape} "
                f"({size} values), which cannot be reshaped to {self.shape}"
            )
        return shape

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self)
        return {**inputs, self.out: FieldSpec(self._resolved(spec), spec.dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        shape = self._resolved(FieldSpec(x.shape[1:], x.dtype))
        return {**batch, self.out: x.reshape((x.shape[0], *shape))}


class SelectColumns(Transform):
    """Keep some entries of a field's last axis (e.g. drop a PDG column).

    Parameters
    ----------
    field : str
        Input field ``(B, ..., F)``.
    columns : sequence of int
        Indices into the last axis, in output order; negative counts from the end.
    out : str, optional
        Output field name; default: replace ``field``.

    Notes
    -----
    ``field`` ``(B, ..., F)`` → ``out`` ``(B, ..., len(columns))``, same dtype.
    """

    def __init__(self, field: str, columns: Sequence[int], *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "SelectColumns")
        self.columns = tuple(int(c) for c in columns)
        if not self.columns:
            raise ConfigError("SelectColumns: columns is empty; select at least one column")
        self.out = check_name(out, "out", "SelectColumns") if out is not None else self.field

    def _check(self, spec: FieldSpec) -> None:
        n = spec.shape[-1]
        bad = [c for c in self.columns if not -n <= c < n]
        if bad:
            raise ConfigError(
                f"SelectColumns: columns {bad} are out of range for field {self.field!r} "
                f"with {n} columns (per-sample shape {spec.shape})"
            )

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self)
        if not spec.shape:
            raise ConfigError(f"SelectColumns: field {self.field!r} is scalar per sample")
        self._check(spec)
        return {**inputs, self.out: FieldSpec((*spec.shape[:-1], len(self.columns)), spec.dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        return {**batch, self.out: np.take(x, self.columns, axis=-1)}


class Concat(Transform):
    """Concatenate fields along a per-sample axis (default: the feature axis).

    Parameters
    ----------
    fields : sequence of str
        Input fields; their per-sample shapes must agree except along ``axis``.
    out : str
        Output field name.
    axis : int, default -1
        Per-sample axis to join along (the batch axis not counted).
    drop_inputs : bool, default True
        Remove the input fields from the batch (``out`` may reuse one of their names).

    Notes
    -----
    The output dtype is ``np.result_type`` of the inputs.
    """

    def __init__(
        self, fields: Sequence[str], out: str, *, axis: int = -1, drop_inputs: bool = True
    ) -> None:
        self.fields = tuple(check_name(f, "fields entry", "Concat") for f in fields)
        if not self.fields:
            raise ConfigError("Concat: fields is empty; give at least one field")
        self.out = check_name(out, "out", "Concat")
        self.axis = int(axis)
        self.drop_inputs = bool(drop_inputs)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        specs = [require_field(inputs, f, self) for f in self.fields]
        ndim = len(specs[0].shape)
        if not -ndim <= self.axis < ndim:
            raise ConfigError(
                f"Concat: axis {self.axis} is out of range for per-sample shape {specs[0].shape}"
            )
        ax = self.axis % ndim
        total = 0
        for f, s in zip(self.fields, specs, strict=True):
            same_rank = len(s.shape) == ndim
            if not same_rank or s.shape[:ax] + s.shape[ax + 1 :] != (
                specs[0].shape[:ax] + specs[0].shape[ax + 1 :]
            ):
                raise ConfigError(
                    f"Concat: field {f!r} has per-sample shape {s.shape}, incompatible with "
                    f"{self.fields[0]!r} {specs[0].shape} when joining along axis {self.axis}"
                )
            total += s.shape[ax]
        shape = (*specs[0].shape[:ax], total, *specs[0].shape[ax + 1 :])
        dtype = np.result_type(*(s.dtype for s in specs))
        kept = {k: v for k, v in inputs.items() if not (self.drop_inputs and k in self.fields)}
        return {**kept, self.out: FieldSpec(shape, dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        arrays = [get_array(batch, f, self) for f in self.fields]
        per_sample_ndim = arrays[0].ndim - 1
        if not -per_sample_ndim <= self.axis < per_sample_ndim:
            raise ConfigError(
                f"Concat: axis {self.axis} is out of range for per-sample shape "
                f"{arrays[0].shape[1:]}"
            )
        ax = self.axis % per_sample_ndim + 1  # skip the batch axis
        dtype = np.result_type(*(a.dtype for a in arrays))
        joined = np.concatenate(arrays, axis=ax, dtype=dtype)
        kept = {k: v for k, v in batch.items() if not (self.drop_inputs and k in self.fields)}
        return {**kept, self.out: joined}


class DropColumns(Transform):
    """Remove entries of a field's last axis (e.g. pd4ml's Belle PDG column).

    Parameters
    ----------
    field : str
        Input field ``(B, ..., F)``.
    columns : sequence of int
        Indices into the last axis to remove; negative counts from the end.
    out : str, optional
        Output field name; default: replace ``field``.

    Notes
    -----
    ``field`` ``(B, ..., F)`` → ``out`` ``(B, ..., F - len(set(columns)))``,
    same dtype, remaining columns in their original order.
    """

    def __init__(self, field: str, columns: Sequence[int], *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "DropColumns")
        self.columns = tuple(int(c) for c in columns)
        self.out = check_name(out, "out", "DropColumns") if out is not None else self.field

    def _kept(self, n: int) -> list[int]:
        bad = [c for c in self.columns if not -n <= c < n]
        if bad:
            raise ConfigError(
                f"DropColumns: columns {bad} are out of range for field {self.field!r} "
                f"with {n} columns"
            )
        dropped = {c % n for c in self.columns}
        if len(dropped) == n:
            raise ConfigError(f"DropColumns: dropping all {n} columns of {self.field!r}")
        return [c for c in range(n) if c not in dropped]

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self)
        if not spec.shape:
            raise ConfigError(f"DropColumns: field {self.field!r} is scalar per sample")
        kept = self._kept(spec.shape[-1])
        return {**inputs, self.out: FieldSpec((*spec.shape[:-1], len(kept)), spec.dtype)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        return {**batch, self.out: np.take(x, self._kept(x.shape[-1]), axis=-1)}
