"""pd4ml preprocessing: the air-shower normalisation and one-call pipelines.

pd4ml (erum-data-idt/pd4ml; Benato et al., "Shared Data and Algorithms for
Deep Learning in Fundamental Physics", 2022) ships each dataset with a fixed
preprocessing.  The functions here rebuild those steps from fastload
transforms so they run per batch inside prefetch workers; docs/transforms.md
lists each equivalence and every deliberate difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Compose,
    Specs,
    Transform,
    check_fields_differ,
    check_name,
    float_dtype,
    get_array,
    iter_blocks,
    require_field,
)
from fastload.transforms._fields import Cast, Concat, Drop, DropColumns, Reshape
from fastload.transforms._graphs import GridAdjacency, KNNAdjacency, MotherDaughterAdjacency
from fastload.transforms._labels import OneHot, RemapPDG
from fastload.transforms._particles import PD4ML_TOP_FEATURES, FourVectorFeatures

#: pd4ml's Belle PDG table (``preprocessing_utils.sorted_pdg``): the 182
#: non-zero values of the compacted PDG column ordered by decreasing frequency
#: in pd4ml's training data.  ``codes[i]`` is one-hot class ``i``.
PD4ML_BELLE_PDG_CODES: tuple[int, ...] = (
    506, 423, 236, 143, 321, 171, 323, 15, 114, 19, 96, 394, 372,
    46, 44, 190, 134, 141, 375, 8, 337, 220, 415, 248, 249, 11,
    34, 434, 263, 4, 126, 378, 418, 183, 182, 10, 245, 85, 45,
    210, 178, 139, 275, 322, 419, 121, 437, 42, 118, 424, 480, 483,
    79, 414, 61, 393, 38, 349, 108, 86, 32, 357, 238, 173, 305,
    57, 413, 491, 158, 355, 78, 176, 164, 352, 187, 205, 471, 71,
    458, 350, 101, 280, 389, 376, 89, 120, 457, 436, 186, 444, 76,
    390, 402, 342, 258, 391, 407, 162, 185, 152, 276, 149, 302, 106,
    110, 401, 109, 487, 279, 192, 446, 334, 56, 359, 194, 314, 202,
    420, 208, 427, 475, 495, 465, 442, 489, 360, 448, 216, 215, 300,
    214, 13, 227, 501, 502, 399, 344, 474, 150, 53, 325, 129, 326,
    195, 366, 370, 336, 163, 154, 66, 105, 285, 473, 455, 421, 43,
    119, 271, 373, 363, 428, 304, 229, 425, 133, 270, 219, 479, 112,
    250, 217, 33, 403, 338, 206, 39, 268, 130, 328, 93, 346, 212,
)  # fmt: skip


class AirshowerPreprocess(Transform):
    """pd4ml's air-shower normalisation of station signals and arrival times.

    - signal: ``log10(s + 1)``, other negative values clipped to 0 first;
    - time: minus the event's mean over its present stations, divided by a
      global ``time_std`` fitted once on the training split
      (:func:`fit_airshower_time_std` / :meth:`AirshowerPreprocess.fit`);
    - entries equal to ``missing`` (pd4ml: ``-1``, a station without signal)
      are set to ``missing_value`` (pd4ml: 0) in both outputs.

    Parameters
    ----------
    time_std : float
        Global standard deviation of the centred arrival times (positive).
    signal_field : str, default "signal"
        Input ``(B, *G, T)`` traces (pd4ml: ``(9, 9, 80)``).
    time_field : str, default "time"
        Input ``(B, *G, 1)`` or ``(B, *G)`` arrival times (pd4ml: ``(9, 9, 1)``).
    missing : float, default -1.0
        Marker of absent entries in the inputs.
    missing_value : float, default 0.0
        Value absent entries get in the outputs.
    features_out : str, optional
        If given, replace both inputs by one field ``(B, prod(G), T + 1)``:
        the normalised trace with the time appended, one row per station
        (pd4ml's ``(81, 81)`` layout).  Otherwise both fields are
        normalised in place with their shapes unchanged.

    Notes
    -----
    Outputs keep float input dtypes (others become float32).  An event with
    no present time entry keeps all its times at ``missing_value``.
    """

    def __init__(
        self,
        time_std: float,
        *,
        signal_field: str = "signal",
        time_field: str = "time",
        missing: float = -1.0,
        missing_value: float = 0.0,
        features_out: str | None = None,
    ) -> None:
        name = "AirshowerPreprocess"
        self.time_std = float(time_std)
        if not np.isfinite(self.time_std) or self.time_std <= 0:
            raise ConfigError(f"{name}: time_std must be positive and finite, got {time_std!r}")
        self.signal_field = check_name(signal_field, "signal_field", name)
        self.time_field = check_name(time_field, "time_field", name)
        check_fields_differ(name, signal_field=self.signal_field, time_field=self.time_field)
        self.missing = float(missing)
        self.missing_value = float(missing_value)
        self.features_out = check_name(features_out, "features_out", name) if features_out else None

    @classmethod
    def fit(
        cls,
        time_data: object,
        *,
        signal_field: str = "signal",
        time_field: str = "time",
        missing: float = -1.0,
        missing_value: float = 0.0,
        features_out: str | None = None,
        block_rows: int = 65536,
    ) -> AirshowerPreprocess:
        """Fit ``time_std`` on training arrival times and build the transform.

        Parameters
        ----------
        time_data : array-like or iterable of array-like
            As in :func:`fit_airshower_time_std`.
        signal_field, time_field, missing, missing_value, features_out
            As in :class:`AirshowerPreprocess` (``missing`` also for the fit).
        block_rows : int, default 65536
            Samples read at a time from a single array.

        Returns
        -------
        AirshowerPreprocess
        """
        std = fit_airshower_time_std(time_data, missing=missing, block_rows=block_rows)
        return cls(
            std,
            signal_field=signal_field,
            time_field=time_field,
            missing=missing,
            missing_value=missing_value,
            features_out=features_out,
        )

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        sspec = require_field(inputs, self.signal_field, self, kinds="iuf")
        tspec = require_field(inputs, self.time_field, self, kinds="iuf")
        if len(sspec.shape) < 2:
            raise ConfigError(
                f"AirshowerPreprocess: signal field {self.signal_field!r} has per-sample shape "
                f"{sspec.shape}; expected (*stations, trace_bins)"
            )
        stations = sspec.shape[:-1]
        if tspec.shape not in (stations, (*stations, 1)):
            raise ConfigError(
                f"AirshowerPreprocess: time field {self.time_field!r} has per-sample shape "
                f"{tspec.shape}; expected {stations} or {(*stations, 1)} to match "
                f"{self.signal_field!r} {sspec.shape}"
            )
        out = dict(inputs)
        sdt, tdt = float_dtype(sspec.dtype), float_dtype(tspec.dtype)
        if self.features_out is None:
            out[self.signal_field] = FieldSpec(sspec.shape, sdt)
            out[self.time_field] = FieldSpec(tspec.shape, tdt)
            return out
        del out[self.signal_field], out[self.time_field]
        n_stations = int(np.prod(stations, dtype=np.int64))
        out[self.features_out] = FieldSpec(
            (n_stations, sspec.shape[-1] + 1), np.result_type(sdt, tdt)
        )
        return out

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        signal = get_array(batch, self.signal_field, self)
        time = get_array(batch, self.time_field, self)
        sig = _normalise_signal(signal, self.missing, self.missing_value)
        t = _normalise_time(time, self.time_std, self.missing, self.missing_value)
        out = dict(batch)
        if self.features_out is None:
            out[self.signal_field] = sig
            out[self.time_field] = t
            return out
        del out[self.signal_field], out[self.time_field]
        n = signal.shape[0]
        rows = sig.reshape(n, -1, signal.shape[-1])
        dtype = np.result_type(sig.dtype, t.dtype)
        out[self.features_out] = np.concatenate(
            [rows, t.reshape(n, rows.shape[1], 1)], axis=2, dtype=dtype
        )
        return out


def _normalise_signal(signal: np.ndarray, missing: float, missing_value: float) -> np.ndarray:
    dt = float_dtype(signal.dtype)
    s = signal.astype(dt, copy=False)
    absent = s == dt.type(missing)
    clipped = np.where(absent, dt.type(0), np.maximum(s, dt.type(0)))
    return np.where(absent, dt.type(missing_value), np.log10(clipped + dt.type(1)))


def _centred_times(time: np.ndarray, missing: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-event centred times (float64) and the mask of present entries."""
    t = time.astype(np.float64)
    present = t != missing
    axes = tuple(range(1, t.ndim))
    count = present.sum(axis=axes, keepdims=True)
    mean = np.where(present, t, 0.0).sum(axis=axes, keepdims=True) / np.maximum(count, 1)
    return np.where(present, t - mean, 0.0), present


def _normalise_time(
    time: np.ndarray, std: float, missing: float, missing_value: float
) -> np.ndarray:
    centred, present = _centred_times(time, missing)
    dt = float_dtype(time.dtype)
    return np.where(present, centred / std, missing_value).astype(dt)


def fit_airshower_time_std(
    time_data: object, *, missing: float = -1.0, block_rows: int = 65536
) -> float:
    """Global standard deviation of per-event-centred arrival times (pd4ml's ``norm_time``).

    Each event's present times are centred on their own mean, so the pooled
    mean is exactly 0 and the result is ``sqrt(mean(centred**2))`` over all
    present entries, computed in one streaming pass.

    Parameters
    ----------
    time_data : array-like or iterable of array-like
        Training arrival times ``(N, *G[, 1])``: one array (numpy, Zarr,
        h5py; read ``block_rows`` samples at a time) or blocks of it.
    missing : float, default -1.0
        Marker of absent stations, left out.
    block_rows : int, default 65536
        Samples read at a time from a single array.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        If there are no present entries or they are all equal within events.
    """
    total_sq = 0.0
    count = 0
    for block in iter_blocks(time_data, block_rows):
        if block.shape[0] == 0:
            continue
        centred, present = _centred_times(block, missing)
        total_sq += float(np.sum(centred**2))
        count += int(present.sum())
    if count == 0:
        raise ConfigError(
            f"fit_airshower_time_std: no present times (every entry equals missing={missing!r})"
        )
    std = float(np.sqrt(total_sq / count))
    if std == 0:
        raise ConfigError(
            "fit_airshower_time_std: all centred times are 0 (at most one station per event?); "
            "cannot normalise by a zero standard deviation"
        )
    return std


# --- one-call pipelines -------------------------------------------------------


def pd4ml_top_tagging(
    field: str = "X",
    *,
    graph: bool = False,
    features: Sequence[str] = PD4ML_TOP_FEATURES,
    max_particles: int = 100,
    k: int = 7,
    normalise: bool = True,
) -> Compose:
    """pd4ml's TopTagging preprocessing: constituent features, mask, optional kNN graph.

    Parameters
    ----------
    field : str, default "X"
        Input ``(B, 200, 4)`` constituent ``(E, px, py, pz)``, zero-padded.
    graph : bool, default False
        Also emit ``adj_matrix`` ``(B, max_particles, max_particles)``: the
        k-nearest-neighbour graph in ``(etarel, phirel)`` with self-loops.
    features : sequence of str, default :data:`PD4ML_TOP_FEATURES`
        pd4ml's ``(log_pt, log_e, etarel, phirel)``; pass
        :data:`PARTICLENET_FEATURES` for ParticleNet's seven.
    max_particles : int, default 100
        Constituents kept (pd4ml: 100).
    k : int, default 7
        Neighbours per node (pd4ml: 7).
    normalise : bool, default True
        GCN-normalise ``adj_matrix``; pd4ml feeds the raw 0/1 matrix
        (``normalise=False``).

    Returns
    -------
    Compose
        ``field`` → ``features`` ``(B, max_particles, len(features))`` float32
        and ``mask`` ``(B, max_particles)`` bool (+ ``adj_matrix``).
    """
    steps: list[Transform] = [
        FourVectorFeatures(
            field,
            out="features",
            features=features,
            max_particles=max_particles,
            mask_out="mask",
            points_out="_points" if graph else None,
        )
    ]
    if graph:
        steps.append(
            KNNAdjacency(
                "_points",
                k,
                mask_field="mask",
                out_indices=None,
                out_dense="adj_matrix",
                normalise=normalise,
            )
        )
        steps.append(Drop("_points"))
    if field not in ("features", "mask", "adj_matrix"):
        steps.append(Drop(field))
    return Compose(steps)


def pd4ml_belle(
    features_field: str = "X",
    mother_field: str = "mother_indices",
    *,
    graph: bool = True,
    codes: Sequence[int] = PD4ML_BELLE_PDG_CODES,
    pdg_column: int = -1,
    normalise: bool = False,
) -> Compose:
    """pd4ml's Belle preprocessing: one-hot PDG codes and the decay-tree adjacency.

    Parameters
    ----------
    features_field : str, default "X"
        Input ``(B, 100, 9)`` particle features, PDG code in ``pdg_column``.
    mother_field : str, default "mother_indices"
        Input ``(B, 100)`` mother indices, ``-1`` padded.
    graph : bool, default True
        Emit ``adj_matrix`` ``(B, 100, 100)`` (real rows: non-zero PDG code).
        Without it, the mother index is appended as a last feature column,
        as pd4ml's non-graph input does.
    codes : sequence of int, default :data:`PD4ML_BELLE_PDG_CODES`
        PDG table for :class:`RemapPDG` (182 codes in pd4ml).
    pdg_column : int, default -1
        Column of the PDG code.
    normalise : bool, default False
        GCN-normalise ``adj_matrix`` (pd4ml: raw 0/1 with self-loops).

    Returns
    -------
    Compose
        → ``features`` ``(B, 100, 8 + len(codes))`` float32 (the non-PDG
        columns, then the one-hot PDG), plus ``adj_matrix`` with ``graph``,
        or ``(B, 100, 9 + len(codes))`` with the mother index last without.
    """
    n_codes = len(codes)
    steps: list[Transform] = []
    if graph:
        steps.append(
            MotherDaughterAdjacency(
                mother_field,
                out="adj_matrix",
                features_field=features_field,
                pdg_column=pdg_column,
                normalise=normalise,
            )
        )
    steps += [
        RemapPDG(features_field, codes, column=pdg_column, out="_pdg_index"),
        OneHot("_pdg_index", n_codes, out="_pdg_onehot", dtype=np.float32),
        DropColumns(features_field, [pdg_column], out="_kinematics"),
        Cast("_kinematics", np.float32),
    ]
    parts = ["_kinematics", "_pdg_onehot"]
    if not graph:
        steps += [
            Reshape(mother_field, (-1, 1), out="_mother_column"),
            Cast("_mother_column", np.float32),
        ]
        parts.append("_mother_column")
    steps.append(Concat(parts, "features"))
    drop = ["_pdg_index", features_field] if features_field != "features" else ["_pdg_index"]
    if mother_field not in ("features", "adj_matrix"):
        drop.append(mother_field)
    steps.append(Drop(drop))
    return Compose(steps)


def pd4ml_airshower(
    time_std: float,
    *,
    signal_field: str = "signal",
    time_field: str = "time",
    graph: bool = False,
    grid: tuple[int, int] = (9, 9),
    normalise: bool = True,
) -> Compose:
    """pd4ml's Airshower preprocessing: normalised ``features`` ``(B, 81, 81)``.

    Parameters
    ----------
    time_std : float
        From :func:`fit_airshower_time_std` on the training split.
    signal_field, time_field : str
        Inputs ``(B, 9, 9, 80)`` and ``(B, 9, 9, 1)``.
    graph : bool, default False
        Also emit the 8-neighbour station grid ``adj_matrix`` ``(B, 81, 81)``.
    grid : tuple of 2 int, default (9, 9)
        Station grid for ``adj_matrix``.
    normalise : bool, default True
        GCN-normalise ``adj_matrix`` (pd4ml: raw 0/1, no self-loops).

    Returns
    -------
    Compose
    """
    steps: list[Transform] = [
        AirshowerPreprocess(
            time_std, signal_field=signal_field, time_field=time_field, features_out="features"
        )
    ]
    if graph:
        steps.append(GridAdjacency(*grid, out="adj_matrix", normalise=normalise))
    return Compose(steps)


def pd4ml_image_graph(
    field: str,
    height: int,
    width: int,
    *,
    normalise: bool = True,
) -> Compose:
    """pd4ml's image-as-graph input (Spinodal 20x20, EOSL 24x24).

    Each pixel becomes a node with one feature; nodes are joined to their 8
    neighbours.  (For EOSL, pd4ml first standardises every pixel with
    statistics from the training split: put ``Standardize.fit(field, train)``
    before this.)

    Parameters
    ----------
    field : str
        Input images ``(B, height, width)`` or ``(B, height, width, 1)``.
    height, width : int
        Image size.
    normalise : bool, default True
        GCN-normalise ``adj_matrix`` (pd4ml: raw 0/1, no self-loops).

    Returns
    -------
    Compose
        → ``features`` ``(B, height*width, 1)`` and ``adj_matrix``
        ``(B, height*width, height*width)`` float32; ``field`` is dropped.
    """
    steps: list[Transform] = [Reshape(field, (height * width, 1), out="features")]
    if field != "features":
        steps.append(Drop(field))
    steps.append(GridAdjacency(height, width, out="adj_matrix", normalise=normalise))
    return Compose(steps)
