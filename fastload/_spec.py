"""Per-sample field descriptions shared by the store, the engine and transforms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FieldSpec:
    """Shape (without the sample axis) and dtype of one field of one sample.

    Transforms declare their outputs as ``dict[str, FieldSpec]`` so that the
    engine can size shared-memory batch slots before any data is read.

    ``ragged``: the field arrives as a :class:`fastload.Ragged` (a loader's
    ``ragged={field: "offsets"}``): its samples have a variable number of rows
    and ``shape`` is the shape of one row.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    ragged: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "ragged", bool(self.ragged))

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample of this field (of one row, for a ragged field)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


Specs = Mapping[str, FieldSpec]


def specs_of(batch: Mapping[str, np.ndarray]) -> dict[str, FieldSpec]:
    """Describe a batch (arrays with a leading sample axis) as per-sample specs."""
    return {k: FieldSpec(v.shape[1:], v.dtype) for k, v in batch.items()}
