"""Ragged fields: value chunks sized from the field's rows per sample chunk (docs/store-format.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import store_files

import fastload as fl
from fastload.errors import ConfigError
from fastload.store import FieldInfo, StoreLayout, _schema, choose_chunk_len
from fastload.store._schema import VALUE_CHUNKS_PER_EVENT_CHUNK, value_chunk_len

HITS = FieldInfo("hits", (2,), np.dtype("<f4"), ragged=True)  # 8-byte rows


@pytest.fixture
def small_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-byte minimum value chunk, so that small test data reach the statistics rule."""
    monkeypatch.setattr(_schema, "MIN_VALUE_CHUNK_BYTES", 64)


def _values_chunk(path: Path, split: str = "train", field: str = "hits") -> int:
    return int(zarr.open_group(str(path), mode="r")[f"{split}/{field}/values"].chunks[0])


def _ragged(rng: np.random.Generator, n: int, mean: float) -> fl.Ragged:
    counts = rng.poisson(mean, n)
    return fl.Ragged.from_counts(rng.normal(size=(int(counts.sum()), 2)).astype(np.float32), counts)


def test_without_statistics_the_rule_of_chunk_bytes_alone() -> None:
    """No rows known (or none): the rule stores were written with before the statistics."""
    for rows in (None, 0, 0.0, float("nan")):
        assert value_chunk_len(HITS, 2**22, rows) == choose_chunk_len(8, 2**22) == 2**19


@given(
    rows=st.floats(0.5, 1e9, allow_nan=False),
    chunk_bytes=st.integers(1, 2**26),
    row_items=st.integers(1, 64),
)
def test_rule_bounds_and_determinism(rows: float, chunk_bytes: int, row_items: int) -> None:
    """A power of two within [min(cap, floor), cap]; between them, the largest <= rows / k."""
    info = FieldInfo("v", (row_items,), np.dtype("<f4"), ragged=True)
    got = value_chunk_len(info, chunk_bytes, rows)
    assert got == value_chunk_len(info, chunk_bytes, rows)  # deterministic
    assert got >= 1
    assert got & (got - 1) == 0
    cap = choose_chunk_len(4 * row_items, chunk_bytes)
    floor = choose_chunk_len(4 * row_items, _schema.MIN_VALUE_CHUNK_BYTES)
    assert min(cap, floor) <= got <= cap
    if floor < got < cap:
        assert got <= rows / VALUE_CHUNKS_PER_EVENT_CHUNK < 2 * got
        # an event chunk of ~rows rows overlaps at most rows / got + 1 value chunks
        assert (rows + got) / rows <= (
            VALUE_CHUNKS_PER_EVENT_CHUNK + 1
        ) / VALUE_CHUNKS_PER_EVENT_CHUNK


def test_ahcal_like_field_gets_quarter_chunks() -> None:
    """~224k rows of 16 bytes per event chunk: 32,768-row (512 KiB) value chunks, not 262,144."""
    hits = FieldInfo("hits", (4,), np.dtype("<f4"), ragged=True)
    assert value_chunk_len(hits) == 2**18
    assert value_chunk_len(hits, rows_per_event_chunk=1024 * 219.0) == 2**15
    # small events: the floor (512 KiB), not thousands of tiny chunks
    assert value_chunk_len(hits, rows_per_event_chunk=1024 * 3.0) == 2**15


def test_explicit_value_chunk_len_wins_and_is_checked(tmp_path: Path) -> None:
    layout = StoreLayout({"hits": HITS}, value_chunk_len=96)
    assert layout.value_chunk_rows("hits", 1e6) == 96
    per_field = StoreLayout({"hits": HITS, "b": HITS}, value_chunk_len={"b": 7})
    assert per_field.value_chunk_rows("b") == 7
    assert per_field.value_chunk_rows("hits") == choose_chunk_len(8)
    with pytest.raises(ConfigError, match="value_chunk_len"):
        StoreLayout({"hits": HITS}, value_chunk_len=0)
    with pytest.raises(ConfigError, match=r"value_chunk_len\['hits'\]"):
        fl.create_store(tmp_path / "x.zarr", value_chunk_len={"hits": -1})
    rng = np.random.default_rng(0)
    data = {"hits": _ragged(rng, 50, 3.0)}
    fl.write_arrays(tmp_path / "s.zarr", {"train": data}, value_chunk_len=13)
    assert _values_chunk(tmp_path / "s.zarr") == 13
    got = fl.open_store(tmp_path / "s.zarr")["train"].read("hits")
    np.testing.assert_array_equal(got.values, data["hits"].values)


def test_serial_writer_sizes_values_from_sample_chunk_zero(
    tmp_path: Path, small_floor: None
) -> None:
    """Value chunks of ~1/4 of chunk 0's rows; every sample reads back; few chunks per event chunk."""
    rng = np.random.default_rng(3)
    hits = _ragged(rng, 1000, 20.0)
    data = {"hits": hits, "y": np.arange(1000)}
    fl.write_arrays(tmp_path / "s.zarr", {"train": data}, chunk_len=64)
    rows0 = int(hits.offsets[64])
    vlen = _values_chunk(tmp_path / "s.zarr")
    assert vlen == value_chunk_len(HITS, _schema.DEFAULT_CHUNK_BYTES, rows0)
    assert vlen <= rows0 / 4 < 2 * vlen
    split = fl.open_store(tmp_path / "s.zarr")["train"]
    got = split.read("hits")
    np.testing.assert_array_equal(got.offsets, hits.offsets)
    np.testing.assert_array_equal(got.values, hits.values)
    decoder = split.decoder("hits")
    assert isinstance(decoder, fl.store.RaggedDecoder)
    decoded = sum(np.subtract(*decoder.value_chunk_span(c)[::-1]) for c in range(decoder.n_chunks))
    assert decoded * vlen <= 1.5 * len(hits.values)  # was ~2x with chunks of chunk_bytes
    for c in range(decoder.n_chunks):  # every event chunk decodes to its samples
        values = np.empty((decoder.capacity_rows(), 2), np.float32)
        offsets = np.empty(65, np.int64)
        n = decoder.decode_into(c, values, offsets)
        for i in range(n):
            np.testing.assert_array_equal(values[offsets[i] : offsets[i + 1]], hits[c * 64 + i])


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    chunk_len=st.sampled_from([4, 16, 64]),
)
def test_any_block_partition_gives_the_same_value_chunks(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[int],
    chunk_len: int,
) -> None:
    """The value chunk length depends on the data and chunk_len, not on the blocks appended."""
    monkeypatch.setattr(_schema, "MIN_VALUE_CHUNK_BYTES", 64)
    rng = np.random.default_rng(sum(sizes))
    total = sum(sizes) + 1
    hits = _ragged(rng, total, 12.0)
    base = tmp_path_factory.mktemp("part")
    fl.write_arrays(base / "a.zarr", {"train": {"hits": hits}}, chunk_len=chunk_len)
    with fl.create_store(base / "b.zarr", name="a", chunk_len=chunk_len) as w:
        start = 0
        for m in [*sizes, 1]:
            w.append("train", {"hits": fl.Ragged(hits.values, hits.offsets[start : start + m + 1])})
            start += m
    assert store_files(base / "a.zarr") == store_files(base / "b.zarr")
    rows0 = int(hits.offsets[min(chunk_len, total)])
    assert _values_chunk(base / "b.zarr") == value_chunk_len(
        HITS, _schema.DEFAULT_CHUNK_BYTES, rows0
    )


def test_parallel_writer_sizes_values_from_the_split_mean(
    tmp_path: Path, small_floor: None
) -> None:
    """ParallelStore: chunk_len x the split's mean rows per sample (its one statistic)."""
    from fastload.store import ParallelStore, SplitSize

    layout = StoreLayout({"hits": HITS}, chunk_len=32, shuffle="none")
    store = ParallelStore.create(
        path=tmp_path / "p.zarr",
        layout=layout,
        sizes={"train": SplitSize(100, {"hits": 2000})},
        plan_id="t",
    )
    want = value_chunk_len(HITS, _schema.DEFAULT_CHUNK_BYTES, 32 * 20.0)
    assert [a.chunk_len for a in store._arrays_of("train") if a.part == "values"] == [want]
    assert want < choose_chunk_len(8)
    store.abort()
