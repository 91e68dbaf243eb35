"""Both shipped Sources pass the conformance suite: a Zarr store's split and fl.from_arrays."""

from __future__ import annotations

from typing import Any

import pytest

import fastload as fl
from fastload.testing import SourceTests

pytestmark = pytest.mark.usefixtures("no_leaks")


class TestStoreSplit(SourceTests):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path) -> None:
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


def test_from_arrays_copies_its_inputs_and_is_read_only():
    import numpy as np

    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    source = fl.from_arrays({"X": X}, chunk_len=4)
    X[:] = -1  # the caller's later edits change nothing
    np.testing.assert_array_equal(source.read("X"), np.arange(12).reshape(6, 2))
    assert not source.read("X").flags.writeable


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "non-empty mapping"),
        ({"X": [[1, 2]], "y": [1, 2]}, "different lengths"),
        ({"s": ["a", "b"]}, "numbers or bool"),
        ({"x": 3.0}, "scalar"),
    ],
)
def test_from_arrays_refuses_what_a_store_could_not_hold(arrays, message):
    with pytest.raises(fl.errors.FastloadError, match=message):
        fl.from_arrays(arrays)


def test_a_mix_of_memory_splits(no_leaks):
    import numpy as np

    a = fl.from_arrays({"v": np.zeros(30, np.float32)}, chunk_len=4)
    b = fl.from_arrays({"v": np.ones(10, np.float32)}, chunk_len=3)
    with fl.Loader(fl.Mix({"a": a, "b": b}, label_field="label"), 8, workers=2) as loader:
        batches = list(b["v"].copy() for b in loader)
        labels = [b["label"].copy() for b in loader]
    assert sum(len(v) for v in batches) == 40
    for v, lab in zip(batches, labels, strict=True):
        np.testing.assert_array_equal(v, lab.astype(np.float32))


def test_a_loader_refuses_what_is_not_a_source():
    with pytest.raises(fl.errors.ConfigError, match=r"without .*decoder"):
        fl.Loader({"X": [1, 2, 3]}, 2)
