"""Convert the Top Tagging landscape release (``train.h5``, ``val.h5``, ``test.h5``).

The original files (Kasieczka et al., "The Machine Learning Landscape of Top
Taggers", Zenodo 2603256) are pandas HDFStores with one DataFrame under key
``table`` and columns ``E_0, PX_0, PY_0, PZ_0, ..., E_199, ..., PZ_199,
truthE, truthPX, truthPY, truthPZ, ttv, is_signal_new``.  They are read in row
blocks with ``HDFStore.select(key, start=, stop=)``, which slices the
underlying PyTables arrays for both layouts pandas writes (``fixed``: one
``blockN_values`` array per dtype; ``table``: one record array), so memory
stays at one block.

The store has exactly the schema of the pd4ml release (``X`` (200, 4)
float32, ``ttv``, ``y``), so :class:`fastload.datasets.TopTagging` reads
either; the splits stay ``train``/``val``/``test`` as in the original.  With
``with_truth=True`` the top quark's four-vector is kept as an extra field
``truth``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fastload._messages import missing_dependency
from fastload.errors import EmptyDatasetError, SourceFileError

from ._common import (
    Block,
    ConversionReport,
    ConvertOptions,
    FieldDecl,
    StorePlan,
    block_ranges,
    conform,
    finish,
    make_options,
    write_plan,
)
from ._files import missing_key, require_dir, require_file
from .pd4ml import LAYOUTS

VERSION = "1.0"
SPLIT_FILES = {"train": "train.h5", "val": "val.h5", "test": "test.h5"}
N_CONSTITUENTS = 200
X_COLUMNS = [f"{q}_{i}" for i in range(N_CONSTITUENTS) for q in ("E", "PX", "PY", "PZ")]
TRUTH_COLUMNS = ["truthE", "truthPX", "truthPY", "truthPZ"]
SOURCE_URL = "https://doi.org/10.5281/zenodo.2603256 (Top Quark Tagging Reference Dataset)"


def locate_files(src: str | os.PathLike[str]) -> dict[str, Path]:
    """``{split: file}`` for the three files in ``src`` (or in ``src/TopTagging``)."""
    base = require_dir(src, "Top Tagging landscape directory")
    for folder in (base, base / "TopTagging"):
        found = {s: folder / f for s, f in SPLIT_FILES.items() if (folder / f).is_file()}
        if found:
            break
    missing = [SPLIT_FILES[s] for s in SPLIT_FILES if s not in found]
    if missing:
        raise SourceFileError(
            f"Top Tagging landscape files {missing} not found in {str(base)!r} (found "
            f"{sorted(p.name for p in found.values())}); download train.h5, val.h5 and test.h5 from {SOURCE_URL}"
        )
    return found


class _Table:
    """One landscape file: an open HDFStore, its row count and column names."""

    def __init__(self, path: Path, key: str) -> None:
        try:
            import pandas as pd
            import tables  # noqa: F401  (pandas needs it for HDF5; fail with the install hint)
        except ModuleNotFoundError as exc:
            raise missing_dependency(exc.name or "pandas", "pandas") from exc
        self.path = require_file(path, "Top Tagging landscape file")
        self.key = key
        self.where = f"table {key!r} in {str(path)!r}"
        try:
            self.store = pd.HDFStore(self.path, mode="r")
        except Exception as exc:  # PyTables raises HDF5ExtError, OSError, ValueError...
            raise SourceFileError(
                f"cannot open {str(path)!r} ({self.path.stat().st_size} bytes) as a pandas HDF5 store: {exc}; "
                "the file is truncated, still downloading or not HDF5 — download it again"
            ) from exc
        try:
            keys = [k.lstrip("/") for k in self.store]
            if key not in keys:
                raise missing_key(key, keys, f"HDF5 store {str(path)!r}")
            storer: Any = self.store.get_storer(key)
            self.n = int(storer.nrows if storer.is_table else storer.shape[0])
            self.columns = [str(c) for c in self.select(0, 0).columns]
        except BaseException:
            self.close()
            raise

    def select(self, start: int, stop: int) -> Any:
        try:
            return self.store.select(self.key, start=start, stop=stop)
        except Exception as exc:
            raise SourceFileError(
                f"cannot read rows {start}..{stop} of {self.where}: {exc}; the file is probably truncated "
                "or corrupt — download it again"
            ) from exc

    def require(self, columns: list[str]) -> None:
        have = set(self.columns)
        for col in columns:
            if col not in have:
                raise missing_key(col, self.columns, f"the columns of {self.where}")

    def close(self) -> None:
        self.store.close()


def build_plan(
    tables: dict[str, _Table], options: ConvertOptions, *, with_truth: bool
) -> StorePlan:
    """Check columns and counts of every file; return the streaming plan."""
    pd4ml = {m.field: m.decl() for m in LAYOUTS["TopTagging"].members}
    decls = {"X": pd4ml["X"], "ttv": pd4ml["ttv"], "y": pd4ml["y"]}
    if with_truth:
        decls["truth"] = FieldDecl(
            "truth", (4,), np.float32, "aux", "top quark (E, px, py, pz); zeros for QCD"
        )
    needed = {"X": X_COLUMNS, "ttv": ["ttv"], "y": ["is_signal_new"], "truth": TRUTH_COLUMNS}
    counts: dict[str, int] = {}
    for split, table in tables.items():
        for name in decls:
            table.require(needed[name])
        if table.n == 0:
            raise EmptyDatasetError(f"{table.where} holds no events; nothing to convert")
        counts[split] = table.n

    def stream(block_events: int) -> Iterator[tuple[str, Block]]:
        for split, table in tables.items():
            for start, stop in block_ranges(table.n, block_events):
                frame = table.select(start, stop)
                block: Block = {}
                for name, decl in decls.items():
                    cols = needed[name]
                    raw = frame[cols].to_numpy()
                    raw = raw.reshape(len(raw), N_CONSTITUENTS, 4) if name == "X" else raw
                    raw = raw[:, 0] if decl.shape == () else raw
                    where = (
                        f"columns {cols[0]}..{cols[-1]} of {table.where}"
                        if len(cols) > 1
                        else (f"column {cols[0]!r} of {table.where}")
                    )
                    block[name] = conform(
                        raw, decl, where, first_row=start, allow_nonfinite=options.allow_nonfinite
                    )
                yield split, block

    return StorePlan(
        name="TopTagging",
        task="classification",
        fields=decls,
        counts=counts,
        stream=stream,
        sources=[t.path for t in tables.values()],
        converter="converters.landscape (TopTagging)",
        converter_version=VERSION,
        labels=LAYOUTS["TopTagging"].labels,
        origins={s: t.where for s, t in tables.items()},
    )


def convert_landscape(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    key: str = "table",
    with_truth: bool = False,
    options: ConvertOptions | None = None,
    **overrides: object,
) -> ConversionReport:
    """Convert the Top Tagging landscape files in ``src`` to a store with splits train/val/test.

    Parameters
    ----------
    src
        Directory holding ``train.h5``, ``val.h5`` and ``test.h5`` (or a ``TopTagging/`` folder with them).
    dst
        The store to write, e.g. ``datasets/TopTagging.zarr``.
    key
        HDFStore key of the DataFrame in each file.
    with_truth
        Also store the top quark four-vector as field ``truth`` (not in the pd4ml schema).
    options, **overrides
        :class:`~converters._common.ConvertOptions` and/or its fields as keywords.

    Returns
    -------
    ConversionReport
    """
    opts = make_options(options, overrides)
    files = locate_files(src)
    tables: dict[str, _Table] = {}
    try:
        for split, path in files.items():
            tables[split] = _Table(path, key)
        plan = build_plan(tables, opts, with_truth=with_truth)
        report = write_plan(plan, dst, opts)
    finally:
        for table in tables.values():
            table.close()
    return finish(report, opts)
