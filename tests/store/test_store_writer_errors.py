"""Store format v1: every bad input to the writer fails with a specific error naming where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_helpers import siblings

import fastload as fl
from fastload.errors import ConfigError, EmptyDatasetError, NonFiniteError, SchemaError


def _writer(tmp_path: Path, **options: Any) -> fl.StoreWriter:
    w = fl.create_store(tmp_path / "bad.zarr", **options)
    w.append("train", {"X": np.zeros((4, 3), np.float32), "y": np.zeros(4, np.int64)})
    return w


def test_unequal_field_lengths(tmp_path: Path) -> None:
    """Fields of one block must have equal lengths; the message lists each."""
    with fl.create_store(tmp_path / "bad.zarr") as w:
        with pytest.raises(SchemaError, match=r"split 'train'.*X=4, y=3.*bad\.zarr"):
            w.append("train", {"X": np.zeros((4, 3)), "y": np.zeros(3)})
        w.append("train", {"X": np.zeros((4, 3)), "y": np.zeros(4)})
    assert len(fl.open_store(tmp_path / "bad.zarr")["train"]) == 4  # the bad block left no trace


def test_scalar_field_value(tmp_path: Path) -> None:
    """A dense field without a sample axis is refused by name."""
    w = fl.create_store(tmp_path / "bad.zarr")
    with pytest.raises(SchemaError, match=r"field 'y' of split 'train'.*scalar"):
        w.append("train", {"X": np.zeros((4, 3)), "y": np.float64(1.0)})
    w.abort()


def test_unsafe_dtype_is_refused_and_safe_cast_accepted(tmp_path: Path) -> None:
    """A later block may widen into the field's dtype (safe cast) but never narrow it."""
    w = _writer(tmp_path)
    with pytest.raises(
        SchemaError, match=r"field 'X' of split 'train'.*float64 cannot be stored as float32"
    ):
        w.append("train", {"X": np.zeros((2, 3), np.float64), "y": np.zeros(2, np.int64)})
    with pytest.raises(
        SchemaError, match=r"field 'y' of split 'val'.*float32 cannot be stored as int64"
    ):
        w.append("val", {"X": np.zeros((2, 3), np.float32), "y": np.zeros(2, np.float32)})
    w.append("train", {"X": np.ones((2, 3), np.float16), "y": np.ones(2, np.int8)})
    w.close()
    split = fl.open_store(tmp_path / "bad.zarr")["train"]
    assert split.read("y").dtype == np.int64
    np.testing.assert_array_equal(split.read("y"), [0, 0, 0, 0, 1, 1])


def test_wrong_per_sample_shape(tmp_path: Path) -> None:
    """The per-sample shape is fixed by the first block."""
    w = _writer(tmp_path)
    with pytest.raises(SchemaError, match=r"field 'X' of split 'train'.*\(4,\) != expected \(3,\)"):
        w.append("train", {"X": np.zeros((2, 4), np.float32), "y": np.zeros(2, np.int64)})
    w.abort()


def test_missing_and_extra_fields_in_later_blocks(tmp_path: Path) -> None:
    """Every block must carry exactly the store's fields."""
    w = _writer(tmp_path)
    with pytest.raises(SchemaError, match=r"split 'val'.*missing \['y'\]"):
        w.append("val", {"X": np.zeros((2, 3), np.float32)})
    with pytest.raises(SchemaError, match=r"split 'train'.*unexpected \['z'\]"):
        w.append(
            "train",
            {"X": np.zeros((2, 3), np.float32), "y": np.zeros(2, np.int64), "z": np.zeros(2)},
        )
    with pytest.raises(SchemaError, match="empty block"):
        w.append("train", {})
    w.abort()


def test_declared_field_missing_from_data(tmp_path: Path) -> None:
    """A field declared up front must appear in the data."""
    w = fl.create_store(tmp_path / "bad.zarr", fields={"E": {"doc": "energy"}})
    with pytest.raises(SchemaError, match=r"declared fields \['E'\]"):
        w.append("train", {"X": np.zeros(2)})
    w.abort()


def test_ragged_vs_dense_mismatch(tmp_path: Path) -> None:
    """A field stays ragged or dense for the whole store."""
    w = fl.create_store(tmp_path / "bad.zarr")
    w.append("train", {"h": fl.Ragged.from_counts(np.zeros(3), [1, 2]), "d": np.zeros(2)})
    with pytest.raises(SchemaError, match=r"field 'h' of split 'train'.*expected ragged"):
        w.append("train", {"h": np.zeros(2), "d": np.zeros(2)})
    with pytest.raises(SchemaError, match=r"field 'd' of split 'train'.*expected a dense array"):
        w.append(
            "train",
            {
                "h": fl.Ragged.from_counts(np.zeros(3), [1, 2]),
                "d": fl.Ragged.from_counts(np.zeros(2), [1, 1]),
            },
        )
    w.abort()


def test_malformed_ragged_blocks() -> None:
    """Ragged offsets must be 1-D, integer, non-decreasing and index into the values."""
    with pytest.raises(SchemaError, match="non-decreasing"):
        fl.Ragged(np.zeros(5), np.array([0, 3, 2]))
    with pytest.raises(SchemaError, match="integers"):
        fl.Ragged(np.zeros(5), np.array([0.0, 1.0]))
    with pytest.raises(SchemaError, match="1-D"):
        fl.Ragged(np.zeros(5), np.zeros((2, 2), np.int64))
    with pytest.raises(SchemaError, match=r"span 2\.\.6 but values hold 5 rows"):
        fl.Ragged(np.zeros(5), np.array([2, 4, 6]))  # would silently drop a row if rebased
    with pytest.raises(IndexError):
        fl.Ragged.from_counts(np.zeros(3), [1, 2])[2]


@pytest.mark.parametrize("blocks", [[], [0], [0, 0]])
def test_empty_dataset(tmp_path: Path, blocks: list[int]) -> None:
    """No appends, or only zero-length blocks: no store, no temporary."""

    def write() -> None:
        with fl.create_store(tmp_path / "e.zarr") as w:
            for m in blocks:
                w.append("train", {"x": np.zeros((m, 2))})

    with pytest.raises(EmptyDatasetError, match=r"no samples were written to .*e\.zarr"):
        write()
    assert siblings(tmp_path / "e.zarr") == []


def test_zero_length_split_is_left_out(tmp_path: Path) -> None:
    """A split that only ever got zero-length blocks does not appear."""
    with fl.create_store(tmp_path / "s.zarr") as w:
        w.append("train", {"x": np.zeros((3, 2))})
        w.append("val", {"x": np.zeros((0, 2))})
    assert fl.open_store(tmp_path / "s.zarr").splits == ("train",)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused_by_default(tmp_path: Path, bad: float) -> None:
    """NaN/inf in float fields raise NonFiniteError naming field, split and sample."""
    x = np.zeros((5, 2), np.float32)
    x[3, 1] = bad
    w = fl.create_store(tmp_path / "n.zarr")
    with pytest.raises(NonFiniteError, match=r"field 'x' of split 'train' in .*n\.zarr.*sample 3"):
        w.append("train", {"x": x})
    counts = np.array([2, 0, 3])
    vals = np.zeros((5, 2), np.float64)
    vals[4, 0] = bad  # a row of the third sample
    with pytest.raises(NonFiniteError, match=r"field 'h' of split 'val'.*sample 2"):
        w.append("val", {"h": fl.Ragged.from_counts(vals, counts)})
    c = np.zeros(2, np.complex64)
    c[1] = complex(0, bad)
    with pytest.raises(NonFiniteError, match=r"field 'c'.*sample 1"):
        w.append("test", {"c": c})
    w.abort()


def test_nonfinite_accepted_when_allowed(tmp_path: Path) -> None:
    """allow_nonfinite=True stores NaN and inf as they are."""
    x = np.array([np.nan, np.inf, -np.inf, 1.0])
    fl.write_arrays(tmp_path / "n.zarr", {"train": {"x": x}}, allow_nonfinite=True)
    np.testing.assert_array_equal(fl.open_store(tmp_path / "n.zarr")["train"].read("x"), x)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("split", "../up"),
        ("split", ".hidden"),
        ("split", ""),
        ("split", "constants"),
        ("field", "a/b"),
        ("field", "zarr.json"),
    ],
)
def test_invalid_names(tmp_path: Path, kind: str, name: str) -> None:
    """Split and field names become directories: no separators, hidden or reserved names."""
    w = fl.create_store(tmp_path / "n.zarr")
    block = {name: np.zeros(2)} if kind == "field" else {"x": np.zeros(2)}
    with pytest.raises(SchemaError, match=f"{kind} name"):
        w.append(name if kind == "split" else "train", block)
    w.abort()
    assert not (tmp_path / "up").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codec": "snappy"}, "fl.create_store: codec must be one of"),
        ({"shuffle": "double"}, "shuffle must be one of"),
        ({"task": "ranking"}, "task must be one of"),
        ({"clevel": 12}, "clevel"),
        ({"chunk_len": 0}, "fl.create_store: chunk_len must be an integer >= 1"),
        ({"chunk_len": {"val": -2}}, r"chunk_len\['val'\]"),
        ({"chunk_bytes": 0}, "chunk_bytes"),
        ({"fields": {"y": {"role": "target"}}}, "role must be one of"),
    ],
)
def test_invalid_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    """Options are validated before anything is written: a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=message):
        fl.create_store(tmp_path / "o.zarr", **options)
    assert siblings(tmp_path / "o.zarr") == []


def test_non_numeric_dtypes_refused(tmp_path: Path) -> None:
    """Only bool, integer, float and complex fields can be stored."""
    w = fl.create_store(tmp_path / "o.zarr")
    with pytest.raises(SchemaError, match=r"field 's'.*cannot be stored"):
        w.append("train", {"s": np.array(["a", "b"])})
    w.abort()
    w = fl.create_store(tmp_path / "o.zarr")
    with pytest.raises(SchemaError, match=r"field 'o'.*cannot be stored"):
        w.append("train", {"o": np.array([{}, {}], dtype=object)})
    w.abort()


def test_closed_writer_refuses_appends(tmp_path: Path) -> None:
    """After close or abort, the writer accepts nothing; close after abort does not pretend success."""
    w = _writer(tmp_path)
    assert w.close() == str(tmp_path / "bad.zarr")
    assert w.close() == str(tmp_path / "bad.zarr")  # idempotent
    with pytest.raises(SchemaError, match="closed"):
        w.append("train", {"X": np.zeros((1, 3), np.float32), "y": np.zeros(1, np.int64)})
    w2 = fl.create_store(tmp_path / "other.zarr")
    w2.abort()
    w2.abort()
    with pytest.raises(fl.errors.StoreWriteError, match="aborted"):
        w2.close()
    assert not (tmp_path / "other.zarr").exists()


def test_caller_may_reuse_its_block_buffer(tmp_path: Path) -> None:
    """The writer copies pending rows: refilling the same buffer for the next block is safe."""
    buf = np.empty((3, 2), np.float32)  # smaller than a chunk: rows stay pending between appends
    with fl.create_store(tmp_path / "b.zarr", chunk_len=8) as w:
        for i in range(5):
            buf[:] = i
            w.append("train", {"x": buf})
    got = fl.open_store(tmp_path / "b.zarr")["train"].read("x")
    np.testing.assert_array_equal(got[:, 0], np.repeat(np.arange(5), 3))
