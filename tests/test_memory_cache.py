"""``fl.Loader(..., memory_cache=...)``: decoded chunks kept in the arena.

Batches must be exactly those of a loader without the cache, epoch after epoch
(dense, padded and packed ragged fields, mixes, transforms, every backend, a
partial budget, a worker killed while filling); later epochs must read nothing
from the store (proved by damaging its chunk files after the first epoch); a
fill whose rows disagree with the source's row counts must raise.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from leaks import shm_segments, wait_until, worker_processes
from test_feed import run_threads

import fastload as fl
from fastload.errors import ConfigError, FastloadError, StoreChangedError

ENGINES = [(0, "thread"), (2, "thread"), (2, "process")]


def _arrays(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, size=n)
    values = rng.normal(size=(int(counts.sum()), 4)).astype(np.float32)
    return {
        "X": rng.normal(size=(n, 5)).astype(np.float32),
        "hits": fl.Ragged.from_counts(values, counts),
        "id": np.arange(n, dtype=np.int64),
    }


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memcache") / "store.zarr"
    fl.write_arrays(path, {"train": _arrays(1000)}, chunk_len=64)
    return path


def _epochs(loader: fl.Loader, epochs: int) -> list[list[dict]]:
    out = []
    for e in range(epochs):
        loader.set_epoch(e)
        out.append([_copied(b) for b in loader])
    return out


def _copied(batch: dict) -> dict:
    return {
        k: (fl.Ragged(v.values.copy(), v.offsets.copy()) if isinstance(v, fl.Ragged) else v.copy())
        for k, v in batch.items()
    }


def _assert_same(got: list[list[dict]], want: list[list[dict]]) -> None:
    assert len(got) == len(want)
    for e, (g_epoch, w_epoch) in enumerate(zip(got, want, strict=True)):
        assert len(g_epoch) == len(w_epoch), f"epoch {e}"
        for b, (g, w) in enumerate(zip(g_epoch, w_epoch, strict=True)):
            assert g.keys() == w.keys()
            for k in w:
                if isinstance(w[k], fl.Ragged):
                    np.testing.assert_array_equal(
                        g[k].offsets, w[k].offsets, err_msg=f"{e}/{b}/{k}"
                    )
                    np.testing.assert_array_equal(g[k].values, w[k].values, err_msg=f"{e}/{b}/{k}")
                else:
                    np.testing.assert_array_equal(g[k], w[k], err_msg=f"epoch {e} batch {b} {k}")


@pytest.mark.parametrize(("workers", "backend"), ENGINES)
@pytest.mark.parametrize("ragged", [None, {"hits": "offsets"}])
def test_cached_batches_equal_uncached(store_path, workers, backend, ragged) -> None:
    split = fl.open_store(store_path)["train"]
    options = dict(batch_size=96, workers=workers, backend=backend, seed=3, ragged=ragged)
    with fl.Loader(split, **options) as plain:
        want = _epochs(plain, 3)
    with fl.Loader(split, memory_cache=True, **options) as cached:
        got = _epochs(cached, 3)
        assert cached._engine.cache.chunks == (split.n_chunks,)
    _assert_same(got, want)


def test_later_epochs_read_nothing_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    fl.write_arrays(path, {"train": _arrays(600, seed=1)}, chunk_len=50)
    split = fl.open_store(path)["train"]
    with fl.Loader(split, 64, workers=2, seed=1) as plain:
        want = _epochs(plain, 3)
    loader = fl.Loader(split, 64, workers=2, seed=1, memory_cache=True)
    with loader:
        got = _epochs(loader, 1)
        damaged = 0
        for chunk in (path / "train").rglob("c/*"):
            if chunk.is_file():
                chunk.write_bytes(b"\0" * chunk.stat().st_size)
                damaged += 1
        assert damaged > 10
        got += _epochs(loader, 3)[1:]
    _assert_same(got, want)
    # the damage is real: a loader without the cache trips over it
    with pytest.raises(FastloadError), fl.Loader(split, 64, workers=2, seed=1) as plain:
        _epochs(plain, 1)


def test_a_partial_budget_caches_a_prefix_of_each_source(tmp_path: Path, caplog) -> None:
    path = tmp_path / "mix.zarr"
    fl.write_arrays(path, {"a": _arrays(700, seed=2)}, chunk_len=64)
    fl.write_arrays(tmp_path / "b.zarr", {"b": _arrays(500, seed=4)}, chunk_len=40)
    a = fl.open_store(path)["a"]
    b = fl.open_store(tmp_path / "b.zarr")["b"]
    mix = fl.Mix({"a": a, "b": b}, label_field="label")
    with fl.Loader(mix, 100, workers=2, seed=5) as plain:
        want = _epochs(plain, 3)
    half = 60_000  # about half of the decoded bytes of either source
    with caplog.at_level(logging.WARNING, logger="fastload"):
        loader = fl.Loader(mix, 100, workers=2, seed=5, memory_cache=half)
        with loader:
            got = _epochs(loader, 3)
            chunks = loader._engine.cache.chunks
            assert loader._engine.cache.nbytes <= half
    assert 0 < chunks[0] < a.n_chunks, chunks
    assert 0 < chunks[1] < b.n_chunks, chunks
    assert "memory_cache" in caplog.text
    _assert_same(got, want)


def test_a_transform_reads_cached_rows(store_path: Path) -> None:
    from fastload.transforms import Scale

    split = fl.open_store(store_path)["train"]
    transform = Scale("X", 0.5)
    options = dict(batch_size=128, workers=2, seed=0, transform=transform, fields=["X", "id"])
    with fl.Loader(split, **options) as plain:
        want = _epochs(plain, 2)
    with fl.Loader(split, memory_cache=True, **options) as cached:
        got = _epochs(cached, 2)
    _assert_same(got, want)


def test_a_worker_killed_while_filling_is_replaced_and_batches_stay_exact(store_path) -> None:
    split = fl.open_store(store_path)["train"]
    with fl.Loader(split, 64, workers=2, seed=7) as plain:
        want = _epochs(plain, 3)
    loader = fl.Loader(split, 64, workers=2, seed=7, memory_cache=True)
    got: list[list[dict]] = [[]]
    with loader, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, batch in enumerate(loader):
            got[0].append(_copied(batch))
            if i == 1:
                os.kill(loader.worker_pids()[0], signal.SIGKILL)
        got += _epochs_from(loader, 1, 3)
    assert any("restarting" in str(w.message) for w in caught)
    _assert_same(got, want)


def _epochs_from(loader: fl.Loader, first: int, stop: int) -> list[list[dict]]:
    out = []
    for e in range(first, stop):
        loader.set_epoch(e)
        out.append([_copied(b) for b in loader])
    return out


class _LyingCounts:
    """A source whose ``offsets()`` disagree with what its decoder produces."""

    def __init__(self, inner: fl.MemorySplit) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def offsets(self, field: str) -> np.ndarray:
        offsets = np.asarray(self._inner.offsets(field)).copy()
        offsets[5:] += 1  # sample 4 claims one more row than it has
        return offsets


def test_a_fill_that_disagrees_with_the_row_counts_raises() -> None:
    source = _LyingCounts(fl.from_arrays(_arrays(200, seed=9), chunk_len=32))
    loader = fl.Loader(source, 50, workers=0, shuffle=False, memory_cache=True)
    with loader, pytest.raises(StoreChangedError, match=r"'hits'.*chunk 0"):
        list(loader)


@pytest.mark.parametrize("bad", ["yes", -1, 1.5, None])
def test_memory_cache_must_be_a_flag_or_bytes(bad) -> None:
    with pytest.raises(ConfigError, match="memory_cache"):
        fl.Loader(fl.from_arrays({"x": np.zeros(10)}), 2, memory_cache=bad)


def test_a_cached_loader_releases_its_shared_memory_and_workers(store_path) -> None:
    before = shm_segments()
    split = fl.open_store(store_path)["train"]
    loader = fl.Loader(split, 64, workers=2, memory_cache=True)
    for _ in loader:
        break
    assert worker_processes()
    loader.close()
    assert wait_until(lambda: not worker_processes())
    assert shm_segments() == before


# --------------------------------------------------------------------------- feeds
@pytest.fixture
def feed_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "feeds"
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(path))
    return path


def _consume(
    name: str, epochs: int, out: dict, key: object, gate: threading.Barrier | None, **attach
) -> None:
    """``epochs`` epochs from feed ``name``, waiting at ``gate`` (if any) after the first one."""
    try:
        with fl.attach(name, **attach) as consumer:
            got = [[_copied(b) for b in consumer]]
            if gate is not None:
                gate.wait(60)
            got += [[_copied(b) for b in consumer] for _ in range(epochs - 1)]
            out[key] = got
    except BaseException as exc:  # reported by the test thread
        out[key] = exc


def test_a_broadcast_feed_decodes_once_and_later_epochs_read_nothing(
    tmp_path: Path, feed_dir: Path
) -> None:
    path = tmp_path / "s.zarr"
    fl.write_arrays(path, {"train": _arrays(500, seed=2)}, chunk_len=40)
    split = fl.open_store(path)["train"]
    options = {"seed": 3, "ragged": {"hits": "offsets"}}
    with fl.Loader(split, 32, workers=2, **options) as plain:
        want = _epochs(plain, 3)
    out: dict = {}
    both_done = threading.Barrier(3)
    with fl.Feed(
        split, 32, name="cached", workers=2, min_consumers=2, memory_cache=True, **options
    ) as feed:
        threads = [
            threading.Thread(target=lambda i=i: _consume("cached", 3, out, i, both_done))
            for i in range(2)
        ]
        for t in threads:
            t.start()
        both_done.wait(60)  # both consumers took epoch 0: every chunk is cached
        for chunk in (path / "train").rglob("c/*"):
            if chunk.is_file():
                chunk.write_bytes(b"\0" * chunk.stat().st_size)
        for t in threads:
            t.join(120)
            assert not t.is_alive(), "a consumer hung"
        assert feed._engine.cache.chunks == (split.n_chunks,)
        cache = feed.status()["memory_cache"]
        assert cache["chunks"] == cache["of"] == cache["filled"] == split.n_chunks
    for i in range(2):
        assert not isinstance(out[i], BaseException), out[i]
        _assert_same(out[i], want)


def test_split_feed_consumers_with_the_cache_get_their_rank_shards(store_path, feed_dir) -> None:
    split = fl.open_store(store_path)["train"]
    options = {"seed": 4, "drop_last": True}
    wants = []
    for r in range(2):
        with fl.Loader(split, 48, workers=0, rank=r, world_size=2, **options) as plain:
            wants.append(_epochs(plain, 2))
    out: dict = {}
    with fl.Feed(
        split, 48, name="ddp", mode="split", consumers=2, workers=2, memory_cache=True, **options
    ):
        run_threads(
            [lambda r=r: _consume("ddp", 2, out, r, None, rank=r, **options) for r in range(2)]
        )
    for r in range(2):
        assert not isinstance(out[r], BaseException), out[r]
        _assert_same(out[r], wants[r])
