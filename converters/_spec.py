"""Conversion specs: a short TOML file that says how original files become a store.

A spec has six tables (see docs/byod.md for the full reference)::

    [dataset]  name, task, doc
    [source]   files (globs), format (root, hdf5, pandas, parquet, npy, npz),
               tree | group | key, block_events
    [fields.NAME]  source | columns | collection, ragged, counts | offsets, pad, mask,
                   pad_value, dtype, shape, role, doc
    [label]    from = "field" | "file" | "directory" | "none", field, classes, pattern, dtype
    [split]    by = "fraction" | "files", fractions, seed, files
    [store]    codec, clevel, shuffle, chunk_len, chunk_bytes, shard_chunks, checksum, allow_nonfinite

This module parses and checks a spec on its own (unknown keys, types,
contradictions) and applies its label and split rules to source paths; whether
its keys exist in the sources is checked by :mod:`converters.generic` before
anything is written.  Every error names the
spec file and line (or the ``--set`` flag) of the offending key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fastload._messages import closest
from fastload._validate import is_integer, is_number
from fastload.errors import ConfigError
from fastload.store import field_name

FORMATS = ("root", "hdf5", "pandas", "parquet", "npy", "npz")
TASKS = ("classification", "regression")
ROLES = ("input", "label", "aux")
LABEL_FROM = ("field", "file", "directory", "none")
SPLIT_BY = ("fraction", "files")
CODECS = ("lz4", "zstd", "blosclz", "zlib")
SHUFFLES = ("auto", "byte", "bit", "none")
CHECKSUMS = ("sha256", "md5", "none")

_TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "dataset": ("name", "task", "doc"),
    "source": ("files", "format", "tree", "group", "key", "block_events"),
    "label": ("from", "field", "classes", "pattern", "dtype", "doc"),
    "split": ("by", "fractions", "seed", "files"),
    "store": (
        "codec",
        "clevel",
        "shuffle",
        "chunk_len",
        "chunk_bytes",
        "shard_chunks",
        "checksum",
        "allow_nonfinite",
    ),
}
_FIELD_KEYS = (
    "source",
    "columns",
    "collection",
    "ragged",
    "counts",
    "offsets",
    "pad",
    "mask",
    "pad_value",
    "dtype",
    "shape",
    "role",
    "doc",
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# --------------------------------------------------------------------- locations
class SpecLocator:
    """Maps dotted keys (``fields.hits.columns``) to ``origin:line`` for error messages.

    tomllib does not report positions, so the TOML text is scanned line by line
    for table headers and ``key =`` assignments (inline tables included).
    """

    _HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\[\]]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, origin: str, text: str = "", flags: Mapping[str, str] | None = None) -> None:
        self.origin = origin
        self.lines: dict[str, int] = {}
        self.flags: dict[str, str] = dict(flags or {})
        self._scan(text)

    @staticmethod
    def _split_key(text: str) -> list[str]:
        parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", text)
        return [p.strip("\"'") for p in parts]

    def _scan(self, text: str) -> None:
        table: list[str] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.split("#", 1)[0] if '"' not in line and "'" not in line else line
            header = self._HEADER.match(stripped)
            if header:
                table = self._split_key(header.group("name"))
                self.lines.setdefault(".".join(table), lineno)
                continue
            match = re.match(r"^\s*(?P<lhs>[^=\[\]{}\"']+|\"[^\"]*\"|'[^']*')\s*=", stripped)
            if not match:
                continue
            key = [*table, *self._split_key(match.group("lhs"))]
            self.lines.setdefault(".".join(key), lineno)
            rest = stripped[match.end() :]
            if "{" in rest:  # keys of an inline table live on the same line
                for inner in re.finditer(
                    r"[{,]\s*(?P<k>[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')\s*=", rest
                ):
                    self.lines.setdefault(".".join([*key, inner.group("k").strip("\"'")]), lineno)

    def __call__(self, key: str) -> str:
        """``origin:line [key]`` of ``key`` or of its nearest enclosing table."""
        if key in self.flags:
            return f"{self.flags[key]} [{key}]"
        parts = key.split(".")
        while parts:
            dotted = ".".join(parts)
            if dotted in self.lines:
                return f"{self.origin}:{self.lines[dotted]} [{key}]"
            if dotted in self.flags:
                return f"{self.flags[dotted]} [{key}]"
            parts.pop()
        return f"{self.origin} [{key}]"


def spec_error(where: SpecLocator, key: str, message: str) -> ConfigError:
    """A :class:`ConfigError` whose message starts with the spec location of ``key``."""
    return ConfigError(f"{where(key)}: {message}")


# --------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class FieldMap:
    """How one store field is made from source keys.

    ``keys`` are read per event (``source`` gives one key, ``columns`` several,
    concatenated along a new last axis).  With ``counts``/``offsets`` the keys
    are flat per-row arrays cut into events by that count or offsets key.  With
    ``collection`` the keys are empty here: the plan takes the numeric members of
    that record key of each source as ``columns``.
    """

    name: str
    keys: tuple[str, ...]
    stacked: bool = False
    collection: str | None = None
    ragged: bool = False
    counts: str | None = None
    offsets: str | None = None
    pad: int | None = None
    mask: str | None = None
    pad_value: float = 0.0
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None
    role: str = "input"
    doc: str = ""

    @property
    def flat(self) -> bool:
        """True when the keys hold rows of all events back to back (counts/offsets given)."""
        return self.counts is not None or self.offsets is not None


@dataclass(frozen=True)
class SourceSpec:
    """Which files to read and where the events are inside them."""

    files: tuple[str, ...]
    format: str | None = None
    tree: str | None = None
    group: str | None = None
    key: str | None = None
    block_events: int | None = None


@dataclass(frozen=True)
class LabelRule:
    """Where the label comes from: a field, the file, its directory, or nowhere."""

    kind: str
    field: str | None = None
    classes: tuple[str, ...] | None = None
    class_globs: dict[str, tuple[str, ...]] | None = None
    pattern: str | None = None
    dtype: np.dtype | None = None
    doc: str = ""


@dataclass(frozen=True)
class SplitRule:
    """How events are assigned to splits: per source file, or a seeded fraction."""

    kind: str
    fractions: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreOptions:
    """Codec and chunking of the written store."""

    codec: str = "lz4"
    clevel: int = 5
    shuffle: str = "auto"
    chunk_len: int | None = None
    chunk_bytes: int = 4 * 2**20
    #: chunks per shard file: None = automatic (above 10 000 chunks per array), 0 = never
    shard_chunks: int | None = None
    checksum: str = "sha256"
    allow_nonfinite: bool = False


@dataclass(frozen=True)
class ConversionSpec:
    """A parsed, self-consistent conversion spec."""

    name: str
    task: str
    doc: str
    source: SourceSpec
    fields: dict[str, FieldMap]
    label: LabelRule
    split: SplitRule
    store: StoreOptions
    where: SpecLocator
    raw: dict[str, Any]

    @property
    def digest(self) -> str:
        """Stable hash of the spec's content (used to recognise a resumable run)."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label_field(self) -> str | None:
        """Name of the label field in the store, if any."""
        return None if self.label.kind == "none" else self.label.field


# --------------------------------------------------------------------- parsing
def load_spec(
    path: str | Path | None = None,
    *,
    text: str | None = None,
    overrides: Sequence[str] = (),
) -> ConversionSpec:
    """Read a spec from a TOML file (or text), apply ``--set key=value`` overrides and check it.

    Parameters
    ----------
    path
        A ``.toml`` spec file; ``None`` builds the spec from ``text`` and ``overrides`` only.
    text
        TOML text used instead of reading ``path`` (``path`` then only names it in messages).
    overrides
        ``"dotted.key=VALUE"`` strings; ``VALUE`` is a TOML value (``'"Events"'``, ``3``,
        ``'["a", "b"]'``) or, if it does not parse as one, a plain string.

    Raises
    ------
    ConfigError
        The spec is malformed; the message names the file and line (or the flag).
    """
    origin = str(path) if path is not None else "<flags>"
    if text is None and path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the spec file {origin!r}: {exc}") from exc
    text = text or ""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    flags: dict[str, str] = {}
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, item)
        flags[key] = f"--set {item}"
    where = SpecLocator(origin, text, flags)
    return parse_spec(raw, where)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set source.tree=Events")
    key, value_text = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # a bare word such as Events or float32
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, item: str) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a table")
        node = nxt
    node[parts[-1]] = value


def _check_keys(
    table: Mapping[str, Any], allowed: Sequence[str], prefix: str, where: SpecLocator
) -> None:
    for key in table:
        if key not in allowed:
            raise spec_error(
                where,
                f"{prefix}.{key}",
                f"unknown key {key!r} in [{prefix}]{closest(key, list(allowed))} (allowed: {', '.join(allowed)})",
            )


def _get(
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    prefix: str,
    where: SpecLocator,
    default: Any = None,
) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; an int field must not accept true/false
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise spec_error(where, f"{prefix}.{key}", f"expected {names}, got {value!r}")
    return value


def _str_list(value: Any, key: str, where: SpecLocator) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        raise spec_error(
            where, key, f"expected a non-empty string or list of strings, got {value!r}"
        )
    return tuple(items)


def _dtype(value: Any, key: str, where: SpecLocator) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise spec_error(
            where, key, f'{value!r} is not a numpy dtype (use e.g. "float32", "int64", "bool")'
        ) from None
    if dtype.kind not in "biuf":
        raise spec_error(where, key, f"dtype {dtype} cannot be stored; use a numeric or bool dtype")
    return dtype


def _name(value: str, key: str, where: SpecLocator, what: str) -> str:
    if not _NAME.match(value) or value in ("constants",):
        hint = ""
        try:
            suggested = field_name(value)
        except ConfigError:
            suggested = None
        if suggested and suggested != value and _NAME.match(suggested):
            # the rule every derived field name follows (fastload.store.field_name)
            hint = (
                f"; the field-name rule (each run of characters other than letters, digits "
                f"and '_' becomes one '_', none at the ends) gives {suggested!r}"
            )
        raise spec_error(
            where,
            key,
            f"invalid {what} name {value!r} (letters, digits, '_', '-', '.'; not 'constants'){hint}",
        )
    return value


def parse_spec(raw: Mapping[str, Any], where: SpecLocator) -> ConversionSpec:
    """Check a spec given as a TOML dictionary and build a :class:`ConversionSpec`."""
    allowed_tables = (*_TABLE_KEYS, "fields")
    for table, value in raw.items():
        if table not in allowed_tables:
            raise spec_error(
                where,
                table,
                f"unknown table [{table}]{closest(table, list(allowed_tables))} (allowed: {', '.join(allowed_tables)})",
            )
        if not isinstance(value, dict):
            raise spec_error(where, table, f"[{table}] must be a table, got {value!r}")
    for table, keys in _TABLE_KEYS.items():
        _check_keys(raw.get(table, {}), keys, table, where)

    dataset = raw.get("dataset", {})
    task = _get(dataset, "task", str, "dataset", where, "classification")
    if task not in TASKS:
        raise spec_error(where, "dataset.task", f"task must be one of {TASKS}, got {task!r}")
    name = _get(dataset, "name", str, "dataset", where, "") or ""
    doc = _get(dataset, "doc", str, "dataset", where, "") or ""

    source = _parse_source(raw.get("source"), where)
    fields = _parse_fields(raw.get("fields"), where)
    label = _parse_label(raw.get("label"), fields, task, where)
    if label.kind == "field":
        assert label.field is not None
        fm = fields[label.field]
        if fm.role != "label":
            fields[label.field] = replace(fm, role="label")
    elif label.kind in ("file", "directory") and label.field in fields:
        raise spec_error(
            where,
            "label.field",
            f"label field {label.field!r} is also declared in [fields.{label.field}]; pick another name",
        )
    split = _parse_split(raw.get("split"), where)
    store = _parse_store(raw.get("store", {}), where)
    return ConversionSpec(
        name=name,
        task=task,
        doc=doc,
        source=source,
        fields=fields,
        label=label,
        split=split,
        store=store,
        where=where,
        raw=dict(raw),
    )


def _parse_source(table: Mapping[str, Any] | None, where: SpecLocator) -> SourceSpec:
    if table is None:
        raise spec_error(
            where, "source", "missing [source] table (files = [...] globs of the original files)"
        )
    if "files" not in table:
        raise spec_error(
            where,
            "source",
            '[source] needs files = ["*.root", ...] (globs relative to the source directory)',
        )
    files = _str_list(table["files"], "source.files", where)
    fmt = _get(table, "format", str, "source", where)
    if fmt is not None and fmt not in FORMATS:
        raise spec_error(
            where,
            "source.format",
            f"format must be one of {FORMATS}, got {fmt!r}{closest(fmt, list(FORMATS))}",
        )
    for key, only in (("tree", "root"), ("group", "hdf5"), ("key", "pandas")):
        if key in table and fmt is not None and fmt != only:
            raise spec_error(
                where, f"source.{key}", f"{key!r} applies to format {only!r}, not {fmt!r}"
            )
    block_events = _get(table, "block_events", int, "source", where)
    if block_events is not None and block_events < 1:
        raise spec_error(
            where, "source.block_events", f"block_events must be >= 1, got {block_events}"
        )
    return SourceSpec(
        files=files,
        format=fmt,
        tree=_get(table, "tree", str, "source", where),
        group=_get(table, "group", str, "source", where),
        key=_get(table, "key", str, "source", where),
        block_events=block_events,
    )


def _parse_fields(table: Mapping[str, Any] | None, where: SpecLocator) -> dict[str, FieldMap]:
    if not table:
        raise spec_error(
            where, "fields", 'no fields declared; add [fields.NAME] tables with source = "KEY"'
        )
    fields = {fname: _parse_field(fname, decl, where) for fname, decl in table.items()}
    for fname, fm in fields.items():
        if fm.mask and fm.mask in fields:
            raise spec_error(
                where,
                f"fields.{fname}.mask",
                f'mask field {fm.mask!r} clashes with [fields.{fm.mask}]; set mask = "OTHER_NAME"',
            )
    return fields


def _parse_field(fname: str, decl: Any, where: SpecLocator) -> FieldMap:
    """One ``[fields.NAME]`` table: what it reads, how events are cut and padded, what it is."""
    prefix = f"fields.{fname}"
    _check_field_table(fname, decl, prefix, where)
    keys, collection = _field_keys(decl, prefix, where)
    counts, offsets, pad, ragged = _field_layout(decl, prefix, where)
    mask = _field_mask(fname, decl, pad, prefix, where)
    pad_value = _get(decl, "pad_value", (int, float), prefix, where, 0.0)
    if pad_value is not None and "pad_value" in decl and pad is None:
        raise spec_error(
            where, f"{prefix}.pad_value", "pad_value only applies to padded fields (pad = N)"
        )
    shape = _get(decl, "shape", list, prefix, where)
    if shape is not None and not all(is_integer(s) and s >= 1 for s in shape):
        raise spec_error(
            where, f"{prefix}.shape", f"shape is a list of positive ints, got {shape!r}"
        )
    role = _get(decl, "role", str, prefix, where, "input")
    if role not in ROLES:
        raise spec_error(where, f"{prefix}.role", f"role must be one of {ROLES}, got {role!r}")
    return FieldMap(
        name=fname,
        keys=keys,
        stacked="columns" in decl or collection is not None,
        collection=collection,
        ragged=ragged,
        counts=counts,
        offsets=offsets,
        pad=pad,
        mask=mask,
        pad_value=float(pad_value),
        dtype=_dtype(decl["dtype"], f"{prefix}.dtype", where) if "dtype" in decl else None,
        shape=tuple(shape) if shape is not None else None,
        role=role,
        doc=_get(decl, "doc", str, prefix, where, "") or "",
    )


def _check_field_table(fname: str, decl: Any, prefix: str, where: SpecLocator) -> None:
    _name(fname, prefix, where, "field")
    if not isinstance(decl, dict):
        raise spec_error(
            where,
            prefix,
            f'[{prefix}] must be a table such as {{source = "KEY"}}, got {decl!r}',
        )
    nested = [k for k, v in decl.items() if isinstance(v, dict) and k not in _FIELD_KEYS]
    if nested:
        dotted = f"{fname}.{nested[0]}"
        raise spec_error(
            where,
            f"{prefix}.{nested[0]}",
            f"[fields.{dotted}] is a table inside [fields.{fname}]: a '.' in a TOML key nests "
            f"tables; name the field {field_name(dotted)!r} (the field-name rule) or quote "
            f'the name: [fields."{dotted}"]',
        )
    _check_keys(decl, _FIELD_KEYS, prefix, where)


def _field_keys(
    decl: Mapping[str, Any], prefix: str, where: SpecLocator
) -> tuple[tuple[str, ...], str | None]:
    """The source keys a field reads, or the record key whose members it stacks."""
    given = [k for k in ("source", "columns", "collection") if k in decl]
    if len(given) != 1:
        raise spec_error(
            where,
            prefix,
            'give exactly one of source = "KEY", columns = ["KEY", ...] or '
            'collection = "RECORD"' + (f" (got {', '.join(given)})" if given else ""),
        )
    if "collection" in decl:
        collection = _get(decl, "collection", str, prefix, where)
        if not collection:
            raise spec_error(where, f"{prefix}.collection", "expected a non-empty key")
        for key in ("counts", "offsets"):
            if key in decl:
                raise spec_error(
                    where,
                    f"{prefix}.{key}",
                    "collection takes the members of a record key of the source; "
                    f"{key} applies to flat value keys (source/columns)",
                )
        return (), collection
    keys = _str_list(
        decl.get("source", decl.get("columns")),
        f"{prefix}.{'source' if 'source' in decl else 'columns'}",
        where,
    )
    if "source" in decl and len(keys) != 1:
        raise spec_error(
            where,
            f"{prefix}.source",
            "source takes one key; use columns = [...] to stack several",
        )
    return keys, None


def _field_layout(
    decl: Mapping[str, Any], prefix: str, where: SpecLocator
) -> tuple[str | None, str | None, int | None, bool]:
    """``counts``/``offsets`` of variable-length events and whether they stay ragged or pad."""
    counts = _get(decl, "counts", str, prefix, where)
    offsets = _get(decl, "offsets", str, prefix, where)
    if counts and offsets:
        raise spec_error(where, f"{prefix}.offsets", "give counts or offsets, not both")
    pad = _get(decl, "pad", int, prefix, where)
    ragged = _get(decl, "ragged", bool, prefix, where, False)
    if pad is not None and pad < 1:
        raise spec_error(where, f"{prefix}.pad", f"pad must be >= 1, got {pad}")
    if pad is not None and ragged:
        raise spec_error(
            where,
            f"{prefix}.pad",
            "a field is either ragged = true or padded (pad = N), not both",
        )
    if (counts or offsets) and not (ragged or pad):
        raise spec_error(
            where,
            prefix,
            "counts/offsets make variable-length events; also set ragged = true or pad = N",
        )
    return counts, offsets, pad, bool(ragged)


def _field_mask(
    fname: str, decl: Mapping[str, Any], pad: int | None, prefix: str, where: SpecLocator
) -> str | None:
    """The mask field a padded field gets (default ``NAME_mask``; ``mask = false``: none)."""
    if "mask" not in decl:
        return f"{fname}_mask" if pad is not None else None
    mask_value = decl["mask"]
    if pad is None:
        raise spec_error(where, f"{prefix}.mask", "mask only applies to padded fields (pad = N)")
    if mask_value is False:
        return None
    if isinstance(mask_value, str):
        return _name(mask_value, f"{prefix}.mask", where, "mask field")
    raise spec_error(where, f"{prefix}.mask", f"mask is a field name or false, got {mask_value!r}")


def _parse_label(
    table: Mapping[str, Any] | None, fields: Mapping[str, FieldMap], task: str, where: SpecLocator
) -> LabelRule:
    if table is None:
        raise spec_error(
            where,
            "label",
            'missing [label] rule: from = "field" (a declared field), "file", "directory" or "none"',
        )
    kind = _get(table, "from", str, "label", where)
    if kind is None:
        raise spec_error(where, "label", f"[label] needs from = one of {LABEL_FROM}")
    if kind not in LABEL_FROM:
        raise spec_error(
            where,
            "label.from",
            f"from must be one of {LABEL_FROM}, got {kind!r}{closest(kind, list(LABEL_FROM))}",
        )
    field_name = _get(table, "field", str, "label", where)
    doc = _get(table, "doc", str, "label", where, "") or ""
    if kind == "none":
        extra = set(table) - {"from"}
        if extra:
            raise spec_error(
                where, f"label.{sorted(extra)[0]}", 'from = "none" takes no other keys'
            )
        return LabelRule("none")
    if kind == "field":
        if field_name is None:
            raise spec_error(
                where, "label", 'from = "field" needs field = "NAME" naming one of [fields]'
            )
        if field_name not in fields:
            raise spec_error(
                where,
                "label.field",
                f"label field {field_name!r} is not declared in [fields]{closest(field_name, list(fields))}",
            )
        for key in ("pattern", "dtype"):
            if key in table:
                raise spec_error(
                    where,
                    f"label.{key}",
                    f'{key!r} does not apply to from = "field" (set it in [fields.{field_name}])',
                )
    field_name = _name(field_name or "y", "label.field", where, "label field")
    classes: tuple[str, ...] | None = None
    class_globs: dict[str, tuple[str, ...]] | None = None
    raw_classes = table.get("classes")
    if isinstance(raw_classes, dict):
        if kind != "file":
            raise spec_error(
                where, "label.classes", 'a table of globs per class needs from = "file"'
            )
        class_globs = {
            str(c): _str_list(g, f"label.classes.{c}", where) for c, g in raw_classes.items()
        }
        classes = tuple(class_globs)
    elif raw_classes is not None:
        classes = _str_list(raw_classes, "label.classes", where)
        if len(set(classes)) != len(classes):
            raise spec_error(where, "label.classes", f"class names repeat: {list(classes)}")
    pattern = _get(table, "pattern", str, "label", where)
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise spec_error(where, "label.pattern", f"not a regular expression: {exc}") from exc
        if "label" not in compiled.groupindex:
            raise spec_error(
                where,
                "label.pattern",
                "the pattern needs a named group (?P<label>...) capturing the label",
            )
    if kind == "file" and class_globs is None and pattern is None:
        raise spec_error(
            where,
            "label",
            'from = "file" needs classes = {NAME = "GLOB", ...} or pattern = "...(?P<label>...)..."',
        )
    if kind in ("file", "directory") and task == "regression" and class_globs is not None:
        raise spec_error(
            where,
            "label.classes",
            "a regression label needs pattern = ... capturing a number, not classes",
        )
    dtype = _dtype(table["dtype"], "label.dtype", where) if "dtype" in table else None
    return LabelRule(kind, field_name, classes, class_globs, pattern, dtype, doc)


def _parse_split(table: Mapping[str, Any] | None, where: SpecLocator) -> SplitRule:
    if table is None:
        raise spec_error(
            where,
            "split",
            'missing [split] rule: by = "fraction" (with fractions = {...}) or "files"',
        )
    kind = _get(table, "by", str, "split", where)
    if kind not in SPLIT_BY:
        raise spec_error(
            where, "split.by" if kind else "split", f"by must be one of {SPLIT_BY}, got {kind!r}"
        )
    if kind == "fraction":
        if "files" in table:
            raise spec_error(where, "split.files", 'files applies to by = "files"')
        fractions = _get(table, "fractions", dict, "split", where)
        if not fractions:
            raise spec_error(
                where,
                "split",
                'by = "fraction" needs fractions = {train = 0.8, val = 0.1, test = 0.1}',
            )
        for name, value in fractions.items():
            _name(name, f"split.fractions.{name}", where, "split")
            if not is_number(value) or not 0 <= value <= 1:
                raise spec_error(
                    where,
                    f"split.fractions.{name}",
                    f"a fraction is a number in [0, 1], got {value!r}",
                )
        total = float(sum(fractions.values()))
        if abs(total - 1.0) > 1e-9:
            raise spec_error(where, "split.fractions", f"fractions sum to {total:g}, not 1")
        seed = _get(table, "seed", int, "split", where, 0)
        return SplitRule("fraction", {k: float(v) for k, v in fractions.items()}, seed)
    for key in ("fractions", "seed"):
        if key in table:
            raise spec_error(where, f"split.{key}", f'{key} applies to by = "fraction"')
    files = _get(table, "files", dict, "split", where)
    if not files:
        raise spec_error(
            where, "split", 'by = "files" needs files = {train = ["GLOB", ...], test = [...]}'
        )
    parsed = {
        _name(k, f"split.files.{k}", where, "split"): _str_list(v, f"split.files.{k}", where)
        for k, v in files.items()
    }
    return SplitRule("files", files=parsed)


def _parse_store(table: Mapping[str, Any], where: SpecLocator) -> StoreOptions:
    opts = StoreOptions()
    codec = _get(table, "codec", str, "store", where, opts.codec)
    if codec not in CODECS:
        raise spec_error(where, "store.codec", f"codec must be one of {CODECS}, got {codec!r}")
    shuffle = _get(table, "shuffle", str, "store", where, opts.shuffle)
    if shuffle not in SHUFFLES:
        raise spec_error(
            where, "store.shuffle", f"shuffle must be one of {SHUFFLES}, got {shuffle!r}"
        )
    clevel = _get(table, "clevel", int, "store", where, opts.clevel)
    if not 0 <= clevel <= 9:
        raise spec_error(where, "store.clevel", f"clevel must be 0..9, got {clevel}")
    chunk_len = _get(table, "chunk_len", int, "store", where)
    if chunk_len is not None and chunk_len < 1:
        raise spec_error(where, "store.chunk_len", f"chunk_len must be >= 1, got {chunk_len}")
    chunk_bytes = _get(table, "chunk_bytes", int, "store", where, opts.chunk_bytes)
    if chunk_bytes < 1:
        raise spec_error(where, "store.chunk_bytes", f"chunk_bytes must be >= 1, got {chunk_bytes}")
    shard_chunks = _get(table, "shard_chunks", int, "store", where)
    if shard_chunks is not None and shard_chunks < 0:
        raise spec_error(
            where, "store.shard_chunks", f"shard_chunks must be >= 0, got {shard_chunks}"
        )
    checksum = _get(table, "checksum", str, "store", where, opts.checksum)
    if checksum not in CHECKSUMS:
        raise spec_error(
            where, "store.checksum", f"checksum must be one of {CHECKSUMS}, got {checksum!r}"
        )
    return StoreOptions(
        codec=codec,
        clevel=clevel,
        shuffle=shuffle,
        chunk_len=chunk_len,
        chunk_bytes=chunk_bytes,
        shard_chunks=shard_chunks,
        checksum=checksum,
        allow_nonfinite=_get(table, "allow_nonfinite", bool, "store", where, False),
    )


# --------------------------------------------------------------------- applying the rules
def _label_text(spec: ConversionSpec, rel: str) -> str | None:
    rule = spec.label
    target = rel if rule.kind == "file" else (Path(rel).parent.as_posix())
    if rule.pattern:
        m = re.search(rule.pattern, target)
        if not m:
            raise spec_error(
                spec.where, "label.pattern", f"{rule.pattern!r} does not match source {rel!r}"
            )
        return m.group("label")
    if rule.kind == "directory":
        name = Path(rel).parent.name
        if not name:
            raise spec_error(
                spec.where, "label.from", f"source {rel!r} is not inside a class directory"
            )
        return name
    return None


def label_classes(spec: ConversionSpec, rels: Sequence[str]) -> list[str]:
    """Class names in label order, given the sources' paths relative to the source directory."""
    rule = spec.label
    if rule.kind not in ("file", "directory") or spec.task != "classification":
        return list(rule.classes or ())
    if rule.class_globs is not None:
        return list(rule.class_globs)
    found = sorted({t for t in (_label_text(spec, r) for r in rels) if t is not None})
    if rule.classes is None:
        return found
    unknown = [t for t in found if t not in rule.classes]
    if unknown:
        raise spec_error(
            spec.where,
            "label.classes",
            f"sources name classes {unknown} missing from classes = {list(rule.classes)}",
        )
    return list(rule.classes)


def file_label(spec: ConversionSpec, rel: str, classes: Sequence[str]) -> float | None:
    """The label of every event of source ``rel`` (``None`` unless labels come from files)."""
    rule = spec.label
    if rule.kind not in ("file", "directory"):
        return None
    if rule.class_globs is not None:
        hits = [
            c
            for c, globs in rule.class_globs.items()
            if any(fnmatch.fnmatchcase(rel, g) for g in globs)
        ]
        if len(hits) != 1:
            raise spec_error(
                spec.where,
                "label.classes",
                f"source {rel!r} matches {len(hits)} classes {hits}; it must match exactly one",
            )
        return float(classes.index(hits[0]))
    text = _label_text(spec, rel)
    assert text is not None
    if spec.task == "regression":
        try:
            return float(text)
        except ValueError:
            raise spec_error(
                spec.where,
                "label.pattern",
                f"label {text!r} of source {rel!r} is not a number (regression task)",
            ) from None
    return float(list(classes).index(text))


def file_split(spec: ConversionSpec, rel: str) -> str | None:
    """The split of every event of source ``rel`` (``None`` for a fraction split)."""
    if spec.split.kind != "files":
        return None
    hits = [
        s
        for s, globs in spec.split.files.items()
        if any(fnmatch.fnmatchcase(rel, g) for g in globs)
    ]
    if len(hits) != 1:
        raise spec_error(
            spec.where,
            "split.files",
            f"source {rel!r} matches {len(hits)} splits {hits}; it must match exactly one",
        )
    return hits[0]


def seeded_uniform(seed: int, index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers from (seed, event index) by splitmix64: the same for any blocking."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
