"""Transforms on ragged fields (``fl.Ragged``), run in the prefetch workers.

Each one wraps a function of :mod:`fastload.transforms._ragged` (one
implementation: a batch from the workers equals the function applied to the
consumer's batch) and declares its outputs' specs, ragged outputs with their row
bounds (``FieldSpec.max_len`` / ``max_rows``) so the loader sizes their slots
before the epoch:

- :class:`TruncateRows`: the leading ``n`` rows per sample by a key column;
  at most ``n`` rows per sample;
- :class:`KnnEdges`: kNN graphs in (eta, phi) as a ragged ``edge_index``; at
  most ``k`` (``k + 1`` with self-loops) edges per row of the input;
- :class:`MapRows`: per-row features with a declared row shape and dtype; the
  input's bounds;
- :class:`EventSum`: a dense per-sample sum of a column (or of whole rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fastload import _validate
from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.store import Ragged
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_fields_differ,
    check_name,
    get_ragged,
    require_field,
)
from fastload.transforms._ragged import event_sum, knn_edges, map_rows, truncate_rows

__all__ = ["EventSum", "KnnEdges", "MapRows", "TruncateRows"]


def _check_column(spec: FieldSpec, column: int, what: str, field: str, owner: object) -> None:
    """Refuse (before any data) a column that the rows of ``spec`` do not have."""
    who = type(owner).__name__
    if len(spec.shape) != 1:
        raise ConfigError(
            f"{who}: {what} needs rows of one axis (features,); field {field!r} has rows of "
            f"shape {spec.shape}"
        )
    if not -spec.shape[0] <= column < spec.shape[0]:
        raise ConfigError(
            f"{who}: {what}={column} is out of range for field {field!r} with "
            f"{spec.shape[0]} features per row"
        )


def _scaled(bound: int | None, factor: int) -> int | None:
    return None if bound is None else bound * factor


class TruncateRows(Transform):
    """The leading ``n`` rows of every sample of a ragged field, by a key column (e.g. pT).

    The worker-side form of :func:`~fastload.transforms.truncate_rows` (same
    result): rows in key order, largest first (``descending=False``: smallest
    first), ties in stored order; ``key=None`` keeps the first ``n`` rows as
    stored.  Declares at most ``n`` rows per sample, so its slot holds
    ``min(batch_size * n, the input's rows)``.

    Parameters
    ----------
    field : str
        A ragged input field (``ragged={field: "offsets"}``).
    n : int
        Rows kept per sample (>= 0).
    key : int | None
        Column ranking the rows (rows must be 1-D then).
    descending : bool
        Largest key first.
    out : str | None
        Output field; ``None`` replaces ``field``.
    """

    def __init__(
        self,
        field: str,
        n: int,
        key: int | None = None,
        *,
        descending: bool = True,
        out: str | None = None,
    ) -> None:
        name = type(self).__name__
        self.field = check_name(field, "field", name)
        self.n = _validate.integer(n, name="n", minimum=0, owner=name)
        self.key = None if key is None else _validate.integer(key, name="key", owner=name)
        self.descending = _validate.flag(descending, name="descending", owner=name)
        self.out = self.field if out is None else check_name(out, "out", name)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, ragged=True)
        if self.key is not None:
            _check_column(spec, self.key, "key", self.field, self)
        max_len = self.n if spec.max_len is None else min(spec.max_len, self.n)
        out = FieldSpec(
            spec.shape, spec.dtype, ragged=True, max_len=max_len, max_rows=spec.max_rows
        )
        return {**inputs, self.out: out}

    def __call__(self, batch: Batch) -> dict[str, object]:
        ragged = get_ragged(batch, self.field, self)
        return {
            **batch,
            self.out: truncate_rows(ragged, self.n, self.key, descending=self.descending),
        }


class KnnEdges(Transform):
    """k-nearest-neighbour graphs in (eta, phi), phi wrapping around, as a ragged ``edge_index``.

    The worker-side form of :func:`~fastload.transforms.knn_edges`: the output
    ``out`` is a ragged field of ``(source, target)`` int64 rows, sample ``i``
    holding the edges into its rows, in batch-wide row numbers of ``field`` as
    delivered (offsets from 0).  ``batch[out].values.T`` is exactly
    ``knn_edges(batch[field], eta, phi, k, self_loops=...)``: a PyG
    ``edge_index`` (``pyg_batch(batch, field, edge_index=out)`` takes the field's
    name).  ``k = 7`` is pd4ml's GCN, ``16`` ParticleNet's.  Declares at most
    ``k`` (``k + 1`` with self-loops) edges per row of ``field``.

    Parameters
    ----------
    field : str
        A ragged input field with 1-D rows holding eta and phi columns.
    k : int
        Neighbours per row (fewer when a sample has fewer other rows).
    eta, phi : int
        The columns of eta and phi.
    self_loops : bool
        Also each row's ``(i, i)`` edge, first in its group.
    out : str
        Output field (not ``field``: the edges number its rows).
    """

    def __init__(
        self,
        field: str,
        k: int = 7,
        *,
        eta: int = 0,
        phi: int = 1,
        self_loops: bool = False,
        out: str = "edge_index",
    ) -> None:
        name = type(self).__name__
        self.field = check_name(field, "field", name)
        self.k = _validate.integer(k, name="k", minimum=1, owner=name)
        self.eta = _validate.integer(eta, name="eta", owner=name)
        self.phi = _validate.integer(phi, name="phi", owner=name)
        self.self_loops = _validate.flag(self_loops, name="self_loops", owner=name)
        self.out = check_name(out, "out", name)
        check_fields_differ(name, field=self.field, out=self.out)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, ragged=True, kinds="iuf")
        _check_column(spec, self.eta, "eta", self.field, self)
        _check_column(spec, self.phi, "phi", self.field, self)
        per_row = self.k + int(self.self_loops)
        edges = FieldSpec(
            (2,),
            np.int64,
            ragged=True,
            max_len=_scaled(spec.max_len, per_row),
            max_rows=_scaled(spec.max_rows, per_row),
        )
        return {**inputs, self.out: edges}

    def __call__(self, batch: Batch) -> dict[str, object]:
        nodes = get_ragged(batch, self.field, self)
        edges = knn_edges(nodes, self.eta, self.phi, self.k, self_loops=self.self_loops)
        # knn_edges groups the edges by target row, so by sample: count them per sample
        _, offsets = nodes.rebased()
        target_sample = np.searchsorted(offsets, edges[1], side="right") - 1
        counts = np.bincount(target_sample, minlength=len(nodes)).astype(np.int64)
        return {**batch, self.out: Ragged.from_counts(np.ascontiguousarray(edges.T), counts)}


class MapRows(Transform):
    """Per-row features of a ragged field: ``fn(values)`` (one output row per input row).

    The worker-side form of :func:`~fastload.transforms.map_rows`.  The output
    keeps the input's offsets and bounds; its rows are declared by
    ``row_shape`` and ``dtype`` (the worker refuses an ``fn`` returning others).
    ``fn`` travels to process workers with cloudpickle (a lambda or a function of
    the script works).

    Parameters
    ----------
    field : str
        A ragged input field.
    fn : Callable[[numpy.ndarray], numpy.ndarray]
        ``(rows, *row) -> (rows, *row_shape)`` of ``dtype``; must not write into its input.
    row_shape : Sequence[int]
        Shape of one output row.
    dtype : numpy dtype
        dtype of the output rows.
    out : str | None
        Output field; ``None`` replaces ``field``.
    """

    def __init__(
        self,
        field: str,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        row_shape: Sequence[int],
        dtype: object,
        out: str | None = None,
    ) -> None:
        name = type(self).__name__
        self.field = check_name(field, "field", name)
        if not callable(fn):
            raise ConfigError(f"{name}: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        try:
            self.row_shape = tuple(int(s) for s in row_shape)
            self.dtype = np.dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: bad row_shape or dtype: {exc}") from None
        self.out = self.field if out is None else check_name(out, "out", name)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, ragged=True)
        out = FieldSpec(
            self.row_shape, self.dtype, ragged=True, max_len=spec.max_len, max_rows=spec.max_rows
        )
        return {**inputs, self.out: out}

    def __call__(self, batch: Batch) -> dict[str, object]:
        return {**batch, self.out: map_rows(get_ragged(batch, self.field, self), self.fn)}


class EventSum(Transform):
    """Per-sample sum of a ragged field's rows (``column`` of them, or whole rows): dense ``(B, ...)``.

    The worker-side form of :func:`~fastload.transforms.event_sum` (e.g. the
    scalar pT sum of a jet's constituents).  dtype ``np.result_type(rows, 0.0)``:
    float32 rows give float32, integer rows float64.

    Parameters
    ----------
    field : str
        A ragged input field.
    column : int | None
        Column summed (rows must be 1-D then); ``None`` sums whole rows.
    out : str
        Output field (dense, one value or row per sample).
    """

    def __init__(self, field: str, column: int | None = None, *, out: str) -> None:
        name = type(self).__name__
        self.field = check_name(field, "field", name)
        self.column = (
            None if column is None else _validate.integer(column, name="column", owner=name)
        )
        self.out = check_name(out, "out", name)
        check_fields_differ(name, field=self.field, out=self.out)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, ragged=True, kinds="biuf")
        shape = spec.shape
        if self.column is not None:
            _check_column(spec, self.column, "column", self.field, self)
            shape = ()
        return {**inputs, self.out: FieldSpec(shape, np.result_type(spec.dtype, 0.0))}

    def __call__(self, batch: Batch) -> dict[str, object]:
        return {**batch, self.out: event_sum(get_ragged(batch, self.field, self), self.column)}
