"""Conformance tests of the :class:`~fastload.Source` contract, in the style of zarr's ``StoreTests``.

A test module subclasses :class:`SourceTests` and says what to test in one of
two ways; pytest then runs every check below against it.  Either implement
:meth:`~SourceTests.make_source`, a factory the suite hands its own arrays
(:func:`identifiable_arrays`: every value tells which sample it is)::

    from fastload.testing import SourceTests

    class TestMySource(SourceTests):
        def make_source(self, arrays, chunk_len):
            return MySource(arrays, chunk_len)   # holds exactly ``arrays``

or define a ``case`` fixture returning a :class:`SourceCase`: a source and the
arrays it must serve (an existing store, other dtypes, other chunkings)::

    class TestMyStore(SourceTests):
        @pytest.fixture(scope="class")  # built once for all the checks
        @classmethod
        def case(cls):
            arrays = {"X": np.arange(60.0).reshape(20, 3), "hits": fl.Ragged.from_list(...)}
            return SourceCase(make_my_source(arrays, chunk_len=6), arrays, chunk_len=6)

The checks: the members of the protocol; length and chunking (``n_chunks``,
the partial last chunk); the fields' shapes, dtypes, raggedness and
``max_len`` against the arrays; every chunk of every field decoding to exactly
the expected rows (into buffers pre-filled with two different byte patterns, so
a row the decoder did not write is caught); decoders surviving ``pickle``,
``cloudpickle`` and ``copy.deepcopy``; unfit buffers (another dtype or row
shape, too few rows, strided, read-only; for ragged fields also the offsets)
and chunk indices out of range raising a
:class:`~fastload.errors.FastloadError` before anything is written; an unknown
field refused; and a :class:`fastload.Loader` (inline, thread and process
backends) and a :class:`fastload.Mix` delivering every sample exactly once per
epoch with the expected values.  Keep a case small (tens of samples, a few
chunks): every chunk is decoded several times and whole epochs are loaded.

This module needs pytest (``pip install 'fastload[dev]'``); ``import fastload``
never imports it.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload._messages import missing_dependency
from fastload._source import (
    DenseChunkDecoder,
    RaggedChunkDecoder,
    Source,
    missing_members,
)
from fastload.errors import FastloadError

try:
    import pytest
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise missing_dependency("pytest", "dev") from exc

__all__ = ["SourceCase", "SourceTests", "identifiable_arrays"]

#: (workers, backend) of the loader checks: inline, threads, processes
LOADER_ENGINES = ((0, "process"), (2, "thread"), (2, "process"))
#: byte patterns buffers are filled with before a decode: rows left unwritten keep one
_FILLS = (0x00, 0xA5)


def identifiable_arrays(n: int) -> dict[str, Any]:
    """``X`` (n, 3, 2) float32, ``y`` (n,) int64 and ragged ``hits`` (i % 4 rows of 2 float32).

    Sample ``i`` has ``y[i] = i``, ``X[i] = 10 i + arange(6).reshape(3, 2)`` and
    ``hits[i][j] = (i, j)``: the arrays :meth:`SourceTests.make_source` receives.
    """
    from fastload.store import Ragged

    i = np.arange(n)
    X = (10.0 * i[:, None, None] + np.arange(6).reshape(3, 2)).astype(np.float32)
    hits = Ragged.from_list(
        [np.stack([np.full(k % 4, k), np.arange(k % 4)], axis=1).astype(np.float32) for k in i]
    )
    return {"X": X, "y": i.astype(np.int64), "hits": hits}


@dataclass(frozen=True)
class SourceCase:
    """A source under test and what it must serve.

    Attributes
    ----------
    source
        The :class:`~fastload.Source` to check.
    expected
        Every field the source serves, all samples in source order: an array
        ``(n, *shape)`` for a dense field, a :class:`~fastload.Ragged` for a
        ragged one.
    chunk_len
        The chunk length the source was built with, checked when given.
    """

    source: Source
    expected: Mapping[str, Any]
    chunk_len: int | None = None

    @property
    def n(self) -> int:
        """Samples of the expected arrays."""
        return len(next(iter(self.expected.values())))

    def is_ragged(self, field: str) -> bool:
        """True when the expected value of ``field`` is ragged (has values and offsets)."""
        value = self.expected[field]
        return hasattr(value, "values") and hasattr(value, "offsets")

    def rows(self, field: str) -> tuple[tuple[int, ...], np.dtype]:
        """Per-row shape and dtype of the expected ``field`` (its values' rows if ragged)."""
        value = self.expected[field]
        data = np.asarray(value.values if self.is_ragged(field) else value)
        return tuple(data.shape[1:]), data.dtype

    def sample(self, field: str, i: int) -> np.ndarray:
        """Expected rows of sample ``i`` of ``field``."""
        value = self.expected[field]
        if self.is_ragged(field):
            offsets = np.asarray(value.offsets)
            return np.asarray(value.values)[offsets[i] : offsets[i + 1]]
        return np.asarray(value)[i]

    def counts(self, field: str) -> np.ndarray:
        """Rows of every sample of a ragged ``field``."""
        return np.diff(np.asarray(self.expected[field].offsets))


def _filled(shape: tuple[int, ...], dtype: np.dtype, byte: int) -> np.ndarray:
    out = np.empty(shape, dtype=dtype)
    out.view(np.uint8).reshape(-1)[...] = byte
    return out


def _chunk_bounds(case: SourceCase, chunk: int) -> tuple[int, int]:
    chunk_len = case.source.chunk_len
    return chunk * chunk_len, min((chunk + 1) * chunk_len, len(case.source))


def _other_dtype(dtype: np.dtype) -> np.dtype:
    """A dtype unlike ``dtype`` with the same item size where one exists (bytes would fit)."""
    for candidate in ("f4", "i4", "f8", "i8", "u1", "i2"):
        other = np.dtype(candidate)
        if other != dtype and other.itemsize == dtype.itemsize:
            return other
    return np.dtype("f8") if dtype != np.dtype("f8") else np.dtype("i8")


def _decode_dense(decoder: Any, chunk: int, shape: tuple[int, ...], dtype: np.dtype, fill: int):
    out = _filled((decoder.chunk_len, *shape), dtype, fill)
    rows = decoder.decode_into(chunk, out)
    return rows, out


def _decode_ragged(decoder: Any, chunk: int, shape: tuple[int, ...], dtype: np.dtype, fill: int):
    values = _filled((max(decoder.capacity_rows(), 1), *shape), dtype, fill)
    offsets = _filled((decoder.chunk_len + 1,), np.dtype(np.int64), fill)
    rows = decoder.decode_into(chunk, values, offsets)
    return rows, values, offsets


def _assert_chunk(case: SourceCase, field: str, decoder: Any, chunk: int) -> None:
    """Decode ``chunk`` of ``field`` twice (different fills) and compare with the expected rows."""
    lo, hi = _chunk_bounds(case, chunk)
    shape, dtype = case.rows(field)
    where = f"field {field!r} chunk {chunk} of {case.source.name!r}"
    for fill in _FILLS:
        if case.is_ragged(field):
            rows, values, offsets = _decode_ragged(decoder, chunk, shape, dtype, fill)
            assert rows == hi - lo, f"{where}: decode_into returned {rows}, expected {hi - lo}"
            bounds = offsets[: rows + 1]
            assert np.all(np.diff(bounds) >= 0), f"{where}: offsets decrease: {bounds}"
            assert bounds[0] >= 0, f"{where}: offsets start at {bounds[0]}"
            assert bounds[-1] <= decoder.capacity_rows(), f"{where}: offsets pass capacity_rows()"
            for k in range(rows):
                got = values[bounds[k] : bounds[k + 1]]
                np.testing.assert_array_equal(
                    got, case.sample(field, lo + k), err_msg=f"{where}, sample {lo + k}"
                )
        else:
            rows, out = _decode_dense(decoder, chunk, shape, dtype, fill)
            assert rows == hi - lo, f"{where}: decode_into returned {rows}, expected {hi - lo}"
            np.testing.assert_array_equal(
                out[:rows], np.asarray(case.expected[field])[lo:hi], err_msg=where
            )


def _padded(case: SourceCase, field: str, index: np.ndarray, length: int):
    """What a loader delivers for ragged ``field`` at samples ``index``: zero padded + lengths."""
    shape, dtype = case.rows(field)
    out = np.zeros((index.size, length, *shape), dtype=dtype)
    lens = np.zeros(index.size, dtype=np.int64)
    for k, i in enumerate(index.tolist()):
        rows = case.sample(field, i)[:length]
        out[k, : len(rows)] = rows
        lens[k] = len(rows)
    return out, lens


def _expected_batch(case: SourceCase, index: np.ndarray) -> dict[str, np.ndarray]:
    want: dict[str, np.ndarray] = {}
    for field in case.expected:
        if case.is_ragged(field):
            length = max(int(case.counts(field).max(initial=0)), 1)
            want[field], want[f"{field}_len"] = _padded(case, field, index, length)
        else:
            want[field] = np.asarray(case.expected[field])[index]
    return want


def _assert_epoch(case: SourceCase, loader: Any) -> None:
    """One epoch of ``loader``: the plan's batches, every sample once, with the expected values."""
    plan = loader.plan()  # of the epoch about to run
    batches = list(loader)
    assert len(batches) == plan.n_batches
    seen = []
    for b, batch in enumerate(batches):
        _, index = plan.batch(b)
        want = _expected_batch(case, index)
        assert set(batch) == set(want), f"batch {b}: fields {sorted(batch)}, want {sorted(want)}"
        for name, value in want.items():
            assert batch[name].dtype == value.dtype, f"batch {b} field {name}"
            np.testing.assert_array_equal(batch[name], value, err_msg=f"batch {b} field {name}")
        seen.append(index)
    delivered = np.sort(np.concatenate(seen))
    np.testing.assert_array_equal(delivered, np.arange(case.n), err_msg="not every sample once")


class SourceTests:
    """The conformance suite of :class:`~fastload.Source`; see the module docstring.

    Subclasses implement :meth:`make_source` or override the ``case`` fixture.
    Class attributes they may change: ``n_samples`` and ``chunk_len`` of the
    default case (a partial last chunk), ``batch_size`` of the loader checks.
    """

    n_samples = 53
    chunk_len = 8
    batch_size = 5

    def make_source(self, arrays: dict[str, Any], chunk_len: int) -> Source:
        """A source holding exactly ``arrays`` (dense numpy arrays and a ``fl.Ragged``) in chunks of ``chunk_len``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_source(arrays, chunk_len), or define a "
            "`case` fixture returning a fastload.testing.SourceCase"
        )

    @pytest.fixture
    def case(self) -> SourceCase:
        """The default case: :meth:`make_source` over :func:`identifiable_arrays`."""
        arrays = identifiable_arrays(self.n_samples)
        return SourceCase(self.make_source(arrays, self.chunk_len), arrays, self.chunk_len)

    # ----------------------------------------------------------------- shape
    def test_has_the_members_of_source(self, case: SourceCase) -> None:
        assert missing_members(case.source) == []
        assert isinstance(case.source, Source)
        for member in ("name", "url"):  # url is optional
            if member == "url" and not hasattr(case.source, "url"):
                continue
            value = getattr(case.source, member)
            assert isinstance(value, str), f"{member} is {type(value).__name__}, not str"
            assert value, f"{member} is empty"

    def test_length(self, case: SourceCase) -> None:
        lengths = {f: len(v) for f, v in case.expected.items()}
        assert len(set(lengths.values())) == 1, f"the expected arrays disagree: {lengths}"
        assert len(case.source) == case.n

    def test_chunking(self, case: SourceCase) -> None:
        source = case.source
        assert isinstance(source.chunk_len, int), type(source.chunk_len)
        assert source.chunk_len >= 1
        if case.chunk_len is not None:
            assert source.chunk_len == case.chunk_len
        assert source.n_chunks == -(-case.n // source.chunk_len)
        # the last chunk holds what remains, every other one is full
        last = source.n_chunks - 1
        for field in case.expected:
            decoder = source.decoder(field)
            shape, dtype = case.rows(field)
            if case.is_ragged(field):
                rows = _decode_ragged(decoder, last, shape, dtype, 0)[0]
            else:
                rows = _decode_dense(decoder, last, shape, dtype, 0)[0]
            assert rows == case.n - last * source.chunk_len, f"last chunk of {field!r}"

    def test_fields_match_the_arrays(self, case: SourceCase) -> None:
        source = case.source
        assert set(source.fields) == set(case.expected)
        for field, info in source.fields.items():
            shape, dtype = case.rows(field)
            assert bool(info.ragged) == case.is_ragged(field), field
            assert tuple(info.shape) == shape, field
            assert np.dtype(info.dtype) == dtype, field
            if case.is_ragged(field):
                assert source.max_len(field) == int(case.counts(field).max(initial=0)), field
            else:
                assert source.max_len(field) == 0, field

    def test_offsets_when_present_are_the_row_counts(self, case: SourceCase) -> None:
        """``offsets(field)`` is optional; a source that has it gives ``len + 1`` offsets
        from 0 of every ragged field (what ``ragged={f: "offsets"}`` and the memory cache use)."""
        offsets_of = getattr(case.source, "offsets", None)
        if not callable(offsets_of):
            return
        for field in case.expected:
            if not case.is_ragged(field):
                continue
            want = np.zeros(case.n + 1, dtype=np.int64)
            np.cumsum(case.counts(field), out=want[1:])
            np.testing.assert_array_equal(np.asarray(offsets_of(field)), want, err_msg=field)

    def test_decoders_describe_their_field(self, case: SourceCase) -> None:
        source = case.source
        for field in case.expected:
            decoder = source.decoder(field)
            protocol = RaggedChunkDecoder if case.is_ragged(field) else DenseChunkDecoder
            assert isinstance(decoder, protocol), f"{field!r}: {type(decoder).__name__}"
            shape, dtype = case.rows(field)
            assert decoder.chunk_len == source.chunk_len, field
            assert tuple(decoder.row_shape) == shape, field
            assert np.dtype(decoder.dtype) == dtype, field
            if hasattr(decoder, "url"):  # optional: named in worker messages
                assert isinstance(decoder.url, str), field
                assert decoder.url, field
            if case.is_ragged(field):
                widest = max(
                    int(case.counts(field)[slice(*_chunk_bounds(case, c))].sum())
                    for c in range(source.n_chunks)
                )
                assert decoder.capacity_rows() >= widest, field

    # ----------------------------------------------------------------- decoding
    def test_every_chunk_decodes_to_the_expected_rows(self, case: SourceCase) -> None:
        for field in case.expected:
            decoder = case.source.decoder(field)
            for chunk in range(case.source.n_chunks):
                _assert_chunk(case, field, decoder, chunk)

    @pytest.mark.parametrize("how", ["pickle", "cloudpickle", "deepcopy"])
    def test_decoders_survive_pickling_and_copying(self, case: SourceCase, how: str) -> None:
        import cloudpickle

        roundtrip = {
            "pickle": lambda d: pickle.loads(pickle.dumps(d)),
            "cloudpickle": lambda d: pickle.loads(cloudpickle.dumps(d)),
            "deepcopy": copy.deepcopy,
        }[how]
        last = case.source.n_chunks - 1
        for field in case.expected:
            decoder = roundtrip(case.source.decoder(field))
            for chunk in sorted({0, last}):
                _assert_chunk(case, field, decoder, chunk)

    def test_unfit_buffers_raise_before_writing(self, case: SourceCase) -> None:
        for field in case.expected:
            decoder = case.source.decoder(field)
            for what, call, buffers in _unfit_calls(case, field, decoder):
                before = [b.copy() for b in buffers]
                with pytest.raises(FastloadError):
                    call()
                for b, saved in zip(buffers, before, strict=True):
                    np.testing.assert_array_equal(
                        b, saved, err_msg=f"{field!r}: {what} was written to before the error"
                    )

    def test_chunks_out_of_range_raise(self, case: SourceCase) -> None:
        n_chunks = case.source.n_chunks
        for field in case.expected:
            decoder = case.source.decoder(field)
            shape, dtype = case.rows(field)
            for chunk in (n_chunks, n_chunks + 3, -1):
                if case.is_ragged(field):
                    values = _filled((max(decoder.capacity_rows(), 1), *shape), dtype, 0xA5)
                    offsets = _filled((decoder.chunk_len + 1,), np.dtype(np.int64), 0xA5)
                    with pytest.raises(FastloadError, match="out of range"):
                        decoder.decode_into(chunk, values, offsets)
                else:
                    out = _filled((decoder.chunk_len, *shape), dtype, 0xA5)
                    with pytest.raises(FastloadError, match="out of range"):
                        decoder.decode_into(chunk, out)

    def test_an_unknown_field_is_refused(self, case: SourceCase) -> None:
        with pytest.raises(KeyError):  # FieldNotFoundError for fastload's sources
            case.source.decoder("not a field of this source")
        with pytest.raises(KeyError):
            case.source.max_len("not a field of this source")

    # ----------------------------------------------------------------- loading
    @pytest.mark.parametrize(("workers", "backend"), LOADER_ENGINES)
    def test_loader_delivers_every_sample_once(
        self, case: SourceCase, workers: int, backend: str
    ) -> None:
        import fastload as fl

        batch_size = min(self.batch_size, case.n)
        with fl.Loader(
            case.source, batch_size, seed=3, workers=workers, backend=backend, copy=True
        ) as loader:
            for _ in range(2):  # two epochs: two permutations, the same samples
                _assert_epoch(case, loader)

    def test_mix_of_the_source_delivers_each_copy_once(self, case: SourceCase) -> None:
        import fastload as fl

        mix = fl.Mix({"a": case.source, "b": case.source}, label_field="source_label")
        batch_size = max(2, min(2 * self.batch_size, 2 * case.n))
        with fl.Loader(mix, batch_size, seed=5, workers=0, copy=True) as loader:
            plan = loader.plan()
            batches = list(loader)
        per_source: list[list[int]] = [[], []]
        for b, batch in enumerate(batches):
            sources, index = plan.batch(b)
            np.testing.assert_array_equal(batch["source_label"], sources)
            want = _expected_batch(case, index)
            for name, value in want.items():
                np.testing.assert_array_equal(batch[name], value, err_msg=f"batch {b} {name}")
            for s in (0, 1):
                per_source[s].extend(index[sources == s].tolist())
        for s in (0, 1):
            assert len(per_source[s]) == len(set(per_source[s])), "a sample came twice"
            assert set(per_source[s]) <= set(range(case.n))


def _unfit_calls(case: SourceCase, field: str, decoder: Any) -> Iterator[tuple[str, Any, list]]:
    """(what, call, buffers) for each unfit buffer of ``field``: every call must raise."""
    shape, dtype = case.rows(field)
    other = _other_dtype(dtype)
    chunk_len = decoder.chunk_len
    if not case.is_ragged(field):

        def dense(out: np.ndarray) -> tuple[Any, list]:
            return (lambda: decoder.decode_into(0, out)), [out]

        bad: dict[str, np.ndarray] = {
            "a buffer of another dtype": _filled((chunk_len, *shape), other, 0xA5),
            "a buffer with another row shape": _filled((chunk_len, *shape, 2), dtype, 0xA5),
            "a buffer with too few rows": _filled((chunk_len - 1, *shape), dtype, 0xA5),
        }
        # every other row of a buffer of >= 2 * 2 rows (numpy calls one strided row contiguous)
        strided = _filled((2 * max(chunk_len, 2), *shape), dtype, 0xA5)[::2]
        if not strided.flags.c_contiguous:  # rows of no bytes are contiguous in any layout
            bad["a non-contiguous buffer"] = strided
        readonly = _filled((chunk_len, *shape), dtype, 0xA5)
        readonly.flags.writeable = False
        bad["a read-only buffer"] = readonly
        for what, out in bad.items():
            yield (what, *dense(out))
        return
    capacity = max(decoder.capacity_rows(), 1)
    good_values = _filled((capacity, *shape), dtype, 0xA5)
    good_offsets = _filled((chunk_len + 1,), np.dtype(np.int64), 0xA5)
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "values of another dtype": (_filled((capacity, *shape), other, 0xA5), good_offsets),
        "values with another row shape": (
            _filled((capacity, *shape, 2), dtype, 0xA5),
            good_offsets,
        ),
        "int32 offsets": (good_values, _filled((chunk_len + 1,), np.dtype(np.int32), 0xA5)),
        "offsets too short": (good_values, _filled((chunk_len,), np.dtype(np.int64), 0xA5)),
    }
    if decoder.capacity_rows() > 0:
        cases["values with too few rows"] = (
            _filled((decoder.capacity_rows() - 1, *shape), dtype, 0xA5),
            good_offsets,
        )
    for what, (values, offsets) in cases.items():
        yield (
            what,
            (lambda v=values, o=offsets: decoder.decode_into(0, v, o)),
            [values, offsets],
        )
