"""Helpers shared by the store-format tests (imported as ``store_helpers``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import fastload as fl


def make_block(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """A block with dense fields of several dtypes/shapes and one ragged field."""
    counts = rng.integers(0, 4, size=n)
    if n:
        counts[0] = 0  # always include a zero-length sample
    return {
        "X": rng.normal(size=(n, 3, 4)).astype(np.float32),
        "y": rng.integers(0, 3, size=n).astype(np.int64),
        "w": rng.random(n),  # float64, per-sample shape ()
        "mask": rng.random((n, 2)) > 0.5,
        "img": rng.integers(0, 256, size=(n, 5, 5), dtype=np.uint8),
        "hits": fl.Ragged.from_counts(
            rng.normal(size=(int(counts.sum()), 2)).astype(np.float32), counts
        ),
    }


def concat_blocks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate blocks as make_block builds them (ragged fields included)."""
    out: dict[str, Any] = {}
    for name, first in blocks[0].items():
        if isinstance(first, fl.Ragged):
            counts = np.concatenate([b[name].counts for b in blocks])
            values = np.concatenate([b[name].rebased()[0] for b in blocks])
            out[name] = fl.Ragged.from_counts(values, counts)
        else:
            out[name] = np.concatenate([b[name] for b in blocks])
    return out


def assert_split_equal(split: fl.Split, expected: dict[str, Any]) -> None:
    """Every field of ``split`` reads back equal (values, dtype, shape) to ``expected``."""
    assert len(split) == len(next(iter(expected.values())))
    for name, want in expected.items():
        got = split.read(name)
        if isinstance(want, fl.Ragged):
            assert isinstance(got, fl.Ragged), name
            values, offsets = want.rebased()
            np.testing.assert_array_equal(got.offsets, offsets, err_msg=name)
            np.testing.assert_array_equal(got.values, values, err_msg=name)
            assert got.values.dtype == values.dtype, name
        else:
            want = np.asarray(want)
            assert got.dtype == want.dtype.newbyteorder("<"), name
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)


def store_files(path: Path, *, skip_root_meta: bool = True) -> dict[str, bytes]:
    """Every file of a store by relative path (the root zarr.json holds a timestamp)."""
    files = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and not (skip_root_meta and rel == "zarr.json"):
            files[rel] = f.read_bytes()
    return files


def root_attrs(path: Path) -> dict[str, Any]:
    return json.loads((path / "zarr.json").read_text())["attributes"]["fastload"]


def edit_json(file: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Tamper with a Zarr metadata file in place."""
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def edit_root_attrs(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    edit_json(path / "zarr.json", lambda meta: change(meta["attributes"]["fastload"]))


def siblings(path: Path) -> list[str]:
    """Names beside ``path`` (to spot leftover temporaries)."""
    return sorted(p.name for p in path.parent.iterdir())
