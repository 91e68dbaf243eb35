"""Store format v1: open_store refuses anything that is not a sound store, with a specific error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import edit_json, edit_root_attrs, make_block

import fastload as fl
from fastload.errors import (
    CorruptStoreError,
    FieldNotFoundError,
    IncompleteStoreError,
    SplitNotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from fastload.store import probe_store


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A sound store with a dense and a ragged field in two splits."""
    rng = np.random.default_rng(3)
    path = tmp_path / "s.zarr"
    fl.write_arrays(path, {"train": make_block(rng, 40), "val": make_block(rng, 10)}, chunk_len=8)
    assert isinstance(fl.open_store(path), fl.Store)
    return path


def _group(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r+")


def test_missing_path(tmp_path: Path) -> None:
    """Nothing at the path: StoreNotFoundError, which is also a FileNotFoundError."""
    with pytest.raises(StoreNotFoundError, match=r"no store at .*nothing\.zarr") as info:
        fl.open_store(tmp_path / "nothing.zarr")
    assert isinstance(info.value, FileNotFoundError)
    assert probe_store(tmp_path / "nothing.zarr") == "missing"


def test_not_a_zarr_group(tmp_path: Path) -> None:
    """A plain directory or file is not a store."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data.csv").write_text("1,2")
    (tmp_path / "file").write_text("x")
    for target in ("dir", "file"):
        with pytest.raises(StoreError, match=f"{target}' is not a Zarr v3 group"):
            fl.open_store(tmp_path / target)
        assert probe_store(tmp_path / target) == "foreign"


def test_zarr_group_without_fastload_attrs(tmp_path: Path) -> None:
    """A valid Zarr group written by someone else is recognised as not ours."""
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("x", data=np.arange(3))
    with pytest.raises(StoreError, match=r"g\.zarr' is a Zarr group but not a fastload store"):
        fl.open_store(tmp_path / "g.zarr")
    assert probe_store(tmp_path / "g.zarr") == "foreign"


@pytest.mark.parametrize("version", [3, 0, "1", None, True])
def test_unknown_format_version(store_path: Path, version: object) -> None:
    """A format version other than 1 or 2 (2: sharded arrays) is refused before anything else is read."""
    edit_root_attrs(store_path, lambda a: a.update(format=version))
    with pytest.raises(
        UnsupportedFormatError, match=f"format version {version!r}.*reads versions 1, 2"
    ):
        fl.open_store(store_path)


def test_incomplete_flag(store_path: Path) -> None:
    """complete=false (an interrupted in-place write) gives IncompleteStoreError."""
    edit_root_attrs(store_path, lambda a: a.pop("complete"))
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        fl.open_store(store_path)


def test_malformed_schema(store_path: Path) -> None:
    """Schema JSON of the wrong structure is corruption, not a crash."""
    edit_root_attrs(store_path, lambda a: a.update(fields=["X", "y"]))
    with pytest.raises(CorruptStoreError, match="malformed schema"):
        fl.open_store(store_path)


def test_missing_split_group(store_path: Path) -> None:
    """A split named in the schema must exist as a group."""
    shutil.rmtree(store_path / "val")
    with pytest.raises(CorruptStoreError, match=r"split 'val'.*group 'val' is missing"):
        fl.open_store(store_path)


def test_missing_field_array(store_path: Path) -> None:
    """Every field must exist in every split."""
    shutil.rmtree(store_path / "train" / "img")
    with pytest.raises(
        CorruptStoreError, match=r"split 'train', field 'img'.*array 'train/img' is missing"
    ):
        fl.open_store(store_path)


def test_field_length_mismatch(store_path: Path) -> None:
    """A dense array whose length differs from the split's n."""
    _group(store_path)["val/y"].resize((9,))
    with pytest.raises(
        CorruptStoreError, match=r"split 'val', field 'y'.*9 samples.*n=10.*length mismatch"
    ):
        fl.open_store(store_path)


def test_split_sample_count_mismatch(store_path: Path) -> None:
    """The root schema and the split group disagree on n."""
    edit_json(
        store_path / "train" / "zarr.json", lambda m: m["attributes"]["fastload"].update(n=41)
    )
    with pytest.raises(CorruptStoreError, match=r"split 'train'.*n=41.*n=40"):
        fl.open_store(store_path)


def test_chunk_length_mismatch(store_path: Path) -> None:
    """Every dense field of a split must use the split's chunk length."""
    edit_json(
        store_path / "train" / "X" / "zarr.json",
        lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[16, 3, 4]),
    )
    with pytest.raises(
        CorruptStoreError, match=r"split 'train', field 'X'.*chunk length 16.*split's 8"
    ):
        fl.open_store(store_path)


def test_invalid_chunk_length_in_schema(store_path: Path) -> None:
    """A chunk length below 1 would divide by zero later: refused at open."""
    edit_root_attrs(store_path, lambda a: a["splits"]["val"].update(chunk_len=0))
    with pytest.raises(CorruptStoreError, match=r"split 'val'.*chunk_len=0"):
        fl.open_store(store_path)


def test_dtype_or_shape_mismatch(store_path: Path) -> None:
    """The schema's dtype and per-sample shape must match the arrays'."""
    edit_root_attrs(store_path, lambda a: a["fields"]["X"].update(dtype="<f8"))
    with pytest.raises(CorruptStoreError, match=r"field 'X'.*float32\(3, 4\).*float64\(3, 4\)"):
        fl.open_store(store_path)


def test_ragged_offsets_end_inconsistent(store_path: Path) -> None:
    """The last offset must equal the number of values."""
    offsets = _group(store_path)["train/hits/offsets"]
    offsets[40] = int(offsets[40]) + 1
    with pytest.raises(
        CorruptStoreError, match=r"split 'train', field 'hits'.*ragged offsets are inconsistent"
    ):
        fl.open_store(store_path)


def test_ragged_offsets_count_inconsistent(store_path: Path) -> None:
    """A ragged field needs n+1 offsets."""
    _group(store_path)["val/hits/offsets"].resize((10,))
    with pytest.raises(
        CorruptStoreError, match=r"split 'val', field 'hits'.*10 offsets for 10 samples"
    ):
        fl.open_store(store_path)


def test_ragged_offsets_decreasing_inside(store_path: Path) -> None:
    """Inner offsets are checked when first read (a full scan is too costly at open)."""
    offsets = _group(store_path)["train/hits/offsets"]
    values = offsets[:]
    values[5] = values[-1] + 5
    offsets[:] = values
    split = fl.open_store(store_path)["train"]
    with pytest.raises(
        CorruptStoreError, match=r"split 'train', field 'hits': offsets are not non-decreasing"
    ):
        split.read("hits", 0, 3)


def test_corrupt_chunk_bytes(store_path: Path) -> None:
    """A chunk file that Blosc cannot decode names the chunk, array and store."""
    (store_path / "train" / "X" / "c" / "1" / "0" / "0").write_bytes(b"garbage" * 10)
    split = fl.open_store(store_path)["train"]
    with pytest.raises(CorruptStoreError, match=r"chunk 1 of 'train/X'.*s\.zarr"):
        split.read_chunk("X", 1)
    np.testing.assert_array_equal(split.read_chunk("X", 0).shape, (8, 3, 4))


def test_unknown_split_has_a_closest_name_hint(store_path: Path) -> None:
    """store['nope'] raises SplitNotFoundError (a KeyError) listing the closest names."""
    store = fl.open_store(store_path)
    with pytest.raises(
        SplitNotFoundError, match=r"split 'trian' not in store .*; closest: 'train'"
    ) as info:
        store["trian"]
    assert isinstance(info.value, KeyError)
    with pytest.raises(SplitNotFoundError, match=r"split 'nope'.*splits: \['train', 'val'\]"):
        store["nope"]
    assert "val" in store
    assert "nope" not in store


def test_unknown_field_has_a_closest_name_hint(store_path: Path) -> None:
    """Every per-field accessor raises FieldNotFoundError (a KeyError) with a hint."""
    split = fl.open_store(store_path)["train"]
    for call in (split.read, split.read_chunk, split.max_len, split.reader, split.offsets):
        args = ("hist", 0) if call == split.read_chunk else ("hist",)
        with pytest.raises(
            FieldNotFoundError, match=r"field 'hist' not in store .*closest: 'hits'"
        ) as info:
            call(*args)
        assert isinstance(info.value, KeyError)


def test_probe_store_classifies_locations(store_path: Path, tmp_path: Path) -> None:
    """probe_store: complete / incomplete / foreign / missing (an empty directory is missing)."""
    assert probe_store(store_path) == "complete"
    (tmp_path / "empty").mkdir()
    assert probe_store(tmp_path / "empty") == "missing"
    edit_root_attrs(store_path, lambda a: a.update(complete=False))
    assert probe_store(store_path) == "incomplete"
