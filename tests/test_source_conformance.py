"""Both shipped Sources pass the conformance suite: a Zarr store's split and fl.from_arrays.

``fastload.testing.SourceTests`` runs in both of its modes: through
``make_source`` (the suite's identifiable arrays) and through ``case`` fixtures
over arrays of every kind of field (float rows, int labels, bools, float64,
ragged hits with empty samples), for a Zarr split (ragged values spread over
several value chunks; one chunk for everything) and the in-memory split (the
same arrays; one sample per chunk; fewer samples than a chunk).  The rest checks
what is particular to ``fl.from_arrays`` (validation, copies, defaults) and the
``ConfigError`` a loader or mix gives for an object that is not a Source.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError, EmptyDatasetError, NonFiniteError, SchemaError
from fastload.testing import SourceCase, SourceTests, identifiable_arrays

pytestmark = pytest.mark.usefixtures("no_leaks")

N = 31  # chunks of 7: four full chunks and a partial one of 3


def arrays(n: int = N) -> dict[str, np.ndarray | fl.Ragged]:
    """Every kind of field: float rows, int labels, bools, and ragged hits (some samples empty)."""
    i = np.arange(n)
    return {
        "X": (100.0 * i[:, None, None] + np.arange(6).reshape(3, 2)).astype(np.float32),
        "y": (i % 3).astype(np.int64),
        "mask": (i[:, None] + np.arange(4)) % 2 == 0,
        "energy": (1.5 * i).astype(np.float64),
        "hits": fl.Ragged.from_list(
            [np.stack([np.full(k % 6, k), np.arange(k % 6)], axis=1).astype(np.float32) for k in i]
        ),
    }


# --------------------------------------------------------------------------- conformance
class TestStoreSplit(SourceTests):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path

    def make_source(self, arrays: dict[str, Any], chunk_len: int) -> fl.Source:
        path = self.folder / "conformance.zarr"
        fl.write_arrays(path, {"train": arrays}, chunk_len=chunk_len)
        return fl.open_store(path)["train"]


class TestMemorySplit(SourceTests):
    def make_source(self, arrays: dict[str, Any], chunk_len: int) -> fl.Source:
        return fl.from_arrays(arrays, chunk_len=chunk_len, name="train")


class TestMemorySplitWithFewSamples(TestMemorySplit):
    n_samples = 5  # fewer samples than one chunk
    chunk_len = 8


class TestStoreSplitOfEveryKind(SourceTests):
    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, tmp_path_factory: pytest.TempPathFactory) -> SourceCase:
        data = arrays()
        path = tmp_path_factory.mktemp("conformance") / "store.zarr"
        # 64-byte value chunks: 8 hit rows, so an event chunk spans several value chunks
        fl.write_arrays(path, {"train": data}, chunk_len=7, chunk_bytes=64)
        split = fl.open_store(path)["train"]
        assert split.reader("hits", "values").chunk_len == 8
        return SourceCase(split, data, chunk_len=7)


class TestStoreSplitOneChunk(SourceTests):
    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, tmp_path_factory: pytest.TempPathFactory) -> SourceCase:
        data = arrays()
        path = tmp_path_factory.mktemp("conformance") / "one_chunk.zarr"
        fl.write_arrays(path, {"val": data})  # default chunking: everything in chunk 0
        split = fl.open_store(path)["val"]
        assert split.n_chunks == 1
        return SourceCase(split, data)


class TestMemorySplitOfEveryKind(SourceTests):
    @pytest.fixture(scope="class")
    @classmethod
    def case(cls) -> SourceCase:
        data = arrays()
        return SourceCase(fl.from_arrays(data, chunk_len=7, name="train"), data, chunk_len=7)


class TestMemorySplitOneSamplePerChunk(SourceTests):
    batch_size = 4

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls) -> SourceCase:
        data = arrays(9)
        return SourceCase(fl.from_arrays(data, chunk_len=1), data, chunk_len=1)


def test_the_suite_catches_a_decoder_that_leaves_rows_unwritten() -> None:
    """A decoder writing one row short fails the chunk check (the suite is not vacuous)."""
    from fastload.testing import _assert_chunk

    data = arrays()
    source = fl.from_arrays(data, chunk_len=7)
    decoder = source.decoder("X")

    class Short:
        chunk_len, row_shape, dtype, url = 7, (3, 2), np.dtype("<f4"), "memory:short"

        def decode_into(self, chunk: int, out: np.ndarray) -> int:
            full = np.empty_like(out)
            rows = decoder.decode_into(chunk, full)
            out[: rows - 1] = full[: rows - 1]  # the last row keeps whatever the buffer held
            return rows

    case = SourceCase(source, data)
    _assert_chunk(case, "X", decoder, 2)
    with pytest.raises(AssertionError):
        _assert_chunk(case, "X", Short(), 2)


# --------------------------------------------------------------------------- fl.from_arrays
def test_from_arrays_copies_and_freezes_the_arrays() -> None:
    """Changing the caller's array later changes nothing; what the split holds is read-only."""
    X = np.arange(20.0).reshape(10, 2)
    split = fl.from_arrays({"X": X}, chunk_len=4)
    X[:] = -1
    read = split.read("X")
    np.testing.assert_array_equal(read, np.arange(20.0).reshape(10, 2))
    assert not read.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        read[0, 0] = 5
    decoder = pickle.loads(pickle.dumps(split.decoder("X")))
    assert not decoder.data.flags.writeable  # unpickled arrays are frozen again
    assert copy.deepcopy(decoder) is decoder  # thread workers share it: no copy of the data


def test_from_arrays_normalises_layout_and_byte_order() -> None:
    """Fortran-ordered and big-endian arrays are served C-contiguous and little-endian."""
    X = np.asfortranarray(np.arange(24, dtype=">f4").reshape(6, 4))
    split = fl.from_arrays({"X": X}, chunk_len=4)
    assert split.fields["X"].dtype == np.dtype("<f4")
    read = split.read("X")
    assert read.flags.c_contiguous
    np.testing.assert_array_equal(read, np.arange(24, dtype=np.float32).reshape(6, 4))


def test_from_arrays_default_chunk_len_is_the_stores(tmp_path: Path) -> None:
    """Without chunk_len, the split chunks as fl.write_arrays would: the same epochs."""
    data = {"X": np.zeros((5000, 64, 4), np.float32), "y": np.zeros(5000, np.int64)}
    fl.write_arrays(tmp_path / "s.zarr", {"train": data})
    stored = fl.open_store(tmp_path / "s.zarr")["train"]
    in_memory = fl.from_arrays(data)
    assert in_memory.chunk_len == stored.chunk_len == 4096
    with (
        fl.Loader(stored, 64, seed=1, workers=0) as a,
        fl.Loader(in_memory, 64, seed=1, workers=0) as b,
    ):
        np.testing.assert_array_equal(a.plan().index, b.plan().index)


def test_from_arrays_reads_like_a_store_split(tmp_path: Path) -> None:
    """read(), arrays(), max_len() and fields agree with the Zarr split of the same arrays."""
    data = arrays()
    fl.write_arrays(tmp_path / "s.zarr", {"train": data}, chunk_len=7)
    stored = fl.open_store(tmp_path / "s.zarr")["train"]
    split = fl.from_arrays(data, chunk_len=7, name="train")
    assert split.fields == stored.fields
    assert split.max_len("hits") == stored.max_len("hits") == 5
    assert split.max_len("X") == 0
    for field in data:
        a, b = split.read(field, 3, 17), stored.read(field, 3, 17)
        if isinstance(a, fl.Ragged):
            np.testing.assert_array_equal(a.values, b.values)
            np.testing.assert_array_equal(a.offsets, b.offsets)
        else:
            np.testing.assert_array_equal(a, b)
    assert set(split.arrays()) == set(data)
    assert "MemorySplit 'train' n=31 chunk_len=7" in repr(split)
    assert split.url == "memory:train"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({}, SchemaError, "no field"),
        ([np.zeros(3)], SchemaError, "must be a mapping"),
        ({"X": np.zeros(3), "y": np.zeros(4)}, SchemaError, r"unequal lengths \(X=3, y=4\)"),
        ({"X": np.array(1.0)}, SchemaError, "'X' is a scalar"),
        ({"s": np.array(["a", "b"])}, SchemaError, "dtype <U1 is not supported"),
        ({"o": np.array([1, "a"], dtype=object)}, SchemaError, "dtype object"),
        ({"X": np.array([1.0, np.nan])}, NonFiniteError, "NaN or inf in sample 1"),
        ({"X": (np.zeros(4), np.array([0, 2, 4]))}, SchemaError, r"tuple; .*fl.Ragged"),
        ({"X": np.zeros((0, 3))}, EmptyDatasetError, "no sample"),
        ({"": np.zeros(3)}, SchemaError, "non-empty strings"),
    ],
)
def test_from_arrays_refuses_what_a_store_refuses(value, error, message) -> None:
    with pytest.raises(error, match=message):
        fl.from_arrays(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_len": 0}, "fl.from_arrays: chunk_len must be an integer >= 1, got 0"),
        ({"chunk_len": True}, "fl.from_arrays: chunk_len must be an integer"),
        ({"name": ""}, "fl.from_arrays: name must be a non-empty string"),
        ({"allow_nonfinite": "yes"}, "fl.from_arrays: allow_nonfinite must be True or False"),
    ],
)
def test_from_arrays_options_are_checked(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        fl.from_arrays({"X": np.zeros(3)}, **kwargs)


def test_from_arrays_allow_nonfinite_keeps_nan() -> None:
    split = fl.from_arrays({"X": np.array([1.0, np.nan, np.inf])}, allow_nonfinite=True)
    np.testing.assert_array_equal(split.read("X"), [1.0, np.nan, np.inf])


def test_unknown_field_names_the_in_memory_source() -> None:
    split = fl.from_arrays({"X": np.zeros(3)}, name="toy")
    with pytest.raises(KeyError, match=r"'Xx' not in 'memory:toy'.*closest: 'X'"):
        split.decoder("Xx")
    with pytest.raises(KeyError, match=r"'Xx' not in 'memory:toy'"):
        fl.Loader(split, 2, fields=("Xx",), workers=0)


# --------------------------------------------------------------------------- the contract
def test_loader_and_mix_refuse_what_is_not_a_source(tmp_path: Path) -> None:
    """A ConfigError names the parameter and the members the object lacks."""

    class HalfSource:
        name = "half"
        chunk_len = 4

        def __len__(self) -> int:
            return 8

    with pytest.raises(ConfigError, match=r"fl.Loader: source must be a source .*or a fl.Mix"):
        fl.Loader(np.zeros(8), 4)
    with pytest.raises(
        ConfigError, match=r"got HalfSource, without n_chunks, fields, max_len, decoder$"
    ):
        fl.Loader(HalfSource(), 4)
    good = fl.from_arrays({"X": np.zeros(8)})
    with pytest.raises(ConfigError, match=r"fl.Mix: sources\['b'\] must be a source.*HalfSource"):
        fl.Mix({"a": good, "b": HalfSource()})
    assert not isinstance(HalfSource(), fl.Source)
    assert isinstance(good, fl.Source)
    fl.write_arrays(tmp_path / "s.zarr", {"train": {"X": np.zeros(8)}})
    assert isinstance(fl.open_store(tmp_path / "s.zarr")["train"], fl.Source)


def test_a_source_of_another_kind_loads(tmp_path: Path) -> None:
    """Any object with the Source members feeds a Loader and a Mix (here: a relabelled split)."""

    class Renamed:
        """Another split under another name: delegation is all a Source needs."""

        def __init__(self, inner: fl.Source, name: str) -> None:
            self.inner, self.name = inner, name
            self.url = f"renamed:{inner.url}"

        def __len__(self) -> int:
            return len(self.inner)

        chunk_len = property(lambda self: self.inner.chunk_len)
        n_chunks = property(lambda self: self.inner.n_chunks)
        fields = property(lambda self: self.inner.fields)

        def max_len(self, field: str) -> int:
            return self.inner.max_len(field)

        def decoder(self, field: str):
            return self.inner.decoder(field)

    data = arrays()
    fl.write_arrays(tmp_path / "s.zarr", {"train": data}, chunk_len=5)
    stored = Renamed(fl.open_store(tmp_path / "s.zarr")["train"], "stored")
    memory = Renamed(fl.from_arrays(data, chunk_len=4), "memory")
    mix = fl.Mix({"s": stored, "m": memory})
    with fl.Loader(mix, 6, workers=2, backend="thread", seed=2) as loader:
        assert "sources=['s', 'm']" in repr(loader)
        seen = {0: [], 1: []}
        for batch in loader:
            for label, yv, x in zip(batch["label"], batch["y"], batch["X"][:, 0, 0], strict=True):
                i = round(float(x) / 100.0)
                assert yv == i % 3
                seen[int(label)].append(i)
    for s in (0, 1):
        assert len(seen[s]) == len(set(seen[s])) > N - 6


def test_a_mix_of_memory_splits() -> None:
    """Two in-memory sources of different sizes and chunkings mix, labels telling them apart."""
    a = fl.from_arrays({"v": np.zeros(30, np.float32)}, chunk_len=4)
    b = fl.from_arrays({"v": np.ones(10, np.float32)}, chunk_len=3)
    with fl.Loader(fl.Mix({"a": a, "b": b}, label_field="label"), 8, workers=2) as loader:
        batches = [(batch["v"].copy(), batch["label"].copy()) for batch in loader]
    assert sum(len(v) for v, _ in batches) == 40
    for v, label in batches:
        np.testing.assert_array_equal(v, label.astype(np.float32))


def test_identifiable_arrays_identify_their_samples() -> None:
    data = identifiable_arrays(9)
    np.testing.assert_array_equal(data["y"], np.arange(9))
    np.testing.assert_array_equal(data["X"][:, 0, 0], 10.0 * np.arange(9))
    assert [len(data["hits"][i]) for i in range(9)] == [i % 4 for i in range(9)]


def test_from_arrays_says_when_process_workers_will_copy_much(monkeypatch, caplog) -> None:
    """Above the bound (1 GiB; lowered here) an INFO record says every process worker gets a copy."""
    import logging

    import fastload._memory as memory

    monkeypatch.setattr(memory, "_LARGE_BYTES", 1000)
    with caplog.at_level(logging.INFO, logger="fastload"):
        fl.from_arrays({"X": np.zeros(100)}, name="small")  # 800 bytes: nothing said
        assert not caplog.records
        fl.from_arrays({"X": np.zeros(200)}, name="big")
    assert "fl.from_arrays(name='big')" in caplog.text
    assert "process workers each receive a copy" in caplog.text
