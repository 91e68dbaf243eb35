"""Per-batch transforms that run inside prefetch workers.

Ragged fields (``fl.Loader(..., ragged={"hits": "offsets"})`` gives
``fl.Ragged`` fields) reach transforms as ``fl.Ragged`` too: ``TruncateRows``,
``KnnEdges``, ``MapRows``, ``EventSum`` and ``Voxelize`` work on them in the
workers, and the functions they wrap (``truncate_rows``, ``knn_edges``,
``map_rows``, ``event_sum``, ``row_event``) on any ``fl.Ragged`` in the consumer.

Every transform maps a batch ``dict[str, np.ndarray]`` (leading batch axis)
to another and declares its output fields' per-sample shapes and dtypes up
front with ``output_spec(inputs)``, so shared-memory slots can be sized before
any data is read.  See docs/transforms.md.

Layout::

    _base.py       Transform protocol, Compose, check_transform, helpers
    _fields.py     Cast, Drop, Reshape, SelectColumns, DropColumns, Concat
    _scale.py      Scale, Standardize (+ fit_standardize), Log10p, SignedLogTanh
    _particles.py  PadTruncate, FourVectorFeatures (jet-constituent features)
    _graphs.py     KNNAdjacency, GridAdjacency, MotherDaughterAdjacency, grid_adjacency
    _hits.py       Voxelize (ragged calorimeter hits -> dense grid)
    _ragged.py     functions on ragged batches (fl.Ragged): truncate_rows, knn_edges,
                   map_rows, event_sum, row_event
    _ragged_transforms.py  TruncateRows, KnnEdges, MapRows, EventSum (those functions
                   as worker transforms, ragged outputs with declared row bounds)
    _labels.py     OneHot, OneHotLabels, RemapPDG (+ pdg_codes_by_frequency)
    _pd4ml.py      AirshowerPreprocess and pd4ml one-call pipelines
    _tpc.py        TickDownsample, MaxChargeCrop, SplitPlanes, lariat_preprocess (LArIAT)
"""

from __future__ import annotations

from fastload.transforms._base import Compose, Transform, check_transform
from fastload.transforms._fields import Cast, Concat, Drop, DropColumns, Reshape, SelectColumns
from fastload.transforms._graphs import (
    GridAdjacency,
    KNNAdjacency,
    MotherDaughterAdjacency,
    grid_adjacency,
    normalise_adjacency,
)
from fastload.transforms._hits import Voxelize
from fastload.transforms._labels import (
    OneHot,
    OneHotLabels,
    RemapPDG,
    pdg_codes_by_frequency,
    remap_codes,
)
from fastload.transforms._particles import (
    FOUR_VECTOR_FEATURES,
    PARTICLENET_FEATURES,
    PD4ML_TOP_FEATURES,
    FourVectorFeatures,
    PadTruncate,
    wrap_angle,
)
from fastload.transforms._pd4ml import (
    PD4ML_BELLE_PDG_CODES,
    AirshowerPreprocess,
    fit_airshower_time_std,
    pd4ml_airshower,
    pd4ml_belle,
    pd4ml_image_graph,
    pd4ml_top_tagging,
)
from fastload.transforms._ragged import event_sum, knn_edges, map_rows, row_event, truncate_rows
from fastload.transforms._ragged_transforms import EventSum, KnnEdges, MapRows, TruncateRows
from fastload.transforms._scale import (
    Log10p,
    Scale,
    SignedLogTanh,
    Standardize,
    fit_standardize,
)
from fastload.transforms._tpc import (
    MaxChargeCrop,
    SplitPlanes,
    TickDownsample,
    lariat_preprocess,
)

__all__ = [
    "FOUR_VECTOR_FEATURES",
    "PARTICLENET_FEATURES",
    "PD4ML_BELLE_PDG_CODES",
    "PD4ML_TOP_FEATURES",
    "AirshowerPreprocess",
    "Cast",
    "Compose",
    "Concat",
    "Drop",
    "DropColumns",
    "EventSum",
    "FourVectorFeatures",
    "GridAdjacency",
    "KNNAdjacency",
    "KnnEdges",
    "Log10p",
    "MapRows",
    "MaxChargeCrop",
    "MotherDaughterAdjacency",
    "OneHot",
    "OneHotLabels",
    "PadTruncate",
    "RemapPDG",
    "Reshape",
    "Scale",
    "SelectColumns",
    "SignedLogTanh",
    "SplitPlanes",
    "Standardize",
    "TickDownsample",
    "Transform",
    "TruncateRows",
    "Voxelize",
    "check_transform",
    "event_sum",
    "fit_airshower_time_std",
    "fit_standardize",
    "grid_adjacency",
    "knn_edges",
    "lariat_preprocess",
    "map_rows",
    "normalise_adjacency",
    "pd4ml_airshower",
    "pd4ml_belle",
    "pd4ml_image_graph",
    "pd4ml_top_tagging",
    "pdg_codes_by_frequency",
    "remap_codes",
    "row_event",
    "truncate_rows",
    "wrap_angle",
]
