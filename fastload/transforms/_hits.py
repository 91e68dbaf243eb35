"""Calorimeter-hit transforms: hit lists (padded or ``fl.Ragged``) → dense voxel grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastload._spec import FieldSpec, is_ragged
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_fields_differ,
    check_name,
    get_array,
    require_field,
)
from fastload.transforms._ragged import row_event


def _triple(value: Sequence[float] | Sequence[int], what: str, cast: type) -> tuple:
    try:
        items = tuple(cast(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"Voxelize: {what} must be 3 numbers, got {value!r}") from None
    if len(items) != 3:
        raise ConfigError(f"Voxelize: {what} must have 3 entries (layer, x, y), got {value!r}")
    return items


class Voxelize(Transform):
    """Sum hit energies into a dense grid, e.g. CALICE AHCAL hits → 38x24x24 cells.

    Grid axes are ``(layer, x, y)``; ``grid``, ``origin_mm``, ``pitch_mm``
    and ``coord_columns`` are all given in that axis order.  A hit with
    coordinates ``(z, x, y)`` (selected by ``coord_columns``) falls into cell
    ``floor((coord - origin_mm) / pitch_mm)`` along each axis.

    Parameters
    ----------
    hits_field : str, default "hits"
        Input ``(B, L, F)`` hits, zero-padded (fastload's ragged layout), or a
        ragged field (``ragged={"hits": "offsets"}``: a ``fl.Ragged`` of ``(F,)``
        rows, every row a real hit).
    len_field : str, default "hits_len"
        Input ``(B,)`` integer number of real hits per sample; rows beyond it
        are ignored.  Not read for a ragged ``hits_field``.
    grid : tuple of 3 int, default (38, 24, 24)
        Number of cells along (layer, x, y).
    origin_mm : tuple of 3 float
        Lower edge of the first cell along (layer/z, x, y), in the hits' unit.
    pitch_mm : tuple of 3 float
        Cell size along (layer/z, x, y); must be positive.
    coord_columns : tuple of 3 int, default (2, 0, 1)
        Hit columns feeding the (layer, x, y) axes; the default reads hits
        stored as ``(x, y, z, energy[, time])``.
    energy_column : int, default 3
        Hit column summed into each cell.
    out : str, default "voxels"
        Output ``(B, *grid)`` float32 energy sums (accumulated in float64).
    dropped_out : str, optional
        Output ``(B,)`` int64: real hits outside the grid (or with a
        non-finite coordinate), which are dropped from ``out``.
    time_column : int, optional
        Hit column holding a time; with ``time_out``, emit the
        energy-weighted mean time per cell.
    time_out : str, optional
        Output ``(B, *grid)`` float32, ``sum(E*t)/sum(E)`` per cell, 0 for
        cells with no energy.

    Notes
    -----
    Vectorised: every real, in-grid hit of the batch is mapped to one flat
    cell index and summed with a single ``np.bincount``.  Inputs are kept.
    """

    def __init__(
        self,
        hits_field: str = "hits",
        len_field: str = "hits_len",
        *,
        grid: Sequence[int] = (38, 24, 24),
        origin_mm: Sequence[float],
        pitch_mm: Sequence[float],
        coord_columns: Sequence[int] = (2, 0, 1),
        energy_column: int = 3,
        out: str = "voxels",
        dropped_out: str | None = None,
        time_column: int | None = None,
        time_out: str | None = None,
    ) -> None:
        name = "Voxelize"
        self.hits_field = check_name(hits_field, "hits_field", name)
        self.len_field = check_name(len_field, "len_field", name)
        self.grid = _triple(grid, "grid", int)
        if min(self.grid) < 1:
            raise ConfigError(f"{name}: grid sizes must be >= 1, got {grid!r}")
        self.origin_mm = _triple(origin_mm, "origin_mm", float)
        self.pitch_mm = _triple(pitch_mm, "pitch_mm", float)
        if not all(np.isfinite(self.origin_mm)) or not all(
            np.isfinite(p) and p > 0 for p in self.pitch_mm
        ):
            raise ConfigError(
                f"{name}: origin_mm must be finite and pitch_mm positive, got "
                f"{origin_mm!r} and {pitch_mm!r}"
            )
        self.coord_columns = _triple(coord_columns, "coord_columns", int)
        self.energy_column = int(energy_column)
        self.out = check_name(out, "out", name)
        self.dropped_out = check_name(dropped_out, "dropped_out", name) if dropped_out else None
        if (time_column is None) != (time_out is None):
            raise ConfigError(f"{name}: give both time_column and time_out, or neither")
        self.time_column = None if time_column is None else int(time_column)
        self.time_out = check_name(time_out, "time_out", name) if time_out else None
        check_fields_differ(
            name, out=self.out, dropped_out=self.dropped_out, time_out=self.time_out
        )

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.hits_field, self, kinds="iuf", ragged=None)
        if spec.ragged:  # values + offsets: rows of (F,), no length field
            spec = require_field(inputs, self.hits_field, self, ndim=1, ragged=True)
            return self._outputs(inputs, spec.shape[0])
        spec = require_field(inputs, self.hits_field, self, ndim=2)
        lspec = require_field(inputs, self.len_field, self, ndim=(0, 1), kinds="iu")
        if lspec.shape not in ((), (1,)):
            raise ConfigError(
                f"Voxelize: length field {self.len_field!r} must hold one integer per sample, "
                f"has per-sample shape {lspec.shape}"
            )
        return self._outputs(inputs, spec.shape[1])

    def _outputs(self, inputs: Specs, n_cols: int) -> dict[str, FieldSpec]:
        used = [*self.coord_columns, self.energy_column]
        if self.time_column is not None:
            used.append(self.time_column)
        if any(not -n_cols <= c < n_cols for c in used):
            raise ConfigError(
                f"Voxelize: columns {used} (coords, energy[, time]) out of range for field "
                f"{self.hits_field!r} with {n_cols} columns per hit"
            )
        out = {**inputs, self.out: FieldSpec(self.grid, np.float32)}
        if self.dropped_out is not None:
            out[self.dropped_out] = FieldSpec((), np.int64)
        if self.time_out is not None:
            out[self.time_out] = FieldSpec(self.grid, np.float32)
        return out

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        hits = batch.get(self.hits_field)
        if is_ragged(hits):  # the hits back to back already
            selected, _ = hits.rebased()
            sample, n_batch = row_event(hits), len(hits)
        else:
            hits = get_array(batch, self.hits_field, self)
            lengths = get_array(batch, self.len_field, self).reshape(-1)
            n_batch, n_rows = hits.shape[:2]
            real = np.arange(n_rows)[None, :] < lengths[:, None]
            # Work on the real hits only, as flat (n_real, F) rows: padding costs nothing.
            sample, row = np.nonzero(real)
            selected = hits[sample, row]
        cell = np.zeros(sample.size, dtype=np.int64)  # flat cell index within a sample
        inside = np.ones(sample.size, dtype=bool)
        for axis in range(3):
            coord = selected[:, self.coord_columns[axis]].astype(np.float64)
            with np.errstate(invalid="ignore"):
                pos = np.floor((coord - self.origin_mm[axis]) / self.pitch_mm[axis])
            ok = np.isfinite(pos) & (pos >= 0) & (pos < self.grid[axis])
            inside &= ok
            cell = cell * self.grid[axis] + np.where(ok, pos, 0).astype(np.int64)

        n_cells = int(np.prod(self.grid))
        flat = (sample * n_cells + cell)[inside]
        energy = selected[inside, self.energy_column].astype(np.float64)
        sums = np.bincount(flat, weights=energy, minlength=n_batch * n_cells)
        out = dict(batch)
        out[self.out] = sums.reshape(n_batch, *self.grid).astype(np.float32)
        if self.dropped_out is not None:
            out[self.dropped_out] = np.bincount(sample[~inside], minlength=n_batch).astype(np.int64)
        if self.time_out is not None:
            t = selected[inside, self.time_column].astype(np.float64)
            weighted = np.bincount(flat, weights=energy * t, minlength=n_batch * n_cells)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_t = np.where(sums != 0, weighted / sums, 0.0)
            out[self.time_out] = mean_t.reshape(n_batch, *self.grid).astype(np.float32)
        return out
