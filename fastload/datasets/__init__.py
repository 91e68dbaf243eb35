"""pd4ml-style one-line loading of the project's datasets, numpy arrays out.

    from fastload.datasets import TopTagging
    X, y = TopTagging.load("train", path="datasets")    # X is a list, as in pd4ml

``load`` reads ``<path>/<Name>.zarr``; if only the original files are under
``path`` it converts them first (once); otherwise it raises
:class:`~fastload.errors.DatasetNotFoundError` saying how to get the data.
See ``docs/converting.md`` for every dataset's fields and splits.
"""

from __future__ import annotations

from fastload.datasets._base import REGISTRY, Dataset, Original, get
from fastload.datasets._catalog import (
    AHCAL,
    EOSL,
    LCD,
    Airshower,
    Belle,
    LArIAT,
    PhotonShowers,
    Spinodal,
    TopTagging,
)

__all__ = [
    "AHCAL",
    "EOSL",
    "LCD",
    "REGISTRY",
    "Airshower",
    "Belle",
    "Dataset",
    "LArIAT",
    "Original",
    "PhotonShowers",
    "Spinodal",
    "TopTagging",
    "get",
]
