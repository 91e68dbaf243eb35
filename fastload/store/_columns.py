"""Append-only columns that write whole chunks as soon as they are complete.

Invariant: a column holds at most ``chunk_len - 1`` pending rows, in a buffer it
owns.  Rows are copied into that buffer, never referenced, so a caller may
reuse its block buffer right after ``append`` returns (a converter reading
``h5py`` blocks into one preallocated array does exactly that).
"""

from __future__ import annotations

import numpy as np
import zarr


class ChunkedColumn:
    """Append rows to one Zarr array along axis 0, chunk by chunk.

    Parameters
    ----------
    array
        A Zarr array of length 0 whose chunks span ``chunk_len`` rows.
    chunk_len
        Rows per chunk of ``array``.
    """

    def __init__(self, array: zarr.Array, chunk_len: int) -> None:
        self.array = array
        self.chunk_len = int(chunk_len)
        self.rows = 0  # rows already written to the array
        self._tail: np.ndarray | None = None  # allocated on first use
        self._fill = 0  # valid rows in the tail

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

    def _tail_buffer(self) -> np.ndarray:
        if self._tail is None:
            self._tail = np.empty((self.chunk_len, *self.array.shape[1:]), dtype=self.array.dtype)
        return self._tail

    def _write(self, data: np.ndarray) -> None:
        start = self.rows
        self.array.resize((start + len(data), *self.array.shape[1:]))
        self.array[start : start + len(data)] = data
        self.rows += len(data)
