"""Ragged (variable-length) fields as values + offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.errors import SchemaError


@dataclass(frozen=True, eq=False)  # element-wise array equality has no single truth value
class Ragged:
    """A block of variable-length samples: sample ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``values`` has shape ``(total, *row_shape)``; ``offsets`` has ``len + 1``
    non-decreasing integer entries that index ``values``.  They need not start
    at 0: a block may be a slice of a larger ragged array (its offsets slice plus
    the whole values); a writer stores only ``values[offsets[0]:offsets[-1]]``.
    """

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets)
        if offsets.ndim != 1 or offsets.size < 1:
            raise SchemaError(
                f"ragged offsets must be 1-D with n+1 entries, got shape {offsets.shape}"
            )
        if not np.issubdtype(offsets.dtype, np.integer):
            raise SchemaError(f"ragged offsets must be integers, got {offsets.dtype}")
        offsets = offsets.astype(np.int64, copy=False)
        if offsets.size > 1 and np.any(np.diff(offsets) < 0):
            raise SchemaError("ragged offsets must be non-decreasing")
        values = np.asarray(self.values)
        if values.ndim == 0:
            raise SchemaError("ragged values must have at least one axis")
        # offsets index ``values`` directly (as awkward's ListOffsetArray does), so a
        # block sliced out of a larger array keeps the whole values and its own offsets
        if offsets[0] < 0 or offsets[-1] > values.shape[0]:
            raise SchemaError(
                f"ragged offsets span {int(offsets[0])}..{int(offsets[-1])} but values hold "
                f"{values.shape[0]} rows; offsets must index into values "
                "(rebase them with offsets - offsets[0] if values hold only this block's rows)"
            )
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __repr__(self) -> str:  # the dataclass repr would print every value
        rows = int(self.offsets[-1] - self.offsets[0])
        return (
            f"Ragged(n={len(self)}, rows={rows}, row_shape={self.values.shape[1:]}, "
            f"dtype={self.values.dtype})"
        )

    @property
    def counts(self) -> np.ndarray:
        """Number of rows of each sample."""
        return np.diff(self.offsets)

    @classmethod
    def from_counts(cls, values: np.ndarray, counts: np.ndarray) -> Ragged:
        """Build from values and per-sample row counts."""
        counts = np.asarray(counts, dtype=np.int64)
        offsets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(values, offsets)

    @classmethod
    def from_list(cls, samples: Sequence[np.ndarray]) -> Ragged:
        """Build from a list of per-sample arrays ``(n_i, *row_shape)``."""
        counts = np.array([len(s) for s in samples], dtype=np.int64)
        # an empty list has no row shape to infer; float64 rows of shape () stand in
        values = np.concatenate([np.asarray(s) for s in samples]) if samples else np.zeros((0,))
        return cls.from_counts(values, counts)

    def rebased(self) -> tuple[np.ndarray, np.ndarray]:
        """Values and offsets with ``offsets[0] == 0`` (views where possible)."""
        start, stop = int(self.offsets[0]), int(self.offsets[-1])
        return self.values[start:stop], self.offsets - start

    def __getitem__(self, i: int) -> np.ndarray:
        """Rows of sample ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for a ragged block of {n} samples")
        i %= n
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def to_awkward(self, columns: Sequence[str] | None = None) -> Any:
        """These samples as an ``ak.Array`` of type ``N * var * ROW``, sharing the memory.

        Parameters
        ----------
        columns
            Names of the entries of 1-D rows: the result is then ``N * var * {a, b, ...}``
            (a multi-column field back as a list of records, e.g. with the member names
            that :meth:`from_awkward` joined).

        Raises
        ------
        ConfigError
            ``columns`` does not name every entry of a 1-D row.
        ModuleNotFoundError
            awkward is not installed (names ``fastload[root]``).
        """
        from fastload.store._awkward import ragged_to_awkward

        return ragged_to_awkward(self, columns)

    @classmethod
    def from_awkward(cls, array: Any, *, dtype: Any = None) -> Ragged:
        """One ragged field from an ``ak.Array`` of one level of variable-length lists.

        ``N * var * float32`` (or ``var * 3 * float32``) gives rows of shape ``()`` (``(3,)``);
        a list of records ``N * var * {pt: float32, eta: float32, ...}`` gives one
        multi-column field, rows ``(k,)`` in member order, of the members' common dtype
        (``np.result_type``) or ``dtype``.  Values are shared where awkward's buffers allow.

        Raises
        ------
        SchemaError
            Not one level of lists of numbers (or of records of numbers), a missing value
            (None), or a ``dtype`` that would change a value.
        ModuleNotFoundError
            awkward is not installed (names ``fastload[root]``).
        """
        from fastload.store._awkward import ragged_from_awkward

        return ragged_from_awkward(array, dtype=dtype)
