"""Convert the LCD calorimeter dataset: a directory of per-particle HDF5 files.

The original (CLIC/LCD calorimeter images, "LCD" on Zenodo/CERN OpenData)
ships one file per particle type and energy scan, named
``<P>Escan_<a>_<b>.h5`` with ``P`` in ``Ele``, ``Gamma``, ``Pi0``,
``ChPi`` (files may sit in sub-directories such as ``EleEscan/``).  Each file
holds ``ECAL`` (n, 25, 25, 25), ``HCAL`` (n, 5, 5, 60) and ``target``
(n, 1, 5) whose column 1 is the particle energy in GeV.

The class label ``y`` comes from the file name (index into
:data:`PARTICLES`), the energy from ``target[:, 0, 1]``; ``target`` itself is
kept as an aux field.  The release has no split: a seeded split
(default 80/10/10 into train/val/test, ``split_seed`` 0) assigns each event,
and the files are read in rounds that take a contiguous, proportional slice
of every class (its files read front to back), shuffled (seeded) inside the
round, so every chunk of the store holds all four classes.  ``origin`` (file index into the store's source list, row
in that file) records where each event came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastload.errors import SchemaError, SourceFileError

from ._common import (
    Block,
    ConversionReport,
    ConvertOptions,
    FieldDecl,
    RowSource,
    StorePlan,
    assign_splits,
    check_dtype,
    check_equal_lengths,
    conform,
    finish,
    interleaved_split_stream,
    make_options,
    split_counts,
    write_plan,
)
from ._files import h5_dataset, h5_read, open_hdf5, require_dir

VERSION = "1.0"
PARTICLES = ("Ele", "Gamma", "Pi0", "ChPi")
FILE_PATTERN = re.compile(r"^(?P<particle>.+?)Escan_(?P<a>\d+)_(?P<b>\d+)\.h5$")
DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
ENERGY_COLUMN = 1  # target[:, 0, ENERGY_COLUMN] is the particle energy
SOURCE_URL = "http://opendata.cern.ch/record/15012 (LCD calorimeter images; also on Zenodo)"

_DOCS = {
    "ECAL": ("input", "electromagnetic calorimeter energy deposits (x, y, layer)"),
    "HCAL": ("input", "hadronic calorimeter energy deposits (x, y, layer)"),
    "target": ("aux", "the file's target row (column 1 = energy in GeV)"),
}


def find_files(
    src: str | os.PathLike[str], particles: tuple[str, ...] = PARTICLES
) -> list[tuple[Path, int]]:
    """``(file, class id)`` for every ``<P>Escan_<a>_<b>.h5`` under ``src``, in a stable order."""
    base = require_dir(src, "LCD directory")
    found: list[tuple[int, int, int, str, Path]] = []
    for path in base.rglob("*Escan_*.h5"):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            continue
        particle = match["particle"]
        if particle not in PARTICLES:
            raise SourceFileError(
                f"LCD file {str(path)!r}: unknown particle {particle!r} in the file name; "
                f"expected <P>Escan_<a>_<b>.h5 with P one of {list(PARTICLES)}"
            )
        if particle in particles:
            cls = PARTICLES.index(particle)
            found.append((cls, int(match["a"]), int(match["b"]), str(path.relative_to(base)), path))
    if not found:
        raise SourceFileError(
            f"no LCD files <P>Escan_<a>_<b>.h5 (P in {list(particles)}) under {str(base)!r}; "
            f"download them from {SOURCE_URL}"
        )
    return [(path, cls) for cls, _, _, _, path in sorted(found)]


class _LcdFile:
    """One open LCD file: its datasets, event count and class id."""

    def __init__(self, path: Path, cls: int) -> None:
        self.path = path
        self.cls = cls
        self.h5: Any = open_hdf5(path)
        try:
            self.data = {k: h5_dataset(self.h5, k) for k in ("ECAL", "HCAL", "target")}
            self.n = check_equal_lengths(
                {k: int(d.shape[0]) if d.shape else 0 for k, d in self.data.items()},
                f"LCD file {str(path)!r}",
            )
            target = self.data["target"]
            if target.ndim != 3 or target.shape[1] < 1 or target.shape[2] <= ENERGY_COLUMN:
                raise SchemaError(
                    f"'target' in {str(path)!r} has shape {target.shape}; expected (n, 1, 5) with the energy "
                    f"in column {ENERGY_COLUMN}"
                )
        except BaseException:
            self.h5.close()
            raise

    def where(self, key: str) -> str:
        return f"{key!r} in {str(self.path)!r}"

    def close(self) -> None:
        self.h5.close()


def _decls(first: _LcdFile) -> dict[str, FieldDecl]:
    decls = {
        k: FieldDecl(k, first.data[k].shape[1:], np.float32, role, doc)
        for k, (role, doc) in _DOCS.items()
    }
    decls["energy"] = FieldDecl(
        "energy", (), np.float32, "aux", "particle energy in GeV (target[:, 0, 1])"
    )
    decls["y"] = FieldDecl(
        "y", (), np.int64, "label", f"particle class: index into {list(PARTICLES)}"
    )
    decls["origin"] = FieldDecl(
        "origin",
        (2,),
        np.int64,
        "aux",
        "(index of the source file in the store's source list, row in that file)",
    )
    return decls


def build_plan(
    files: list[_LcdFile],
    options: ConvertOptions,
    fractions: Mapping[str, float],
    split_seed: int,
    *,
    name: str = "LCD",
    labels: tuple[str, ...] = PARTICLES,
) -> StorePlan:
    """Check every file against the first one's shapes; return the interleaved streaming plan."""
    decls = _decls(files[0])
    for f in files:
        for key in _DOCS:
            ds = f.data[key]
            check_dtype(ds.dtype, decls[key], f.where(key))
            if ds.shape[1:] != decls[key].shape:
                raise SchemaError(
                    f"{f.where(key)} has per-event shape {ds.shape[1:]}, but {files[0].where(key)} has "
                    f"{decls[key].shape}; all LCD files must agree"
                )
    total = sum(f.n for f in files)
    counts = split_counts(total, fractions, f"LCD files under {str(files[0].path.parent)!r}")
    split_of = assign_splits(counts, split_seed)

    def reader(f: _LcdFile) -> RowSource:
        def read(start: int, stop: int) -> Block:
            block = {
                k: conform(
                    h5_read(f.data[k], start, stop),
                    decls[k],
                    f.where(k),
                    first_row=start,
                    allow_nonfinite=options.allow_nonfinite,
                )
                for k in _DOCS
            }
            block["energy"] = np.ascontiguousarray(block["target"][:, 0, ENERGY_COLUMN])
            block["y"] = np.full(stop - start, f.cls, dtype=np.int64)
            return block

        return RowSource(f.path, f.n, read)

    def stream(block_events: int) -> Iterator[tuple[str, Block]]:
        # one group per class: every round reads a contiguous run of each class
        groups = [[reader(f) for f in files if f.cls == c] for c in sorted({f.cls for f in files})]
        return interleaved_split_stream(
            groups, counts, split_of, block_events, shuffle_seed=split_seed
        )

    return StorePlan(
        name=name,
        task="classification",
        fields=decls,
        counts=counts,
        stream=stream,
        sources=[f.path for f in files],
        converter="converters.lcd",
        converter_version=VERSION,
        labels=labels,
        origins={s: f"{len(files)} LCD files under {str(files[0].path.parent)!r}" for s in counts},
    )


def convert_lcd(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    split: Mapping[str, float] | None = None,
    split_seed: int = 0,
    options: ConvertOptions | None = None,
    **overrides: object,
) -> ConversionReport:
    """Convert a directory of LCD files into one store with a seeded split.

    Parameters
    ----------
    src
        Directory searched recursively for ``<P>Escan_<a>_<b>.h5``.
    dst
        The store to write, e.g. ``datasets/LCD.zarr``.
    split
        Fractions per split (default ``{"train": 0.8, "val": 0.1, "test": 0.1}``); a split
        with fraction 0 is left out.
    split_seed
        Seed of the split assignment and of the shuffle inside each round.
    options, **overrides
        :class:`~converters._common.ConvertOptions` and/or its fields as keywords.

    Returns
    -------
    ConversionReport
    """
    opts = make_options(options, overrides)
    opened: list[_LcdFile] = []
    try:
        for path, cls in find_files(src):
            opened.append(_LcdFile(path, cls))
        plan = build_plan(opened, opts, split or DEFAULT_SPLIT, split_seed)
        report = write_plan(plan, dst, opts)
    finally:
        for f in opened:
            f.close()
    return finish(report, opts)
