"""Conformance tests for :class:`~fastload.Source` implementations (pytest).

Subclass :class:`SourceTests` in a test module and implement
:meth:`~SourceTests.make_source`; pytest collects the inherited tests::

    from fastload.testing import SourceTests

    class TestMySource(SourceTests):
        def make_source(self, arrays, chunk_len):
            return MySource(arrays, chunk_len)   # holds exactly ``arrays``

The suite writes identifiable samples (every value tells which sample it is),
so it checks not only shapes but that each chunk holds the right rows, that
decoders survive pickling (process workers receive them that way), that a
wrong buffer or chunk index is refused rather than filled, and that a
:class:`~fastload.Loader` over the source delivers every sample exactly once
with its values, on every backend.  Importing this module needs pytest;
``import fastload`` does not.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import fastload as fl
from fastload._source import Source
from fastload.errors import FastloadError

__all__ = ["SourceTests", "identifiable_arrays"]


def identifiable_arrays(n: int) -> dict[str, Any]:
    """``X`` (n, 3, 2) float32, ``y`` (n,) int64 and ragged ``hits`` (i % 4 rows of 2 float32).

    Sample ``i`` has ``y[i] = i``, ``X[i] = 10 i + arange(6).reshape(3, 2)`` and
    ``hits[i][j] = (i, j)``.
    """
    i = np.arange(n)
    X = (10.0 * i[:, None, None] + np.arange(6).reshape(3, 2)).astype(np.float32)
    hits = fl.Ragged.from_list(
        [np.stack([np.full(k % 4, k), np.arange(k % 4)], axis=1).astype(np.float32) for k in i]
    )
    return {"X": X, "y": i.astype(np.int64), "hits": hits}


class SourceTests:
    """The contract every Source must keep; see the module docstring."""

    #: samples and chunk length of the source under test (a partial last chunk)
    n_samples = 53
    chunk_len = 8

    def make_source(self, arrays: dict[str, Any], chunk_len: int) -> Source:
        """A source holding exactly ``arrays`` (dense numpy arrays and a ``fl.Ragged``)."""
        raise NotImplementedError("subclasses of SourceTests implement make_source()")

    # ------------------------------------------------------------- fixtures
    @pytest.fixture
    def arrays(self) -> dict[str, Any]:
        return identifiable_arrays(self.n_samples)

    @pytest.fixture
    def source(self, arrays: dict[str, Any]) -> Source:
        return self.make_source(arrays, self.chunk_len)

    # ------------------------------------------------------------ structure
    def test_is_a_source(self, source: Source) -> None:
        assert isinstance(source, Source)
        assert isinstance(source.name, str)
        assert source.name

    def test_length_and_chunking(self, source: Source) -> None:
        assert len(source) == self.n_samples
        assert source.chunk_len == self.chunk_len
        assert source.n_chunks == -(-self.n_samples // self.chunk_len)

    def test_fields_describe_the_arrays(self, source: Source, arrays: dict[str, Any]) -> None:
        assert set(source.fields) == set(arrays)
        for name, value in arrays.items():
            info = source.fields[name]
            ragged = isinstance(value, fl.Ragged)
            rows = value.values if ragged else value
            assert info.ragged is ragged, name
            assert tuple(info.shape) == rows.shape[1:], name
            assert np.dtype(info.dtype) == rows.dtype, name

    def test_max_len(self, source: Source, arrays: dict[str, Any]) -> None:
        assert source.max_len("hits") == int(np.diff(arrays["hits"].offsets).max())
        assert source.max_len("X") == 0

    # -------------------------------------------------------------- decoding
    def test_every_dense_chunk_decodes_to_its_rows(
        self, source: Source, arrays: dict[str, Any]
    ) -> None:
        for name in ("X", "y"):
            decoder = source.decoder(name)
            assert decoder.ragged is False
            out = np.full((decoder.chunk_len, *decoder.shape[1:]), -1, dtype=decoder.dtype)
            for chunk in range(source.n_chunks):
                rows = decoder.decode_into(chunk, out)
                start = chunk * self.chunk_len
                expected = arrays[name][start : start + self.chunk_len]
                assert rows == len(expected)
                np.testing.assert_array_equal(out[:rows], expected)

    def test_every_ragged_chunk_decodes_to_its_samples(
        self, source: Source, arrays: dict[str, Any]
    ) -> None:
        decoder = source.decoder("hits")
        assert decoder.ragged is True
        assert decoder.event_chunk_len == self.chunk_len
        values = np.empty((decoder.capacity_rows(), 2), dtype=np.float32)
        offsets = np.empty(self.chunk_len + 1, dtype=np.int64)
        hits = arrays["hits"]
        for chunk in range(source.n_chunks):
            decoder.decode_into(chunk, values, offsets)
            first = chunk * self.chunk_len
            for k in range(min(self.chunk_len, self.n_samples - first)):
                i = first + k
                expected = hits.values[hits.offsets[i] : hits.offsets[i + 1]]
                np.testing.assert_array_equal(values[offsets[k] : offsets[k + 1]], expected)

    @pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
    def test_decoders_pickle_and_still_decode(
        self, source: Source, arrays: dict[str, Any], dumps: str
    ) -> None:
        module = pickle if dumps == "pickle" else pytest.importorskip("cloudpickle")
        decoder = pickle.loads(module.dumps(source.decoder("X")))
        out = np.empty((decoder.chunk_len, *decoder.shape[1:]), dtype=decoder.dtype)
        last = source.n_chunks - 1
        rows = decoder.decode_into(last, out)
        np.testing.assert_array_equal(out[:rows], arrays["X"][last * self.chunk_len :])

    def test_a_wrong_buffer_is_refused(self, source: Source) -> None:
        decoder = source.decoder("X")
        row_shape = tuple(decoder.shape[1:])
        for wrong in (
            np.zeros((self.chunk_len, *row_shape), dtype=np.float64),  # other dtype
            np.zeros((self.chunk_len, 7), dtype=decoder.dtype),  # other row shape
            np.zeros((self.chunk_len - 1, *row_shape), dtype=decoder.dtype),  # too few rows
        ):
            before = wrong.copy()
            with pytest.raises(FastloadError):
                decoder.decode_into(0, wrong)
            np.testing.assert_array_equal(wrong, before)  # nothing written

    def test_a_chunk_out_of_range_is_refused(self, source: Source) -> None:
        decoder = source.decoder("X")
        out = np.empty((decoder.chunk_len, *decoder.shape[1:]), dtype=decoder.dtype)
        for chunk in (-1, source.n_chunks):
            with pytest.raises(IndexError):
                decoder.decode_into(chunk, out)

    def test_an_unknown_field_is_refused(self, source: Source) -> None:
        with pytest.raises(fl.errors.FieldNotFoundError):
            source.decoder("not_a_field")

    # ---------------------------------------------------------------- loader
    @pytest.mark.parametrize(
        ("backend", "workers"), [("process", 2), ("thread", 2), ("process", 0)]
    )
    def test_a_loader_delivers_every_sample_once(
        self, source: Source, arrays: dict[str, Any], backend: str, workers: int
    ) -> None:
        with fl.Loader(source, 6, seed=3, workers=workers, backend=backend) as loader:
            for _ in range(2):
                seen = []
                for batch in loader:
                    ids = batch["y"]
                    np.testing.assert_array_equal(batch["X"], arrays["X"][ids])
                    np.testing.assert_array_equal(batch["hits_len"], ids % 4)
                    for row, i in enumerate(ids):
                        k = int(i % 4)
                        np.testing.assert_array_equal(batch["hits"][row, :k, 0], np.full(k, i))
                        assert not batch["hits"][row, k:].any()  # padding is zero
                    seen.append(ids.copy())
                np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(len(source)))
