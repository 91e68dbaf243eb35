"""Generic conversion of original files into a fastload store, driven by a short spec.

``python -m converters generic SPEC.toml DST [--source-dir DIR] [--workers N | --serial]``

Stages
------
1. :func:`converters._spec.load_spec` parses and checks the spec on its own.
2. :func:`plan_conversion` surveys every source file (metadata only: event
   counts, key types), checks the spec against each of them, fixes the output
   fields, the labels, the split of every file and the chunk length, and cuts
   the events into blocks.  Every spec or source mistake is raised here,
   before any byte of the store is written.
3. :func:`convert_block` turns one block of events into ``{split: {field:
   array | Ragged}}``; it is the only code that reads event data, shared by the
   serial writer below and by the Dask tasks of :mod:`converters._dask`.
4. :func:`convert` writes the store serially (:class:`fastload.StoreWriter`)
   or with Dask (:mod:`fastload.store._parallel`); both give the same chunk bytes.

Invariants: events keep their source order (files in sorted glob order,
entries in file order) inside each split; a seeded fraction split assigns each
event from a hash of (seed, global event index), so the assignment does not
depend on block size or worker count.
"""

from __future__ import annotations

import argparse
import glob as _glob
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl
from fastload._messages import missing_dependency
from fastload._validate import is_integer
from fastload.errors import (
    ConfigError,
    FastloadError,
    SourceFileError,
    SourceKeyError,
    StoreExistsError,
)
from fastload.store import FieldInfo, Ragged, StoreLayout, choose_chunk_len

from ._sources import KeyInfo, SourceReader, open_reader, read_counts
from ._spec import (
    ConversionSpec,
    FieldMap,
    file_label,
    file_split,
    label_classes,
    load_spec,
    seeded_uniform,
    spec_error,
)

CONVERTER = "converters.generic"
#: ``workers="auto"`` uses Dask from this many bytes of source files on; below it a conversion
#: is faster in one process than a local cluster takes to start (docs/byod.md, "Serial or Dask")
DASK_MIN_SOURCE_BYTES = 256 * 2**20

logger = logging.getLogger(__name__)
_SAMPLE_EVENTS = 4096  # events surveyed to estimate the bytes of a ragged event


# --------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class SourceFile:
    """One source file (or directory of .npy files) and what the plan decided for it."""

    index: int
    path: str
    rel: str
    format: str
    n_events: int
    first_event: int
    split: str | None
    label: float | None


@dataclass(frozen=True)
class Block:
    """Events ``[start, stop)`` of source file ``file``: the unit of reading and of a Dask task."""

    file: int
    start: int
    stop: int

    @property
    def id(self) -> str:
        return f"{self.file:06d}-{self.start:012d}"


@dataclass(frozen=True)
class FieldPlan:
    """How one output field is read: which keys, of which kind, cast to what."""

    map: FieldMap
    info: FieldInfo
    jagged: bool
    row_shape: tuple[int, ...]
    sources: tuple[KeyInfo, ...]


@dataclass(frozen=True)
class ConversionPlan:
    """Everything needed to convert any block, checked against every source file."""

    spec: ConversionSpec
    source_dir: str
    files: tuple[SourceFile, ...]
    fields: dict[str, FieldInfo]
    plans: dict[str, FieldPlan]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    chunk_len: int
    block_events: int
    blocks: tuple[Block, ...]
    #: rows per value chunk of each ragged field, fixed here so that the serial and the
    #: Dask writers (which see different first blocks) lay out the same chunks
    value_chunk_len: dict[str, int] = field(default_factory=dict)

    @property
    def ragged_fields(self) -> list[str]:
        return [name for name, info in self.fields.items() if info.ragged]

    @property
    def digest(self) -> str:
        """Identifies spec + sources + layout, so an interrupted run can be resumed safely."""
        import hashlib

        parts = [self.spec.digest, str(self.chunk_len), str(self.block_events)]
        parts += [f"{k}={v}" for k, v in sorted(self.value_chunk_len.items())]
        for f in self.files:
            st = os.stat(f.path)
            parts.append(f"{f.rel}:{st.st_size}:{int(st.st_mtime)}:{f.n_events}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def open(self, file: int) -> SourceReader:
        """Open source file number ``file`` with the spec's format options."""
        src = self.spec.source
        f = self.files[file]
        return open_reader(f.path, f.format, tree=src.tree, group=src.group, key=src.key)


def find_sources(spec: ConversionSpec, source_dir: str | Path) -> list[tuple[str, str]]:
    """``(absolute path, path relative to source_dir)`` of every source, sorted, no duplicates."""
    root = Path(source_dir)
    found: dict[str, str] = {}
    for pattern in spec.source.files:
        full = pattern if os.path.isabs(pattern) else str(root / pattern)
        matches = sorted(_glob.glob(full, recursive=True))
        if not matches:
            raise spec_error(
                spec.where, "source.files", f"{pattern!r} matches no file under {str(root)!r}"
            )
        for m in matches:
            p = Path(m).resolve()
            try:
                rel = p.relative_to(root.resolve()).as_posix()
            except ValueError:
                rel = p.as_posix()
            found.setdefault(str(p), rel)
    return sorted(found.items(), key=lambda kv: kv[1])


def plan_conversion(spec: ConversionSpec, source_dir: str | Path) -> ConversionPlan:
    """Survey the sources and check the spec against each of them; nothing is written.

    Raises
    ------
    ConfigError
        The spec does not fit the sources (unknown key, shape or dtype mismatch, a jagged
        key into a fixed field without padding, unmatched split or label globs).
    SourceKeyError, SourceFileError
        A source lacks a key or cannot be read; the message names the file.
    """
    sources = find_sources(spec, source_dir)
    files: list[SourceFile] = []
    plans: dict[str, FieldPlan] | None = None
    first_event = 0
    classes = label_classes(spec, [rel for _, rel in sources])
    for index, (path, rel) in enumerate(sources):
        with _open_for_plan(spec, path) as reader:
            file_plans = {name: _plan_field(spec, fm, reader) for name, fm in spec.fields.items()}
            if plans is None:
                plans = file_plans
            else:
                _check_same_layout(spec, plans, file_plans, reader)
            n_events = _count_events(spec, file_plans, reader)
        files.append(
            SourceFile(
                index=index,
                path=path,
                rel=rel,
                format=reader.format,
                n_events=n_events,
                first_event=first_event,
                split=file_split(spec, rel),
                label=file_label(spec, rel, classes),
            )
        )
        first_event += n_events
    assert plans is not None  # find_sources never returns an empty list
    if first_event == 0:
        raise spec_error(spec.where, "source.files", "the sources hold no events")
    fields = _output_fields(spec, plans)
    splits = (
        tuple(spec.split.fractions) if spec.split.kind == "fraction" else tuple(spec.split.files)
    )
    mean_rows = _estimate_mean_rows(spec, files, plans)
    chunk_len = spec.store.chunk_len or _estimate_chunk_len(spec, fields, mean_rows)
    layout = StoreLayout(fields, chunk_bytes=spec.store.chunk_bytes)
    value_chunk_len = {
        name: layout.value_chunk_rows(name, chunk_len * rows) for name, rows in mean_rows.items()
    }
    # whole sample chunks per block, so blocks of one file never share a chunk
    block_events = spec.source.block_events or 16 * chunk_len
    block_events = -(-block_events // chunk_len) * chunk_len
    blocks = tuple(
        Block(f.index, start, min(start + block_events, f.n_events))
        for f in files
        for start in range(0, f.n_events, block_events)
    )
    return ConversionPlan(
        spec=spec,
        source_dir=str(source_dir),
        files=tuple(files),
        fields=fields,
        plans=plans,
        labels=tuple(classes) if spec.task == "classification" else (),
        splits=splits,
        chunk_len=chunk_len,
        block_events=block_events,
        blocks=blocks,
        value_chunk_len=value_chunk_len,
    )


def _open_for_plan(spec: ConversionSpec, path: str) -> SourceReader:
    src = spec.source
    try:
        return open_reader(path, src.format, tree=src.tree, group=src.group, key=src.key)
    except SourceKeyError as exc:  # a missing tree, group or table: point at the spec key naming it
        named = [k for k in ("tree", "group", "key") if getattr(src, k)]
        raise SourceKeyError(
            f"{spec.where('source.' + named[0] if named else 'source')}: {exc}"
        ) from None


def _key_info(spec: ConversionSpec, key: str, reader: SourceReader, spec_key: str) -> KeyInfo:
    try:
        info = reader.info(key)
    except SourceKeyError as exc:
        raise SourceKeyError(f"{spec.where(spec_key)}: {exc}") from None
    if info.dtype is None:
        if info.record:
            shown = ", ".join(repr(m) for m in info.members[:6]) + (
                ", ..." if len(info.members) > 6 else ""
            )
            raise spec_error(
                spec.where,
                spec_key,
                f"key {key!r} of {reader.what} is a record ({info.typename}); convert its members "
                f"({shown or 'none is numeric'}) as fields of their own, or all numeric members "
                f'as one field with collection = "{key}"',
            )
        raise spec_error(
            spec.where,
            spec_key,
            f"key {key!r} of {reader.what} has type {info.typename or 'unknown'}, which cannot be stored "
            "(numbers, bools, fixed-size arrays of them and one level of lists only)",
        )
    return info


def _collection_map(spec: ConversionSpec, fm: FieldMap, reader: SourceReader) -> FieldMap:
    """``fm`` with the numeric members of its ``collection`` key as columns."""
    assert fm.collection is not None
    spec_key = f"fields.{fm.name}.collection"
    try:
        info = reader.info(fm.collection)
    except SourceKeyError as exc:
        raise SourceKeyError(f"{spec.where(spec_key)}: {exc}") from None
    if not info.members:
        what = (
            f"a record without numeric members (it holds {[k for k, _ in info.skipped]})"
            if info.record
            else "not a record or collection"
        )
        raise spec_error(
            spec.where,
            spec_key,
            f"key {fm.collection!r} of {reader.what} is {what}; collection takes an RNTuple or "
            "Parquet record, a ROOT branch with sub-branches, or a ROOT counter branch "
            "(whose jagged branches become the columns)",
        )
    members = ", ".join(info.members)
    doc = fm.doc or f"columns of {fm.collection!r}, in order: {members}"
    return replace(fm, keys=info.members, stacked=True, doc=doc)


def _plan_field(spec: ConversionSpec, fm: FieldMap, reader: SourceReader) -> FieldPlan:
    """Check one field against one source and derive its stored shape and dtype."""
    prefix = f"fields.{fm.name}"
    if fm.collection is not None:
        fm = _collection_map(spec, fm, reader)
        key_field = f"{prefix}.collection"
    else:
        key_field = f"{prefix}.{'columns' if fm.stacked else 'source'}"
    infos = tuple(_key_info(spec, k, reader, key_field) for k in fm.keys)
    if fm.flat:
        count_key = fm.counts or fm.offsets
        assert count_key is not None
        where = f"{prefix}.{'counts' if fm.counts else 'offsets'}"
        if reader.format == "root":
            raise spec_error(
                spec.where,
                where,
                "ROOT lists are read as jagged branches; drop counts/offsets and use ragged = true",
            )
        count_info = _key_info(spec, count_key, reader, where)
        if (
            count_info.dtype is None
            or count_info.dtype.kind not in "iu"
            or count_info.shape
            or count_info.jagged
        ):
            raise spec_error(
                spec.where, where, f"{count_key!r} of {reader.what} must be a 1-D integer array"
            )
        lengths = {i.length for i in infos}
        if len(lengths) != 1:
            raise spec_error(
                spec.where,
                key_field,
                f"value keys of {reader.what} have different lengths {sorted(lengths)}",
            )
        jagged = True
    else:
        kinds = {i.jagged for i in infos}
        if len(kinds) != 1:
            raise spec_error(
                spec.where,
                key_field,
                f"columns mix jagged and fixed keys in {reader.what}: {[(i.name, i.jagged) for i in infos]}",
            )
        jagged = kinds.pop()
    if any(i.jagged for i in infos) and fm.flat:
        raise spec_error(
            spec.where,
            key_field,
            f"with counts/offsets the value keys must be flat arrays, but a key of {reader.what} is jagged",
        )
    counters = {c for c in (reader.counter(i.name) for i in infos if i.jagged) if c}
    if len(counters) > 1:
        raise spec_error(
            spec.where,
            key_field,
            f"jagged columns of {reader.what} have different counters {sorted(counters)}; "
            "columns of one field need the same list length in every event (use separate fields)",
        )
    if jagged and not (fm.ragged or fm.pad):
        raise spec_error(
            spec.where,
            key_field,
            f"key {infos[0].name!r} of {reader.what} is jagged (a list per event) but field {fm.name!r} is fixed: "
            "set ragged = true, or pad = N to pad/truncate to N entries with a mask",
        )
    if not jagged and (fm.ragged or fm.pad):
        what = "ragged = true" if fm.ragged else "pad"
        raise spec_error(
            spec.where,
            f"{prefix}.{'ragged' if fm.ragged else 'pad'}",
            f"{what} needs a jagged key (or counts/offsets), but {infos[0].name!r} of {reader.what} holds one value per event",
        )
    row_shape = _stacked_shape(spec, fm, infos, reader, key_field)
    src_dtype = np.result_type(*[i.dtype for i in infos])
    dtype = fm.dtype or src_dtype
    if src_dtype.kind == "f" and dtype.kind in "iub":
        raise spec_error(
            spec.where,
            f"{prefix}.dtype",
            f"{reader.what} holds {src_dtype} for field {fm.name!r}; storing it as {dtype} would truncate (declare a float dtype)",
        )
    if jagged and fm.pad:
        shape: tuple[int, ...] = (fm.pad, *row_shape)
    else:
        shape = row_shape
    if fm.shape is not None and tuple(fm.shape) != shape:
        raise spec_error(
            spec.where,
            f"{prefix}.shape",
            f"declared shape {list(fm.shape)} but the sources give {list(shape)} per "
            f"{'row' if fm.ragged else 'event'} in {reader.what}",
        )
    info = FieldInfo(
        name=fm.name,
        shape=shape,
        dtype=np.dtype(dtype),
        role=fm.role,
        ragged=bool(jagged and fm.ragged),
        doc=fm.doc,
    )
    return FieldPlan(fm, info, jagged, row_shape, infos)


def _stacked_shape(
    spec: ConversionSpec, fm: FieldMap, infos: Sequence[KeyInfo], reader: SourceReader, key: str
) -> tuple[int, ...]:
    if not fm.stacked:
        return infos[0].shape
    if all(i.shape == () for i in infos):
        return (len(infos),)
    if any(len(i.shape) > 1 for i in infos):
        raise spec_error(
            spec.where,
            key,
            f"columns can only join scalars or 1-D rows; got shapes {[i.shape for i in infos]} in {reader.what}",
        )
    return (sum(i.shape[0] if i.shape else 1 for i in infos),)


def _check_same_layout(
    spec: ConversionSpec,
    first: Mapping[str, FieldPlan],
    other: Mapping[str, FieldPlan],
    reader: SourceReader,
) -> None:
    for name, fp in first.items():
        op = other[name]
        if fp.map.collection is not None and fp.map.keys != op.map.keys:
            raise spec_error(
                spec.where,
                f"fields.{name}.collection",
                f"collection {fp.map.collection!r} has the members {list(op.map.keys)} in "
                f"{reader.what} but {list(fp.map.keys)} in the first source; list them with "
                "columns = [...] or convert the files separately",
            )
        if (fp.info.shape, fp.info.dtype, fp.jagged) != (op.info.shape, op.info.dtype, op.jagged):
            raise spec_error(
                spec.where,
                f"fields.{name}",
                f"{reader.what} gives field {name!r} as {op.info.dtype}{list(op.info.shape)}"
                f"{' (jagged)' if op.jagged else ''}, but the first source gave {fp.info.dtype}{list(fp.info.shape)}"
                f"{' (jagged)' if fp.jagged else ''}; declare dtype/shape or convert the files separately",
            )


def _count_events(
    spec: ConversionSpec, plans: Mapping[str, FieldPlan], reader: SourceReader
) -> int:
    lengths: dict[str, int] = {}
    for name, fp in plans.items():
        fm = fp.map
        if fm.flat:
            info = reader.info(fm.counts or fm.offsets or "")
            lengths[f"{name} ({info.name})"] = info.length - (1 if fm.offsets else 0)
        else:
            for i in fp.sources:
                lengths[f"{name} ({i.name})"] = i.length
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise SourceFileError(
            f"{reader.what}: the keys of the spec have different numbers of events ({detail})"
        )
    return next(iter(lengths.values()))


def _output_fields(spec: ConversionSpec, plans: Mapping[str, FieldPlan]) -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for name, fp in plans.items():
        fields[name] = fp.info
        if fp.map.pad and fp.map.mask:
            fields[fp.map.mask] = FieldInfo(
                name=fp.map.mask,
                shape=(fp.map.pad,),
                dtype=np.dtype(bool),
                role="input",
                doc=f"True where {name!r} holds a real entry (padded to {fp.map.pad})",
            )
    label = spec.label
    if label.kind in ("file", "directory"):
        assert label.field is not None
        default = np.dtype(np.int64) if spec.task == "classification" else np.dtype(np.float32)
        fields[label.field] = FieldInfo(
            name=label.field,
            shape=(),
            dtype=label.dtype or default,
            role="label",
            doc=label.doc or f"label from the source {label.kind}",
        )
    return fields


# --------------------------------------------------------------------- splits
def split_assignment(plan: ConversionPlan, block: Block) -> np.ndarray:
    """Index into ``plan.splits`` of every event of ``block``."""
    f = plan.files[block.file]
    n = block.stop - block.start
    if f.split is not None:
        return np.full(n, plan.splits.index(f.split), dtype=np.int64)
    u = seeded_uniform(
        plan.spec.split.seed,
        np.arange(f.first_event + block.start, f.first_event + block.stop, dtype=np.int64),
    )
    edges = np.cumsum([plan.spec.split.fractions[s] for s in plan.splits])
    return np.minimum(np.searchsorted(edges, u, side="right"), len(plan.splits) - 1)


# --------------------------------------------------------------------- chunking
def _estimate_mean_rows(
    spec: ConversionSpec, files: Sequence[SourceFile], plans: Mapping[str, FieldPlan]
) -> dict[str, float]:
    """Mean list length of each ragged field over the first events of the first source.

    Sizes the sample chunks (:func:`_estimate_chunk_len`) and the value chunks; an
    estimate, but one fixed in the plan, so every writer of the plan uses the same.
    """
    ragged = [(name, fp) for name, fp in plans.items() if fp.info.ragged]
    if not ragged:
        return {}
    first = next(f for f in files if f.n_events)
    stop = min(first.n_events, _SAMPLE_EVENTS)
    src = spec.source
    out = {}
    with open_reader(
        first.path, first.format, tree=src.tree, group=src.group, key=src.key
    ) as reader:
        for name, fp in ragged:
            counts = _jagged_counts(fp, reader, 0, stop, {})
            if counts.size:
                out[name] = float(counts.mean())
    return out


def _estimate_chunk_len(
    spec: ConversionSpec, fields: Mapping[str, FieldInfo], mean_rows: Mapping[str, float]
) -> int:
    """Sample-chunk length aiming at ``chunk_bytes`` per event chunk, ragged rows included.

    A ragged field's bytes per event are its mean rows (:func:`_estimate_mean_rows`)
    times its row bytes, so hit-level data get event chunks of a few MiB.
    """
    nbytes = sum(info.spec.sample_nbytes for info in fields.values() if not info.ragged)
    for name, rows in mean_rows.items():
        nbytes += rows * fields[name].spec.sample_nbytes
    return choose_chunk_len(max(1, int(nbytes)), spec.store.chunk_bytes)


# --------------------------------------------------------------------- reading blocks
def _flat_offsets(fp: FieldPlan, reader: SourceReader, cache: dict[str, np.ndarray]) -> np.ndarray:
    """Offsets (n+1) of a flat-values field over the whole source, read once per source."""
    key = fp.map.counts or fp.map.offsets or ""
    if key not in cache:
        counts = read_counts(reader, key, offsets=fp.map.offsets is not None)
        offsets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        cache[key] = offsets
    return cache[key]


def _jagged_counts(
    fp: FieldPlan, reader: SourceReader, start: int, stop: int, cache: dict[str, np.ndarray]
) -> np.ndarray:
    if fp.map.flat:
        return np.diff(_flat_offsets(fp, reader, cache)[start : stop + 1])
    return reader.jagged_counts(fp.map.keys[0], start, stop)


def block_counts(
    plan: ConversionPlan, block: Block, reader: SourceReader
) -> dict[str, tuple[int, dict[str, int]]]:
    """Per split: events of ``block`` and value rows of each ragged field (reads counts only)."""
    which = split_assignment(plan, block)
    per_field = {
        name: _jagged_counts(plan.plans[name], reader, block.start, block.stop, {})
        for name in plan.ragged_fields
    }
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for i, split in enumerate(plan.splits):
        mask = which == i
        n = int(mask.sum())
        if n:
            out[split] = (n, {name: int(c[mask].sum()) for name, c in per_field.items()})
    return out


def _cast(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    if values.dtype == dtype:
        return values
    out = values.astype(dtype)
    # a narrowing integer cast must not wrap around silently
    if (
        dtype.kind in "iu"
        and values.dtype.kind in "iu"
        and not np.can_cast(values.dtype, dtype)
        and not np.array_equal(out, values)
    ):
        raise SourceFileError(f"{what}: values do not fit in {dtype}; declare a wider dtype")
    # nor may integers be rounded on their way into floats (int32 -> float32 above 2**24)
    if (
        dtype.kind == "f"
        and values.dtype.kind in "iu"
        and not np.can_cast(values.dtype, dtype)
        and not np.array_equal(out.astype(values.dtype), values)
    ):
        raise SourceFileError(
            f"{what}: integers of {values.dtype} change when stored as {dtype}; declare a wider dtype"
        )
    return out


def _join_columns(fp: FieldPlan, parts: Sequence[np.ndarray], what: str) -> np.ndarray:
    dtype = fp.info.dtype
    parts = [_cast(np.asarray(p), dtype, what) for p in parts]
    if not fp.map.stacked:
        return parts[0]
    if all(p.ndim == 1 for p in parts):
        return np.stack(parts, axis=-1)
    return np.concatenate([p[..., None] if p.ndim == 1 else p for p in parts], axis=-1)


def _pad(ragged: Ragged, length: int, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    values, offsets = ragged.rebased()
    counts = np.diff(offsets)
    slots = np.arange(length)
    mask = slots[None, :] < counts[:, None]
    index = np.minimum(offsets[:-1, None] + slots[None, :], max(len(values) - 1, 0))
    out = np.full((len(counts), length, *values.shape[1:]), pad_value, dtype=values.dtype)
    if len(values):
        out[mask] = values[index[mask]]
    return out, mask


def read_block(
    plan: ConversionPlan,
    block: Block,
    reader: SourceReader,
    cache: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray | Ragged]:
    """Every output field for events ``[block.start, block.stop)`` of one source."""
    cache = {} if cache is None else cache
    start, stop = block.start, block.stop
    n = stop - start
    event_keys = sorted({k for fp in plan.plans.values() if not fp.map.flat for k in fp.map.keys})
    raw = reader.read(event_keys, start, stop)
    out: dict[str, np.ndarray | Ragged] = {}
    for name, fp in plan.plans.items():
        what = f"field {name!r} from {reader.what}, events {start}..{stop}"
        if fp.map.flat:
            offsets = _flat_offsets(fp, reader, cache)
            r0, r1 = int(offsets[start]), int(offsets[stop])
            available = reader.info(fp.map.keys[0]).length
            if int(offsets[-1]) != available:
                raise SourceFileError(
                    f"{what}: {fp.map.counts or fp.map.offsets!r} account for {int(offsets[-1])} rows "
                    f"but {fp.map.keys[0]!r} holds {available}"
                )
            vals = reader.read(list(fp.map.keys), r0, r1)
            joined = _join_columns(fp, [vals[k] for k in fp.map.keys], what)
            value: np.ndarray | Ragged = Ragged(joined, offsets[start : stop + 1] - r0)
        elif fp.jagged:
            parts = [raw[k] for k in fp.map.keys]
            assert all(isinstance(p, Ragged) for p in parts)
            first = parts[0]
            for key, p in zip(fp.map.keys[1:], parts[1:], strict=True):
                if not np.array_equal(p.counts, first.counts):  # type: ignore[union-attr]
                    bad = int(np.argmax(p.counts != first.counts))  # type: ignore[union-attr]
                    raise SourceFileError(
                        f"{what}: columns {fp.map.keys[0]!r} and {key!r} have different list lengths at event {start + bad}"
                    )
            joined = _join_columns(fp, [p.rebased()[0] for p in parts], what)  # type: ignore[union-attr]
            value = Ragged(joined, first.rebased()[1])  # type: ignore[union-attr]
        else:
            value = _join_columns(fp, [raw[k] for k in fp.map.keys], what)
        if isinstance(value, Ragged) and fp.map.pad:
            padded, mask = _pad(value, fp.map.pad, fp.map.pad_value)
            out[name] = padded
            if fp.map.mask:
                out[fp.map.mask] = mask
        else:
            out[name] = value
    label = plan.spec.label
    if label.kind in ("file", "directory"):
        assert label.field is not None
        file_label = plan.files[block.file].label
        out[label.field] = np.full(n, file_label, dtype=plan.fields[label.field].dtype)
    return {name: out[name] for name in plan.fields}


def _take(value: np.ndarray | Ragged, mask: np.ndarray) -> np.ndarray | Ragged:
    if isinstance(value, Ragged):
        values, offsets = value.rebased()
        counts = np.diff(offsets)
        return Ragged.from_counts(values[np.repeat(mask, counts)], counts[mask])
    return value[mask]


def convert_block(
    plan: ConversionPlan,
    block: Block,
    reader: SourceReader,
    cache: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, np.ndarray | Ragged]]:
    """Read one block and cut it into splits: ``{split: {field: array | Ragged}}`` (empty splits left out)."""
    data = read_block(plan, block, reader, cache)
    which = split_assignment(plan, block)
    out: dict[str, dict[str, np.ndarray | Ragged]] = {}
    for i, split in enumerate(plan.splits):
        mask = which == i
        if mask.all():
            out[split] = data
        elif mask.any():
            out[split] = {k: _take(v, mask) for k, v in data.items()}
    return out


# --------------------------------------------------------------------- writing
def store_options(plan: ConversionPlan) -> dict[str, Any]:
    """Options of :func:`fastload.create_store` (and of the parallel writer) for this plan."""
    spec = plan.spec
    opts = spec.store
    return {
        "name": spec.name or None,
        "task": spec.task,
        "codec": opts.codec,
        "clevel": opts.clevel,
        "shuffle": opts.shuffle,
        "chunk_bytes": opts.chunk_bytes,
        "chunk_len": plan.chunk_len,
        "value_chunk_len": dict(plan.value_chunk_len) or None,
        "shard_chunks": opts.shard_chunks,
        "labels": list(plan.labels),
        "converter": f"{CONVERTER}:{Path(spec.where.origin).name}",
        "converter_version": fl.__version__,
        "allow_nonfinite": opts.allow_nonfinite,
    }


def convert_serial(
    plan: ConversionPlan,
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Write the store in this process with :class:`fastload.StoreWriter`; returns its path."""
    from tqdm import tqdm

    declared = {
        name: {
            "role": info.role,
            "doc": info.doc,
            "dtype": info.dtype.str,
            "shape": list(info.shape),
        }
        for name, info in plan.fields.items()
    }
    with fl.create_store(
        dst, fields=declared, overwrite=overwrite, **store_options(plan)
    ) as writer:
        if plan.spec.store.checksum != "none":
            for f in plan.files:
                for path in provenance_paths(f):
                    writer.add_source(path, checksum=plan.spec.store.checksum)
        bar = tqdm(total=len(plan.blocks), desc="blocks", unit="block", disable=not progress)
        try:
            file_index = -1
            reader: SourceReader | None = None
            cache: dict[str, np.ndarray] = {}
            try:
                for block in plan.blocks:
                    if block.file != file_index:
                        if reader is not None:
                            reader.close()
                        reader, file_index, cache = plan.open(block.file), block.file, {}
                    for split, data in convert_block(plan, block, reader, cache).items():
                        writer.append(split, data)
                    bar.update()
            finally:
                if reader is not None:
                    reader.close()
        finally:
            bar.close()
    return writer.path


def provenance_paths(f: SourceFile) -> list[str]:
    """Files whose checksums go into the store's provenance (the .npy files of a directory)."""
    p = Path(f.path)
    return [str(x) for x in sorted(p.glob("*.npy"))] if p.is_dir() else [f.path]


def source_nbytes(plan: ConversionPlan) -> int:
    """Bytes of every source file of the plan on disk (the .npy files of a directory)."""
    return sum(os.path.getsize(p) for f in plan.files for p in provenance_paths(f))


@dataclass(frozen=True)
class Execution:
    """How a conversion runs: serially in this process, or as Dask tasks; and why."""

    dask: bool
    workers: int | None
    reason: str
    #: how loudly the reason is logged: the default serial run at DEBUG, a choice made for the
    #: user at INFO, a request that cannot be honoured (explicit workers, no Dask) at WARNING
    level: int = logging.INFO


def _dask_installed() -> bool:
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def choose_execution(
    plan: ConversionPlan,
    *,
    workers: int | str | None = None,
    scheduler: str | None = None,
    client: Any = None,
    resume: bool = False,
    dask_min_bytes: int = DASK_MIN_SOURCE_BYTES,
) -> Execution:
    """Serial or Dask for ``plan``: see :func:`convert` (``workers``) and docs/byod.md.

    ``workers="auto"`` picks Dask only for inputs of at least ``dask_min_bytes`` on a machine
    with two or more cores (a local cluster costs seconds to start, more than small inputs
    take serially); ``"auto"`` and ``workers=N`` fall back to serial when Dask is not
    installed.  A ``scheduler``, a ``client`` or ``resume`` need Dask and raise without it.

    Raises
    ------
    ConfigError
        ``resume`` with a serial conversion, or a bad ``workers``.
    ModuleNotFoundError
        Dask is needed (scheduler, client, resume) but not installed; names ``fastload[dask]``.
    """
    if client is not None or scheduler is not None:
        if not _dask_installed():
            raise missing_dependency("distributed", "dask")
        where = "the given Dask client" if client is not None else f"the scheduler {scheduler}"
        return Execution(True, None, f"converting with Dask on {where}")
    if workers == "auto":
        n_bytes, n_events = source_nbytes(plan), sum(f.n_events for f in plan.files)
        cores = os.cpu_count() or 1
        size = f"{n_events:,} events in {n_bytes / 2**20:,.1f} MiB of source files"
        if resume:
            workers = min(4, cores)
            reason = f"--resume: converting with Dask ({workers} workers)"
        elif cores < 2:
            return Execution(False, None, f"{size}; one CPU core: converting serially")
        elif n_bytes < dask_min_bytes:
            return Execution(
                False,
                None,
                f"{size} < {dask_min_bytes / 2**20:,.0f} MiB: converting serially "
                "(a Dask cluster would take longer to start; --workers N forces Dask)",
            )
        else:
            workers = min(4, cores)
            reason = f"{size} >= {dask_min_bytes / 2**20:,.0f} MiB: converting with Dask ({workers} workers)"
        explicit = False
    elif workers is None or workers == 0:
        if resume:
            raise ConfigError(
                "--resume applies to Dask conversions (--workers N or --scheduler ADDRESS)"
            )
        return Execution(False, None, "converting serially (no Dask requested)", logging.DEBUG)
    elif not is_integer(workers) or workers < 0:
        raise ConfigError(f"workers must be 'auto', 0 (serial) or a positive int, got {workers!r}")
    else:
        reason = f"converting with Dask ({workers} workers, as requested)"
        explicit = True
    if _dask_installed():
        return Execution(True, workers, reason)
    if resume:
        raise missing_dependency("distributed", "dask")
    note = "Dask is not installed (pip install 'fastload[dask]'): converting serially instead" + (
        f" of with {workers} Dask workers" if explicit else ""
    )
    return Execution(False, None, note, logging.WARNING if explicit else logging.INFO)


def convert(
    spec: ConversionSpec,
    dst: str | os.PathLike[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
    client: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = 2,
    progress: bool = False,
    dask_min_bytes: int = DASK_MIN_SOURCE_BYTES,
) -> str:
    """Convert the sources described by ``spec`` into a store at ``dst``.

    Parameters
    ----------
    spec
        A parsed spec (:func:`converters._spec.load_spec`).
    dst
        Target store path or fsspec URL (``s3://bucket/name.zarr``).
    source_dir
        Directory the spec's globs are relative to (default: the spec file's directory).
    workers, scheduler, client
        ``None`` or ``0`` (default) converts serially in this process.  ``"auto"`` (the
        command line's default) converts serially below ``dask_min_bytes`` of source files
        and with a local Dask cluster of ``min(4, cores)`` processes from there on.
        ``workers=N`` starts a local cluster of N processes; ``scheduler`` connects to a
        running one; ``client`` reuses a ``distributed.Client``.  Without Dask installed,
        ``"auto"`` and ``N`` convert serially (logged).  The choice and its reason are
        logged on this module's logger.
    resume
        Dask only: keep the blocks an interrupted run already wrote.
    overwrite
        Replace a complete store at ``dst``.
    retries
        Dask only: times a failed task is retried.
    progress
        Show a progress bar (tqdm, on stderr) over blocks.
    dask_min_bytes
        Threshold of ``workers="auto"``, in bytes of source files.

    Returns
    -------
    str
        The store path.
    """
    if source_dir is None:
        origin = spec.where.origin
        source_dir = Path(origin).parent if origin not in ("<flags>", "<text>") else Path.cwd()
    plan = plan_conversion(spec, source_dir)
    how = choose_execution(
        plan,
        workers=workers,
        scheduler=scheduler,
        client=client,
        resume=resume,
        dask_min_bytes=dask_min_bytes,
    )
    logger.log(how.level, "%s", how.reason)
    if not how.dask:
        return convert_serial(plan, dst, overwrite=overwrite, progress=progress)
    from ._dask import convert_dask, dask_client

    if client is not None:
        return convert_dask(
            plan,
            dst,
            client=client,
            overwrite=overwrite,
            resume=resume,
            retries=retries,
            progress=progress,
        )
    with dask_client(workers=how.workers, scheduler=scheduler) as own:
        return convert_dask(
            plan,
            dst,
            client=own,
            overwrite=overwrite,
            resume=resume,
            retries=retries,
            progress=progress,
        )


# --------------------------------------------------------------------- command line
def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``generic`` and the shipped-spec converters (``ahcal``)."""
    run = parser.add_argument_group("execution")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Dask local cluster of N worker processes (default: serial below 256 MiB of source "
        "files or on one core, else min(4, cores) workers; serial if Dask is not installed)",
    )
    mode.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.1:8786"
    )
    mode.add_argument("--serial", action="store_true", help="convert in this process, without Dask")
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep the blocks an interrupted Dask run already wrote",
    )
    run.add_argument(
        "--retries", type=int, default=2, help="retries of a failed Dask task (default 2)"
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing complete store")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    spec = parser.add_argument_group("spec overrides")
    spec.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a spec key, e.g. --set source.tree=Events --set 'fields.pt.source=\"Jet_pt\"'",
    )
    spec.add_argument("--codec", choices=("lz4", "zstd"), help="Blosc codec (store.codec)")
    spec.add_argument("--clevel", type=int, help="compression level (store.clevel)")
    spec.add_argument(
        "--chunk-bytes", type=int, help="uncompressed bytes per chunk (store.chunk_bytes)"
    )
    spec.add_argument(
        "--shard-chunks",
        type=int,
        help="chunks per shard file (store.shard_chunks; 0: never; default: above 10 000 "
        "chunks per array)",
    )
    spec.add_argument(
        "--block-events", type=int, help="events per block / Dask task (source.block_events)"
    )
    spec.add_argument(
        "--allow-nonfinite", action="store_true", help="store NaN/inf (store.allow_nonfinite)"
    )


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """``--set`` items for the shortcut flags, followed by the explicit ``--set`` items."""
    items = []
    for flag, key in (
        ("codec", "store.codec"),
        ("clevel", "store.clevel"),
        ("chunk_bytes", "store.chunk_bytes"),
        ("shard_chunks", "store.shard_chunks"),
        ("block_events", "source.block_events"),
    ):
        value = getattr(args, flag)
        if value is not None:
            items.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    if args.allow_nonfinite:
        items.append("store.allow_nonfinite=true")
    return [*(i.replace("'", '"') for i in items), *args.overrides]


def run_from_args(
    spec: ConversionSpec, dst: str, source_dir: str | None, args: argparse.Namespace
) -> int:
    """Run a conversion from parsed options; returns the exit status.

    Prints the ``wrote ...`` summary on stdout (unless ``--quiet``) or one ``error:`` line on
    stderr.  0 converted; 1 failed (unreadable source, bad values); 2 refused (the spec is
    wrong or names a missing key, an existing store without ``--overwrite``, an optional
    package not installed); 130 interrupted.
    """
    workers: int | str | None = 0 if args.serial else args.workers
    if workers is None and args.scheduler is None:
        workers = "auto"
    try:
        path = convert(
            spec,
            dst,
            source_dir=source_dir,
            workers=workers,
            scheduler=args.scheduler,
            resume=args.resume,
            overwrite=args.overwrite,
            retries=args.retries,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except (ConfigError, SourceKeyError, StoreExistsError) as exc:  # the spec does not fit
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional package (uproot, pandas, dask); names its extra
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FastloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: no complete store was written (rerun a Dask conversion with --resume)",
            file=sys.stderr,
        )
        return 130
    if not args.quiet:
        store = fl.open_store(path)
        sizes = ", ".join(f"{s}={len(store[s])}" for s in store.splits)
        print(f"wrote {path} ({sizes}; fields {', '.join(store.fields)})")
    return 0


def convert_spec_file(
    spec: str | os.PathLike[str] | None,
    dst: str | os.PathLike[str],
    /,
    *,
    overrides: Sequence[str] = (),
    source_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> str:
    """``load_spec(spec, overrides)`` then :func:`convert`; what ``converters.convert("generic", ...)`` runs.

    ``source_dir`` defaults to the spec's directory (the working directory without a spec).
    """
    parsed = load_spec(spec, overrides=overrides)
    if source_dir is None:
        source_dir = Path(spec).parent if spec is not None else Path.cwd()
    return convert(parsed, dst, source_dir=source_dir, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters generic [SPEC.toml] DST [options]``; returns the exit status.

    Called without ``argv`` (as the program) it configures logging for itself.
    """
    if argv is None:
        from ._cli import configure_logging, wants_quiet

        configure_logging(wants_quiet(sys.argv[1:]))
    parser = argparse.ArgumentParser(
        prog="python -m converters generic",
        description="Convert files described by a TOML spec (ROOT, HDF5, pandas, Parquet, npy/npz) into a "
        "fastload store; `python -m converters inspect FILE` writes a starter spec; see docs/byod.md.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="[SPEC.toml] DST",
        help="the spec (optional when --set gives every key) and the store to write",
    )
    parser.add_argument(
        "--source-dir",
        metavar="DIR",
        help="directory the spec's globs are relative to (default: the spec's)",
    )
    add_run_arguments(parser)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    if len(args.paths) > 2:
        print("error: expected [SPEC.toml] DST", file=sys.stderr)
        return 2
    spec_path = args.paths[0] if len(args.paths) == 2 else None
    try:
        spec = load_spec(spec_path, overrides=overrides_from_args(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source_dir = args.source_dir or (str(Path(spec_path).parent) if spec_path else os.getcwd())
    return run_from_args(spec, args.paths[-1], source_dir, args)


if __name__ == "__main__":
    raise SystemExit(main())
