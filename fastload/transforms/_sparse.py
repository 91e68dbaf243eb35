"""Which rows of an array hold any set bit: the fast path of transforms on mostly-zero data.

Wire images are mostly pedestal-subtracted zeros (LArIAT: ~1% of the groups of 8
ticks of an event hold charge), as are calorimeter cells below threshold.  A
transform whose value of an all-zero row is known (a sum is +0.0, ``tanh(log1p(0))``
is +0.0) computes only the other rows.  The test is on bits, not values, so ``-0.0``
and NaN take the ordinary arithmetic and the result is bit for bit the dense one.
"""

from __future__ import annotations

import numpy as np

#: rows looked at first: over half of them set means the data are dense, and the full
#: test (a pass over every byte) would only cost time
_PROBE_ROWS = 2048


def nonzero_rows(rows: np.ndarray) -> np.ndarray | None:
    """Indices of the rows of a C-contiguous ``(N, K)`` array that have any bit set.

    ``None`` when the array is not contiguous or when more than half of its rows
    are set: the dense arithmetic is then as fast as gathering the rows.
    """
    if rows.ndim != 2 or not rows.flags.c_contiguous:
        return None
    row_bytes = rows.shape[1] * rows.dtype.itemsize
    word = next(w for w in (8, 4, 2, 1) if row_bytes % w == 0)
    words = rows.view(np.dtype(f"u{word}"))
    if len(words) > 4 * _PROBE_ROWS:
        probe = _has_bits(words[:: len(words) // _PROBE_ROWS])
        if 2 * np.count_nonzero(probe) > len(probe):
            return None
    nonzero = np.flatnonzero(_has_bits(words))
    return None if 2 * len(nonzero) > len(rows) else nonzero


def _has_bits(words: np.ndarray) -> np.ndarray:
    # one strided comparison per column: a reduction over a short last axis is slow in numpy
    has_bits = words[:, 0] != 0
    for k in range(1, words.shape[1]):
        has_bits |= words[:, k] != 0
    return has_bits
