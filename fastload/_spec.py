"""Per-sample field descriptions shared by the store, the engine and transforms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastload.errors import ConfigError


@dataclass(frozen=True)
class FieldSpec:
    """Shape (without the sample axis) and dtype of one field of one sample.

    Transforms declare their outputs as ``dict[str, FieldSpec]`` so that the
    engine can size shared-memory batch slots before any data is read.

    ``ragged``: the field arrives as a :class:`fastload.Ragged` (a loader's
    ``ragged={field: "offsets"}``, or a transform's ragged output): its samples
    have a variable number of rows and ``shape`` is the shape of one row.  A
    ragged field's slot is sized from its row bounds, at least one of which a
    transform's ragged output must declare:

    ``max_len``: most rows of one sample (a slot holds ``batch_size * max_len``);
    ``max_rows``: most rows of one batch.  The slot holds the smaller of the
    two; a transform returning more is a :class:`~fastload.errors.RaggedBoundError`.
    The bounds describe capacity, not the field: they take no part in ``==``.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    ragged: bool = False
    max_len: int | None = field(default=None, compare=False)
    max_rows: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "ragged", bool(self.ragged))
        for name in ("max_len", "max_rows"):
            bound = getattr(self, name)
            if bound is None:
                continue
            if not self.ragged:
                raise ConfigError(
                    f"FieldSpec: {name}= bounds the rows of a ragged field; this one has "
                    "ragged=False: drop the bound or set ragged=True"
                )
            if int(bound) < 0:
                raise ConfigError(f"FieldSpec: {name} must be >= 0, got {bound!r}")
            object.__setattr__(self, name, int(bound))

    def __repr__(self) -> str:
        bounds = "".join(
            f", {name}={getattr(self, name)}"
            for name in ("max_len", "max_rows")
            if getattr(self, name) is not None
        )
        ragged = ", ragged=True" if self.ragged else ""
        return f"FieldSpec(shape={self.shape}, dtype={self.dtype}{ragged}{bounds})"

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample of this field (of one row, for a ragged field)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def batch_rows(self, batch_size: int) -> int | None:
        """Value rows a batch of ``batch_size`` samples may hold (None: no bound declared)."""
        bounds = [b for b in (self.max_rows,) if b is not None]
        if self.max_len is not None:
            bounds.append(batch_size * self.max_len)
        return min(bounds) if bounds else None


Specs = Mapping[str, FieldSpec]


def is_ragged(value: object) -> bool:
    """Whether a batch value is ragged (a :class:`fastload.Ragged`: ``values`` + ``offsets``)."""
    return hasattr(value, "offsets") and hasattr(value, "values") and hasattr(value, "rebased")


def spec_of(value: Any) -> FieldSpec:
    """The per-sample spec of one batch value; a ragged one gets the bounds it meets."""
    if is_ragged(value):
        values, offsets = value.rebased()
        counts = np.diff(offsets)
        return FieldSpec(
            values.shape[1:],
            values.dtype,
            ragged=True,
            max_len=int(counts.max(initial=0)),
            max_rows=int(offsets[-1]),
        )
    return FieldSpec(value.shape[1:], value.dtype)


def specs_of(batch: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """Describe a batch (arrays with a leading sample axis, or ``Ragged``) as per-sample specs."""
    return {k: spec_of(v) for k, v in batch.items()}


def output_problem(spec: FieldSpec, value: Any, n: int) -> tuple[str, bool] | None:
    """What is wrong with ``value`` as a batch of ``n`` samples of ``spec``, or None.

    Returns ``(what, over_bound)``: ``over_bound`` when the only fault is rows
    beyond a ragged spec's declared ``max_len`` / ``max_rows``.
    """
    if spec.ragged != is_ragged(value):
        kind = "a ragged fl.Ragged" if spec.ragged else "a fixed-shape array"
        return f"came out as {type(value).__name__}, declared {kind}", False
    if not spec.ragged:
        value = np.asarray(value)
        if value.shape != (n, *spec.shape) or value.dtype != spec.dtype:
            return (
                f"came out as shape {value.shape} dtype {value.dtype}, declared per-sample shape "
                f"{spec.shape} dtype {spec.dtype} for a batch of {n}",
                False,
            )
        return None
    values, offsets = value.rebased()
    if offsets.size != n + 1 or values.shape[1:] != spec.shape or values.dtype != spec.dtype:
        return (
            f"came out as {offsets.size - 1} samples of rows {values.shape[1:]} {values.dtype}, "
            f"declared rows {spec.shape} {spec.dtype} for a batch of {n}",
            False,
        )
    longest = int(np.diff(offsets).max(initial=0))
    if spec.max_len is not None and longest > spec.max_len:
        return f"has a sample of {longest} rows, above its declared max_len={spec.max_len}", True
    if spec.max_rows is not None and int(offsets[-1]) > spec.max_rows:
        return (
            f"has {int(offsets[-1])} rows in the batch, above its declared "
            f"max_rows={spec.max_rows}",
            True,
        )
    return None
