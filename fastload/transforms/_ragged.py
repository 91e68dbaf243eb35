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
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        m = hi - lo
        if m == 0:
            continue
        kk = min(k, m - 1)
        rows = np.arange(lo, hi, dtype=np.int64)
        if kk > 0:
            de = e[lo:hi, None] - e[None, lo:hi]
            dp = wrap_angle(p[lo:hi, None] - p[None, lo:hi])
            dist = de * de + dp * dp
            np.fill_diagonal(dist, np.inf)
            cols = np.broadcast_to(np.arange(m), (m, m))
            # nearest first, ties by lower index: a full stable sort per row is cheap at
            # the sizes of particle lists and hits (m <= ~1000)
            nearest = np.lexsort((cols, dist), axis=-1)[:, :kk]
            neighbours = lo + nearest
        else:
            neighbours = np.zeros((m, 0), dtype=np.int64)
        if self_loops:
            neighbours = np.concatenate([rows[:, None], neighbours], axis=1)
        sources.append(neighbours.reshape(-1))
        targets.append(np.repeat(rows, neighbours.shape[1]))
    if not sources:
        return np.zeros((2, 0), dtype=np.int64)
    return np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)
