"""Convert photon calorimeter showers: HDF5 with a ``30x30`` group of ``energy`` and ``layers``.

Each file holds, under the group ``30x30`` (configurable), ``energy``
(n, 1), the incident photon energy, and ``layers`` (n, 30, 30, 30), the
energy deposited per cell of 30 layers of 30x30 cells.  The release has no
split: a seeded split (default 80/10/10 into train/val/test, ``split_seed``
0) assigns each event; events keep their file order inside a split.  Several
files (a directory) are read one after the other into one store.
``origin`` records (file index into the store's source list, row in that file).
"""

from __future__ import annotations

import os
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
from ._files import h5_dataset, h5_read, open_hdf5

VERSION = "1.0"
DEFAULT_GROUP = "30x30"
DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
SUFFIXES = (".h5", ".hdf5")

_DECLS = {
    "layers": FieldDecl(
        "layers",
        (30, 30, 30),
        np.float32,
        "input",
        "energy deposited per cell: 30 layers x 30 x 30 cells",
    ),
    "energy": FieldDecl("energy", (1,), np.float32, "label", "incident photon energy"),
    "origin": FieldDecl(
        "origin",
        (2,),
        np.int64,
        "aux",
        "(index of the source file in the store's source list, row in that file)",
    ),
}


def find_files(src: str | os.PathLike[str]) -> list[Path]:
    """``src`` itself, or every ``*.h5``/``*.hdf5`` file directly in directory ``src`` (sorted)."""
    p = Path(src)
    if not p.exists():
        raise SourceFileError(f"photon shower source {str(p)!r} does not exist; check the path")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES)
    if not files:
        raise SourceFileError(
            f"no HDF5 files ({', '.join(SUFFIXES)}) in photon shower directory {str(p)!r}"
        )
    return files


class _ShowerFile:
    def __init__(self, path: Path, group: str) -> None:
        self.path = path
        self.h5: Any = open_hdf5(path)
        try:
            self.data = {k: h5_dataset(self.h5, f"{group}/{k}") for k in ("layers", "energy")}
            self.n = check_equal_lengths(
                {f"{group}/{k}": int(d.shape[0]) if d.shape else 0 for k, d in self.data.items()},
                f"photon shower file {str(path)!r}",
            )
            for k, ds in self.data.items():
                check_dtype(ds.dtype, _DECLS[k], self.where(k))
                if ds.shape[1:] != _DECLS[k].shape:
                    raise SchemaError(
                        f"{self.where(k)} has shape {ds.shape}; expected (n, "
                        f"{', '.join(map(str, _DECLS[k].shape))}) — is this the right file or group?"
                    )
        except BaseException:
            self.h5.close()
            raise
        self.group = group

    def where(self, key: str) -> str:
        return f"{key!r} in {str(self.path)!r}"


def build_plan(
    files: list[_ShowerFile],
    options: ConvertOptions,
    fractions: Mapping[str, float],
    split_seed: int,
) -> StorePlan:
    """Seeded split over all files' events; return the streaming plan."""
    counts = split_counts(
        sum(f.n for f in files), fractions, f"photon shower files {[str(f.path) for f in files]}"
    )
    split_of = assign_splits(counts, split_seed)

    def reader(f: _ShowerFile) -> RowSource:
        def read(start: int, stop: int) -> Block:
            return {
                k: conform(
                    h5_read(ds, start, stop),
                    _DECLS[k],
                    f.where(k),
                    first_row=start,
                    allow_nonfinite=options.allow_nonfinite,
                )
                for k, ds in f.data.items()
            }

        return RowSource(f.path, f.n, read)

    def stream(block_events: int) -> Iterator[tuple[str, Block]]:
        return interleaved_split_stream(
            [[reader(f) for f in files]], counts, split_of, block_events, shuffle_seed=None
        )

    return StorePlan(
        name="PhotonShowers",
        task="regression",
        fields=dict(_DECLS),
        counts=counts,
        stream=stream,
        sources=[f.path for f in files],
        converter="converters.photons",
        converter_version=VERSION,
        origins={s: f"photon shower file(s) {[str(f.path) for f in files]}" for s in counts},
    )


def convert_photons(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    group: str = DEFAULT_GROUP,
    split: Mapping[str, float] | None = None,
    split_seed: int = 0,
    options: ConvertOptions | None = None,
    **overrides: object,
) -> ConversionReport:
    """Convert photon shower HDF5 file(s) into one store with a seeded split.

    Parameters
    ----------
    src
        An HDF5 file, or a directory of them.
    dst
        The store to write, e.g. ``datasets/PhotonShowers.zarr``.
    group
        HDF5 group holding ``energy`` and ``layers``.
    split
        Fractions per split (default ``{"train": 0.8, "val": 0.1, "test": 0.1}``).
    split_seed
        Seed of the split assignment.
    options, **overrides
        :class:`~converters._common.ConvertOptions` and/or its fields as keywords.

    Returns
    -------
    ConversionReport
    """
    opts = make_options(options, overrides)
    opened: list[_ShowerFile] = []
    try:
        for path in find_files(src):
            opened.append(_ShowerFile(path, group))
        plan = build_plan(opened, opts, split or DEFAULT_SPLIT, split_seed)
        report = write_plan(plan, dst, opts)
    finally:
        for f in opened:
            f.h5.close()
    return finish(report, opts)
