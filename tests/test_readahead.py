"""Read-ahead from the plan: bounded by its byte window, invisible in the batches, released always.

The mechanism (:mod:`fastload.store._readahead`) is instrumented: every
``ReadAhead`` records the most bytes it ever held; thread-backend loaders run
their workers in this process, so the tests see every instance the workers made.
Remote stores are fsspec ``memory://`` copies of local ones (the same code path
as ``s3://``: bounded GETs through fsspec, here without a network).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload.errors import ConfigError, CorruptStoreError
from fastload.store import _readahead

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def advise_small_files(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test stores' chunk files are freshly written (cached): read them ahead anyway."""
    if "real_page_cache" not in request.fixturenames:
        monkeypatch.setattr(_readahead, "_cached", lambda fd, size: False)


@pytest.fixture
def real_page_cache() -> None:
    """Requested by the tests that ask the page cache whether a file is cached."""


@pytest.fixture
def instances(monkeypatch: pytest.MonkeyPatch) -> list[_readahead.ReadAhead]:
    """Every ReadAhead created during the test (with the keys it was asked for)."""
    made: list[_readahead.ReadAhead] = []
    init = _readahead.ReadAhead.__init__
    want = _readahead.ReadAhead.want

    def tracking_init(self: _readahead.ReadAhead, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.asked = []  # type: ignore[attr-defined]
        made.append(self)

    def tracking_want(self: _readahead.ReadAhead, key: str, *args: Any) -> bool:
        self.asked.append(key)  # type: ignore[attr-defined]
        return want(self, key, *args)

    monkeypatch.setattr(_readahead.ReadAhead, "__init__", tracking_init)
    monkeypatch.setattr(_readahead.ReadAhead, "want", tracking_want)
    return made


_memory_count = [0]


def write_store(path: Path, n: int, chunk_len: int) -> fl.Split:
    """A one-split store of ``n`` identifiable samples (X (n, 8, 4) float32, y)."""
    i = np.arange(n)
    X = (100.0 * i[:, None, None] + np.arange(32).reshape(8, 4)).astype(np.float32)
    fl.write_arrays(path, {"train": {"X": X, "y": (i % 3).astype(np.int64)}}, chunk_len=chunk_len)
    return fl.open_store(path)["train"]


def remote_copy(split: fl.Split) -> fl.Split:
    """The store of ``split`` copied into fsspec's in-memory filesystem, opened by URL."""
    _memory_count[0] += 1
    target = f"/readahead-{_memory_count[0]}.zarr"
    fsspec.filesystem("memory").put(str(split.url), target, recursive=True)
    return fl.open_store(f"memory://{target}")["train"]


@pytest.fixture
def memory_fs() -> Iterator[None]:
    yield
    fs = fsspec.filesystem("memory")
    for path in fs.ls("/", detail=False):
        if "readahead-" in path:
            fs.rm(path, recursive=True)


def epoch_batches(loader: fl.Loader, epoch: int = 0) -> list[dict[str, np.ndarray]]:
    loader.set_epoch(epoch)
    return [{k: np.array(v) for k, v in b.items()} for b in loader]


def assert_same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


# ------------------------------------------------------------------ the window
def _chunk_files(split: fl.Split, field: str = "X") -> int:
    return split.reader(field).n_chunks


@pytest.mark.parametrize("where", ["local", "remote"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    window=st.integers(0, 4000),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), min_size=1, max_size=40),
)
def test_window_is_never_exceeded_and_decoding_is_unchanged(
    split_a: fl.Split, memory_fs: None, where: str, window: int, ops: list[tuple[bool, int]]
) -> None:
    """Any interleaving of read-ahead requests and reads: held bytes <= window, chunks exact."""
    split = split_a if where == "local" else remote_copy(split_a)
    reference = split_a.reader("X")
    decoder = split.decoder("X")
    ahead = decoder.files.read_ahead(window)
    try:
        for ask, chunk in ops:
            if ask:
                decoder.read_ahead(chunk, window)
            else:
                np.testing.assert_array_equal(
                    decoder.read_chunk(chunk), reference.read_chunk(chunk)
                )
            assert 0 <= ahead.held_bytes <= window
        assert ahead.max_held_bytes <= window
        if window >= 4000 and any(ask for ask, _ in ops):
            assert ahead.started > 0  # a window of several chunks does read ahead
    finally:
        decoder.close_read_ahead()
    assert ahead.held_bytes == 0


@pytest.mark.parametrize("where", ["local", "remote"])
@pytest.mark.parametrize("window", [1500, 1 << 20])
def test_loader_workers_read_ahead_within_the_window(
    split_a: fl.Split,
    memory_fs: None,
    instances: list[_readahead.ReadAhead],
    where: str,
    window: int,
) -> None:
    split = split_a if where == "local" else remote_copy(split_a)
    with fl.Loader(
        split, 8, workers=2, backend="thread", readahead_bytes=window, prefetch=6
    ) as loader:
        batches = epoch_batches(loader)
        ahead = list(instances)
    assert sum(len(b["y"]) for b in batches) == len(split_a)
    assert ahead, "the workers read nothing ahead"
    assert sum(a.started for a in ahead) > 0
    assert max(a.max_held_bytes for a in ahead) <= window
    # the instrument is real: the window held more than one chunk at some point
    if window == 1 << 20:
        assert max(a.max_held_bytes for a in ahead) > 0


def test_readahead_bytes_zero_reads_nothing_ahead(
    split_a: fl.Split, instances: list[_readahead.ReadAhead]
) -> None:
    with fl.Loader(split_a, 8, workers=2, backend="thread", readahead_bytes=0) as loader:
        epoch_batches(loader)
    assert instances == []


def test_small_cold_files_are_advised_too(
    split_a: fl.Split, instances: list[_readahead.ReadAhead]
) -> None:
    """A small cold file read only when its turn comes costs a device latency: advise it too
    (the X and y chunks here are a few hundred bytes)."""
    with fl.Loader(
        split_a, 8, workers=2, backend="thread", readahead_bytes=1 << 20, fields=["X", "y"]
    ) as loader:
        epoch_batches(loader)
    assert instances
    assert sum(a.started for a in instances) >= split_a.n_chunks


def test_readahead_bytes_is_validated(split_a: fl.Split) -> None:
    with pytest.raises(ConfigError, match="readahead_bytes"):
        fl.Loader(split_a, 8, readahead_bytes=-1)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize(
    "options",
    [
        {"shuffle": True, "seed": 3},
        {"shuffle": False},
        {"shuffle": True, "seed": 11, "drop_last": True, "window_chunks": 2},
    ],
)
def test_batches_identical_with_and_without_readahead(
    split_a: fl.Split, workers: int, options: dict[str, Any]
) -> None:
    fields = ["X", "y", "hits"]
    with fl.Loader(split_a, 9, workers=workers, readahead_bytes=0, fields=fields, **options) as a:
        want = epoch_batches(a) + epoch_batches(a, 1)
    for window in (700, 1 << 20):
        with fl.Loader(
            split_a, 9, workers=workers, readahead_bytes=window, fields=fields, **options
        ) as b:
            assert_same(epoch_batches(b) + epoch_batches(b, 1), want)


def test_remote_batches_identical_with_and_without_readahead(
    split_small_values: fl.Split, memory_fs: None
) -> None:
    """Ragged values spanning several value chunks, read ahead over fsspec."""
    remote = remote_copy(split_small_values)
    with fl.Loader(split_small_values, 5, workers=0, seed=2) as local:
        want = epoch_batches(local)
    with fl.Loader(remote, 5, workers=2, backend="thread", seed=2, readahead_bytes=4096) as b:
        assert_same(epoch_batches(b), want)


# ------------------------------------------------------------------ release
def _fds() -> int:
    return psutil.Process().num_fds()


@pytest.mark.parametrize("where", ["local", "remote"])
@pytest.mark.parametrize("how", ["break", "close", "exception", "gc"])
def test_readahead_released_on_every_path(
    split_a: fl.Split, memory_fs: None, no_leaks: Any, where: str, how: str
) -> None:
    split = split_a if where == "local" else remote_copy(split_a)
    fds = _fds()
    loader = fl.Loader(split, 4, workers=2, backend="thread", readahead_bytes=1 << 20)
    if how == "break":
        for _ in loader:
            break
        loader.close()
    elif how == "close":
        it = iter(loader)
        next(it)
        loader.close()
    elif how == "exception":

        def consume() -> None:
            with loader:
                for _ in loader:
                    raise RuntimeError("consumer failed")

        with pytest.raises(RuntimeError, match="consumer"):
            consume()
    else:
        it = iter(loader)
        next(it)
        del it, loader
        import gc

        gc.collect()
    no_leaks.assert_clean()  # no fastload-readahead-* thread, no worker thread left
    assert _fds() <= fds + 1  # nothing held open (a lazily opened root is allowed)


# ------------------------------------------------------------------ corruption
def _corrupt_chunk(split_url: str, chunk: int) -> None:
    path = Path(split_url) / "train" / "X" / "c" / str(chunk) / "0" / "0"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["local", "remote"])
def test_corrupt_chunk_read_ahead_raises_the_same_error(
    tmp_path: Path, memory_fs: None, instances: list[_readahead.ReadAhead], where: str
) -> None:
    split = write_store(tmp_path / "bad.zarr", n=50, chunk_len=7)
    _corrupt_chunk(split.url, 5)
    if where == "remote":
        split = remote_copy(split)
    with (
        pytest.raises(CorruptStoreError, match=r"chunk 5 of 'train/X'.*CRC32C") as direct,
        fl.Loader(split, 7, workers=1, backend="thread", shuffle=False, readahead_bytes=0) as plain,
    ):
        epoch_batches(plain)
    with (
        pytest.raises(CorruptStoreError) as ahead,
        fl.Loader(
            split, 7, workers=1, backend="thread", shuffle=False, readahead_bytes=1 << 20
        ) as loader,
    ):
        epoch_batches(loader)
    assert str(ahead.value) == str(direct.value)
    asked = [key for a in instances for key in a.asked]  # type: ignore[attr-defined]
    assert "train/X/c/5/0/0" in asked  # the damaged chunk was read ahead before it failed


def test_corrupt_chunk_process_workers(tmp_path: Path) -> None:
    split = write_store(tmp_path / "bad.zarr", n=50, chunk_len=7)
    _corrupt_chunk(split.url, 2)
    with (
        pytest.raises(CorruptStoreError, match=r"chunk 2 of 'train/X'.*bad\.zarr"),
        fl.Loader(split, 7, workers=2, shuffle=False, readahead_bytes=1 << 20) as loader,
    ):
        epoch_batches(loader)


def test_store_copy_is_independent(tmp_path: Path, split_a: fl.Split) -> None:
    """A copied store reads the same with read-ahead (a sanity check of the fixtures)."""
    shutil.copytree(split_a.url, tmp_path / "copy.zarr")
    copy = fl.open_store(tmp_path / "copy.zarr")["train"]
    decoder = copy.decoder("X")
    assert decoder.read_ahead(0, 1 << 20)
    np.testing.assert_array_equal(decoder.read_chunk(0), split_a.reader("X").read_chunk(0))
    decoder.close_read_ahead()


def test_cached_files_are_not_advised(tmp_path: Path, real_page_cache: None) -> None:
    """Advising a cached file walks all its pages for nothing: a one-byte RWF_NOWAIT read says."""
    path = tmp_path / "chunk"
    path.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _readahead._cached(fd, path.stat().st_size)
        assert not _readahead._cached(fd, 0)  # an empty file has no byte to ask about
    finally:
        os.close(fd)
    split = write_store(tmp_path / "s.zarr", n=40, chunk_len=8)
    decoder = split.decoder("X")
    for chunk in range(decoder.n_chunks):
        decoder.read_chunk(chunk)  # every chunk file cached now
    ahead = decoder.files.read_ahead(1 << 20)
    try:
        assert all(decoder.read_ahead(chunk, 1 << 20) for chunk in range(decoder.n_chunks))
        assert ahead.started == 0
        assert ahead.held_bytes == 0
    finally:
        decoder.close_read_ahead()


def test_uncached_files_are_advised(split_a: fl.Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same files, reported not cached: each is advised and held until read."""
    monkeypatch.setattr(_readahead, "_cached", lambda fd, size: False)
    decoder = split_a.decoder("X")
    ahead = decoder.files.read_ahead(1 << 20)
    try:
        assert decoder.read_ahead(0, 1 << 20)
        assert ahead.started == 1
        assert ahead.held_bytes > 0
    finally:
        decoder.close_read_ahead()
