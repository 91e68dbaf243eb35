"""Machinery shared by the dataset converters.

Role
----
A converter turns original files into a :class:`StorePlan`: the store's
schema (:class:`FieldDecl` per field), its constants, its source files, the
sample count of every split and a ``stream`` of ``(split, block)`` pairs read
from the originals in bounded blocks.  :func:`write_plan` does the rest for
every dataset alike: it writes the blocks through :func:`fastload.create_store`
with a progress bar, records provenance, and verifies the finished store
against the source.  Sibling modules: ``_files`` (opening sources with errors
that name the file and key), ``_npz`` (row-block streaming of ``.npz``
members), ``_verify`` (digests of sampled rows, checked after writing).

Invariants
----------
* Nothing is written before the plan is built, and building a plan opens every
  source and checks every key, length, shape and dtype it can see from file
  metadata, so most bad inputs fail before an output directory exists.
* Blocks are conformed (:func:`conform`) by the converter that reads them,
  because only it can name the file and key a bad value came from.
* The store appears only when complete (the store layer writes to a temporary
  name and renames); an exception or KeyboardInterrupt at any point leaves
  nothing behind.  A store that fails verification is removed again.
* Verification compares, per split, the sample count and a SHA-256 digest of a
  seeded sample of rows of every field: the digest of the source side is taken
  from the conformed blocks while they stream past, so verification never
  re-reads the originals.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastload.errors import (
    ConfigError,
    EmptyDatasetError,
    NonFiniteError,
    SchemaError,
    SourceFileError,
    VerificationError,
)

from ._verify import SampleDigest, verify_store

Block = dict[str, np.ndarray]

logger = logging.getLogger(__name__)


#: Uncompressed bytes of one block read from the originals when
#: ``block_events`` is not given: large enough for sequential reads, small
#: enough that conversion stays far below the memory of a laptop.
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: Rows per split whose digest is compared after writing (plus first and last).
DEFAULT_VERIFY_ROWS = 256


# --------------------------------------------------------------------- options
@dataclass(frozen=True)
class ConvertOptions:
    """Options every converter accepts (the CLI's common flags).

    Parameters
    ----------
    overwrite
        Replace a complete store at the destination (otherwise StoreExistsError).
    codec
        Blosc compressor of the store: ``"lz4"`` (fast, default) or ``"zstd"`` (smaller).
    clevel
        Blosc compression level.
    chunk_bytes
        Uncompressed bytes aimed at per chunk (``None``: the store's default, 4 MiB).
    block_events
        Events read from the originals per block (``None``: about 64 MiB per block).
    allow_nonfinite
        Store NaN/inf as they are instead of refusing them.
    verify
        Re-open the finished store and compare counts and row digests with the source.
    verify_rows
        Rows per split, drawn with a fixed seed, whose digests are compared.
    progress
        Show a tqdm progress bar; ``None`` shows it when stderr is a terminal.
    quiet
        No progress bar and no summary (the command line prints the summary on stdout).
    """

    overwrite: bool = False
    codec: str = "lz4"
    clevel: int = 5
    chunk_bytes: int | None = None
    block_events: int | None = None
    allow_nonfinite: bool = False
    verify: bool = True
    verify_rows: int = DEFAULT_VERIFY_ROWS
    progress: bool | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.block_events is not None and int(self.block_events) < 1:
            raise ConfigError(
                f"block_events must be a positive number of events, got {self.block_events!r}"
            )
        if self.chunk_bytes is not None and int(self.chunk_bytes) < 1:
            raise ConfigError(
                f"chunk_bytes must be a positive number of bytes, got {self.chunk_bytes!r}"
            )
        if int(self.verify_rows) < 0:
            raise ConfigError(f"verify_rows must be >= 0, got {self.verify_rows!r}")

    @property
    def show_progress(self) -> bool:
        if self.quiet:
            return False
        return sys.stderr.isatty() if self.progress is None else bool(self.progress)


def make_options(options: ConvertOptions | None, overrides: Mapping[str, Any]) -> ConvertOptions:
    """Merge keyword overrides into options; unknown keywords raise ConfigError."""
    base = options or ConvertOptions()
    known = set(ConvertOptions.__dataclass_fields__)
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown conversion option(s) {sorted(unknown)}; known: {sorted(known)}")
    return replace(base, **overrides)


# ---------------------------------------------------------------- plan & schema
@dataclass(frozen=True)
class FieldDecl:
    """Schema of one store field: per-sample shape, store dtype, role and doc."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    role: str = "input"
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).newbyteorder("<"))

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_store(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype.str, "role": self.role, "doc": self.doc}


@dataclass
class StorePlan:
    """Everything :func:`write_plan` needs: schema, sources, counts and the block stream.

    ``stream(block_events)`` yields ``(split, block)`` pairs whose blocks hold
    every field of ``fields``, already conformed; splits may interleave.
    """

    name: str
    task: str
    fields: dict[str, FieldDecl]
    counts: dict[str, int]
    stream: Callable[[int], Iterator[tuple[str, Block]]]
    sources: list[Path]
    converter: str
    converter_version: str
    labels: Sequence[str] = ()
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    #: what each split was read from, for messages
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def sample_nbytes(self) -> int:
        return sum(f.sample_nbytes for f in self.fields.values())


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion wrote: path, counts, sizes, time and verification."""

    path: str
    name: str
    counts: dict[str, int]
    bytes_uncompressed: int
    bytes_stored: int
    seconds: float
    verified: bool

    @property
    def ratio(self) -> float:
        """Uncompressed bytes over bytes on disk."""
        return self.bytes_uncompressed / max(1, self.bytes_stored)

    @property
    def mb_per_s(self) -> float:
        """Uncompressed megabytes (1e6 bytes) written per second, verification excluded."""
        return self.bytes_uncompressed / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        check = "verified" if self.verified else "not verified"
        return (
            f"wrote {self.path} ({self.name}: {counts} events); "
            f"{self.bytes_uncompressed / 1e6:.1f} MB -> {self.bytes_stored / 1e6:.1f} MB on disk "
            f"(ratio {self.ratio:.2f}) in {self.seconds:.1f} s ({self.mb_per_s:.0f} MB/s); {check}"
        )


def auto_block_events(plan: StorePlan, options: ConvertOptions) -> int:
    """Events per block: ``options.block_events`` or about DEFAULT_BLOCK_BYTES of samples."""
    if options.block_events is not None:
        return int(options.block_events)
    return max(1, DEFAULT_BLOCK_BYTES // max(1, plan.sample_nbytes))


# ------------------------------------------------------------------ conforming
def check_sample_shape(shape: tuple[int, ...], decl: FieldDecl, where: str) -> None:
    """Raise SchemaError if a source's per-sample shape is not the field's."""
    if tuple(shape[1:]) != decl.shape or len(shape) < 1:
        raise SchemaError(
            f"{where} has shape {tuple(shape)} (per event {tuple(shape[1:])}); field {decl.name!r} "
            f"expects (n, {', '.join(map(str, decl.shape))}{',' if len(decl.shape) == 1 else ''}) — is "
            "this the right file?"
        )


def check_dtype(dtype: np.dtype, decl: FieldDecl, where: str) -> None:
    """Raise SchemaError if a source dtype cannot feed the field at all (strings, objects...)."""
    if np.dtype(dtype).kind not in "biuf":
        raise SchemaError(
            f"{where} has dtype {np.dtype(dtype)}, not a number; field {decl.name!r} is {decl.dtype} — "
            "is this the right file?"
        )


def conform(
    values: np.ndarray,
    decl: FieldDecl,
    where: str,
    *,
    first_row: int = 0,
    allow_nonfinite: bool = False,
) -> np.ndarray:
    """Return ``values`` as a C-contiguous array of the field's dtype, or raise.

    Casting rules: safe casts always; float to a narrower float (e.g. float64
    to float32) with rounding, as documented per dataset; any other cast only
    if every value survives it unchanged (e.g. 0.0/1.0 labels to int64).
    NaN and inf are refused unless ``allow_nonfinite``.

    Raises
    ------
    SchemaError
        Wrong per-sample shape, non-numeric dtype, or a value the cast would change.
    NonFiniteError
        NaN or inf (reported with the first offending row).
    """
    arr = np.asarray(values)
    check_dtype(arr.dtype, decl, where)
    check_sample_shape(arr.shape, decl, where)
    src_float = arr.dtype.kind == "f"
    if not allow_nonfinite and src_float and decl.dtype.kind != "f":
        _check_finite(arr, where, first_row)
    if arr.dtype == decl.dtype:
        out = np.ascontiguousarray(arr)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(arr, dtype=decl.dtype)
        lossy_ok = np.can_cast(arr.dtype, decl.dtype, "safe") or (
            src_float and decl.dtype.kind == "f"
        )
        if not lossy_ok:
            with np.errstate(over="ignore", invalid="ignore"):
                changed = out.astype(arr.dtype) != arr
            if changed.any():
                flat = changed.reshape(len(arr), -1).any(axis=1)
                row = int(np.argmax(flat))
                bad = (arr[row][changed[row]].ravel()[0] if arr.ndim > 1 else arr[row]).item()
                raise SchemaError(
                    f"{where}: value {bad!r} at event {first_row + row} cannot be stored as "
                    f"{decl.dtype} (field {decl.name!r}) without changing it — wrong dtype or wrong file?"
                )
    if not allow_nonfinite and decl.dtype.kind == "f":
        _check_finite(out, where, first_row)
    return out


def _check_finite(arr: np.ndarray, where: str, first_row: int) -> None:
    if arr.size == 0:
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    per_row = finite.reshape(len(arr), -1).all(axis=1)
    row = int(np.argmin(per_row))
    raise NonFiniteError(
        f"{where}: NaN or inf at event {first_row + row}; clean the source or pass "
        "--allow-nonfinite (allow_nonfinite=True) to store it as is"
    )


def check_equal_lengths(lengths: Mapping[str, int], where: str) -> int:
    """The common length of a split's sources; SchemaError naming them if they differ."""
    values = set(lengths.values())
    if len(values) != 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise SchemaError(
            f"{where}: fields have unequal numbers of events ({detail}); the file is inconsistent"
        )
    n = values.pop()
    if n == 0:
        raise EmptyDatasetError(f"{where} holds no events; nothing to convert")
    return n


def block_ranges(n: int, block: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in blocks of ``block``."""
    for start in range(0, n, block):
        yield start, min(start + block, n)


# -------------------------------------------------------------- seeded splits
def split_counts(n: int, fractions: Mapping[str, float], where: str) -> dict[str, int]:
    """Events per split for ``n`` events; the first split takes the rounding remainder.

    A split with fraction 0 is left out; a positive fraction that rounds to 0
    events raises EmptyDatasetError.
    """
    items = [(k, float(v)) for k, v in fractions.items()]
    if any(f < 0 for _, f in items) or not np.isclose(sum(f for _, f in items), 1.0):
        raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {dict(items)}")
    counts = {k: round(n * f) for k, f in items[1:]}
    counts = {items[0][0]: n - sum(counts.values()), **counts}
    for k, f in items:
        if f > 0 and counts[k] <= 0:
            raise EmptyDatasetError(
                f"{where}: {n} events are too few for split fractions {dict(items)} (split {k!r} would be empty)"
            )
    return {k: v for k, v in counts.items() if v > 0}


def assign_splits(counts: Mapping[str, int], seed: int) -> np.ndarray:
    """A seeded split id (index into ``counts``) for every event, as int8."""
    n = sum(counts.values())
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(n)
    split_of = np.empty(n, dtype=np.int8)
    start = 0
    for i, c in enumerate(counts.values()):
        split_of[perm[start : start + c]] = i
        start += c
    return split_of


@dataclass
class RowSource:
    """One source file of a seeded-split dataset: ``n`` events and a conformed block reader."""

    path: Path
    n: int
    read: Callable[[int, int], Block]


def interleaved_split_stream(
    groups: Sequence[Sequence[RowSource]],
    counts: Mapping[str, int],
    split_of: np.ndarray,
    block_events: int,
    *,
    shuffle_seed: int | None,
    read_many: Callable[[Sequence[tuple[RowSource, int, int]]], Iterator[Block]] | None = None,
) -> Iterator[tuple[str, Block]]:
    """Stream groups of files in rounds, each round taking a proportional slice of every group.

    A group (e.g. all files of one particle class) is read as the
    concatenation of its files, front to back, so every read is a contiguous
    run of rows from one or two files.  Each round holds about
    ``block_events`` events with every group represented in proportion to
    its size, so a store built from per-class files has all classes in every
    chunk.  With ``shuffle_seed`` the events of a round are shuffled (seeded)
    before they are routed to their splits.  Each block gets an ``origin``
    field: (index of the file in the flattened ``groups``, row in that file).

    ``read_many(pieces)``, given every ``(source, start, stop)`` read of the stream
    in order, yields their blocks in that order (e.g. decoded by a pool of processes
    ahead of the writer); default: ``source.read(start, stop)`` one after the other.
    """
    files = [src for group in groups for src in group]
    total = sum(s.n for s in files)
    rounds = max(1, -(-total // block_events))
    file_offsets = np.concatenate([[0], np.cumsum([s.n for s in files])]).astype(np.int64)
    names = list(counts)
    rng = (
        np.random.default_rng(np.random.SeedSequence([shuffle_seed, 0xB10C]))
        if shuffle_seed is not None
        else None
    )
    first_file = np.cumsum([0, *(len(g) for g in groups)])
    plan: list[list[tuple[int, RowSource, int, int]]] = []  # per round: (file, source, start, stop)
    for r in range(rounds):
        pieces: list[tuple[int, RowSource, int, int]] = []
        for g, group in enumerate(groups):
            n_group = sum(s.n for s in group)
            lo, hi = n_group * r // rounds, n_group * (r + 1) // rounds
            row0 = 0  # first virtual row of the current file within the group
            for j, src in enumerate(group):
                start, stop = max(lo - row0, 0), min(hi - row0, src.n)
                row0 += src.n
                if stop > start:
                    pieces.append((int(first_file[g] + j), src, start, stop))
        plan.append(pieces)
    flat = [(src, start, stop) for pieces in plan for _, src, start, stop in pieces]
    blocks = read_many(flat) if read_many is not None else (src.read(a, b) for src, a, b in flat)
    try:
        for pieces in plan:
            parts: list[Block] = []
            for index, _, start, stop in pieces:
                block = next(blocks)
                block["origin"] = np.stack(
                    [
                        np.full(stop - start, index, dtype=np.int64),
                        np.arange(start, stop, dtype=np.int64),
                    ],
                    axis=1,
                )
                parts.append(block)
            if not parts:
                continue
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            global_row = file_offsets[merged["origin"][:, 0]] + merged["origin"][:, 1]
            order = (
                rng.permutation(len(global_row)) if rng is not None else np.arange(len(global_row))
            )
            sid = split_of[global_row[order]]
            for s, name in enumerate(names):
                take = order[sid == s]
                if take.size:
                    yield name, {k: v[take] for k, v in merged.items()}
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------- writing
def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="ev",
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_plan(
    plan: StorePlan, dst: str | os.PathLike[str], options: ConvertOptions
) -> ConversionReport:
    """Write a plan's blocks as a store at ``dst``, then verify it.

    Raises
    ------
    StoreExistsError
        A complete store exists at ``dst`` and ``options.overwrite`` is false.
    StoreWriteError
        ``dst`` cannot be written.
    SourceFileError
        A source yields fewer or more events than it announced.
    VerificationError
        The written store does not read back equal to the source (it is removed).
    """
    import fastload as fl

    for split, n in plan.counts.items():
        if n <= 0:
            raise EmptyDatasetError(
                f"{plan.origins.get(split, plan.name)}: split {split!r} holds no events"
            )
    block_events = auto_block_events(plan, options)
    digest = SampleDigest(plan.counts, list(plan.fields), options.verify_rows)
    store_options: dict[str, Any] = {
        "name": plan.name,
        "task": plan.task,
        "codec": options.codec,
        "clevel": options.clevel,
        "fields": {k: f.to_store() for k, f in plan.fields.items()},
        "labels": list(plan.labels),
        "converter": plan.converter,
        "converter_version": plan.converter_version,
        "overwrite": options.overwrite,
        # conform() already refused NaN/inf with the source file's name; the
        # writer need not scan every block a second time
        "allow_nonfinite": True,
    }
    if options.chunk_bytes is not None:
        store_options["chunk_bytes"] = int(options.chunk_bytes)
    t0 = time.perf_counter()
    with fl.create_store(dst, **store_options) as writer:
        for src in plan.sources:
            writer.add_source(Path(src).resolve())
        for cname, value in plan.constants.items():
            writer.put_constant(cname, value)
        with _progress_bar(sum(plan.counts.values()), plan.name, options.show_progress) as bar:
            for split, block in plan.stream(block_events):
                if split not in plan.counts:
                    raise SchemaError(
                        f"{plan.name}: the converter produced an unknown split {split!r}"
                    )
                m = len(next(iter(block.values())))
                if digest.seen[split] + m > plan.counts[split]:
                    raise SourceFileError(
                        f"{plan.origins.get(split, plan.name)}: more events than the announced {plan.counts[split]}"
                    )
                digest.update(split, block)
                writer.append(split, block)
                bar.update(m)
        for split, n in plan.counts.items():
            if digest.seen[split] != n:
                raise SourceFileError(
                    f"{plan.origins.get(split, plan.name)}: read {digest.seen[split]} events of split "
                    f"{split!r}, the file announced {n}; it is truncated or inconsistent"
                )
    seconds = time.perf_counter() - t0
    out = Path(os.fspath(dst))
    if options.verify:
        try:
            verify_store(out, digest.expectation(plan.constants))
        except VerificationError:
            shutil.rmtree(out, ignore_errors=True)
            raise
    n_total = sum(plan.counts.values())
    return ConversionReport(
        path=os.fspath(dst),
        name=plan.name,
        counts=dict(plan.counts),
        bytes_uncompressed=n_total * plan.sample_nbytes,
        bytes_stored=_dir_bytes(out) if out.exists() else 0,
        seconds=seconds,
        verified=options.verify,
    )


def finish(report: ConversionReport, options: ConvertOptions) -> ConversionReport:
    """Log the report's one-line summary (DEBUG; the command line prints it) and return it."""
    if not options.quiet:
        logger.debug("%s", report.summary())
    return report
