"""Sharded stores (Zarr v3 ``sharding_indexed``): round trip, zarr interop, file counts,
a damaged shard index, the default threshold, serial vs Dask bytes, Loader batches."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload.errors import ConfigError, CorruptStoreError
from fastload.store import _shards
from fastload.store._decoder import _crc32c
from fastload.store._shards import EMPTY, index_nbytes

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def data(n: int, seed: int = 0, max_hits: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_hits + 1, n)
    return {
        "X": rng.normal(size=(n, 3, 2)).astype(np.float32),
        "y": rng.integers(0, 4, n).astype(np.int64),
        "hits": fl.Ragged.from_counts(
            rng.normal(size=(int(counts.sum()), 2)).astype(np.float32), counts
        ),
    }


def write(path: Path, block: dict[str, Any], shard_chunks: int | None, **kw: Any) -> Path:
    kw = {"chunk_len": 8, "chunk_bytes": 64, **kw}
    fl.write_arrays(path, {"train": block}, shard_chunks=shard_chunks, **kw)
    return path


def chunk_files(root: Path, key: str) -> list[Path]:
    return sorted(p for p in (root / key / "c").rglob("*") if p.is_file())


def by_index(root: Path, key: str) -> list[Path]:
    """The chunk (or shard) files of array ``key``, in chunk order."""
    base = root / key / "c"
    return sorted(chunk_files(root, key), key=lambda p: int(p.relative_to(base).parts[0]))


def inner_chunks(shard: Path, factor: int) -> list[bytes]:
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-index_nbytes(factor) : -4], "<u8").reshape(factor, 2)
    return [raw[int(o) : int(o) + int(n)] for o, n in index if o != EMPTY]


def assert_reads(split: fl.store.Split, block: dict[str, Any]) -> None:
    n = len(block["y"])
    np.testing.assert_array_equal(split.read("X", 0, n), block["X"])
    np.testing.assert_array_equal(split.read("y", 0, n), block["y"])
    hits = split.read("hits", 0, n)
    np.testing.assert_array_equal(hits.values, block["hits"].values)
    np.testing.assert_array_equal(hits.offsets, block["hits"].offsets)


# ----------------------------------------------------------------- round trip
@SETTINGS
@given(
    n=st.integers(1, 200),
    chunk_len=st.integers(1, 24),
    factor=st.integers(1, 6),
    max_hits=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_sharded_round_trip_and_same_chunk_bytes(n, chunk_len, factor, max_hits, seed):
    """Dense and ragged fields read back exactly; each shard holds the unsharded chunk files' bytes."""
    block = data(n, seed, max_hits)
    with tempfile.TemporaryDirectory() as tmp:
        plain = write(Path(tmp) / "plain.zarr", block, 0, chunk_len=chunk_len)
        sharded = write(Path(tmp) / "sharded.zarr", block, factor, chunk_len=chunk_len)
        split = fl.open_store(sharded)["train"]
        assert_reads(split, block)
        for k in range(split.n_chunks):
            out = split.read_chunk("X", k)
            np.testing.assert_array_equal(out, block["X"][k * chunk_len : (k + 1) * chunk_len])
        meta = zarr.open_group(sharded, mode="r").attrs["fastload"]
        assert meta["format"] == 2
        for key in meta["codec"]["shards"]:
            assert meta["codec"]["shards"][key] == factor
            packed = [b for shard in by_index(sharded, key) for b in inner_chunks(shard, factor)]
            assert packed == [p.read_bytes() for p in by_index(plain, key)]


def test_zarr_python_reads_a_sharded_store(tmp_path: Path) -> None:
    """zarr.open reads every array of a sharded fastload store as a plain (sharded) Zarr v3 array."""
    block = data(300, seed=3)
    path = write(tmp_path / "s.zarr", block, 4)
    root = zarr.open(str(path), mode="r")
    assert root.attrs["fastload"]["format"] == 2
    X = zarr.open(str(path / "train" / "X"), mode="r")
    assert X.shards == (32, 3, 2)
    assert X.chunks == (8, 3, 2)
    np.testing.assert_array_equal(X[:], block["X"])
    np.testing.assert_array_equal(root["train/y"][:], block["y"])
    np.testing.assert_array_equal(root["train/hits/values"][:], block["hits"].values)
    np.testing.assert_array_equal(root["train/hits/offsets"][:], block["hits"].offsets)


def test_remote_sharded_store_reads_by_byte_ranges(tmp_path: Path) -> None:
    """An fsspec store (memory://) reads inner chunks as ranged requests, each index fetched once."""
    fsspec = pytest.importorskip("fsspec")
    block = data(150, seed=8)
    path = write(tmp_path / "s.zarr", block, 4)
    fs = fsspec.filesystem("memory")
    for p in path.rglob("*"):
        if p.is_file():
            fs.pipe_file(f"/shards-test/{p.relative_to(tmp_path)}", p.read_bytes())
    try:
        split = fl.open_store("memory:///shards-test/s.zarr")["train"]
        assert_reads(split, block)
        reader = split.reader("X")
        assert sorted(reader._shards._indexes) == list(range(-(-reader.n_chunks // 4)))
    finally:
        fs.rm("/shards-test", recursive=True)


def test_file_count_reduced_by_the_shard_factor(tmp_path: Path) -> None:
    block = data(1000, seed=1)
    plain = write(tmp_path / "plain.zarr", block, 0)
    sharded = write(tmp_path / "sharded.zarr", block, 16)
    for key in ("train/X", "train/y", "train/hits/values"):
        n_plain, n_sharded = len(chunk_files(plain, key)), len(chunk_files(sharded, key))
        assert n_plain > 16
        assert n_sharded == -(-n_plain // 16)
    assert not list(sharded.rglob(_shards.STAGING))  # staging directories removed


def test_default_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """shard_chunks=None shards only arrays above SHARD_THRESHOLD chunks; below, the store is format 1."""
    assert _shards.resolve_shard_chunks(None, _shards.SHARD_THRESHOLD) == 0
    assert _shards.resolve_shard_chunks(None, _shards.SHARD_THRESHOLD + 1) == 64
    assert _shards.resolve_shard_chunks(0, 10**9) == 0
    assert _shards.resolve_shard_chunks(5, 0) == 0
    monkeypatch.setattr(_shards, "SHARD_THRESHOLD", 20)
    monkeypatch.setattr(_shards, "DEFAULT_SHARD_CHUNKS", 4)
    block = data(200, seed=2)  # 25 sample chunks; hits/offsets has 1 chunk
    auto = write(tmp_path / "auto.zarr", block, None)
    meta = zarr.open_group(auto, mode="r").attrs["fastload"]
    assert meta["format"] == 2
    assert meta["codec"]["shards"]["train/X"] == 4
    assert "train/hits/offsets" not in meta["codec"]["shards"]
    assert_reads(fl.open_store(auto)["train"], block)
    small = write(tmp_path / "small.zarr", data(100, seed=2, max_hits=1), None)  # <= 13 chunks
    meta = zarr.open_group(small, mode="r").attrs["fastload"]
    assert meta["format"] == 1
    assert "shards" not in meta["codec"]


def test_bad_option() -> None:
    with pytest.raises(ConfigError, match="shard_chunks"):
        fl.create_store("/nonexistent/x.zarr", shard_chunks=-1)
    with pytest.raises(ConfigError, match=r"shard_chunks=2.*local store only"):
        fl.create_store("memory://sharded.zarr", shard_chunks=2)


# ----------------------------------------------------------------- a damaged shard index
def rewrite_index(shard: Path, factor: int, edit: Callable[[np.ndarray], None]) -> None:
    raw = bytearray(shard.read_bytes())
    n = index_nbytes(factor)
    index = np.frombuffer(bytes(raw[-n:-4]), "<u8").reshape(factor, 2).copy()
    edit(index)
    body = index.astype("<u8").tobytes()
    raw[-n:] = body + int(_crc32c()(body)).to_bytes(4, "little")
    shard.write_bytes(bytes(raw))


def _overlap(index: np.ndarray) -> None:
    index[1, 0] = index[0, 0] + 1


def _outside(index: np.ndarray) -> None:
    index[1, 0] = 10**6


def _wrap(index: np.ndarray) -> None:
    index[1, 0] = 2**64 - 8  # offset + nbytes overflows 64 bits


def _too_large(index: np.ndarray) -> None:
    index[1, 1] = 10**9


def _missing(index: np.ndarray) -> None:
    index[1] = EMPTY


def _bad_crc(shard: Path) -> None:
    raw = bytearray(shard.read_bytes())
    raw[-8] ^= 0xFF
    shard.write_bytes(bytes(raw))


def _truncated(shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:10])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_bad_crc, "index fails its CRC32C"),
        (_truncated, "shorter than its .*-byte index"),
        (lambda s: rewrite_index(s, 4, _overlap), "inner chunks 0 and 1 overlapping"),
        (lambda s: rewrite_index(s, 4, _outside), "inner chunk 1 at bytes .* outside the file"),
        (lambda s: rewrite_index(s, 4, _wrap), "inner chunk 1 at bytes .* outside the file"),
        (lambda s: rewrite_index(s, 4, _too_large), "inner chunk 1 1000000000 bytes, more than"),
        (lambda s: rewrite_index(s, 4, _missing), "no entry for chunk 1 "),
    ],
    ids=["crc", "truncated", "overlap", "outside", "wrap", "too-large", "missing-entry"],
)
def test_corrupt_shard_index_names_the_shard(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    block = data(100, seed=4)
    path = write(tmp_path / "s.zarr", block, 4)
    shard = path / "train" / "X" / "c" / "0" / "0" / "0"
    damage(shard)
    split = fl.open_store(path)["train"]
    with pytest.raises(CorruptStoreError, match=f"shard file {shard}.*{message}"):
        split.read("X", 0, 100)
    np.testing.assert_array_equal(split.read("y", 0, 100), block["y"])  # other arrays unharmed


def test_damaged_inner_chunk_and_missing_shard(tmp_path: Path) -> None:
    """A flipped byte inside an inner chunk fails that chunk's CRC32C; a missing shard file is named."""
    path = write(tmp_path / "s.zarr", data(100, seed=5), 4)
    shard = path / "train" / "X" / "c" / "1" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[20] ^= 0x01
    shard.write_bytes(bytes(raw))
    split = fl.open_store(path)["train"]
    with pytest.raises(
        CorruptStoreError, match=rf"inner chunk 0 of shard file {shard} fails its CRC32C"
    ):
        split.read_chunk("X", 4)
    shard.unlink()
    with pytest.raises(CorruptStoreError, match=f"shard file {shard}.*is missing"):
        split.read_chunk("X", 5)


def test_shard_file_must_be_a_regular_file(tmp_path: Path) -> None:
    path = write(tmp_path / "s.zarr", data(100, seed=5), 4)
    shard = path / "train" / "X" / "c" / "1" / "0" / "0"
    other = path / "train" / "X" / "c" / "0" / "0" / "0"
    shard.unlink()
    shard.symlink_to(other)
    split = fl.open_store(path)["train"]
    with pytest.raises(CorruptStoreError, match="symbolic link"):
        split.read_chunk("X", 4)


def test_index_read_once_per_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder reads a (settled) shard's index once, then only its chunks' byte ranges."""
    path = write(tmp_path / "s.zarr", data(100, seed=6), 4)
    # files written just now get no stamp (kernel clocks are coarse): pretend they settled
    monkeypatch.setattr(_shards, "_stamp", lambda st: (st.st_dev, st.st_ino, st.st_size))
    split = fl.open_store(path)["train"]
    reader = split.reader("X")
    calls = []
    check = reader._shards._check_index
    monkeypatch.setattr(reader._shards, "_check_index", lambda *a: calls.append(a[1]) or check(*a))
    for k in range(reader.n_chunks):
        reader.read_chunk(k)
    assert len(calls) == -(-reader.n_chunks // 4)


def test_index_cache_keeps_the_most_recently_used_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its bound the index cache drops the least recently used shard, not the newest."""
    path = write(tmp_path / "s.zarr", data(100, seed=6), 4)
    monkeypatch.setattr(_shards, "_stamp", lambda st: (st.st_dev, st.st_ino, st.st_size))
    monkeypatch.setattr(_shards, "MAX_CACHED_INDEXES", 2)
    reader = fl.open_store(path)["train"].reader("X")
    calls = []
    check = reader._shards._check_index
    monkeypatch.setattr(reader._shards, "_check_index", lambda *a: calls.append(a[1]) or check(*a))
    shard = 4  # chunks per shard
    for first in (0, shard, 0, 2 * shard, 0, shard):  # shard 0 stays in use, 1 is dropped
        reader.read_chunk(first)
    assert [c // shard for c in calls] == [0, 1, 2, 1]
    assert list(reader._shards._indexes) == [0, 1]


# ----------------------------------------------------------------- Loader
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_identical_sharded_and_unsharded(
    tmp_path: Path, workers: int, no_leaks: Any
) -> None:
    block = data(400, seed=7)
    plain = fl.open_store(write(tmp_path / "plain.zarr", block, 0))["train"]
    sharded = fl.open_store(write(tmp_path / "sharded.zarr", block, 3))["train"]
    got = []
    for split in (plain, sharded):
        with fl.Loader(split, 24, seed=5, workers=workers, backend="process") as loader:
            got.append([{k: np.array(v) for k, v in b.items()} for b in loader])
    assert len(got[0]) == len(got[1]) > 10
    for a, b in zip(*got, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


# ----------------------------------------------------------------- serial vs Dask
def test_dask_writes_the_same_sharded_bytes(tmp_path: Path) -> None:
    """The Dask path (ParallelStore, packing tasks) writes byte-identical shard files and metadata."""
    distributed = pytest.importorskip("distributed")
    from fastload.converters import ahcal
    from fastload.converters._spec import load_spec
    from fastload.converters.generic import convert
    from fastload.synthetic import make_ahcal

    src = tmp_path / "src"
    make_ahcal(src, n_events=300, n_files=2, seed=11, formats=("root",))
    overrides = [
        "store.chunk_len=16",
        "store.chunk_bytes=16384",
        "source.block_events=32",
        "store.shard_chunks=3",
    ]
    spec = load_spec(ahcal.spec_path("root"), overrides=overrides)
    convert(spec, tmp_path / "serial.zarr", source_dir=src)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        convert(spec, tmp_path / "dask.zarr", source_dir=src, client=client)
    a, b = tmp_path / "serial.zarr", tmp_path / "dask.zarr"
    fa = {str(p.relative_to(a)): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    fb = {str(p.relative_to(b)): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert sorted(fa) == sorted(fb)
    for key in fa:
        if key == "zarr.json":
            ja, jb = json.loads(fa[key]), json.loads(fb[key])
            for j in (ja, jb):
                del j["attributes"]["fastload"]["source"]["created"]
                del j["attributes"]["fastload"]["store_id"]
            assert ja == jb
            assert ja["attributes"]["fastload"]["format"] == 2
            assert ja["attributes"]["fastload"]["codec"]["shards"]
        else:
            assert fa[key] == fb[key], key
    shards = [k for k in fa if k.startswith("train/") and "/c/" in k]
    assert len(shards) > 5
    store = fl.open_store(b)
    for split in store.splits:
        s = store[split]
        for name in s.fields:
            s.read(name, 0, len(s))
    assert not [p for p in tmp_path.iterdir() if "fastload-tmp" in p.name]
