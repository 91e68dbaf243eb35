"""A feed's configuration as JSON, and the check that a consumer asked for the same one.

Only settings that change which samples a batch holds, or what its arrays are,
are compared: the sources (where, how many samples, chunking), batch size,
shuffle, seed, window, drop_last, ranks, fields, padding, which ragged fields
arrive as values + offsets, and the transform.
Worker count, prefetch and timeouts do not change batches and are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fastload._spec import FieldSpec
from fastload.errors import FeedConfigError
from fastload.loader import Loader
from fastload.mix import Mix

#: settings a consumer may state (``fl.attach(name, batch_size=..., ...)``)
COMPARED = (
    "source",
    "batch_size",
    "shuffle",
    "seed",
    "window_chunks",
    "drop_last",
    "fields",
    "transform",
    "pad",
    "ragged",
    "mode",
)


def describe_sources(source: Any) -> list[list[Any]]:
    """``[[where, n, chunk_len], ...]`` of a source or of a mix's sources."""
    sources = list(source.sources.values()) if isinstance(source, Mix) else [source]
    out = []
    for s in sources:
        url = getattr(s, "url", None)
        out.append(
            [url if isinstance(url, str) else str(getattr(s, "name", s)), len(s), s.chunk_len]
        )
    return out


def describe_transform(transform: Any) -> str | None:
    if transform is None:
        return None
    cls = type(transform)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_config(loader: Loader, source: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    order = loader._order
    return {
        "source": describe_sources(source),
        "batch_size": order.batch_size,
        "shuffle": order.shuffle,
        "seed": order.seed,
        "window_chunks": order.window_chunks,
        "drop_last": order.drop_last,
        "fields": list(loader.fields),
        "transform": describe_transform(options.get("transform")),
        "pad": {k: int(v) for k, v in loader._spec.ragged_lengths.items()},
        "ragged": {k: "offsets" for k in loader._spec.packed_rows},
    }


def describe_specs(specs: Mapping[str, FieldSpec]) -> dict[str, dict[str, Any]]:
    """Every field's :class:`FieldSpec` as JSON: shape, dtype, ragged flag and row bounds."""
    return {
        name: {
            "shape": list(s.shape),
            "dtype": np.dtype(s.dtype).str,
            "ragged": s.ragged,
            "max_len": s.max_len,
            "max_rows": s.max_rows,
        }
        for name, s in specs.items()
    }


def read_specs(described: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """The specs :func:`describe_specs` wrote (equal, bounds included)."""
    return {
        name: FieldSpec(
            tuple(d["shape"]),
            np.dtype(d["dtype"]),
            ragged=bool(d["ragged"]),
            max_len=d["max_len"],
            max_rows=d["max_rows"],
        )
        for name, d in described.items()
    }


def check_request(name: str, info: Mapping[str, Any], asked: Mapping[str, Any]) -> None:
    """Raise :class:`FeedConfigError` naming the first setting that differs from the feed's."""
    config = info["config"]
    for key, value in asked.items():
        if value is None:
            continue
        if key == "mode":
            theirs: Any = info["mode"]
            mine: Any = value
        elif key == "source":
            theirs, mine = config["source"], describe_sources(value)
        elif key == "transform":
            theirs, mine = config["transform"], describe_transform(value)
        elif key == "fields":
            theirs, mine = config["fields"], list(value)
        elif key == "pad":
            theirs = config["pad"]
            mine = {**theirs, **{k: int(v) for k, v in value.items()}}
        elif key == "ragged":  # fields not named keep the feed's mode; "pad" is the default
            theirs = config["ragged"]
            merged = {**theirs, **{k: str(v) for k, v in value.items()}}
            mine = {k: v for k, v in merged.items() if v != "pad"}
        else:
            theirs, mine = config[key], value
        if mine != theirs:
            raise FeedConfigError(
                f"feed {name!r} has {key}={theirs!r}, this consumer asked for {key}={mine!r}; "
                f"attach with {key}={theirs!r} (or omit it), or start a feed with your settings "
                "under another name"
            )
