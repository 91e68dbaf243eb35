"""Functions on ragged batches (:class:`fastload.Ragged`: rows back to back + offsets).

A loader built with ``ragged={"hits": "offsets"}`` delivers ``batch["hits"]`` as a
``Ragged``; these functions work on such batches in the consumer (or on any
``Ragged``), with numpy, and never write into their input:

- :func:`row_event`: the event (graph) of every row, PyG's ``batch`` vector;
- :func:`map_rows`: per-row features, ``fn(values) -> (rows, ...)`` with the same offsets;
- :func:`event_sum`: a per-event sum of per-row values (e.g. the jet's pT);
- :func:`truncate_rows`: the leading ``n`` rows of every event by a key column (pT);
- :func:`knn_edges`: k-nearest-neighbour graphs in (eta, phi), phi wrapping around,
  as a PyG ``edge_index`` in batch-wide row numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fastload import _validate
from fastload.errors import ConfigError
from fastload.store import Ragged
from fastload.transforms._particles import wrap_angle

__all__ = ["event_sum", "knn_edges", "map_rows", "row_event", "truncate_rows"]

#: distances :func:`knn_edges` computes at once (a block of events of one padded size): 2**16
#: float64, 512 KiB, so that the dozen passes over them stay in the CPU's cache (measured: 2**16
#: and 2**17 fastest, 2**21 ~1.3x slower)
_BLOCK_DISTANCES = 1 << 16
#: events with more than ``k + 1`` rows share blocks padded to a multiple of this many rows
_PAD_ROWS = 8


def _rebased(ragged: Ragged, owner: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(ragged, Ragged):
        raise ConfigError(
            f"{owner}: expects a fastload.Ragged (a loader's ragged={{field: 'offsets'}} batch "
            f"field), got {type(ragged).__name__}"
        )
    return ragged.rebased()


def _column(values: np.ndarray, column: int, what: str, owner: str) -> np.ndarray:
    if values.ndim != 2:
        raise ConfigError(
            f"{owner}: {what} needs rows of one axis (rows, features), got rows of shape "
            f"{values.shape[1:]}"
        )
    _validate.integer(column, name=what, minimum=-values.shape[1], owner=owner)
    if column >= values.shape[1]:
        raise ConfigError(
            f"{owner}: {what}={column} is out of range for rows of {values.shape[1]} features"
        )
    return values[:, column]


def row_event(ragged: Ragged) -> np.ndarray:
    """The event of every row, ``(rows,)`` int64 (PyG's ``batch`` vector)."""
    _, offsets = _rebased(ragged, "row_event")
    return np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))


def map_rows(ragged: Ragged, fn: Callable[[np.ndarray], np.ndarray]) -> Ragged:
    """Per-row features: ``fn(values)`` (one output row per input row), with the same offsets.

    Raises
    ------
    ConfigError
        ``fn`` returned a number of rows other than its input's.
    """
    values, offsets = _rebased(ragged, "map_rows")
    out = np.asarray(fn(values))
    if out.ndim == 0 or out.shape[0] != values.shape[0]:
        raise ConfigError(
            f"map_rows: fn returned shape {out.shape} for {values.shape[0]} rows; it must return "
            "one row per input row"
        )
    return Ragged(out, offsets.copy())


def event_sum(ragged: Ragged, column: int | None = None) -> np.ndarray:
    """Sum of every event's rows (``column`` of them, or whole rows): ``(B, ...)``."""
    values, offsets = _rebased(ragged, "event_sum")
    if column is not None:
        values = _column(values, column, "column", "event_sum")
    out = np.zeros((offsets.size - 1, *values.shape[1:]), dtype=np.result_type(values, 0.0))
    np.add.at(out, row_event(ragged), values)
    return out


def truncate_rows(
    ragged: Ragged, n: int, key: int | None = None, *, descending: bool = True
) -> Ragged:
    """The leading ``n`` rows of every event, by the ``key`` column (e.g. pT), largest first.

    Parameters
    ----------
    ragged : Ragged
        A batch field (rows of shape ``(features,)`` when ``key`` is given).
    n : int
        Rows kept per event (events with fewer keep all of theirs).
    key : int | None
        Column ranking the rows; ``None`` keeps the first ``n`` rows in stored order.
    descending : bool
        Largest key first (the leading particles); False: smallest first.

    Returns
    -------
    Ragged
        Offsets from 0; within an event, rows in key order (ties: stored order).
    """
    owner = "truncate_rows"
    _validate.integer(n, name="n", minimum=0, owner=owner)
    values, offsets = _rebased(ragged, owner)
    counts = np.diff(offsets)
    event = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    if key is None:
        order = np.arange(values.shape[0], dtype=np.int64)
    else:
        k = _column(values, key, "key", owner).astype(np.float64)
        # stable within an event: equal keys keep their stored order
        order = np.lexsort((-k if descending else k, event))
    rank = np.arange(values.shape[0], dtype=np.int64) - np.repeat(offsets[:-1], counts)
    keep = order[rank < n]  # ``order`` keeps events in place, so ranks line up with it
    kept = np.minimum(counts, n)
    return Ragged.from_counts(values[keep], kept)


def knn_edges(
    ragged: Ragged,
    eta: int = 0,
    phi: int = 1,
    k: int = 7,
    *,
    self_loops: bool = False,
) -> np.ndarray:
    """k-nearest-neighbour graphs of every event in (eta, phi), as a PyG ``edge_index``.

    Distances are ``deta**2 + dphi**2`` with ``dphi`` wrapped into ``[-pi, pi)``
    (phi = pi - 0.01 and -pi + 0.01 are neighbours).  Each row gets an edge from
    each of its ``k`` nearest other rows of the same event (all of them when the
    event has ``<= k`` others; ties: the lower row first).  ``k = 7`` is pd4ml's
    GCN, ``16`` ParticleNet's.

    The events are taken in blocks of equal (padded) size, ``2**16`` distances
    at a time (an event with more alone), with numpy over the whole block; a
    block holding a non-finite distance (nan, inf, overflow) is sorted event by
    event instead, nan after every number.  Either way the edges are those of a
    stable sort of each row's distances.

    Returns
    -------
    numpy.ndarray
        ``(2, E)`` int64 in batch-wide row numbers: ``edge_index[0]`` the
        neighbour (source), ``edge_index[1]`` the row it feeds (target), grouped by
        target in row order and, per target, nearest first; with ``self_loops``
        each row's ``(i, i)`` comes first in its group.
    """
    owner = "knn_edges"
    _validate.integer(k, name="k", minimum=1, owner=owner)
    values, offsets = _rebased(ragged, owner)
    e = _column(values, eta, "eta", owner).astype(np.float64)
    p = _column(values, phi, "phi", owner).astype(np.float64)
    counts = np.diff(offsets)
    rows = values.shape[0]
    neighbours = np.minimum(np.maximum(counts - 1, 0), k)  # per row, of each event
    width = np.repeat(neighbours + int(self_loops), counts)  # edges into each row
    starts = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(width, out=starts[1:])
    sources = np.empty(int(starts[-1]), dtype=np.int64)
    targets = np.repeat(np.arange(rows, dtype=np.int64), width)
    if self_loops:
        sources[starts[:-1]] = np.arange(rows, dtype=np.int64)
    first = starts[:-1] + int(self_loops)  # where each row's neighbours begin
    todo = np.flatnonzero(neighbours > 0)
    size = counts[todo]
    # events with <= k others have m - 1 neighbours per row: one block size per m; the others
    # (k each) share blocks padded to a multiple of _PAD_ROWS rows
    padded = np.where(size <= k + 1, size, -(-size // _PAD_ROWS) * _PAD_ROWS)
    for m in np.unique(padded).tolist():
        events = todo[padded == m]
        per_block = max(1, _BLOCK_DISTANCES // (m * m))
        for i in range(0, events.size, per_block):
            block = events[i : i + per_block]
            _knn_block(e, p, offsets, counts, block, m, min(k, m - 1), sources, first)
    return np.stack([sources, targets])


def _knn_block(
    e: np.ndarray,
    p: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    events: np.ndarray,
    m: int,
    kk: int,
    sources: np.ndarray,
    first: np.ndarray,
) -> None:
    """The ``kk`` nearest rows of every row of ``events`` (each of <= ``m`` rows) into ``sources``."""
    lo, n = offsets[events], counts[events]
    cols = np.arange(m, dtype=np.int64)
    real = cols < n[:, None]  # (G, m): rows of the events, the rest padding
    at = np.where(real, lo[:, None] + cols, 0)
    eg, pg = np.where(real, e[at], 0.0), np.where(real, p[at], 0.0)
    de = eg[:, :, None] - eg[:, None, :]
    dp = _wrapped(pg[:, :, None] - pg[:, None, :])
    dist = de * de
    dist += dp * dp
    # nan or inf anywhere (overflow too, padding included): the per-event stable sort
    if not np.isfinite(dist.sum()):
        for event in events.tolist():
            a, b = int(offsets[event]), int(offsets[event + 1])
            sources[first[a:b, None] + np.arange(kk)] = a + _nearest_sorted(e, p, a, b, kk)
        return
    # no edge from a row to itself nor from padding: + inf there, + 0 (exact) elsewhere
    dist += np.where(real, 0.0, np.inf)[:, None, :]
    dist[:, cols, cols] = np.inf
    # the kk smallest distances of each row: a stable sort's first kk unless a distance tied
    # with the largest of them was left out (then that row is sorted whole)
    picked = np.argpartition(dist, kk - 1, axis=-1)[..., :kk]
    near = np.take_along_axis(dist, picked, axis=-1)
    edge = near.max(axis=-1, keepdims=True)
    short = np.count_nonzero(dist == edge, axis=-1) > np.count_nonzero(near == edge, axis=-1)
    picked.sort(axis=-1)  # ties: the lower row first
    order = np.argsort(np.take_along_axis(dist, picked, axis=-1), axis=-1, kind="stable")
    nearest = np.take_along_axis(picked, order, axis=-1)
    short &= real
    if short.any():
        nearest[short] = np.argsort(dist[short], axis=-1, kind="stable")[:, :kk]
    sources[first[at[real]][:, None] + np.arange(kk)] = (lo[:, None, None] + nearest)[real]


def _wrapped(x: np.ndarray) -> np.ndarray:
    """:func:`wrap_angle` of ``x``, bit for bit, faster when ``x + pi`` lies in ``[-2 pi, 4 pi)``.

    There ``np.mod(x + pi, 2 pi)`` is ``x + pi`` shifted by one turn at most: ``fmod``
    is exact, and so is subtracting 2 pi from values in ``[2 pi, 4 pi)`` (Sterbenz); adding
    2 pi to negative values rounds as ``np.mod`` does.
    """
    turn = 2 * np.pi
    y = x + np.pi
    if not (y.min(initial=0.0) >= -turn and y.max(initial=0.0) < 2 * turn):  # nan: False
        return wrap_angle(x)
    np.subtract(y, turn, out=y, where=y >= turn)
    np.add(y, turn, out=y, where=y < 0)
    y -= np.pi
    np.subtract(y, turn, out=y, where=y >= np.pi)  # np.mod can round up to exactly 2 pi
    return y


def _nearest_sorted(e: np.ndarray, p: np.ndarray, a: int, b: int, kk: int) -> np.ndarray:
    """The ``kk`` nearest other rows of every row of ``[a, b)`` (local numbers), by a stable sort."""
    m = b - a
    de = e[a:b, None] - e[None, a:b]
    dp = wrap_angle(p[a:b, None] - p[None, a:b])
    dist = de * de + dp * dp
    np.fill_diagonal(dist, np.inf)
    cols = np.broadcast_to(np.arange(m), (m, m))
    return np.lexsort((cols, dist), axis=-1)[:, :kk]
