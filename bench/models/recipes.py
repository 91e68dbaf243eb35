"""What each model reads from each dataset: store fields, worker-side transform, input roles.

A recipe is fitted on the training split (normalisation statistics) and then
applied per batch inside the loader's workers, so the model sees ready tensors.
``ref`` names each dataset family's reference model.

=============  =================================  ===============================  ===========
dataset        fcn inputs                         gcn graph                        ref
=============  =================================  ===============================  ===========
TopTagging     pd4ml features (100, 4)            7-NN in (eta, phi), normalised   particlenet
Spinodal/EOSL  standardised histogram             8-neighbour pixel grid           cnn
Airshower      normalised signal + time           8-neighbour 9x9 station grid     resnet
Belle          one-hot PDG features (100, 190)    mother/daughter tree             gcn
LCD            scaled ECAL + HCAL                 (none)                           calo
LArIAT         the two preprocessed wire planes   (none)                           tpc
=============  =================================  ===============================  ===========

LArIAT runs LArTPCDNN's reference preprocessing in the workers
(:func:`fastload.transforms.lariat_preprocess`: tick sums of 8, the 256-tick
window with the most charge, tanh-log, the planes as two (240, 256) inputs)
on the events of the energy cut (``energy > 0.61`` GeV), a filtered view
computed once per split (:attr:`Recipe.select`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fastload.transforms as T
from fastload._messages import closest
from fastload.errors import ConfigError
from fastload.store import Split

from ._spec import Head

#: Samples read from the training split to fit normalisation statistics.
FIT_SAMPLES = 4096

REFERENCE = {
    "TopTagging": "particlenet",
    "Spinodal": "cnn",
    "EOSL": "cnn",
    "Airshower": "resnet",
    "Belle": "gcn",
    "LCD": "calo",
    "LArIAT": "tpc",
}
#: LArTPCDNN keeps events above this kinetic energy (GeV)
LARIAT_ENERGY_CUT = 0.61
DATASETS = tuple(REFERENCE)


@dataclass(frozen=True)
class Recipe:
    """Loader fields and transform, model kind and input roles, label and head."""

    dataset: str
    kind: str
    fields: tuple[str, ...]
    transform: Any
    roles: dict[str, Any]
    label: str
    head: Head
    grid: tuple[int, int] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    #: the view of a split the model trains and is tested on (a selection), or None for all of it
    select: Callable[[Split], Any] | None = None

    def view(self, split: Split) -> Any:
        """``split`` itself, or its filtered view when the recipe selects samples."""
        return split if self.select is None else self.select(split)


def _fit_rows(train: Split, name: str) -> np.ndarray:
    return np.asarray(train.read(name, 0, min(len(train), FIT_SAMPLES)))


def _top_tagging(kind: str, train: Split) -> Recipe:
    head = Head("binary")
    fields = ("X", "y")
    if kind == "fcn":
        return Recipe(
            "TopTagging", kind, fields, T.pd4ml_top_tagging(), {"inputs": ("features",)}, "y", head
        )
    if kind == "gcn":
        roles = {"nodes": "features", "adjacency": "adj_matrix", "mask": "mask"}
        return Recipe("TopTagging", kind, fields, T.pd4ml_top_tagging(graph=True), roles, "y", head)
    transform = T.Compose(
        [
            T.FourVectorFeatures(
                "X",
                out="features",
                features=T.PARTICLENET_FEATURES,
                max_particles=100,
                mask_out="mask",
                points_out="points",
            ),
            T.KNNAdjacency("points", 7, mask_field="mask", out_indices="knn", fill="self"),
            T.Drop(["X", "points"]),
        ]
    )
    roles = {"features": "features", "mask": "mask", "knn": "knn"}
    return Recipe("TopTagging", kind, fields, transform, roles, "y", head)


def _image(dataset: str, size: tuple[int, int]) -> Callable[[str, Split], Recipe]:
    def make(kind: str, train: Split) -> Recipe:
        # per-pixel standardisation fitted on train, as pd4ml does for EOSL
        standardize = T.Standardize.fit("histogram", _fit_rows(train, "histogram"), axis=0)
        head = Head("binary")
        fields = ("histogram", "y")
        if kind == "fcn":
            return Recipe(dataset, kind, fields, standardize, {"inputs": ("histogram",)}, "y", head)
        if kind == "gcn":
            nodes = T.Compose([standardize, T.Reshape("histogram", (size[0] * size[1], 1))])
            return Recipe(
                dataset, kind, fields, nodes, {"nodes": "histogram"}, "y", head, grid=size
            )
        return Recipe(dataset, kind, fields, standardize, {"image": "histogram"}, "y", head)

    return make


def _airshower(kind: str, train: Split) -> Recipe:
    time_std = T.fit_airshower_time_std(_fit_rows(train, "time"))
    # Xmax is ~700 g/cm^2: standardise the target so that MSE starts near 1
    target = T.Standardize.fit("y", _fit_rows(train, "y"), axis=0)
    head = Head("regression")
    fields = ("signal", "time", "y")
    notes = {"time_std": time_std}
    if kind == "gcn":
        transform = T.Compose([T.AirshowerPreprocess(time_std, features_out="features"), target])
        return Recipe(
            "Airshower", kind, fields, transform, {"nodes": "features"}, "y", head, (9, 9), notes
        )
    transform = T.Compose([T.AirshowerPreprocess(time_std), target])
    roles = {"inputs": ("signal", "time")} if kind == "fcn" else {"grids": ("signal", "time")}
    return Recipe("Airshower", kind, fields, transform, roles, "y", head, notes=notes)


def _belle(kind: str, train: Split) -> Recipe:
    head = Head("binary")
    fields = ("features", "mother", "y")
    transform = T.pd4ml_belle(features_field="features", mother_field="mother", graph=kind != "fcn")
    if kind == "fcn":
        return Recipe("Belle", kind, fields, transform, {"inputs": ("features",)}, "y", head)
    return Recipe(
        "Belle",
        kind,
        fields,
        transform,
        {"nodes": "features", "adjacency": "adj_matrix"},
        "y",
        head,
    )


def _lcd(kind: str, train: Split) -> Recipe:
    if kind == "gcn":
        raise ConfigError("LCD has no graph model; use --model fcn or --model ref (the 3D CNN)")
    # one scale per calorimeter (energies are ~1e-3 GeV per cell); zeros stay zero
    scales = [
        T.Scale(name, 1.0 / max(float(_fit_rows(train, name).std()), 1e-12))
        for name in ("ECAL", "HCAL")
    ]
    head = Head("multiclass", n_classes=4)
    fields = ("ECAL", "HCAL", "y")
    roles = {"inputs": ("ECAL", "HCAL")} if kind == "fcn" else {"ecal": "ECAL", "hcal": "HCAL"}
    return Recipe("LCD", kind, fields, T.Compose(scales), roles, "y", head)


def _energy_cut(split: Split) -> Any:
    return split.select(np.asarray(split.read("energy")) > LARIAT_ENERGY_CUT)


def _lariat(kind: str, train: Split) -> Recipe:
    if kind == "gcn":
        raise ConfigError("LArIAT has no graph model; use --model fcn or --model ref (the tpc CNN)")
    planes = ("induction", "collection")
    head = Head("multiclass", n_classes=12)
    roles = {"inputs": planes} if kind == "fcn" else {"planes": planes}
    # class ids of converters.lariat.CLASSES: e-, e+, pi0, photon shower; the rest are tracks
    groups = {"shower": [0, 1, 2, 3], "track": list(range(4, 12))}
    notes = {"energy_cut_gev": LARIAT_ENERGY_CUT, "groups": groups}
    return Recipe(
        "LArIAT",
        kind,
        ("features", "y"),
        T.lariat_preprocess(outs=planes),
        roles,
        "y",
        head,
        notes=notes,
        select=_energy_cut,
    )


_RECIPES: dict[str, Callable[[str, Split], Recipe]] = {
    "TopTagging": _top_tagging,
    "Spinodal": _image("Spinodal", (20, 20)),
    "EOSL": _image("EOSL", (24, 24)),
    "Airshower": _airshower,
    "Belle": _belle,
    "LCD": _lcd,
    "LArIAT": _lariat,
}


def recipe(dataset: str, model: str, train: Split) -> Recipe:
    """The recipe for ``model`` (``fcn``, ``gcn``, ``ref`` or a kind) on ``dataset``.

    Parameters
    ----------
    dataset : str
        One of :data:`DATASETS`.
    model : str
        ``"fcn"``, ``"gcn"``, or ``"ref"`` for the dataset's reference model.
    train : fastload.Split
        Training split; normalisation statistics are fitted on its first
        :data:`FIT_SAMPLES` samples.
    """
    if dataset not in _RECIPES:
        raise ConfigError(
            f"unknown dataset {dataset!r}; known: {list(DATASETS)}{closest(dataset, list(DATASETS))}"
        )
    kind = REFERENCE[dataset] if model == "ref" else model
    allowed = {"fcn", "gcn", REFERENCE[dataset]}
    if kind not in allowed:
        raise ConfigError(f"model {model!r} is not defined for {dataset}; use one of fcn, gcn, ref")
    return _RECIPES[dataset](kind, train)
