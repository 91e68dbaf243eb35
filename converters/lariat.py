"""Convert LArIAT TPC events: per-class ``<class>_<i>.2d.h5`` (+ ``.3d.h5``) files.

The originals (LArTPCDNN's layout, see docs/datasets.md) hold one particle
class per file, the class being the file name's prefix before the first
``_``.  The 2D file has ``features`` (n, 2, 240, 4096) float16 (``images`` in
the later variant) and per-event float32 ``Eng`` (``Energy``),
``Track_length``, ``pdg``, ``enu_truth``, ``lep_mom_truth``, ``mode_truth``;
the 3D twin (PyTables) has VLArrays ``images3D/C`` ((n_i, 3) x, y, z) and
``images3D/V`` ((n_i,) electrons).

Store fields: ``features`` (2, 240, ticks) float16 as stored (input);
``deposits`` ragged (4,) float32 rows ``(x, y, z, electrons)`` (input, when the
3D files are there); ``energy`` (``Eng``), ``track_length``, ``pdg``,
``enu_truth``, ``lep_mom_truth``, ``mode_truth`` float32 (aux); ``y`` int64
(label: index into :data:`CLASSES`, from the file name); ``origin`` (2,)
int64 (index of the 2D file in the store's source list, row in it).
Every split has chunks of one event (``chunk_len`` 1: a 3.9 MB chunk of
``features``), so a loader worker decodes each event straight into its slot.

Two layouts (``per_class``):

* one premixed store (default): all classes in one store, a seeded split
  (default 80/10/10, ``split_seed``) and the files read in rounds that take a
  proportional slice of every class, shuffled (seeded) inside the round -- as
  :mod:`converters.lcd` does;
* one store per class, ``DST/<class>.zarr``, each with the same seeded split
  of its own events, to be mixed on the fly with :class:`fastload.Mix` (or
  premixed later with ``python -m converters premix``).

Decoding the gzip-compressed HDF5 is the slow part, so with ``workers`` > 0 the
reads run in that many processes (spawned, reading ahead of the writer, results
in order: the store is byte-identical to a serial conversion).  ``"auto"``
uses min(4, cores) processes from 256 MiB of source files on, else none.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fastload.errors import (
    ConfigError,
    EmptyDatasetError,
    SchemaError,
    SourceFileError,
    VerificationError,
)

from ._common import (
    Block,
    ConversionReport,
    ConvertOptions,
    FieldDecl,
    RowSource,
    _dir_bytes,
    _progress_bar,
    assign_splits,
    conform,
    finish,
    interleaved_split_stream,
    make_options,
    split_counts,
)
from ._files import open_hdf5, require_dir
from ._verify import SampleDigest, verify_store

VERSION = "1.0"
CLASSES = (
    "electron",
    "antielectron",
    "pion0",
    "photon",
    "pionPlus",
    "pionMinus",
    "proton",
    "antiproton",
    "muon",
    "antimuon",
    "kaonMinus",
    "kaonPlus",
)
FILE_PATTERN = re.compile(r"^(?P<cls>[^_]+)_(?P<rest>.+)\.2d\.h5$")
DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
#: store field <- the 2D file's dataset names (the original's first, then the later variant's)
EVENT_KEYS = {
    "energy": ("Eng", "Energy"),
    "track_length": ("Track_length",),
    "pdg": ("pdg",),
    "enu_truth": ("enu_truth",),
    "lep_mom_truth": ("lep_mom_truth",),
    "mode_truth": ("mode_truth",),
}
IMAGE_KEYS = ("features", "images")
#: source bytes from which ``workers="auto"`` reads with processes
PARALLEL_MIN_SOURCE_BYTES = 256 * 2**20
SOURCE_URL = "the LArIAT simulation HDF5 files used by LArTPCDNN (not public)"

logger = logging.getLogger(__name__)


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def find_files(
    src: str | os.PathLike[str], classes: Sequence[str] = CLASSES
) -> list[tuple[Path, Path | None, int]]:
    """``(2D file, 3D file or None, class id)`` of every ``<class>_*.2d.h5`` under ``src``, sorted.

    Sorted by class (in :data:`CLASSES` order), then by the rest of the name with
    numbers compared as numbers (``muon_2`` before ``muon_10``).
    """
    base = require_dir(src, "LArIAT directory")
    found: list[tuple[int, tuple[Any, ...], Path, Path | None]] = []
    for path in base.rglob("*.2d.h5"):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            continue
        cls = match["cls"]
        if cls not in CLASSES:
            raise SourceFileError(
                f"LArIAT file {str(path)!r}: unknown class {cls!r} in the file name; expected "
                f"<class>_<i>.2d.h5 with class one of {list(CLASSES)}"
            )
        if cls not in classes:
            continue
        twin = path.with_name(path.name.removesuffix(".2d.h5") + ".3d.h5")
        found.append(
            (CLASSES.index(cls), _natural(match["rest"]), path, twin if twin.is_file() else None)
        )
    if not found:
        raise SourceFileError(
            f"no LArIAT files <class>_<i>.2d.h5 (class in {list(classes)}) under {str(base)!r}; "
            f"obtain {SOURCE_URL}, or generate synthetic ones with "
            "`python -m fastload.synthetic lariat DIR`"
        )
    return [
        (p2, p3, cls) for cls, _, p2, p3 in sorted(found, key=lambda t: (t[0], t[1], str(t[2])))
    ]


# --------------------------------------------------------------------- reading
class _LariatFile:
    """One open 2D file (and its 3D twin): datasets, event count, class id."""

    def __init__(self, path2: Path, path3: Path | None, cls: int) -> None:
        self.path = path2
        self.path3 = path3
        self.cls = cls
        self.h5: Any = open_hdf5(path2)
        self.t3: Any = None
        try:
            self.image_key = self._first(IMAGE_KEYS)
            self.keys = {name: self._first(options) for name, options in EVENT_KEYS.items()}
            images = self.h5[self.image_key]
            if images.ndim != 4 or images.shape[1] != 2:
                raise SchemaError(
                    f"{self.where(self.image_key)} has shape {images.shape}; expected (n, 2, wires, ticks)"
                )
            self.n = int(images.shape[0])
            self.image_shape = tuple(int(s) for s in images.shape[1:])
            for key in self.keys.values():
                ds = self.h5[key]
                if ds.shape != (self.n,):
                    raise SchemaError(
                        f"{self.where(key)} has shape {ds.shape}; expected ({self.n},), one value per event"
                    )
            if path3 is not None:
                self._open_3d(path3)
        except BaseException:
            self.close()
            raise

    def _first(self, options: Sequence[str]) -> str:
        for key in options:
            if key in self.h5:
                return key
        raise SchemaError(
            f"LArIAT file {str(self.path)!r} has none of {list(options)} (has {sorted(self.h5)}); "
            "is this a LArIAT 2D file?"
        )

    def _open_3d(self, path3: Path) -> None:
        try:
            import tables
        except ModuleNotFoundError as exc:  # pragma: no cover - tables comes with [pandas]
            from fastload.errors import ConfigError as _CE

            raise _CE(
                "reading LArIAT .3d.h5 files needs PyTables: pip install 'fastload[pandas]'"
            ) from exc
        try:
            self.t3 = tables.open_file(str(path3), "r")
            group = self.t3.get_node("/images3D")
            self.C, self.V = group.C, group.V
        except (OSError, tables.NoSuchNodeError, tables.HDF5ExtError) as exc:
            raise SourceFileError(
                f"cannot read images3D/C and images3D/V of {str(path3)!r}: {exc}; is it a LArIAT 3D file?"
            ) from exc
        if self.C.nrows != self.n or self.V.nrows != self.n:
            raise SchemaError(
                f"{str(path3)!r} holds {self.C.nrows} (C) and {self.V.nrows} (V) events, its 2D twin "
                f"{str(self.path)!r} {self.n}; the pair does not belong together"
            )

    def where(self, key: str) -> str:
        return f"{key!r} in {str(self.path)!r}"

    def read(
        self, start: int, stop: int, decls: Mapping[str, FieldDecl], allow_nonfinite: bool
    ) -> Block:
        """Conformed fields of events ``[start, stop)``; ``deposits`` as an object array of (n_i, 4)."""
        try:
            block: Block = {
                "features": conform(
                    self.h5[self.image_key][start:stop],
                    decls["features"],
                    self.where(self.image_key),
                    first_row=start,
                    allow_nonfinite=allow_nonfinite,
                )
            }
            for name, key in self.keys.items():
                block[name] = conform(
                    self.h5[key][start:stop],
                    decls[name],
                    self.where(key),
                    first_row=start,
                    allow_nonfinite=allow_nonfinite,
                )
        except (OSError, RuntimeError) as exc:
            raise SourceFileError(
                f"cannot read events {start}..{stop} of {str(self.path)!r}: {exc}; the file is probably "
                "truncated or corrupt"
            ) from exc
        block["y"] = np.full(stop - start, self.cls, dtype=np.int64)
        if "deposits" in decls:
            block["deposits"] = self._deposits(start, stop, allow_nonfinite)
        return block

    def _deposits(self, start: int, stop: int, allow_nonfinite: bool) -> np.ndarray:
        out = np.empty(stop - start, dtype=object)
        cs, vs = self.C.read(start, stop), self.V.read(start, stop)
        for i, (c, v) in enumerate(zip(cs, vs, strict=True)):
            c = (
                np.asarray(c, dtype=np.float32).reshape(-1, 3)
                if np.size(c)
                else np.zeros((0, 3), np.float32)
            )
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if len(c) != len(v):
                raise SchemaError(
                    f"event {start + i} of {str(self.path3)!r}: {len(c)} deposit positions (C) but "
                    f"{len(v)} charges (V)"
                )
            row = np.concatenate([c, v[:, None]], axis=1)
            if not allow_nonfinite and not np.isfinite(row).all():
                from fastload.errors import NonFiniteError

                raise NonFiniteError(
                    f"{str(self.path3)!r}: NaN or inf in the deposits of event {start + i}; pass "
                    "allow_nonfinite=True to store them as they are"
                )
            out[i] = row
        return out

    def close(self) -> None:
        if self.t3 is not None:
            self.t3.close()
            self.t3 = None
        self.h5.close()


def _decls(first: _LariatFile, with_3d: bool) -> dict[str, FieldDecl]:
    decls = {
        "features": FieldDecl(
            "features",
            first.image_shape,
            np.float16,
            "input",
            "raw ADC of the induction (0) and collection (1) wire planes: (plane, wire, tick)",
        ),
    }
    if with_3d:
        decls["deposits"] = FieldDecl(
            "deposits",
            (4,),
            np.float32,
            "input",
            "ragged: one row per Geant4 charge deposit (x, y, z, electrons) from images3D/C and V",
        )
    docs = {
        "energy": "kinetic energy of the primary (Eng, or Energy in the later files)",
        "track_length": "Track_length",
        "pdg": "PDG code of the primary",
        "enu_truth": "neutrino energy (-9999 for single particles)",
        "lep_mom_truth": "lepton momentum (-9999 for single particles)",
        "mode_truth": "interaction mode (-9999 for single particles)",
    }
    for name, doc in docs.items():
        decls[name] = FieldDecl(name, (), np.float32, "aux", doc)
    decls["y"] = FieldDecl(
        "y", (), np.int64, "label", f"particle class: index into {list(CLASSES)}"
    )
    decls["origin"] = FieldDecl(
        "origin",
        (2,),
        np.int64,
        "aux",
        "(index of the 2D source file in the store's source list, row in it)",
    )
    return decls


# ------------------------------------------------------------- parallel reads
def _read_piece(
    path2: str,
    path3: str | None,
    cls: int,
    start: int,
    stop: int,
    decls: Mapping[str, FieldDecl],
    allow_nonfinite: bool,
) -> Block:
    """A reader process's task: events ``[start, stop)`` of one file (opened and closed here)."""
    f = _LariatFile(Path(path2), Path(path3) if path3 else None, cls)
    try:
        return f.read(start, stop, decls, allow_nonfinite)
    finally:
        f.close()


class _Piece(RowSource):
    """A RowSource that also says how a reader process re-opens it."""

    def __init__(
        self, f: _LariatFile, decls: Mapping[str, FieldDecl], allow_nonfinite: bool
    ) -> None:
        super().__init__(f.path, f.n, lambda a, b: f.read(a, b, decls, allow_nonfinite))
        self.args = (str(f.path), str(f.path3) if f.path3 else None, f.cls)
        self.decls = dict(decls)
        self.allow_nonfinite = allow_nonfinite


def _pool_reads(workers: int, ahead: int) -> Any:
    """A ``read_many`` that decodes pieces in ``workers`` spawned processes, ``ahead`` in flight."""

    def read_many(pieces: Sequence[tuple[RowSource, int, int]]) -> Iterator[Block]:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        pending: deque[Future[Block]] = deque()
        todo = iter(pieces)
        try:

            def submit() -> None:
                nxt = next(todo, None)
                if nxt is not None:
                    src, a, b = nxt
                    assert isinstance(src, _Piece)
                    pending.append(
                        pool.submit(_read_piece, *src.args, a, b, src.decls, src.allow_nonfinite)
                    )

            for _ in range(ahead):
                submit()
            while pending:
                block = pending.popleft().result()
                submit()
                yield block
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return read_many


def _choose_workers(workers: int | str, files: Sequence[_LariatFile]) -> int:
    if workers == "auto":
        size = sum(
            f.path.stat().st_size + (f.path3.stat().st_size if f.path3 else 0) for f in files
        )
        return min(4, os.cpu_count() or 1) if size >= PARALLEL_MIN_SOURCE_BYTES else 0
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be 'auto' or a number of processes >= 0, got {workers!r}")
    return workers


# --------------------------------------------------------------------- writing
def _to_ragged(rows: np.ndarray) -> Any:
    from fastload.store import Ragged

    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(list(rows)) if len(rows) else np.zeros((0, 4), np.float32)
    return Ragged(np.ascontiguousarray(values, dtype=np.float32), offsets)


def _write_store(
    dst: Path,
    name: str,
    files: Sequence[_LariatFile],
    decls: dict[str, FieldDecl],
    fractions: Mapping[str, float],
    split_seed: int,
    options: ConvertOptions,
    workers: int,
) -> ConversionReport:
    """Write one store from ``files`` (one group per class present), verify it, return the report."""
    import hashlib

    import fastload as fl

    total = sum(f.n for f in files)
    counts = split_counts(total, fractions, f"LArIAT files under {str(files[0].path.parent)!r}")
    split_of = assign_splits(counts, split_seed)
    pieces = {id(f): _Piece(f, decls, options.allow_nonfinite) for f in files}
    groups = [[pieces[id(f)] for f in files if f.cls == c] for c in sorted({f.cls for f in files})]
    per_event = sum(d.sample_nbytes for d in decls.values() if d.name != "deposits")
    block_events = options.block_events or max(1, (64 * 2**20) // per_event)
    read_many = _pool_reads(workers, 2 * workers) if workers else None
    dense = [k for k in decls if k != "deposits"]
    digest = SampleDigest(counts, dense, options.verify_rows)
    ragged_hash = {s: hashlib.sha256() for s in counts}
    t0 = time.perf_counter()
    nbytes = 0
    with fl.create_store(
        dst,
        name=name,
        task="classification",
        codec=options.codec,
        clevel=options.clevel,
        chunk_len=1,
        fields={k: d.to_store() for k, d in decls.items()},
        labels=list(CLASSES),
        converter="converters.lariat",
        converter_version=VERSION,
        overwrite=options.overwrite,
        allow_nonfinite=True,  # conformed above, naming the file
    ) as writer:
        for f in files:  # the 2D files first: origin[:, 0] indexes them
            writer.add_source(f.path.resolve())
        for f in files:
            if f.path3 is not None:
                writer.add_source(f.path3.resolve())
        stream = interleaved_split_stream(
            groups, counts, split_of, block_events, shuffle_seed=split_seed, read_many=read_many
        )
        with _progress_bar(total, name, options.show_progress) as bar:
            for split, block in stream:
                rows = digest.rows[split]
                offset = digest.seen[split]
                if "deposits" in block:
                    m = len(block["y"])
                    lo, hi = np.searchsorted(rows, [offset, offset + m])
                    for r in rows[lo:hi] - offset:
                        ragged_hash[split].update(
                            np.ascontiguousarray(block["deposits"][r]).tobytes()
                        )
                    block["deposits"] = _to_ragged(block["deposits"])
                    nbytes += block["deposits"].values.nbytes
                digest.update(split, {k: block[k] for k in dense})
                writer.append(split, block)
                nbytes += len(block["y"]) * per_event
                bar.update(len(block["y"]))
                bar.set_postfix_str(
                    f"{nbytes / 1e6 / max(time.perf_counter() - t0, 1e-9):.0f} MB/s"
                )
    seconds = time.perf_counter() - t0
    logger.info(
        "%s: %.1f MB decoded and written in %.1f s (%.0f MB/s, %d reader processes)",
        name,
        nbytes / 1e6,
        seconds,
        nbytes / 1e6 / max(seconds, 1e-9),
        workers,
    )
    if options.verify:
        try:
            verify_store(dst, digest.expectation({}))
            _verify_deposits(dst, digest, ragged_hash)
        except VerificationError:
            shutil.rmtree(dst, ignore_errors=True)
            raise
    return ConversionReport(
        path=os.fspath(dst),
        name=name,
        counts=dict(counts),
        bytes_uncompressed=nbytes,
        bytes_stored=_dir_bytes(dst),
        seconds=seconds,
        verified=options.verify,
    )


def _verify_deposits(dst: Path, digest: SampleDigest, expected: Mapping[str, Any]) -> None:
    import hashlib

    import fastload as fl

    store = fl.open_store(dst)
    if "deposits" not in store.fields:
        return
    for split, want in expected.items():
        h = hashlib.sha256()
        for r in digest.rows[split]:
            part = store[split].read("deposits", int(r), int(r) + 1)
            h.update(np.ascontiguousarray(part.values[part.offsets[0] : part.offsets[1]]).tobytes())
        if h.hexdigest() != want.hexdigest():
            raise VerificationError(
                f"store {str(dst)!r}: the deposits of split {split!r} differ from the 3D files in a "
                f"sample of {len(digest.rows[split])} events (sha256 mismatch)"
            )


def convert_lariat(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    per_class: bool = False,
    classes: Sequence[str] = CLASSES,
    with_3d: bool | str = "auto",
    split: Mapping[str, float] | None = None,
    split_seed: int = 0,
    workers: int | str = 0,
    options: ConvertOptions | None = None,
    **overrides: object,
) -> ConversionReport | dict[str, ConversionReport]:
    """Convert a directory of LArIAT files into one premixed store, or one store per class.

    Parameters
    ----------
    src
        Directory searched recursively for ``<class>_<i>.2d.h5`` (and their ``.3d.h5`` twins).
    dst
        The store to write (``datasets/LArIAT.zarr``); with ``per_class`` a directory that
        receives ``<class>.zarr`` for every class found.
    per_class
        One store per class instead of one premixed store.
    classes
        Classes to convert (default: all twelve).
    with_3d
        Store the 3D deposits as the ragged field ``deposits``: ``"auto"`` when every 2D
        file has its ``.3d.h5`` twin (SourceFileError when only some have one), True
        (required), False (ignored).
    split, split_seed
        Fractions per split (default 80/10/10 train/val/test; 0 drops a split) and the seed
        of the split and of the shuffle inside each round.
    workers
        Reader processes (0: read in this process; ``"auto"``: see the module docstring).
    options, **overrides
        :class:`~converters._common.ConvertOptions` and/or its fields as keywords.

    Returns
    -------
    ConversionReport, or ``{class: ConversionReport}`` with ``per_class``.
    """
    opts = make_options(options, overrides)
    found = find_files(src, tuple(classes))
    have3 = [p3 is not None for _, p3, _ in found]
    if with_3d == "auto":
        if any(have3) and not all(have3):
            missing = [str(p2) for p2, p3, _ in found if p3 is None][:3]
            raise SourceFileError(
                f"only some LArIAT 2D files have their .3d.h5 twin (missing e.g. for {missing}); "
                "add the missing 3D files or convert without them (with_3d=False, --no-3d)"
            )
        use3 = all(have3)
    elif with_3d is True:
        if not all(have3):
            missing = [str(p2) for p2, p3, _ in found if p3 is None][:3]
            raise SourceFileError(f"with_3d=True but .3d.h5 twins are missing, e.g. for {missing}")
        use3 = True
    elif with_3d is False:
        use3 = False
    else:
        raise ConfigError(f"with_3d must be 'auto', True or False, got {with_3d!r}")
    opened: list[_LariatFile] = []
    try:
        for p2, p3, cls in found:
            opened.append(_LariatFile(p2, p3 if use3 else None, cls))
        decls = _decls(opened[0], use3)
        for f in opened[1:]:
            if f.image_shape != opened[0].image_shape:
                raise SchemaError(
                    f"{f.where(f.image_key)} holds events of shape {f.image_shape}, "
                    f"{opened[0].where(opened[0].image_key)} of {opened[0].image_shape}; all files must agree"
                )
        if sum(f.n for f in opened) == 0:
            raise EmptyDatasetError(f"the LArIAT files under {os.fspath(src)!r} hold no events")
        n_workers = _choose_workers(workers, opened)
        fractions = split or DEFAULT_SPLIT
        if not per_class:
            report = _write_store(
                Path(dst), "LArIAT", opened, decls, fractions, split_seed, opts, n_workers
            )
            return finish(report, opts)
        out = Path(dst)
        out.mkdir(parents=True, exist_ok=True)
        reports = {}
        for c in sorted({f.cls for f in opened}):
            name = CLASSES[c]
            mine = [f for f in opened if f.cls == c]
            reports[name] = finish(
                _write_store(
                    out / f"{name}.zarr", name, mine, decls, fractions, split_seed, opts, n_workers
                ),
                opts,
            )
        return reports
    finally:
        for f in opened:
            f.close()
