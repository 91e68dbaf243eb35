"""Append-only columns that write whole chunks as soon as they are complete.

Invariant: a column holds at most ``chunk_len - 1`` pending rows, in a buffer it
owns.  Rows are copied into that buffer, never referenced, so a caller may
reuse its block buffer right after ``append`` returns (a converter reading
``h5py`` blocks into one preallocated array does exactly that).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zarr


class ChunkedColumn:
    """Append rows to one Zarr array along axis 0, chunk by chunk.

    Parameters
    ----------
    make_array
        Creates the array (length 0, chunks of ``chunk_len`` rows) from the rows of
        its first chunk, exactly as they will be written: the codec may depend on
        them (``shuffle="auto"``).  Called once, when chunk 0 is complete, or at
        :meth:`flush` with whatever is there (possibly nothing).
    chunk_len
        Rows per chunk of the array.
    row_shape, dtype
        Shape of one row and dtype of the array.
    """

    def __init__(
        self,
        make_array: Callable[[np.ndarray], zarr.Array],
        chunk_len: int,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
    ) -> None:
        self._make_array = make_array
        self._array: zarr.Array | None = None
        self.chunk_len = int(chunk_len)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0  # rows already written to the array
        self._tail: np.ndarray | None = None  # allocated on first use
        self._fill = 0  # valid rows in the tail

    @property
    def array(self) -> zarr.Array:
        """The Zarr array; created (from no rows) if nothing was written yet."""
        if self._array is None:
            self._array = self._make_array(np.empty((0, *self.row_shape), self.dtype))
        return self._array

    @property
    def pending_rows(self) -> int:
        """Rows accepted but not yet written (always fewer than ``chunk_len``)."""
        return self._fill

    @property
    def total(self) -> int:
        """Rows appended so far, written or pending."""
        return self.rows + self._fill

    def append(self, rows: np.ndarray) -> None:
        """Accept ``rows`` (dtype and row shape of the array); write every completed chunk."""
        m = len(rows)
        i = 0
        if self._fill:  # top up the pending chunk first
            take = min(self.chunk_len - self._fill, m)
            tail = self._tail_buffer()
            tail[self._fill : self._fill + take] = rows[:take]
            self._fill += take
            i = take
            if self._fill == self.chunk_len:
                self._write(tail)
                self._fill = 0
        whole = (m - i) // self.chunk_len * self.chunk_len
        if whole:  # whole chunks straight from the caller's block, no copy
            self._write(rows[i : i + whole])
            i += whole
        if i < m:
            rest = m - i
            self._tail_buffer()[:rest] = rows[i:]
            self._fill = rest

    def flush(self) -> None:
        """Write the pending rows as the (partial) last chunk."""
        if self._fill:
            self._write(self._tail_buffer()[: self._fill])
            self._fill = 0
        self._tail = None
        _ = self.array  # an array that never got a row still exists, with length 0

    def _tail_buffer(self) -> np.ndarray:
        if self._tail is None:
            self._tail = np.empty((self.chunk_len, *self.row_shape), dtype=self.dtype)
        return self._tail

    def _write(self, data: np.ndarray) -> None:
        if self._array is None:
            self._array = self._make_array(data[: self.chunk_len])
        start = self.rows
        self.array.resize((start + len(data), *self.array.shape[1:]))
        self.array[start : start + len(data)] = data
        self.rows += len(data)
