"""awkward arrays in and out of stores, and the one rule that turns keys into field names.

What a store holds maps onto awkward types as follows (docs/byod.md, "awkward arrays"):

* numbers ``N * float32`` and fixed-size lists ``N * 3 * float32`` are dense fields;
* one level of variable-length lists ``N * var * float32`` (or ``var * 3 * float32``)
  is a ragged field (:class:`~fastload.Ragged`: values + offsets);
* a record ``N * {pt: float32, ...}`` or a list of records ``N * var * {pt: ..., ...}``
  becomes one field per member, named by :func:`field_name` of the dotted path
  (``jets.pt`` -> ``jets_pt``); :meth:`Ragged.from_awkward` instead joins the numeric
  members of a list of records into one multi-column ragged field.

Option types (``?float32``, as Parquet and projections of records give them) are accepted
when no value is missing; a missing value is an error, never a silent fill.  awkward is
imported only when one of these functions runs (``fastload[root]``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastload._messages import missing_dependency
from fastload.errors import ConfigError, SchemaError
from fastload.store._ragged import Ragged

_INVALID = re.compile(r"[^A-Za-z0-9_]+")
_ENDS = re.compile(r"^[^A-Za-z0-9_]+|[^A-Za-z0-9_]+$")


# --------------------------------------------------------------------- the name rule
def field_name(key: str) -> str:
    """The store field name the converters (and records given to a writer) derive from ``key``.

    One rule: characters other than ASCII letters, digits and ``_`` are dropped at both
    ends, and each run of them inside is replaced by one ``_``.  A name made of letters,
    digits and ``_`` maps to itself; ``evt/ArrayF32[10]`` -> ``evt_ArrayF32_10``,
    ``Jet.PT`` -> ``Jet_PT``, ``_collection0.Muon_pt`` -> ``_collection0_Muon_pt``.

    Raises
    ------
    ConfigError
        ``key`` has no letter, digit or ``_`` at all.
    """
    name = _INVALID.sub("_", _ENDS.sub("", key))
    if not name:
        raise ConfigError(
            f"key {key!r} has no letter, digit or '_' to make a field name of; name the field by hand"
        )
    return name


def field_names(keys: Iterable[str], *, what: str = "keys") -> dict[str, str]:
    """``{key: field_name(key)}`` for several keys, refusing two keys that give one name.

    Raises
    ------
    ConfigError
        Two keys map to the same field name (the message names both and the rule), or a
        key gives no name at all.  ``what`` names the keys' owner in the message.
    """
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for key in keys:
        name = field_name(key)
        if name in owner:
            raise ConfigError(
                f"{what}: {owner[name]!r} and {key!r} both give the field name {name!r} "
                "(the rule replaces each run of characters other than letters, digits and '_' "
                "by one '_'); name one of them by hand"
            )
        owner[name] = key
        names[key] = name
    return names


# --------------------------------------------------------------------- awkward
def _awkward() -> Any:
    try:
        import awkward
    except ModuleNotFoundError:
        raise missing_dependency("awkward", "root") from None
    return awkward


def is_awkward(value: object) -> bool:
    """True for an ``ak.Array`` (never imports awkward: if it is not loaded, nothing is one)."""
    ak = sys.modules.get("awkward")
    return ak is not None and isinstance(value, ak.Array)


def _event_of(position: int, offsets_stack: Sequence[np.ndarray]) -> int:
    """The top-level entry holding row ``position`` of a content below nested lists."""
    for offsets in reversed(offsets_stack):
        position = int(np.searchsorted(offsets, position, side="right") - 1)
    return position


def _plain(layout: Any, path: str, where: str, stack: tuple[np.ndarray, ...] = ()) -> Any:
    """``layout`` with option/indexed nodes removed (none may be missing) and lists as offsets."""
    ak = _awkward()
    c = ak.contents
    while True:
        if layout.is_option:
            missing = np.asarray(layout.mask_as_bool(valid_when=False))
            if missing.any():
                first = int(np.argmax(missing))
                raise SchemaError(
                    f"{where}: {path!r} holds {int(missing.sum())} missing value(s) (None), the "
                    f"first in entry {_event_of(first, stack)}; fill them (ak.fill_none) or drop "
                    "them before writing"
                )
            layout = layout.project()
        elif layout.is_indexed:
            layout = layout.project()
        elif isinstance(layout, c.ListArray):
            layout = layout.to_ListOffsetArray64(True)
        elif isinstance(layout, c.EmptyArray):  # lists that are all empty: no type to keep
            layout = layout.to_NumpyArray(np.dtype(np.float64))
        else:
            break
    if layout.parameter("__array__") in ("string", "bytestring", "char", "byte"):
        raise SchemaError(f"{where}: {path!r} holds strings, which cannot be stored")
    if isinstance(layout, c.UnionArray):
        raise SchemaError(f"{where}: {path!r} mixes types (a union), which cannot be stored")
    if isinstance(layout, c.NumpyArray):
        return layout
    # only the referenced part of a content is checked and kept: a sliced array may hold
    # entries (a None among them) that none of its lists reaches
    if isinstance(layout, c.RegularArray):
        used = layout.content[: layout.size * len(layout)]
        return c.RegularArray(
            _plain(used, path, where, stack), layout.size, zeros_length=len(layout)
        )
    if isinstance(layout, c.ListOffsetArray):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        used = layout.content[int(offsets[0]) : int(offsets[-1])]
        offsets = offsets - offsets[0]
        content = _plain(used, path, where, (*stack, offsets))
        return c.ListOffsetArray(ak.index.Index64(offsets), content)
    if isinstance(layout, c.RecordArray):
        keys = layout.fields
        contents = [
            _plain(layout.content(k), f"{path}.{k}" if path else k, where, stack) for k in keys
        ]
        return c.RecordArray(contents, None if layout.is_tuple else keys, length=len(layout))
    raise SchemaError(f"{where}: {path!r} has type {layout.form.type}, which cannot be stored")


def _is_dense(layout: Any) -> bool:
    c = _awkward().contents
    while isinstance(layout, c.RegularArray):
        layout = layout.content
    return isinstance(layout, c.NumpyArray)


def _dense(layout: Any) -> np.ndarray:
    """Numbers or fixed-size lists of them as ``(n, *shape)``."""
    return np.asarray(_awkward().to_numpy(layout, allow_missing=False))


def _type(layout: Any) -> str:
    return str(layout.form.type)


def _expand(
    path: str,
    layout: Any,
    offsets: np.ndarray | None,
    out: dict[str, tuple[str, np.ndarray | Ragged]],
    where: str,
    top: str,
) -> None:
    """Fields of ``layout`` (under ``offsets`` when inside a list) into ``out``."""
    c = _awkward().contents
    if isinstance(layout, c.RecordArray):
        if not layout.fields:
            raise SchemaError(f"{where}: {path!r} is a record without members")
        for key in layout.fields:
            _expand(f"{path}.{key}" if path else key, layout.content(key), offsets, out, where, top)
        return
    if isinstance(layout, c.ListOffsetArray):
        if offsets is not None:
            raise SchemaError(
                f"{where}: {path!r} has type {_type(layout)} inside a list: two levels of "
                "variable-length lists cannot be stored (flatten one level, or store the inner "
                "lengths as a field of their own)"
            )
        _expand(path, layout.content, np.asarray(layout.offsets.data), out, where, top)
        return
    if not _is_dense(layout):
        raise SchemaError(
            f"{where}: {path!r} has type {_type(layout)}, which cannot be stored "
            "(numbers, fixed-size lists of them, one level of lists, records of those)"
        )
    values = _dense(layout)
    value: np.ndarray | Ragged = values if offsets is None else Ragged(values, offsets)
    name = top if path == top else field_name(path)
    if name in out:
        raise SchemaError(
            f"{where}: record members {out[name][0]!r} and {path!r} both give the field name "
            f"{name!r}; rename one of them"
        )
    out[name] = (path, value)


def fields_from_awkward(
    name: str, array: Any, *, where: str = "fields_from_awkward"
) -> dict[str, np.ndarray | Ragged]:
    """The store fields an awkward array becomes under ``name`` (what the writers store).

    Numbers and fixed-size lists give one dense field ``name``; one level of
    variable-length lists one ragged field ``name``; a record (or a list of records)
    one field per member, named ``field_name(f"{name}.{member}")`` (``jets.pt`` ->
    ``jets_pt``), nested records likewise; with ``name=""`` a record's members are named
    by ``field_name(member)`` alone.

    Raises
    ------
    SchemaError
        A type that cannot be stored (strings, unions, two levels of variable lists), a
        missing value (None), or two members giving one field name.
    ModuleNotFoundError
        awkward is not installed (names ``fastload[root]``).
    """
    ak = _awkward()
    layout = _plain(ak.to_layout(array, allow_record=False), name, where)
    out: dict[str, tuple[str, np.ndarray | Ragged]] = {}
    _expand(name, layout, None, out, where, name)
    return {k: v for k, (_, v) in out.items()}


def ragged_from_awkward(
    array: Any, *, dtype: Any = None, where: str = "Ragged.from_awkward"
) -> Ragged:
    """See :meth:`fastload.Ragged.from_awkward`."""
    ak = _awkward()
    layout = _plain(ak.to_layout(array, allow_record=False), "array", where)
    c = ak.contents
    if not isinstance(layout, c.ListOffsetArray):
        raise SchemaError(
            f"{where}: expected one level of variable-length lists (N * var * ...), got "
            f"{_type(layout)}; a dense array is written as it is (ak.to_numpy)"
        )
    offsets = np.asarray(layout.offsets.data)
    content = layout.content
    if isinstance(content, c.RecordArray):
        members = content.fields
        bad = [m for m in members if not isinstance(content.content(m), c.NumpyArray)]
        bad += [m for m in members if m not in bad and content.content(m).data.ndim != 1]
        if not members or bad:
            raise SchemaError(
                f"{where}: a list of records joins numeric members into one multi-column "
                f"field, but {bad or 'no member'} are not numbers "
                f"({_type(content)}); write the members as separate fields instead"
            )
        columns = [np.asarray(content.content(m).data) for m in members]
        target = np.dtype(dtype) if dtype is not None else np.result_type(*columns)
        values = np.stack(
            [
                _exact_cast(col, target, f"{where}: member {m!r}")
                for m, col in zip(members, columns, strict=True)
            ],
            axis=-1,
        )
        return Ragged(values, offsets)
    if not _is_dense(content):
        raise SchemaError(
            f"{where}: {_type(layout)} cannot be a ragged field (its rows must be numbers or "
            "fixed-size lists of them: one level of variable-length lists)"
        )
    values = _dense(content)
    if dtype is not None:
        values = _exact_cast(values, np.dtype(dtype), where)
    return Ragged(values, offsets)


def _exact_cast(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``values`` as ``dtype``; a cast that changes a value raises instead of rounding."""
    if values.dtype == dtype:
        return values
    out = values.astype(dtype)
    if not np.can_cast(values.dtype, dtype, casting="safe"):
        with np.errstate(invalid="ignore", over="ignore"):
            same = np.array_equal(
                out.astype(values.dtype), values, equal_nan=values.dtype.kind in "fc"
            )
        if not same:
            raise SchemaError(
                f"{what}: values of {values.dtype} change when cast to {dtype}; pass a wider dtype"
            )
    return out


def ragged_to_awkward(ragged: Ragged, columns: Sequence[str] | None = None) -> Any:
    """See :meth:`fastload.Ragged.to_awkward`."""
    ak = _awkward()
    values = np.ascontiguousarray(ragged.values)
    if columns is None:
        content: Any = ak.contents.NumpyArray(values)
    else:
        columns = list(columns)
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ConfigError(
                f"Ragged.to_awkward: columns names {len(columns)} members but the rows have "
                f"shape {values.shape[1:]}; give one name per entry of a 1-D row"
            )
        content = ak.contents.RecordArray(
            [
                ak.contents.NumpyArray(np.ascontiguousarray(values[:, i]))
                for i in range(len(columns))
            ],
            columns,
            length=len(values),
        )
    index = ak.index.Index64(np.ascontiguousarray(ragged.offsets, dtype=np.int64))
    return ak.Array(ak.contents.ListOffsetArray(index, content))
