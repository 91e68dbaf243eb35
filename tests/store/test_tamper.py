"""Tampered and damaged stores: every case is a FastloadError naming the file, never wrong data.

Each case damages a copy of a small store the way a bit flip, a crashed copy or
an attacker would, then reads it through ``Split.read``, ``Split.read_chunk``
and a ``fl.Loader`` (``workers=0``; one process-worker case per chunk kind).
The bit-flip fuzz decodes one chunk per flip directly through the decoder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from store_helpers import edit_json, edit_root_attrs

import fastload as fl
from fastload.errors import CorruptStoreError, FastloadError, StoreError

N, CHUNK, WIDTH = 300, 128, 16


def _data(seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, size=N)
    counts[7] = 9  # the longest sample: max_len 9
    return {
        "X": rng.normal(size=(N, WIDTH)).astype(np.float32),
        "y": rng.integers(0, 5, size=N).astype(np.int64),
        "hits": fl.Ragged.from_counts(
            rng.normal(size=(int(counts.sum()), 2)).astype(np.float32), counts
        ),
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An lz4 and a zstd store (3 chunks of X and y, ragged hits in several value chunks)."""
    root = tmp_path_factory.mktemp("pristine")
    paths = {}
    for codec in ("lz4", "zstd"):
        paths[codec] = fl.write_arrays(
            root / f"{codec}.zarr",
            {"train": _data(1)},
            codec=codec,
            chunk_len=CHUNK,
            chunk_bytes=512,  # several value chunks for hits (rows of 8 bytes)
        )
    return {k: Path(v) for k, v in paths.items()}


@pytest.fixture
def store(pristine: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine["lz4"], tmp_path / "s.zarr"))


def _chunk(store: Path, field: str, c: int = 1) -> Path:
    if field == "hits":
        return store / "train" / "hits" / "values" / "c" / str(c) / "0"
    if field == "X":
        return store / "train" / "X" / "c" / str(c) / "0"
    return store / "train" / field / "c" / str(c)


def _expected_error(exc: BaseException, names: str) -> None:
    """A FastloadError whose message names ``names`` (a file or array path)."""
    assert isinstance(exc, FastloadError), repr(exc)
    assert names in str(exc), (names, str(exc))
    # worker replies keep their type: a loader raises the store's own error
    assert isinstance(exc, StoreError), repr(exc)


def _loader_batches(path: Path, field: str, **kw: object) -> list[object]:
    split = fl.open_store(path)["train"]
    with fl.Loader(split, 64, fields=(field,), shuffle=False, **kw) as loader:
        return [{k: np.array(v) for k, v in b.items()} for b in loader]


def _check_everywhere(path: Path, field: str, names: str, *, process: bool = False) -> None:
    """Every read path of ``field`` fails with a FastloadError naming ``names``."""

    def read() -> object:
        return fl.open_store(path)["train"].read(field)

    def read_chunk() -> object:
        split = fl.open_store(path)["train"]
        return [split.read_chunk(field, c) for c in range(split.n_chunks)]

    ways: list[Callable[[], object]] = [read, lambda: _loader_batches(path, field, workers=0)]
    if field != "hits":
        ways.append(read_chunk)
    if process:
        ways.append(lambda: _loader_batches(path, field, workers=1, backend="process"))
    for way in ways:
        with pytest.raises(FastloadError) as info:
            way()
        _expected_error(info.value, names)


# ------------------------------------------------------------------ chunk files
def _encode(field: str, rows: np.ndarray, store: Path) -> bytes:
    """A valid chunk file (Blosc frame + correct CRC32C) of ``rows``: what an attacker can write."""
    import google_crc32c

    frame = numcodecs.Blosc(cname="lz4").encode(np.ascontiguousarray(rows))
    return frame + google_crc32c.value(frame).to_bytes(4, "little")


@pytest.mark.parametrize("field", ["X", "y", "hits"])
def test_short_valid_frame_is_refused(store: Path, field: str) -> None:
    """A chunk replaced by a shorter, valid, correctly checksummed frame never leaves stale rows."""
    dtype = np.int64 if field == "y" else np.float32
    short = np.ones(10, dtype=dtype)
    target = _chunk(store, field)
    target.write_bytes(_encode(field, short, store))
    _check_everywhere(store, field, str(target), process=True)


@pytest.mark.parametrize("field", ["X", "y", "hits"])
@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "empty"])
def test_damaged_chunk_files(store: Path, field: str, damage: str) -> None:
    target = _chunk(store, field)
    raw = target.read_bytes()
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        target.write_bytes(os.urandom(len(raw)))
    else:
        target.write_bytes(b"")
    _check_everywhere(store, field, str(target))


def test_zstd_chunk_damage_in_a_process_worker(pristine: dict[str, Path], tmp_path: Path) -> None:
    store = Path(shutil.copytree(pristine["zstd"], tmp_path / "z.zarr"))
    target = _chunk(store, "X", 2)
    raw = bytearray(target.read_bytes())
    raw[40] ^= 0x10
    target.write_bytes(bytes(raw))
    _check_everywhere(store, "X", str(target), process=True)


@pytest.mark.parametrize("field", ["X", "y", "hits"])
@pytest.mark.parametrize("kind", ["fifo", "in_store", "out_of_store", "dev_zero", "dir_link"])
def test_non_regular_files_are_refused(store: Path, tmp_path: Path, field: str, kind: str) -> None:
    """FIFOs and symlinks (inside, outside the store, to /dev/zero) never block, follow or flood."""
    target = _chunk(store, field)
    raw = target.read_bytes()
    names = str(target)
    if kind == "dir_link":  # the chunk's directory is a link to chunk 0's
        parent = target.parent if field != "y" else target
        shutil.rmtree(parent) if parent.is_dir() else parent.unlink()
        parent.symlink_to(
            _chunk(store, field, 0).parent if field != "y" else _chunk(store, field, 0)
        )
        names = str(parent)
    else:
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "in_store":
            target.symlink_to(_chunk(store, field, 0))
        elif kind == "out_of_store":
            outside = tmp_path / "outside"
            outside.write_bytes(raw)  # the right bytes, in the wrong place
            target.symlink_to(outside)
        else:
            target.symlink_to("/dev/zero")
    _check_everywhere(store, field, names)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "out_of_store"])
def test_metadata_files_must_be_regular(store: Path, tmp_path: Path, kind: str) -> None:
    """A zarr.json replaced by a FIFO or a link fails at open instead of blocking or flooding."""
    meta = store / "train" / "X" / "zarr.json"
    text = meta.read_bytes()
    meta.unlink()
    if kind == "fifo":
        os.mkfifo(meta)
    elif kind == "dev_zero":
        meta.symlink_to("/dev/zero")
    else:
        (tmp_path / "meta.json").write_bytes(text)
        meta.symlink_to(tmp_path / "meta.json")
    with pytest.raises(CorruptStoreError, match=str(meta)):
        fl.open_store(store)


def test_root_metadata_link_is_refused(store: Path) -> None:
    (store / "zarr.json").unlink()
    (store / "zarr.json").symlink_to("/dev/zero")
    with pytest.raises(StoreError, match=r"zarr\.json"):
        fl.open_store(store)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["codecs"].__setitem__(1, {"name": "nonsense", "configuration": {}}),
        lambda m: m.__setitem__("data_type", "complex-ish"),
        lambda m: m.__setitem__("shape", "wide"),
    ],
    ids=["unknown_codec", "bad_dtype", "bad_shape"],
)
def test_zarr_metadata_errors_are_fastload_errors(store: Path, change: Callable) -> None:
    """zarr's own ValueError / UnknownCodecError never escape: a CorruptStoreError names the file."""
    meta = store / "train" / "X" / "zarr.json"
    edit_json(meta, change)
    with pytest.raises(CorruptStoreError, match=str(meta)):
        fl.open_store(store)


# --------------------------------------------------------------- header edits
def _edit_dense(store: Path, field: str, change: Callable[[dict], None]) -> None:
    edit_json(store / "train" / field / "zarr.json", change)


def test_consistent_chunk_len_edit(store: Path) -> None:
    """chunk_len 128 -> 256 everywhere (schema, split, arrays) would duplicate rows; refused."""

    def schema(attrs: dict) -> None:
        attrs["splits"]["train"]["chunk_len"] = 2 * CHUNK

    edit_root_attrs(store, schema)
    edit_json(
        store / "train" / "zarr.json",
        lambda m: m["attributes"]["fastload"].__setitem__("chunk_len", 2 * CHUNK),
    )
    for field in ("X", "y"):
        _edit_dense(
            store,
            field,
            lambda m: m["chunk_grid"]["configuration"]["chunk_shape"].__setitem__(0, 256),
        )
    for field in ("X", "y"):
        _check_everywhere(store, field, str(store / "train" / field / "c" / "0"))


def test_consistent_dtype_edit(store: Path) -> None:
    """float32 -> float64 in the schema and the array's zarr.json would reinterpret bytes; refused."""
    edit_root_attrs(store, lambda a: a["fields"]["X"].__setitem__("dtype", "<f8"))

    def meta(m: dict) -> None:
        m["data_type"] = "float64"
        m["codecs"][1]["configuration"]["typesize"] = 8

    _edit_dense(store, "X", meta)
    _check_everywhere(store, "X", str(store / "train" / "X" / "c" / "0" / "0"))


def test_consistent_shape_edit(store: Path) -> None:
    """Row shape 16 -> 32 in the schema and zarr.json would split rows; refused."""
    edit_root_attrs(store, lambda a: a["fields"]["X"].__setitem__("shape", [2 * WIDTH]))

    def meta(m: dict) -> None:
        m["shape"][1] = 2 * WIDTH
        m["chunk_grid"]["configuration"]["chunk_shape"][1] = 2 * WIDTH

    _edit_dense(store, "X", meta)
    _check_everywhere(store, "X", str(store / "train" / "X" / "c" / "0" / "0"))


def test_length_edit_claiming_unwritten_chunks(store: Path) -> None:
    """n 300 -> 10**12 (schema and every array) fails at open: the claimed chunks do not exist."""
    big = 10**12
    edit_root_attrs(store, lambda a: a["splits"]["train"].__setitem__("n", big))
    edit_json(
        store / "train" / "zarr.json", lambda m: m["attributes"]["fastload"].__setitem__("n", big)
    )
    for field in ("X", "y"):
        _edit_dense(store, field, lambda m: m["shape"].__setitem__(0, big))
    _edit_dense(store, "hits/offsets", lambda m: m["shape"].__setitem__(0, big + 1))
    with pytest.raises(CorruptStoreError, match="missing"):
        fl.open_store(store)


@pytest.mark.parametrize("max_len", [2, 10**6])
def test_edited_max_len(store: Path, max_len: int) -> None:
    """A small max_len would truncate samples, a huge one size an absurd arena: both refused."""
    edit_root_attrs(store, lambda a: a["splits"]["train"]["max_len"].__setitem__("hits", max_len))
    edit_json(
        store / "train" / "zarr.json",
        lambda m: m["attributes"]["fastload"]["max_len"].__setitem__("hits", max_len),
    )

    def read() -> object:
        return fl.open_store(store)["train"].read("hits")

    with pytest.raises(CorruptStoreError, match="max_len") as info:
        read()
    assert "hits" in str(info.value)
    if max_len > 9:  # impossible for the number of values: refused when the store opens
        with pytest.raises(CorruptStoreError, match="max_len"):
            fl.open_store(store)
    else:
        split = fl.open_store(store)["train"]
        with pytest.raises(CorruptStoreError, match="max_len"):
            fl.Loader(split, 64, fields=("hits",), workers=0)


# ------------------------------------------------------------- bit-flip fuzz
@pytest.mark.parametrize(
    ("codec", "field"),
    [("lz4", "X"), ("lz4", "y"), ("lz4", "hits"), ("zstd", "X")],
    ids=["lz4-float", "lz4-int64-labels", "ragged-values", "zstd-float"],
)
def test_bit_flip_fuzz(pristine: dict[str, Path], tmp_path: Path, codec: str, field: str) -> None:
    """1,200 single-bit flips of one chunk file: every one is a CorruptStoreError naming the file."""
    store = Path(shutil.copytree(pristine[codec], tmp_path / "f.zarr"))
    split = fl.open_store(store)["train"]
    decoder = split.reader(field, "values" if field == "hits" else None)
    assert decoder.fast
    assert decoder.checksum
    target = _chunk(store, field, 0)
    raw = target.read_bytes()
    good = decoder.read_chunk(0).copy()
    rng = np.random.default_rng(7)
    # every bit of the header and the checksum, the rest at random
    nbits = 8 * len(raw)
    edges = [*range(8 * 16), *range(nbits - 32, nbits)]
    bits = np.unique(np.concatenate([edges, rng.integers(0, nbits, size=1200)]))
    assert bits.size >= 1000
    out = np.empty((decoder.chunk_len, *decoder.shape[1:]), dtype=decoder.dtype)
    silent = named = 0
    for bit in bits.tolist():
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(flipped)
        out[...] = good  # a silent failure would have to change what a good decode gives
        try:
            decoder.decode_into(0, out)
        except CorruptStoreError as exc:
            named += str(target) in str(exc)
        else:
            silent += 1
    assert silent == 0
    assert named == bits.size
    target.write_bytes(raw)
    np.testing.assert_array_equal(decoder.read_chunk(0), good)


# ------------------------------------------------------------ a replaced store
def test_store_replaced_under_a_live_loader(tmp_path: Path) -> None:
    """A Loader never reads a store that replaced its own: StoreChangedError names the path."""
    from fastload.errors import StoreChangedError

    path = tmp_path / "r.zarr"
    old, new = _data(1), _data(2)
    fl.write_arrays(path, {"train": old}, chunk_len=CHUNK)
    split = fl.open_store(path)["train"]
    loader = fl.Loader(split, 64, fields=("X",), shuffle=False, workers=0)
    first = [np.array(b["X"]) for b in loader]
    np.testing.assert_array_equal(np.concatenate(first), old["X"])
    fl.write_arrays(path, {"train": new}, chunk_len=CHUNK, overwrite=True)
    with pytest.raises(FastloadError, match=str(path)) as info:
        for _ in loader:
            pass
    assert "was replaced" in str(info.value)
    assert "re-open" in str(info.value)
    assert isinstance(info.value, StoreChangedError)
    loader.close()
    with pytest.raises(StoreChangedError):
        split.read("X")
    np.testing.assert_array_equal(fl.open_store(path)["train"].read("X"), new["X"])


def test_old_stores_without_checksums_still_read(store: Path) -> None:
    """A store whose arrays have no crc32c codec (written before it was added) opens and reads."""
    import zarr

    want = fl.open_store(store)["train"].read("X")
    meta = store / "train" / "X" / "zarr.json"
    for chunk in sorted((store / "train" / "X" / "c").glob("*/0")):
        chunk.write_bytes(chunk.read_bytes()[:-4])
    edit_json(meta, lambda m: m.__setitem__("codecs", m["codecs"][:2]))
    opened = fl.open_store(store)
    assert not opened.checksums
    np.testing.assert_array_equal(opened["train"].read("X"), want)
    np.testing.assert_array_equal(zarr.open_array(store / "train" / "X", mode="r")[:], want)
    assert json.loads(meta.read_text())["codecs"][-1]["name"] == "blosc"


def test_zarr_python_reads_checksummed_stores(store: Path) -> None:
    import zarr

    arr = zarr.open_array(store / "train" / "X", mode="r")
    np.testing.assert_array_equal(arr[:], fl.open_store(store)["train"].read("X"))
