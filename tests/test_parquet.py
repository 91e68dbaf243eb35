"""Parquet as a source of the generic converter: stored values equal ``ak.from_parquet``.

Files are written here with awkward (row groups smaller than the converter's blocks, so
blocks straddle row groups) and with pyarrow (nullable columns, as pandas and most tools
write them).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

import fastload as fl
from fastload.converters._sources import open_reader
from fastload.converters._spec import load_spec
from fastload.converters.generic import convert, plan_conversion, split_assignment
from fastload.converters.inspection import inspect_source, starter_spec
from fastload.errors import SourceFileError

pa = pytest.importorskip("pyarrow", reason="Parquet sources need pyarrow (fastload[parquet])")
pq = pytest.importorskip("pyarrow.parquet")

N = 300


def jets_file(path: Path) -> ak.Array:
    """N events: flat numbers, a fixed-size list, variable lists, a list of records, a string."""
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 7, N)
    total = int(counts.sum())
    events = ak.zip(
        {
            "weight": rng.normal(size=N).astype(np.float32),
            "run": np.arange(N, dtype=np.int64),
            "passed": rng.random(N) > 0.5,
            "met": ak.to_regular(rng.normal(size=(N, 2))),
            "jets": ak.unflatten(
                ak.zip(
                    {
                        "pt": rng.exponential(30, total).astype(np.float32),
                        "eta": rng.normal(0, 2, total).astype(np.float32),
                        "flavour": rng.integers(0, 6, total).astype(np.int32),
                    }
                ),
                counts,
            ),
            "tracks": ak.unflatten(rng.normal(size=total).astype(np.float64), counts),
            "label": ["a", "bb"] * (N // 2),
        },
        depth_limit=1,
    )
    ak.to_parquet(events, path, row_group_size=37)
    return events


def store_order(spec: object, source_dir: Path) -> dict[str, np.ndarray]:
    plan = plan_conversion(spec, source_dir)  # type: ignore[arg-type]
    out: dict[str, list[np.ndarray]] = {s: [] for s in plan.splits}
    for block in plan.blocks:
        which = split_assignment(plan, block)
        for i, split in enumerate(plan.splits):
            out[split].append(np.arange(block.start, block.stop)[which == i])
    return {s: np.concatenate(v) for s, v in out.items()}


def test_inspect_spec_converts_parquet_equal_to_ak_from_parquet(tmp_path: Path) -> None:
    """Every numeric column and record member, through inspect's spec, equals ak.from_parquet."""
    jets_file(tmp_path / "jets.parquet")
    (report,) = inspect_source(tmp_path / "jets.parquet")
    kinds = {k.key: k.kind for k in report.keys}
    assert kinds == {
        "weight": "flat",
        "run": "flat",
        "passed": "flat",
        "met": "fixed-size",
        "jets": "record",
        "jets.pt": "jagged",
        "jets.eta": "jagged",
        "jets.flavour": "jagged",
        "tracks": "jagged",
        "label": "not convertible",
    }
    text = starter_spec(report)
    declared = tomllib.loads(text)["fields"]
    assert declared["jets_pt"] == {"source": "jets.pt", "ragged": True}
    (tmp_path / "spec.toml").write_text(text)
    # blocks of 64 events straddle the row groups of 37
    spec = load_spec(
        tmp_path / "spec.toml", overrides=["store.chunk_len=16", "source.block_events=64"]
    )
    store = fl.open_store(convert(spec, tmp_path / "out.zarr", source_dir=tmp_path))
    expected = ak.from_parquet(tmp_path / "jets.parquet")
    order = store_order(spec, tmp_path)
    assert sum(len(v) for v in order.values()) == N
    for split, events in order.items():
        sp = store[split]
        for name, decl in declared.items():
            want = expected[events]
            for part in decl["source"].split("."):
                want = want[part]
            got = sp.read(name)
            if decl.get("ragged"):
                assert isinstance(got, fl.Ragged)
                assert ak.to_list(got.to_awkward()) == ak.to_list(want)
                assert got.values.dtype == ak.to_numpy(ak.flatten(want)).dtype
            else:
                np.testing.assert_array_equal(got, ak.to_numpy(want))
                assert got.dtype == ak.to_numpy(want).dtype


def test_parquet_record_as_one_collection_field(tmp_path: Path) -> None:
    events = jets_file(tmp_path / "jets.parquet")
    spec = load_spec(
        text="""
        [source]
        files = ["jets.parquet"]
        [fields.jets]
        collection = "jets"
        ragged = true
        dtype = "float32"
        [fields.jets_padded]
        collection = "jets"
        pad = 4
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { all = 1.0 }
        """
    )
    sp = fl.open_store(convert(spec, tmp_path / "c.zarr", source_dir=tmp_path))["all"]
    jets = sp.read("jets")
    flat = ak.flatten(events.jets)
    expected = np.stack([ak.to_numpy(flat[m]).astype(np.float32) for m in flat.fields], -1)
    np.testing.assert_array_equal(jets.values, expected)
    np.testing.assert_array_equal(jets.counts, ak.to_numpy(ak.num(events.jets)))
    assert ak.to_list(jets.to_awkward(columns=["pt", "eta", "flavour"])) == ak.to_list(
        ak.values_astype(events.jets, np.float32)
    )
    padded, mask = sp.read("jets_padded"), sp.read("jets_padded_mask")
    assert padded.shape == (N, 4, 3)
    assert padded.dtype == np.float64
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(ak.to_numpy(ak.num(events.jets)), 4))


def test_nullable_pyarrow_columns_convert_and_a_missing_value_is_refused(tmp_path: Path) -> None:
    """pyarrow writes nullable columns (?float64): fine without nulls, an error naming the row with one."""
    x = np.arange(50, dtype=np.float64)
    hits = [[float(i)] * (i % 4) for i in range(50)]
    pq.write_table(pa.table({"x": x, "hits": hits}), tmp_path / "ok.parquet", row_group_size=8)
    with open_reader(tmp_path / "ok.parquet") as reader:
        assert reader.info("hits").jagged
    spec = load_spec(
        text="""
        [source]
        files = ["ok.parquet"]
        [fields.x]
        source = "x"
        [fields.hits]
        source = "hits"
        ragged = true
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { all = 1.0 }
        """
    )
    sp = fl.open_store(convert(spec, tmp_path / "ok.zarr", source_dir=tmp_path))["all"]
    np.testing.assert_array_equal(sp.read("x"), x)
    assert ak.to_list(sp.read("hits").to_awkward()) == hits
    x_null = pa.array([*x[:30], None, *x[31:]])
    pq.write_table(pa.table({"x": x_null, "hits": hits}), tmp_path / "ok.parquet")
    with pytest.raises(SourceFileError, match=r"'x' holds 1 missing value\(s\) \(None\).*entry 30"):
        convert(spec, tmp_path / "bad.zarr", source_dir=tmp_path)
    assert not (tmp_path / "bad.zarr").exists()
    # inspect reads the first entries of each key: the column with a None is left out, and why
    (report,) = inspect_source(tmp_path / "ok.parquet")
    (x_report,) = [k for k in report.keys if k.key == "x"]
    assert x_report.kind == "not convertible"
    assert "missing value" in x_report.detail
    assert list(tomllib.loads(starter_spec(report))["fields"]) == ["hits"]


def test_parquet_reader_reads_across_row_groups_and_keeps_the_last(tmp_path: Path) -> None:
    events = jets_file(tmp_path / "jets.parquet")
    with open_reader(tmp_path / "jets.parquet") as reader:
        assert reader.format == "parquet"
        got = reader.read(["run", "jets.pt"], 30, 80)  # row groups 0, 1 and 2
        np.testing.assert_array_equal(got["run"], np.arange(30, 80))
        assert ak.to_list(got["jets.pt"].to_awkward()) == ak.to_list(events.jets.pt[30:80])
        assert reader.counter("jets.pt") == "jets"
        assert reader.info("jets").members == ("jets.pt", "jets.eta", "jets.flavour")
        assert reader.info("label").dtype is None
        np.testing.assert_array_equal(reader.read(["run"], 299, 300)["run"], [299])
