"""``python -m converters inspect FILE``: what a source file holds, and a spec that converts it.

For each TTree / RNTuple of a ROOT file (or the HDF5 group, pandas table, Parquet file,
``.npz`` or ``.npy`` source) it lists the entries and every key: the convertible ones
(flat, fixed-size, jagged with their counter), the records (whose members are keys of
their own, and which ``collection = "KEY"`` joins into one field), and the others with
the reason they cannot be stored.  Then it prints a starter spec (TOML) with one field
per convertible key, named by :func:`fastload.store.field_name`, so that::

    python -m converters inspect data/run1.root > spec.toml
    python -m converters generic spec.toml out.zarr --source-dir data

converts every convertible key.  The listing is made of TOML comments, so the whole
output is the spec file; ``--spec PATH`` writes the spec alone to PATH instead.  Only
metadata is read, and the first ``--sample`` entries of each float key (NaN/inf there make
the spec set ``allow_nonfinite``).

Exit status: 0 inspected; 1 the file cannot be read; 2 refused (no such file, unknown
format or tree, an optional package missing -- the message names its extra).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fastload._messages import missing_dependency
from fastload.errors import ConfigError, FastloadError, SourceFileError, SourceKeyError
from fastload.store import Ragged, field_name

from ._sources import KeyInfo, SourceReader, infer_format, open_reader, root_trees

__all__ = ["KeyReport", "SourceReport", "inspect_source", "main", "render", "starter_spec"]

#: the kinds of key a report lists, in listing order
KINDS = ("flat", "fixed-size", "jagged", "record", "not convertible")


@dataclass(frozen=True)
class KeyReport:
    """One key of a source: what it is, whether it converts, and as which field."""

    key: str
    kind: str
    type: str
    detail: str = ""
    field: str | None = None
    #: a record's numeric members (``collection = key`` joins them), when they can be joined
    collection: tuple[str, ...] = ()
    #: whether those members are jagged (the joined field is then ``ragged = true``)
    collection_ragged: bool = False


@dataclass
class SourceReport:
    """One tree / RNTuple / group / table of a source file and its keys."""

    path: str
    format: str
    container: str
    #: ``[source]`` keys that select this container (``{"tree": "Events"}``)
    select: dict[str, str]
    entries: int
    keys: list[KeyReport] = field(default_factory=list)
    #: ``(key, other key, field name)``: keys left out of the spec because two give one name
    collisions: list[tuple[str, str, str]] = field(default_factory=list)
    #: float keys holding NaN or inf in the first ``sampled`` entries (read by inspect_source)
    nonfinite: list[str] = field(default_factory=list)
    sampled: int = 0

    @property
    def convertible(self) -> list[KeyReport]:
        return [k for k in self.keys if k.field is not None]


def _type_text(info: KeyInfo) -> str:
    if info.dtype is None:
        return info.typename or "unknown"
    shape = "".join(f"[{n}]" for n in info.shape)
    return f"{info.dtype}{'[]' if info.jagged else ''}{shape}"


def _refusal(info: KeyInfo) -> str:
    """Why a key cannot be stored, in a few words."""
    text = info.typename.lower()
    if any(s in text for s in ("string", "char", "tstring")) or re.fullmatch(
        r"[|<>=]?[sua]\d*", text
    ):
        return "strings are not stored"
    if text.count("var *") > 1 or "vector<std::vector" in text or "vector<vector" in text:
        return "two levels of lists are not stored"
    if info.length == 0:
        return "holds no rows"
    return "objects are not stored (numbers, bools, fixed-size arrays of them, one level of lists)"


def _joinable(reader: SourceReader, info: KeyInfo) -> bool:
    """True when ``collection = info.name`` would convert: members of one kind and one counter."""
    members = [reader.info(m) for m in info.members]
    if not members:
        return False
    if len({m.jagged for m in members}) != 1:
        return False
    if any(len(m.shape) > 1 for m in members):
        return False
    if members[0].jagged:
        counters = {reader.counter(m.name) for m in members}
        return len(counters) == 1
    return True


def _report_key(reader: SourceReader, info: KeyInfo) -> KeyReport:
    typ = _type_text(info)
    if info.dtype is None and info.record:
        skipped = f"; {len(info.skipped)} not convertible" if info.skipped else ""
        joinable = _joinable(reader, info)
        detail = f"{len(info.members)} numeric members{skipped}" + (
            "" if joinable or not info.members else " (of mixed kinds: convert them one by one)"
        )
        return KeyReport(
            info.name,
            "record",
            typ if len(typ) <= 40 else typ[:37] + "...",
            detail,
            collection=info.members if joinable else (),
            collection_ragged=joinable and reader.info(info.members[0]).jagged,
        )
    if info.dtype is None:
        return KeyReport(info.name, "not convertible", typ, _refusal(info))
    if info.jagged:
        counter = reader.counter(info.name)
        detail = f"counter {counter}" if counter else "own list lengths"
        return KeyReport(info.name, "jagged", typ, detail)
    kind = "fixed-size" if info.shape else "flat"
    detail = ""
    if info.members:  # a ROOT counter branch
        detail = f"counter of {len(info.members)} jagged branches"
    return KeyReport(
        info.name, kind, typ, detail, collection=info.members, collection_ragged=bool(info.members)
    )


def _events(reader: SourceReader, infos: Sequence[KeyInfo]) -> int:
    """Events of the source: ROOT's entries, else the most common length of the storable keys."""
    for attr in ("n_entries", "n_rows"):  # ROOT; Parquet and pandas tables
        n = getattr(reader, attr, None)
        if n is not None:
            return int(n)
    lengths = Counter(i.length for i in infos if i.dtype is not None)
    return lengths.most_common(1)[0][0] if lengths else 0


def _sample(
    reader: SourceReader, keys: Sequence[KeyReport], n: int
) -> tuple[list[str], dict[str, str]]:
    """Read the first ``n`` entries of each key: float keys holding NaN/inf (which the writer
    refuses unless allowed), and keys that fail to read (a missing value, a damaged basket)."""
    nonfinite: list[str] = []
    failed: dict[str, str] = {}
    for rep in keys if n else ():
        info = reader.info(rep.key)
        try:
            value = reader.read([rep.key], 0, min(n, info.length))[rep.key]
        except FastloadError as exc:
            failed[rep.key] = f"reading its first {n} entries failed: {exc}"
            continue
        data = value.values if isinstance(value, Ragged) else value
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            nonfinite.append(rep.key)
    return nonfinite, failed


def _report(reader: SourceReader, path: str, select: dict[str, str], sample: int) -> SourceReport:
    infos = [reader.info(name) for name in reader.names()]
    entries = _events(reader, infos)
    keys: list[KeyReport] = []
    for info in infos:
        rep = _report_key(reader, info)
        if rep.kind not in ("record", "not convertible") and info.length != entries:
            rep = KeyReport(
                info.name,
                "not convertible",
                rep.type,
                f"{info.length} rows, not the {entries} events of the other keys",
            )
        keys.append(rep)
    report = SourceReport(
        path=path,
        format=reader.format,
        container=reader.what.split(" of ")[0] if " of " in reader.what else Path(path).name,
        select=select,
        entries=entries,
    )
    owner: dict[str, str] = {}
    for rep in keys:
        if rep.kind in ("record", "not convertible"):
            report.keys.append(rep)
            continue
        try:
            name = field_name(rep.key)
        except ConfigError:
            report.keys.append(
                KeyReport(rep.key, "not convertible", rep.type, "gives no field name")
            )
            continue
        if name in owner or name == "constants":
            report.collisions.append((rep.key, owner.get(name, name), name))
            report.keys.append(rep)
            continue
        owner[name] = rep.key
        report.keys.append(replace(rep, field=name))
    report.sampled = min(sample, entries)
    report.nonfinite, failed = _sample(reader, report.convertible, report.sampled)
    report.keys = [
        KeyReport(k.key, "not convertible", k.type, failed[k.key]) if k.key in failed else k
        for k in report.keys
    ]
    return report


def inspect_source(
    path: str | Path,
    *,
    format: str | None = None,
    tree: str | None = None,
    group: str | None = None,
    key: str | None = None,
    sample: int = 1000,
) -> list[SourceReport]:
    """Describe a source file: one :class:`SourceReport` per tree/RNTuple (ROOT), else one.

    Metadata only, except for the first ``sample`` entries of every convertible key, which are
    read to find NaN/inf (the starter spec then sets ``allow_nonfinite``) and keys that fail to
    read (listed as not convertible, with the error).

    Raises
    ------
    SourceFileError, SourceKeyError
        The file does not exist, cannot be read, or lacks the named tree/group/table.
    ModuleNotFoundError
        The format's optional package is missing (the message names its extra).
    """
    p = Path(path)
    fmt = infer_format(p, format)
    if not p.exists():
        raise SourceFileError(f"source {str(p)!r} does not exist")
    if fmt == "root" and tree is None:
        try:
            import uproot
        except ModuleNotFoundError:
            raise missing_dependency("uproot", "root") from None

        try:
            with uproot.open(p) as f:
                trees = root_trees(f)
        except Exception as exc:
            raise SourceFileError(f"cannot open {str(p)!r} as a ROOT file: {exc}") from exc
        if not trees:
            raise SourceKeyError(f"{str(p)!r} holds no TTree or RNTuple")
        selections = [{"tree": t} for t in trees]
    elif fmt == "root":
        selections = [{"tree": tree}]  # type: ignore[dict-item]
    else:
        selections = [{k: v for k, v in (("group", group), ("key", key)) if v is not None}]
    reports = []
    for select in selections:
        with open_reader(p, fmt, **select) as reader:  # type: ignore[arg-type]
            reports.append(_report(reader, str(p), select, sample))
    return reports


def _toml(text: str) -> str:
    return json.dumps(text)  # a TOML basic string: JSON's escapes are valid TOML


def _key_table(name: str) -> str:
    """``fields.NAME`` with NAME quoted when it is not a bare TOML key."""
    bare = all(c.isalnum() or c in "_-" for c in name) and name.isascii()
    return f"fields.{name}" if bare else f"fields.{_toml(name)}"


def starter_spec(report: SourceReport, *, files: str | None = None) -> str:
    """A spec (TOML) converting every convertible key of ``report``, one field each.

    ``files`` is the ``[source] files`` glob (default: the file's name, escaped, so that the
    spec works when saved beside the file or run with ``--source-dir`` its directory).
    """
    name = Path(report.path).stem
    glob_text = files if files is not None else glob.escape(Path(report.path).name)
    lines = [
        "[dataset]",
        f"name = {_toml(name)}",
        'task = "classification"        # or "regression"',
        "",
        "[source]",
        f"files = [{_toml(glob_text)}]   # globs, relative to the spec's directory or --source-dir",
        f"format = {_toml(report.format)}",
    ]
    lines += [f"{k} = {_toml(v)}" for k, v in report.select.items()]
    lines += [
        "",
        "# One field per convertible key.  A jagged key is a ragged field (values + offsets);",
        "# pad = N instead of ragged = true pads/truncates it to N entries with a mask.",
        "",
    ]
    for rep in report.convertible:
        assert rep.field is not None
        lines.append(f"[{_key_table(rep.field)}]")
        lines.append(f"source = {_toml(rep.key)}")
        if rep.kind == "jagged":
            lines.append("ragged = true")
        lines.append("")
    for key, other, name in report.collisions:
        lines += [
            f"# {key!r} would be field {name!r} too ({other!r} has that name); name it by hand:",
            f"# [fields.{name}_2]",
            f"# source = {_toml(key)}",
            "",
        ]
    records = [k for k in report.keys if k.collection]
    if records:
        lines += [
            "# Or the numeric members of a record as one multi-column field (rows of their",
            '# common dtype; dtype = "float32" chooses one), e.g.:',
            "",
        ]
        for rep in records:
            lines += [
                f"# [fields.{field_name(rep.key)}_all]",
                f"# collection = {_toml(rep.key)}   # {len(rep.collection)} columns",
            ]
            if rep.collection_ragged:
                lines.append("# ragged = true")
            lines.append("")
    if report.nonfinite:
        shown = ", ".join(report.nonfinite[:5]) + (", ..." if len(report.nonfinite) > 5 else "")
        lines += [
            "[store]",
            f"# NaN/inf in the first {report.sampled} entries of {len(report.nonfinite)} keys "
            f"({shown}): stored as they are",
            "allow_nonfinite = true",
            "",
        ]
    lines += [
        "[label]",
        'from = "none"                  # or from = "field", field = "NAME" (one of the fields)',
        "",
        "[split]",
        'by = "fraction"',
        "fractions = { train = 0.8, val = 0.1, test = 0.1 }",
        "seed = 0",
        "",
    ]
    return "\n".join(lines)


def render(reports: Sequence[SourceReport]) -> str:
    """The listing of :func:`inspect_source`'s reports, as TOML comment lines."""
    out: list[str] = []
    for report in reports:
        counts = Counter(k.kind for k in report.keys)
        summary = ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])
        out.append(
            f"# {report.path}: {report.container}, {report.entries} entries, "
            f"{len(report.keys)} keys ({summary})"
        )
        width = min(max((len(k.key) for k in report.keys), default=10), 40)
        for kind in KINDS:
            rows = [k for k in report.keys if k.kind == kind]
            if not rows:
                continue
            out.append(f"#   {kind}:")
            for k in rows:
                detail = f"  {k.detail}" if k.detail else ""
                target = f"  -> field {k.field}" if k.field is not None and k.field != k.key else ""
                out.append(f"#     {k.key:<{width}}  {k.type:<14}{detail}{target}".rstrip())
        for key, other, name in report.collisions:
            out.append(
                f"#   {key!r} and {other!r} both give field {name!r}: the spec leaves {key!r} out"
            )
        if report.nonfinite:
            out.append(
                f"#   NaN/inf in the first {report.sampled} entries of: {', '.join(report.nonfinite)}"
            )
        out.append("#")
    out.append(
        "# Field names: each run of characters other than letters, digits and '_' becomes one '_',"
    )
    out.append("# none at the ends (fastload.store.field_name).")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters inspect FILE [options]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m converters inspect",
        description="List the trees/RNTuples (ROOT), datasets (HDF5) or columns of a source file, "
        "which keys convert and why the others do not, and print a starter spec for "
        "`python -m converters generic`.",
    )
    parser.add_argument("file", help="a .root, .h5, .parquet, .npz or .npy file (or npy directory)")
    parser.add_argument("--format", help="the source format when the extension does not tell")
    parser.add_argument("--tree", help="ROOT: the TTree/RNTuple (default: every one is listed)")
    parser.add_argument("--group", help="HDF5: the group holding the datasets (default /)")
    parser.add_argument("--key", help="pandas: the HDFStore key of the table")
    parser.add_argument(
        "--files",
        metavar="GLOB",
        help="the spec's [source] files glob, e.g. '*.root' for every file like this one "
        "(default: this file's name)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=1000,
        metavar="N",
        help="entries of each convertible key read to find NaN/inf and unreadable keys "
        "(default 1000; 0 reads none)",
    )
    parser.add_argument(
        "--spec",
        metavar="PATH",
        help="write the starter spec to PATH (only the listing goes to stdout)",
    )
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        reports = inspect_source(
            args.file,
            format=args.format,
            tree=args.tree,
            group=args.group,
            key=args.key,
            sample=max(args.sample, 0),
        )
    except (SourceKeyError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SourceFileError as exc:
        missing = not Path(args.file).exists()
        print(f"error: {exc}", file=sys.stderr)
        return 2 if missing else 1
    except FastloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    listing = render(reports)
    chosen = reports[0]
    note = ""
    if len(reports) > 1:
        note = (
            f"# The spec below converts {chosen.container}; "
            "`inspect --tree NAME` writes one for another.\n"
        )
    spec = starter_spec(chosen, files=args.files)
    if args.spec:
        Path(args.spec).write_text(spec, encoding="utf-8")
        print(listing)
        print(f"# wrote the starter spec to {args.spec}")
    else:
        print(listing)
        print(note + "#\n# Starter spec: every convertible key as one field.\n")
        print(spec, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
