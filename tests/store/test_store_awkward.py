"""awkward arrays in and out: write_arrays/create_store take ak.Array, Ragged converts both ways.

Round trips of numbers, fixed-size lists, one level of variable lists and records, each read
back through a fresh ``open_store`` and compared with the awkward array written; what a
store cannot hold (strings, None, lists of lists) is refused by name, never filled in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError, SchemaError
from fastload.store import fields_from_awkward

ak = pytest.importorskip("awkward", reason="awkward arrays need fastload[root]")

N = 57


def events(rng: np.random.Generator) -> ak.Array:
    counts = rng.integers(0, 6, N)
    total = int(counts.sum())
    return ak.zip(
        {
            "energy": rng.normal(size=N).astype(np.float32),
            "n": counts.astype(np.int32),
            "pos": ak.to_regular(rng.normal(size=(N, 3))),
            "image": ak.to_regular(rng.integers(0, 9, (N, 2, 4)).astype(np.uint8), axis=2),
            "hits": ak.unflatten(rng.normal(size=total).astype(np.float32), counts),
            "cells": ak.unflatten(ak.to_regular(rng.normal(size=(total, 2))), counts),
            "jets": ak.unflatten(
                ak.zip(
                    {
                        "pt": rng.exponential(20, total).astype(np.float32),
                        "q": rng.choice([-1, 1], total).astype(np.int8),
                        "p4": ak.zip({"px": rng.normal(size=total), "py": rng.normal(size=total)}),
                    }
                ),
                counts,
            ),
        },
        depth_limit=1,
    )


def reopen(path: Path) -> fl.Split:
    return fl.open_store(path)["train"]


def test_numbers_fixed_lists_var_lists_and_records_round_trip(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    ev = events(rng)
    path = fl.write_arrays(
        tmp_path / "a.zarr",
        {
            "train": {
                "energy": ev.energy,
                "pos": ev.pos,
                "image": ev.image,
                "hits": ev.hits,
                "cells": ev.cells,
                "jets": ev.jets,
                "y": np.arange(N) % 2,
            }
        },
        chunk_len=8,
    )
    store = fl.open_store(path)
    assert {k: (f.shape, str(f.dtype), f.ragged) for k, f in store.fields.items()} == {
        "energy": ((), "float32", False),
        "pos": ((3,), "float64", False),
        "image": ((2, 4), "uint8", False),
        "hits": ((), "float32", True),
        "cells": ((2,), "float64", True),
        "jets_pt": ((), "float32", True),
        "jets_q": ((), "int8", True),
        "jets_p4_px": ((), "float64", True),
        "jets_p4_py": ((), "float64", True),
        "y": ((), "int64", False),
    }
    sp = store["train"]
    np.testing.assert_array_equal(sp.read("energy"), ak.to_numpy(ev.energy))
    np.testing.assert_array_equal(sp.read("pos"), ak.to_numpy(ev.pos))
    np.testing.assert_array_equal(sp.read("image"), ak.to_numpy(ev.image))
    for field, original in (
        ("hits", ev.hits),
        ("cells", ev.cells),
        ("jets_pt", ev.jets.pt),
        ("jets_q", ev.jets.q),
        ("jets_p4_px", ev.jets.p4.px),
    ):
        back = sp.read(field).to_awkward()
        assert back.type == original.type, field
        assert ak.to_list(back) == ak.to_list(original), field
    # a sample range reads back as the same slice
    assert ak.to_list(sp.read("hits", 10, 20).to_awkward()) == ak.to_list(ev.hits[10:20])


def test_a_record_array_as_the_whole_block_gives_one_field_per_member(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    ev = events(rng)[["energy", "n", "hits", "jets"]]
    with fl.create_store(tmp_path / "b.zarr", chunk_len=16) as writer:
        writer.append("train", ev[:20])  # several blocks, appended as awkward records
        writer.append("train", ev[20:])
    sp = reopen(tmp_path / "b.zarr")
    assert set(sp.store.fields) == {
        "energy",
        "n",
        "hits",
        "jets_pt",
        "jets_q",
        "jets_p4_px",
        "jets_p4_py",
    }
    np.testing.assert_array_equal(sp.read("n"), ak.to_numpy(ev.n))
    assert ak.to_list(sp.read("jets_q").to_awkward()) == ak.to_list(ev.jets.q)


def test_ragged_from_awkward_joins_record_members_into_one_multi_column_field(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    ev = events(rng)
    flat = ev.jets[["pt", "q"]]
    joined = fl.Ragged.from_awkward(flat)
    assert joined.values.shape == (int(ak.sum(ak.num(flat))), 2)
    assert joined.values.dtype == np.float32  # result_type(float32, int8)
    fl.write_arrays(tmp_path / "c.zarr", {"train": {"jets": joined}})
    back = reopen(tmp_path / "c.zarr").read("jets")
    assert (
        back.to_awkward(columns=["pt", "q"]).tolist() == ak.values_astype(flat, np.float32).tolist()
    )
    as_int = fl.Ragged.from_awkward(ev.jets[["q"]], dtype="int16")
    assert as_int.values.dtype == np.int16
    with pytest.raises(SchemaError, match="change when cast to int8"):
        fl.Ragged.from_awkward(ev.jets[["pt"]], dtype="int8")
    with pytest.raises(SchemaError, match=r"\['p4'\] are not numbers"):
        fl.Ragged.from_awkward(ev.jets)
    with pytest.raises(SchemaError, match="one level of variable-length lists"):
        fl.Ragged.from_awkward(ev.energy)


def test_to_awkward_shares_memory_and_keeps_offsets_not_starting_at_zero() -> None:
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    r = fl.Ragged(values, np.array([1, 3, 3, 6]))
    a = r.to_awkward()
    assert str(a.type) == "3 * var * 2 * float32"
    assert a.tolist() == [[[2, 3], [4, 5]], [], [[6, 7], [8, 9], [10, 11]]]
    assert np.shares_memory(ak.to_numpy(a.layout.content), values)
    assert fl.Ragged.from_awkward(a).counts.tolist() == [2, 0, 3]
    with pytest.raises(ConfigError, match="columns names 3 members"):
        r.to_awkward(columns=["a", "b", "c"])
    assert fl.Ragged.from_awkward(ak.Array([[], []])).values.shape == (0,)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (["ab", "c"], "holds strings"),
        ([[1.0, None], [2.0]], r"1 missing value\(s\) \(None\), the first in entry 0"),
        ([[[1, 2]], [[3]]], "two levels of variable-length lists"),
        ([1, "x"], "a union"),
        ([{"a": "x"}], r"'v\.a' holds strings"),
    ],
)
def test_what_a_store_cannot_hold_is_refused_by_name(
    tmp_path: Path, array: list, message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        fl.write_arrays(tmp_path / "x.zarr", {"train": {"v": ak.Array(array)}})
    assert not (tmp_path / "x.zarr").exists()


def test_options_without_missing_values_are_stored() -> None:
    opt = ak.Array([[1.0, None], [2.0]])[:, :1]  # ?float64 with nothing missing in view
    assert str(opt.type) == "2 * var * ?float64"
    (value,) = fields_from_awkward("v", opt).values()
    assert value.to_awkward().tolist() == [[1.0], [2.0]]
    masked = ak.mask(ak.Array([1, 2, 3]), [True, True, True])
    np.testing.assert_array_equal(fields_from_awkward("m", masked)["m"], [1, 2, 3])


def test_record_members_that_collide_with_a_field_are_refused(tmp_path: Path) -> None:
    rec = ak.Array([{"pt": 1.0}])
    with pytest.raises(SchemaError, match=r"'jets' and 'jets_pt' both give field 'jets_pt'"):
        fl.write_arrays(tmp_path / "x.zarr", {"train": {"jets": rec, "jets_pt": np.ones(1)}})
    with pytest.raises(SchemaError, match="must be a record array"):
        fl.write_arrays(tmp_path / "x.zarr", {"train": ak.Array([1, 2])})
