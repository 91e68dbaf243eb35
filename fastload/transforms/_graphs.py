"""Graph construction: kNN, image-grid and mother/daughter adjacency.

Conventions shared by every dense adjacency here:

- output ``(B, N, N)`` float32 (``A[b, i, j] = 1``: node ``i`` receives from ``j``);
- padded nodes have no edges at all, not even a self-loop, and are nobody's
  neighbour, so their rows and columns are zero;
- ``self_loops=True`` puts 1 on the diagonal of real nodes;
- ``normalise=True`` applies the symmetric normalisation of Kipf & Welling's
  GCN, ``D^-1/2 A D^-1/2`` with ``D`` the row sums of ``A`` (with self-loops
  this is their ``D̃^-1/2 (A + I) D̃^-1/2``); rows with no edges stay zero.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike

from fastload import _validate
from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    batch_size,
    check_fields_differ,
    check_name,
    get_array,
    mask_as_bool,
    require_field,
)

# Distance-matrix entries handled at once (float64: 2 MiB per temporary): small
# enough to stay in cache, which is ~2x faster than one big batch-wide pass,
# and bounds worker memory for long particle lists.
_KNN_CHUNK_ENTRIES = 1 << 18

_FILL_MODES = ("minus_one", "self")


def normalise_adjacency(adj: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """GCN normalisation ``D^-1/2 (A + I) D^-1/2`` of a (batch of) adjacency matrix.

    Parameters
    ----------
    adj : array-like, shape (..., N, N)
        Adjacency (0/1 or weighted, symmetric for the result to be symmetric).
    mask : array-like of bool, shape (..., N), optional
        Real nodes; padded nodes get no self-loop and their rows/columns are
        zeroed.  Default: all nodes are real.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``adj``.
    """
    a = np.asarray(adj, dtype=np.float32)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ConfigError(f"normalise_adjacency: expected (..., N, N), got shape {a.shape}")
    n = a.shape[-1]
    real = np.ones(a.shape[:-1], dtype=bool) if mask is None else mask_as_bool(np.asarray(mask))
    if real.shape != a.shape[:-1]:
        raise ConfigError(
            f"normalise_adjacency: mask shape {real.shape} does not match adjacency {a.shape}"
        )
    a = a + np.eye(n, dtype=np.float32) * real[..., :, None]
    a = a * real[..., :, None] * real[..., None, :]
    return _symmetric_normalise(a)


def grid_adjacency(
    height: int, width: int, *, normalise: bool = True, self_loops: bool = True
) -> np.ndarray:
    """8-neighbour adjacency of an image grid, nodes numbered row-major.

    Parameters
    ----------
    height, width : int
        Grid size, e.g. 20x20 (Spinodal), 24x24 (EoS), 9x9 (air-shower stations).
    normalise : bool, default True
        Apply GCN symmetric normalisation (see module doc).
    self_loops : bool, default True
        Put 1 on the diagonal before normalising.

    Returns
    -------
    numpy.ndarray
        ``(height*width, height*width)`` float32.  Node ``r*width + c`` is
        pixel ``(r, c)``; it is joined to every pixel whose row and column
        differ by at most 1 (3 neighbours in a corner, 5 on an edge, 8 inside).
    """
    return _grid_adjacency_cached(int(height), int(width), bool(normalise), bool(self_loops)).copy()


@functools.lru_cache(maxsize=16)
def _grid_adjacency_cached(
    height: int, width: int, normalise: bool, self_loops: bool
) -> np.ndarray:
    if height < 1 or width < 1:
        raise ConfigError(f"grid_adjacency: height and width must be >= 1, got {height}x{width}")
    node = np.arange(height * width).reshape(height, width)
    a = np.zeros((height * width, height * width), dtype=np.float32)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            # Pixels (r, c) whose neighbour (r+dr, c+dc) lies inside the grid.
            src = node[max(0, -dr) : height - max(0, dr), max(0, -dc) : width - max(0, dc)]
            dst = node[max(0, dr) : height - max(0, -dr), max(0, dc) : width - max(0, -dc)]
            a[src.ravel(), dst.ravel()] = 1.0
    if self_loops:
        a += np.eye(height * width, dtype=np.float32)
    if normalise:
        a = _symmetric_normalise(a)
    a.flags.writeable = False  # cached and shared: callers get copies or read-only views
    return a


def _symmetric_normalise(a: np.ndarray) -> np.ndarray:
    """``D^-1/2 a D^-1/2`` computed in place on ``a`` (a fresh float32 array)."""
    deg = a.sum(axis=-1, dtype=np.float32)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0).astype(np.float32)
    a *= inv_sqrt[..., :, None]
    a *= inv_sqrt[..., None, :]
    return a


def _finish(edges: np.ndarray, real: np.ndarray, self_loops: bool, normalise: bool) -> np.ndarray:
    """Boolean edges (B, N, N) → float32 adjacency with padding/self-loop/normalise rules.

    ``edges`` is modified in place.
    """
    n = edges.shape[-1]
    if self_loops:
        diag = np.arange(n)
        edges[:, diag, diag] |= real
    edges &= real[:, :, None]
    edges &= real[:, None, :]
    a = edges.astype(np.float32)
    return _symmetric_normalise(a) if normalise else a


class KNNAdjacency(Transform):
    """k-nearest-neighbour graph of a point cloud, e.g. jet constituents in (Δη, Δφ).

    Distances are Euclidean in the given coordinates (for ``(etarel,
    phirel)`` from :class:`FourVectorFeatures` the φ difference is already
    wrapped).  A node's neighbours are the ``k`` nearest *other* real nodes,
    nearest first; distances equal to within about 1e-13 relative count as
    tied and are ordered by lower index, so the result is deterministic.

    Parameters
    ----------
    coords_field : str, default "points"
        Input ``(B, N, D)`` coordinates.
    k : int, default 7
        Neighbours per node (pd4ml's GCN uses 7, ParticleNet 16).
    mask_field : str or None, default "mask"
        Input ``(B, N)`` bool (or non-zero = real).  ``None``: all nodes real.
    out_indices : str or None, default "knn_indices"
        Output ``(B, N, k)`` int32 neighbour indices (self excluded, as
        ParticleNet's EdgeConv expects).  Slots without a neighbour (fewer
        than ``k`` other real nodes, and every slot of a padded node) hold
        ``-1``, or the node's own index with ``fill="self"`` (handy for a
        gather that must stay in range; mask the result with ``mask_field``).
    out_dense : str or None, default None
        Output ``(B, N, N)`` float32 dense adjacency with ``A[i, j] = 1`` when
        ``j`` is a neighbour of ``i`` (see module doc for padding, self-loops,
        normalisation).  pd4ml's GCN input is of this kind.
    fill : {"minus_one", "self"}, default "minus_one"
        Padding of ``out_indices`` as described above.
    symmetric : bool, default True
        Make the dense graph undirected (``A | A.T``), as a GCN's symmetric
        normalisation assumes.  With False, ``normalise`` must be False.
    self_loops : bool, default True
        Diagonal 1 for real nodes in ``out_dense``.
    normalise : bool, default True
        GCN symmetric normalisation of ``out_dense``.
    """

    def __init__(
        self,
        coords_field: str = "points",
        k: int = 7,
        *,
        mask_field: str | None = "mask",
        out_indices: str | None = "knn_indices",
        out_dense: str | None = None,
        fill: str = "minus_one",
        symmetric: bool = True,
        self_loops: bool = True,
        normalise: bool = True,
    ) -> None:
        name = "KNNAdjacency"
        self.coords_field = check_name(coords_field, "coords_field", name)
        self.k = _validate.integer(k, name="k", minimum=1, owner=name)
        self.mask_field = check_name(mask_field, "mask_field", name) if mask_field else None
        self.out_indices = check_name(out_indices, "out_indices", name) if out_indices else None
        self.out_dense = check_name(out_dense, "out_dense", name) if out_dense else None
        if self.out_indices is None and self.out_dense is None:
            raise ConfigError(f"{name}: set out_indices and/or out_dense; both are None")
        check_fields_differ(name, out_indices=self.out_indices, out_dense=self.out_dense)
        if fill not in _FILL_MODES:
            raise ConfigError(f"{name}: fill must be one of {_FILL_MODES}, got {fill!r}")
        self.fill = fill
        self.symmetric = bool(symmetric)
        self.self_loops = bool(self_loops)
        self.normalise = bool(normalise)
        if self.normalise and not self.symmetric:
            raise ConfigError(
                f"{name}: normalise=True needs symmetric=True (symmetric normalisation of a "
                "directed graph is not what a GCN expects)"
            )

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.coords_field, self, ndim=2, kinds="iuf")
        n = spec.shape[0]
        if self.mask_field is not None:
            mspec = require_field(inputs, self.mask_field, self, kinds="biuf")
            if mspec.shape != (n,):
                raise ConfigError(
                    f"KNNAdjacency: mask field {self.mask_field!r} has per-sample shape "
                    f"{mspec.shape}, expected ({n},) to match {self.coords_field!r} {spec.shape}"
                )
        out = dict(inputs)
        if self.out_indices is not None:
            out[self.out_indices] = FieldSpec((n, self.k), np.int32)
        if self.out_dense is not None:
            out[self.out_dense] = FieldSpec((n, n), np.float32)
        return out

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        coords = get_array(batch, self.coords_field, self)
        n_batch, n = coords.shape[:2]
        if self.mask_field is None:
            real = np.ones((n_batch, n), dtype=bool)
        else:
            real = mask_as_bool(get_array(batch, self.mask_field, self))
        indices = np.empty((n_batch, n, self.k), dtype=np.int64)
        dense = None if self.out_dense is None else np.empty((n_batch, n, n), dtype=np.float32)
        # Chunks of the batch keep the (chunk, N, N) temporaries in cache.
        step = max(1, _KNN_CHUNK_ENTRIES // max(1, n * n))
        for start in range(0, n_batch, step):
            sl = slice(start, start + step)
            indices[sl] = _knn_indices(coords[sl], real[sl], self.k)
            if dense is not None:
                dense[sl] = self._dense(indices[sl], real[sl])
        out = dict(batch)
        if dense is not None:
            out[str(self.out_dense)] = dense
        if self.out_indices is not None:
            if self.fill == "self":
                own = np.arange(n).reshape(1, n, 1)
                indices = np.where(indices < 0, own, indices)
            out[self.out_indices] = indices.astype(np.int32)
        return out

    def _dense(self, indices: np.ndarray, real: np.ndarray) -> np.ndarray:
        b, n = real.shape
        edges = np.zeros((b, n, n), dtype=bool)
        # Empty slots point at the node itself; the diagonal is reset below
        # (a kNN list never holds the node itself), so they add no edge.
        own = np.arange(n).reshape(1, n, 1)
        np.put_along_axis(edges, np.where(indices < 0, own, indices), True, axis=-1)
        diag = np.arange(n)
        edges[:, diag, diag] = False
        if self.symmetric:
            edges |= edges.transpose(0, 2, 1)
        return _finish(edges, real, self.self_loops, self.normalise)


def _knn_indices(coords: np.ndarray, real: np.ndarray, k: int) -> np.ndarray:
    """(b, N, k) int64 indices of the k nearest other real nodes; -1 where none."""
    b, n = coords.shape[:2]
    result = np.full((b, n, k), -1, dtype=np.int64)
    kk = min(k, n - 1)
    if kk <= 0:
        return result
    c64 = coords.astype(np.float64)
    dist = np.empty((b, n, n))
    tmp = np.empty((b, n, n))
    # Squared distances, accumulated per coordinate in place (D is 2 or 3).
    for d in range(coords.shape[2]):
        target = dist if d == 0 else tmp
        np.subtract(c64[:, :, None, d], c64[:, None, :, d], out=target)
        np.multiply(target, target, out=target)
        if d:
            dist += tmp
    # Neither a node itself nor a padded node may be chosen as a neighbour.
    diag = np.arange(n)
    dist[:, diag, diag] = np.inf
    dist += np.where(real, 0.0, np.inf)[:, None, :]
    # Pack each (distance, index) pair into one sortable uint64: non-negative
    # float64 bit patterns order like the floats, and the lowest mantissa bits
    # (about 2**-45 relative for N <= 128) are replaced by the column index.
    # One partition + a tiny sort then yields the nearest first, near-ties
    # broken by lower index, about 3x faster than argpartition + lexsort.
    low = np.uint64((1 << max(1, (n - 1).bit_length())) - 1)
    keys = dist.view(np.uint64)
    keys &= ~low
    keys |= np.arange(n, dtype=np.uint64)
    nearest = np.sort(np.partition(keys, kk - 1, axis=-1)[..., :kk], axis=-1)
    found = np.isfinite((nearest & ~low).view(np.float64)) & real[:, :, None]
    result[..., :kk] = np.where(found, (nearest & low).astype(np.int64), -1)
    return result


class GridAdjacency(Transform):
    """Add the fixed 8-neighbour adjacency of an image grid as a per-sample field.

    The matrix is the same for every sample, so only emit it when a model
    needs it as an input (it costs ``(H*W)**2 * 4`` bytes per sample in the
    batch slot); otherwise call :func:`grid_adjacency` once in the model.

    Parameters
    ----------
    height, width : int
        Grid size (e.g. 9x9 air-shower stations, 20x20 Spinodal, 24x24 EoS).
    out : str, default "adj_matrix"
        Output ``(B, H*W, H*W)`` float32, a read-only broadcast of
        :func:`grid_adjacency`.
    normalise, self_loops : bool, default True
        As in :func:`grid_adjacency`.

    Notes
    -----
    Needs at least one other field in the batch to know the batch size.
    Pair it with :class:`Reshape` to turn an image ``(H, W)`` into node
    features ``(H*W, 1)``.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        out: str = "adj_matrix",
        normalise: bool = True,
        self_loops: bool = True,
    ) -> None:
        self.height = int(height)
        self.width = int(width)
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"GridAdjacency: height and width must be >= 1, got {height}x{width}")
        self.out = check_name(out, "out", "GridAdjacency")
        self.normalise = bool(normalise)
        self.self_loops = bool(self_loops)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        if not inputs:
            raise ConfigError(
                "GridAdjacency: the batch has no fields, so its size is unknown; apply it "
                "to a batch with at least one field"
            )
        n = self.height * self.width
        return {**inputs, self.out: FieldSpec((n, n), np.float32)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        adj = _grid_adjacency_cached(self.height, self.width, self.normalise, self.self_loops)
        return {**batch, self.out: np.broadcast_to(adj, (batch_size(batch), *adj.shape))}


class MotherDaughterAdjacency(Transform):
    """Decay-tree adjacency from mother indices (Belle II event graphs, as in pd4ml).

    Particle ``i`` and its mother ``m[i]`` are joined both ways.

    Parameters
    ----------
    mother_field : str
        Input ``(B, N)`` mother indices (int or float holding integers),
        ``-1`` for "no mother"/padding.  Indices outside ``0..N-1`` (e.g. a
        mother cut away by truncation) give no edge.
    out : str, default "adj_matrix"
        Output ``(B, N, N)`` float32 (see module doc).
    features_field : str, optional
        Input ``(B, N, F)`` particle features; a row is real when its PDG
        column is non-zero (pd4ml's Belle arrays are zero-padded and PDG 0 is
        not a particle).  Give exactly one of ``features_field``/``mask_field``.
    pdg_column : int, default -1
        Column of ``features_field`` holding the PDG code (last in pd4ml).
    mask_field : str, optional
        Input ``(B, N)`` bool (or non-zero = real) saying which rows are real.
    self_loops : bool, default True
        Diagonal 1 for real particles (pd4ml's Belle preprocessing does this).
    normalise : bool, default False
        GCN symmetric normalisation (pd4ml feeds the raw 0/1 matrix).

    Notes
    -----
    Edges to or from padded rows are dropped.  pd4ml itself marks a row real
    when its mother index is not -1, which leaves the root particles without
    a self-loop; deriving "real" from the PDG code or a mask avoids that.
    """

    def __init__(
        self,
        mother_field: str,
        *,
        out: str = "adj_matrix",
        features_field: str | None = None,
        pdg_column: int = -1,
        mask_field: str | None = None,
        self_loops: bool = True,
        normalise: bool = False,
    ) -> None:
        name = "MotherDaughterAdjacency"
        self.mother_field = check_name(mother_field, "mother_field", name)
        self.out = check_name(out, "out", name)
        self.features_field = (
            check_name(features_field, "features_field", name) if features_field else None
        )
        self.mask_field = check_name(mask_field, "mask_field", name) if mask_field else None
        if (self.features_field is None) == (self.mask_field is None):
            raise ConfigError(
                f"{name}: give exactly one of features_field= (real rows have a non-zero PDG "
                "code) or mask_field= (a boolean mask) to say which rows are real particles"
            )
        self.pdg_column = int(pdg_column)
        self.self_loops = bool(self_loops)
        self.normalise = bool(normalise)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.mother_field, self, ndim=1, kinds="iuf")
        n = spec.shape[0]
        if self.features_field is not None:
            fspec = require_field(inputs, self.features_field, self, ndim=2, kinds="iuf")
            n_cols = fspec.shape[1]
            if fspec.shape[0] != n or not -n_cols <= self.pdg_column < n_cols:
                raise ConfigError(
                    f"MotherDaughterAdjacency: features field {self.features_field!r} "
                    f"{fspec.shape} must have {n} rows (like {self.mother_field!r}) and a "
                    f"column {self.pdg_column}"
                )
        else:
            mspec = require_field(inputs, str(self.mask_field), self, kinds="biuf")
            if mspec.shape != (n,):
                raise ConfigError(
                    f"MotherDaughterAdjacency: mask field {self.mask_field!r} has per-sample "
                    f"shape {mspec.shape}, expected ({n},)"
                )
        return {**inputs, self.out: FieldSpec((n, n), np.float32)}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        mothers = get_array(batch, self.mother_field, self)
        if mothers.dtype.kind == "f":
            mothers = np.rint(np.nan_to_num(mothers, nan=-1.0))
        mothers = mothers.astype(np.int64)
        n_batch, n = mothers.shape
        if self.features_field is not None:
            pdg = get_array(batch, self.features_field, self)[:, :, self.pdg_column]
            real = pdg != 0
        else:
            real = mask_as_bool(get_array(batch, str(self.mask_field), self))
        in_range = (mothers >= 0) & (mothers < n)
        safe = np.where(in_range, mothers, 0)
        has_edge = real & in_range & np.take_along_axis(real, safe, axis=1)
        b_idx, i_idx = np.nonzero(has_edge)
        edges = np.zeros((n_batch, n, n), dtype=bool)
        edges[b_idx, i_idx, safe[b_idx, i_idx]] = True
        edges |= edges.transpose(0, 2, 1)
        return {**batch, self.out: _finish(edges, real, self.self_loops, self.normalise)}
