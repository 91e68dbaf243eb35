"""Store format v1: what is written reads back the same, through fastload and plain zarr."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import assert_split_equal, concat_blocks, make_block, root_attrs, store_files

import fastload as fl
from fastload.errors import ConfigError, SchemaError, SourceFileError
from fastload.store import choose_chunk_len

DTYPES = [
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "bool",
    "complex64",
]
SHAPES = [(), (3,), (2, 3)]


def test_dense_fields_of_every_dtype_and_shape_round_trip(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Each dtype x per-sample shape (incl. scalar samples, shape ()) reads back bit-identical."""
    n = 37
    block = {}
    for dtype in DTYPES:
        for shape in SHAPES:
            raw = rng.normal(size=(n, *shape)) * 100
            block[f"{dtype}_{len(shape)}d"] = (raw > 0) if dtype == "bool" else raw.astype(dtype)
    fl.write_arrays(tmp_path / "d.zarr", {"train": block}, chunk_len=8)
    store = fl.open_store(tmp_path / "d.zarr")
    assert_split_equal(store["train"], block)
    for name, arr in block.items():
        assert store.fields[name].shape == arr.shape[1:]
        assert store.fields[name].dtype == arr.dtype


def test_big_endian_input_is_stored_little_endian(tmp_path: Path) -> None:
    """Stores are little-endian whatever the input byte order; values are preserved."""
    x = np.arange(10, dtype=">f8")
    fl.write_arrays(tmp_path / "e.zarr", {"train": {"x": x}})
    store = fl.open_store(tmp_path / "e.zarr")
    assert store.fields["x"].dtype.str == "<f8"
    assert root_attrs(tmp_path / "e.zarr")["fields"]["x"]["dtype"] == "<f8"
    np.testing.assert_array_equal(store["train"].read("x"), x)


def test_ragged_repr_is_short() -> None:
    """repr of a ragged block summarises it instead of printing every value."""
    r = fl.Ragged.from_counts(np.zeros((10_000, 4), np.float32), [5_000, 0, 5_000])
    assert repr(r) == "Ragged(n=3, rows=10000, row_shape=(4,), dtype=float32)"


def test_ragged_fields_round_trip_with_empty_samples(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Ragged samples of length 0 (first, last, runs of them) and an all-empty field survive."""
    counts = np.array([0, 3, 0, 0, 5, 1, 0])
    block = {
        "hits": fl.Ragged.from_counts(rng.normal(size=(counts.sum(), 4)), counts),
        "none": fl.Ragged.from_counts(np.zeros((0,), dtype=np.int32), np.zeros(7, dtype=np.int64)),
        "y": np.arange(7),
    }
    fl.write_arrays(tmp_path / "r.zarr", {"train": block}, chunk_len=2)
    split = fl.open_store(tmp_path / "r.zarr")["train"]
    assert_split_equal(split, block)
    assert split.max_len("hits") == 5
    assert split.max_len("none") == 0
    np.testing.assert_array_equal(split.read("hits", 1, 5).counts, [3, 0, 0, 5])
    np.testing.assert_array_equal(split.read("hits", 4, 5).values, block["hits"][4])


def test_ragged_block_whose_offsets_do_not_start_at_zero(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A block sliced from a larger ragged array (offsets slice + whole values) stores only its rows."""
    counts = rng.integers(0, 5, size=30)
    whole = fl.Ragged.from_counts(rng.normal(size=(counts.sum(), 2)), counts)
    with fl.create_store(tmp_path / "s.zarr", chunk_len=4) as w:
        for lo, hi in [(0, 7), (7, 8), (8, 30)]:
            piece = fl.Ragged(
                whole.values, whole.offsets[lo : hi + 1]
            )  # offsets start at whole.offsets[lo]
            w.append("train", {"hits": piece, "i": np.arange(lo, hi)})
    split = fl.open_store(tmp_path / "s.zarr")["train"]
    got = split.read("hits")
    np.testing.assert_array_equal(got.offsets, whole.offsets)
    np.testing.assert_array_equal(got.values, whole.values)
    np.testing.assert_array_equal(split.read("i"), np.arange(30))
    # values outside the block's span are not stored (nor checked for NaN)
    vals = np.vstack([np.full((2, 2), np.nan), whole.values[:4]])
    fl.write_arrays(tmp_path / "t.zarr", {"train": {"h": fl.Ragged(vals, np.array([2, 4, 6]))}})
    np.testing.assert_array_equal(
        fl.open_store(tmp_path / "t.zarr")["train"].read("h").values, whole.values[:4]
    )


def test_many_small_appends_equal_one_big_append(tmp_path: Path, rng: np.random.Generator) -> None:
    """Blocks of any size, unaligned to chunks, give byte-identical chunk files and metadata."""
    blocks = [make_block(rng, m) for m in (1, 6, 0, 13, 2, 9, 7, 1)]
    whole = concat_blocks(blocks)
    fl.write_arrays(tmp_path / "one.zarr", {"train": whole}, chunk_len=8)
    with fl.create_store(tmp_path / "many.zarr", name="one", chunk_len=8) as w:
        for b in blocks:
            w.append("train", b)
    one, many = store_files(tmp_path / "one.zarr"), store_files(tmp_path / "many.zarr")
    assert sorted(one) == sorted(many)
    assert one == many
    a, b = root_attrs(tmp_path / "one.zarr"), root_attrs(tmp_path / "many.zarr")
    a["source"].pop("created"), b["source"].pop("created")
    assert len(a.pop("store_id")) == len(b.pop("store_id")) == 32  # random per store
    assert a == b
    assert_split_equal(fl.open_store(tmp_path / "many.zarr")["train"], whole)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 11), min_size=1, max_size=8),
    chunk_len=st.sampled_from([1, 3, 4, 16]),
)
def test_any_block_partition_gives_the_same_store(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], chunk_len: int
) -> None:
    """Property: the chunk files depend only on the data, not on how it was split into blocks."""
    rng = np.random.default_rng(7)
    total = sum(sizes) + 1
    whole = make_block(rng, total)
    blocks, start = [], 0
    for m in [*sizes, 1]:
        blocks.append({k: _slice(v, start, start + m) for k, v in whole.items()})
        start += m
    base = tmp_path_factory.mktemp("prop")
    fl.write_arrays(base / "a.zarr", {"train": whole}, chunk_len=chunk_len)
    with fl.create_store(base / "b.zarr", chunk_len=chunk_len) as w:
        for b in blocks:
            w.append("train", b)
    assert store_files(base / "a.zarr") == store_files(base / "b.zarr")


def _slice(v: object, lo: int, hi: int) -> object:
    if isinstance(v, fl.Ragged):
        return fl.Ragged(v.values, v.offsets[lo : hi + 1])
    return v[lo:hi]  # type: ignore[index]


def test_splits_of_different_sizes_and_chunk_lengths(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Each split has its own n and chunk length (explicit per split, or auto); all fields share it."""
    data = {"train": make_block(rng, 50), "val": make_block(rng, 7), "test": make_block(rng, 20)}
    fl.write_arrays(tmp_path / "s.zarr", data, chunk_len={"train": 16, "val": 4})
    store = fl.open_store(tmp_path / "s.zarr")
    assert store.splits == ("train", "val", "test")
    auto = choose_chunk_len(3 * 4 * 4)  # X, float32 (3, 4), is the largest dense sample
    assert {s: (len(store[s]), store[s].chunk_len) for s in store} == {
        "train": (50, 16),
        "val": (7, 4),
        "test": (20, auto),
    }
    assert store["train"].n_chunks == 4
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for s in store:
        assert_split_equal(store[s], data[s])
        for f in ("X", "y", "w", "mask", "img"):
            assert group[f"{s}/{f}"].chunks[0] == store[s].chunk_len


def test_auto_chunk_length_is_a_power_of_two_within_the_byte_target(tmp_path: Path) -> None:
    """Auto chunking: the largest power of two whose largest-field chunk fits chunk_bytes (4 MiB default)."""
    x = np.zeros((10, 1000), dtype=np.float32)  # 4000 B per sample
    fl.write_arrays(tmp_path / "a.zarr", {"train": {"x": x, "y": np.zeros(10, np.int8)}})
    assert (
        fl.open_store(tmp_path / "a.zarr")["train"].chunk_len == 1024
    )  # 1024*4000 <= 4 MiB < 2048*4000
    fl.write_arrays(tmp_path / "b.zarr", {"train": {"x": x}}, chunk_bytes=64_000)
    assert fl.open_store(tmp_path / "b.zarr")["train"].chunk_len == 16
    fl.write_arrays(
        tmp_path / "c.zarr", {"train": {"x": x}}, chunk_len=3
    )  # explicit wins, any value
    assert fl.open_store(tmp_path / "c.zarr")["train"].chunk_len == 3


@given(sample=st.integers(0, 2**24), target=st.integers(1, 2**26))
def test_choose_chunk_len_property(sample: int, target: int) -> None:
    """choose_chunk_len is the largest power of two within the target (1 if one sample exceeds it)."""
    c = choose_chunk_len(sample, target)
    per = max(1, sample)
    assert c >= 1
    assert c & (c - 1) == 0
    if per <= target:
        assert c * per <= target < 2 * c * per
    else:
        assert c == 1


@pytest.mark.parametrize(
    ("codec", "shuffle", "blosc_shuffle"),
    [
        ("lz4", "byte", "shuffle"),
        ("zstd", "bit", "bitshuffle"),
        ("lz4", "none", "noshuffle"),
        ("zstd", "byte", "shuffle"),
    ],
)
def test_codec_options_are_recorded_and_readable(
    tmp_path: Path, rng: np.random.Generator, codec: str, shuffle: str, blosc_shuffle: str
) -> None:
    """The chosen Blosc compressor and shuffle appear in the schema and in each array's codecs."""
    block = make_block(rng, 40)
    path = tmp_path / "c.zarr"
    fl.write_arrays(path, {"train": block}, codec=codec, shuffle=shuffle, clevel=3, chunk_len=16)
    assert root_attrs(path)["codec"] == {
        "name": "blosc",
        "cname": codec,
        "clevel": 3,
        "shuffle": shuffle,
    }
    for array in ("train/X", "train/y", "train/hits/values", "train/hits/offsets"):
        codecs = json.loads((path / array / "zarr.json").read_text())["codecs"]
        assert [c["name"] for c in codecs] == ["bytes", "blosc", "crc32c"]
        conf = codecs[1]["configuration"]
        assert (conf["cname"], conf["shuffle"], conf["clevel"]) == (codec, blosc_shuffle, 3)
    split = fl.open_store(path)["train"]
    assert_split_equal(split, block)
    np.testing.assert_array_equal(split.read_chunk("X", 2), block["X"][32:40])


@pytest.mark.parametrize("url", [False, True])
def test_plain_zarr_reads_the_same_values(
    tmp_path: Path, rng: np.random.Generator, url: bool
) -> None:
    """The store is a valid Zarr v3 group: plain zarr (path or file:// URL) sees the same arrays."""
    data = {"train": make_block(rng, 30), "test": make_block(rng, 9)}
    fl.write_arrays(tmp_path / "z.zarr", data, chunk_len=8)
    location = f"file://{tmp_path / 'z.zarr'}" if url else str(tmp_path / "z.zarr")
    root = zarr.open_group(location, mode="r")
    assert root.metadata.zarr_format == 3
    assert root.attrs["fastload"]["format"] == 1
    for split, block in data.items():
        assert root[split].attrs["fastload"]["n"] == len(block["y"])
        for name, want in block.items():
            if isinstance(want, fl.Ragged):
                np.testing.assert_array_equal(root[f"{split}/{name}/offsets"][:], want.offsets)
                np.testing.assert_array_equal(root[f"{split}/{name}/values"][:], want.values)
            else:
                np.testing.assert_array_equal(root[f"{split}/{name}"][:], want)


def test_read_chunk_into_preallocated_buffer(tmp_path: Path, rng: np.random.Generator) -> None:
    """read_chunk decodes into the caller's buffer (a view comes back); the last chunk is partial."""
    block = make_block(rng, 21)
    fl.write_arrays(tmp_path / "c.zarr", {"train": block}, chunk_len=8)
    split = fl.open_store(tmp_path / "c.zarr")["train"]
    assert split.n_chunks == 3
    buf = np.full((8, 3, 4), -1.0, dtype=np.float32)
    for chunk in range(3):
        got = split.read_chunk("X", chunk, buf)
        assert np.shares_memory(got, buf)
        np.testing.assert_array_equal(got, block["X"][chunk * 8 : chunk * 8 + 8])
    assert got.shape == (5, 3, 4)  # last chunk: 21 - 16 rows
    big = np.zeros((10, 5, 5), dtype=np.uint8)  # more rows than a chunk is fine
    np.testing.assert_array_equal(split.read_chunk("img", 2, big), block["img"][16:])
    np.testing.assert_array_equal(
        split.read_chunk("y", 1), block["y"][8:16]
    )  # allocated when no buffer
    with pytest.raises(IndexError, match="chunk 3 out of range"):
        split.read_chunk("X", 3, buf)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((7, 3, 4), np.float32),  # fewer rows than a chunk
        np.zeros((8, 3, 4), np.float64),  # wrong dtype
        np.zeros((8, 4, 3), np.float32),  # wrong row shape
        np.zeros((8, 3, 8), np.float32)[:, :, ::2],  # not contiguous
    ],
)
def test_read_chunk_refuses_unfit_buffers(
    tmp_path: Path, rng: np.random.Generator, bad: np.ndarray
) -> None:
    """A buffer that cannot take a whole decoded chunk is refused, never silently half-filled."""
    fl.write_arrays(tmp_path / "c.zarr", {"train": make_block(rng, 20)}, chunk_len=8)
    split = fl.open_store(tmp_path / "c.zarr")["train"]
    with pytest.raises(ConfigError, match="'train/X'"):
        split.read_chunk("X", 0, bad)


def test_read_chunk_of_ragged_field_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    """Ragged fields read by sample range; read_chunk says so instead of returning values rows."""
    fl.write_arrays(tmp_path / "c.zarr", {"train": make_block(rng, 20)}, chunk_len=8)
    split = fl.open_store(tmp_path / "c.zarr")["train"]
    with pytest.raises(ConfigError, match=r"'hits'.*ragged"):
        split.read_chunk("hits", 0)
    with pytest.raises(ConfigError, match="dense"):
        split.offsets("X")


def test_arrays_rewritten_by_plain_zarr_still_read(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """An array with other codecs (not fastload's fast layout) reads through zarr's own indexing."""
    block = make_block(rng, 20)
    path = tmp_path / "c.zarr"
    fl.write_arrays(path, {"train": block}, chunk_len=8)
    group = zarr.open_group(str(path), mode="r+")
    group["train"].create_array(
        "X", data=block["X"], chunks=(8, 3, 4), overwrite=True
    )  # zarr's default codec
    split = fl.open_store(path)["train"]
    assert not split.reader("X").fast
    np.testing.assert_array_equal(split.read_chunk("X", 2), block["X"][16:])
    assert_split_equal(split, block)


def test_other_chunk_key_encoding_is_not_read_as_fill_values(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Blosc chunks under another key encoding (v2 "0.0.0") must not be mistaken for absent chunks."""
    block = make_block(rng, 20)
    path = tmp_path / "k.zarr"
    fl.write_arrays(path, {"train": block}, chunk_len=8)
    group = zarr.open_group(str(path), mode="r+")
    group["train"].create_array(
        "X",
        data=block["X"],
        chunks=(8, 3, 4),
        compressors=zarr.codecs.BloscCodec(cname="lz4"),
        chunk_key_encoding={"name": "v2", "separator": "."},
        overwrite=True,
    )
    split = fl.open_store(path)["train"]
    np.testing.assert_array_equal(split.read_chunk("X", 1), block["X"][8:16])


def test_split_and_store_pickle_by_path(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handles pickle as their location (tiny payload) and re-open from any working directory."""
    block = make_block(rng, 2000)
    monkeypatch.chdir(tmp_path)
    fl.write_arrays("rel.zarr", {"train": block})
    store = fl.open_store("rel.zarr")
    assert Path(store.path).is_absolute()
    payload = pickle.dumps(store["train"])
    assert len(payload) < 1000  # no array data inside
    monkeypatch.chdir("/")
    split = pickle.loads(payload)
    assert isinstance(split, fl.Split)
    assert split.name == "train"
    assert_split_equal(split, block)
    store2 = pickle.loads(pickle.dumps(store))
    assert isinstance(store2, fl.Store)
    assert store2.splits == store.splits
    assert store2.fields == store.fields


def test_constants_round_trip(tmp_path: Path) -> None:
    """Small per-dataset arrays are stored beside the splits and read back whole."""
    positions = np.arange(81 * 3, dtype=np.float32).reshape(81, 3)
    with fl.create_store(tmp_path / "c.zarr") as w:
        w.append("train", {"x": np.zeros(4)})
        w.put_constant("positions", positions)
        w.put_constant("mean", np.float64(2.5))
        w.put_constant("ids", np.array([3, 1, 2], dtype=">i4"))
    consts = fl.open_store(tmp_path / "c.zarr").constants
    assert set(consts) == {"positions", "mean", "ids"}
    np.testing.assert_array_equal(consts["positions"], positions)
    assert consts["mean"].shape == ()
    assert float(consts["mean"]) == 2.5
    np.testing.assert_array_equal(consts["ids"], [3, 1, 2])
    assert fl.open_store(tmp_path / "c.zarr").splits == ("train",)  # "constants" is no split
    with fl.create_store(tmp_path / "d.zarr") as w:
        w.append("train", {"x": np.zeros(4)})
        with pytest.raises(SchemaError, match="constant 'names'"):
            w.put_constant("names", np.array(["a", "b"], dtype=object))
    with pytest.raises(SchemaError, match="closed"):
        w.put_constant("late", np.zeros(2))
    assert fl.open_store(tmp_path / "d.zarr").constants == {}


def test_schema_metadata(tmp_path: Path) -> None:
    """Name, task, labels, roles, docs and declared dtypes land in attrs and on the handle."""
    path = tmp_path / "Toy.zarr"
    fl.write_arrays(
        path,
        {"train": {"X": np.ones((4, 2), np.float32), "y": np.arange(4, dtype=np.int32)}},
        task="classification",
        labels=["quark", "gluon"],
        fields={"X": {"doc": "constituents", "dtype": "float64"}, "y": {"role": "label"}},
    )
    store = fl.open_store(path)
    assert (store.name, store.task, store.labels) == ("Toy", "classification", ["quark", "gluon"])
    assert store.fields["X"].dtype == np.float64  # declared dtype, safe cast on write
    assert store.fields["X"].doc == "constituents"
    assert (store.fields["X"].role, store.fields["y"].role) == ("input", "label")
    attrs = root_attrs(path)
    assert attrs["format"] == fl.FORMAT_VERSION == 1
    assert attrs["complete"] is True
    assert attrs["splits"] == {
        "train": {"n": 4, "chunk_len": store["train"].chunk_len, "max_len": {}}
    }
    assert attrs["fields"]["y"] == {
        "shape": [],
        "dtype": "<i4",
        "role": "label",
        "ragged": False,
        "doc": "",
    }


def test_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Source files with sha256 (or another hash) matching hashlib, converter, version, creation time."""
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.h5", tmp_path / "b.root"
    a.write_bytes(b"first source" * 1000)
    b.write_bytes(bytes(range(256)) * 77)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with fl.create_store(
        tmp_path / "p.zarr", converter="converters.hdf5", converter_version="1.2"
    ) as w:
        w.add_source(a)
        w.add_source("b.root", checksum="md5")  # relative: recorded as an absolute path
        w.append("train", {"x": np.zeros(3)})
    after = dt.datetime.now(dt.UTC)
    source = fl.open_store(tmp_path / "p.zarr").provenance
    assert source["converter"] == "converters.hdf5"
    assert source["converter_version"] == "1.2"
    assert source["fastload_version"] == fl.__version__
    files = source["files"]
    assert [f["name"] for f in files] == ["a.h5", "b.root"]
    assert files[0]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert files[1]["md5"] == hashlib.md5(b.read_bytes()).hexdigest()
    assert files[0]["size"] == a.stat().st_size
    assert files[0]["path"] == str(a)
    assert files[1]["path"] == str(b)
    created = dt.datetime.fromisoformat(source["created"])
    assert before <= created <= after
    assert fl.store.file_checksum(a) == files[0]["sha256"]
    with fl.create_store(tmp_path / "q.zarr") as w:
        w.append("train", {"x": np.zeros(3)})
        with pytest.raises(SourceFileError, match=r"missing\.h5"):
            w.add_source(tmp_path / "missing.h5")
