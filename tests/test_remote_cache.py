"""The local chunk cache of remote stores (``open_store(url, cache_dir=..., cache_bytes=...)``).

A moto S3 server on 127.0.0.1 sits behind the benchmark's proxy (no added
latency) so that every GET, from this process or a worker process, is counted
by path.  Stores are tiny: 20 chunks of X and 20 of y.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastload as fl
from fastload.errors import CacheError, CacheFullError, CorruptStoreError
from fastload.store import _cache

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

from bench._remote import _forget_s3_clients  # noqa: E402
from bench._remote_server import _LatencyProxy  # noqa: E402

BUCKET = "fastload-cache-test"
N, CHUNK = 2000, 100


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LatencyProxy]:
    """moto on 127.0.0.1 behind a counting proxy; the AWS_* environment points at the proxy."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    front = _LatencyProxy(server.get_host_and_port(), 0.0)
    serving = threading.Thread(target=front.serve_forever, daemon=True)
    serving.start()
    host, port = front.server_address[:2]
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        }.items():
            mp.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield front
        finally:
            _forget_s3_clients()
            front.shutdown()
            front.server_close()
            server.stop()


_count = [0]


def values(n: int = N, scale: float = 1.0) -> dict[str, np.ndarray]:
    i = np.arange(n)
    X = (scale * (100.0 * i[:, None] + np.arange(8))).astype(np.float32)
    return {"X": X, "y": (i % 7).astype(np.int64)}


def upload(tmp_path: Path, arrays: dict[str, np.ndarray] | None = None, **options: Any) -> str:
    """A store of ``arrays`` written locally and put on S3; its URL."""
    import fsspec

    _count[0] += 1
    local = tmp_path / f"store{_count[0]}.zarr"
    fl.write_arrays(local, {"train": arrays or values()}, chunk_len=CHUNK, **options)
    fs = fsspec.filesystem("s3")
    fs.put(str(local), f"{BUCKET}/s{_count[0]}.zarr", recursive=True)
    return f"s3://{BUCKET}/s{_count[0]}.zarr"


def chunk_gets(proxy: _LatencyProxy, since: int) -> list[str]:
    """Chunk object GETs (``.../c/...``) since index ``since`` of the proxy's log."""
    return [p for p in proxy.gets[since:] if "/c/" in p.split("?")[0]]


def epoch(loader: fl.Loader, e: int) -> list[tuple[np.ndarray, np.ndarray]]:
    loader.set_epoch(e)
    return [(np.array(b["X"]), np.array(b["y"])) for b in loader]


def same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_second_epoch_makes_no_gets(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """Epoch 1 over a cached store (process workers) GETs no chunk and gives the uncached batches."""
    url = upload(tmp_path)
    with fl.Loader(fl.open_store(url)["train"], 64, workers=2, seed=3) as plain:
        ref = [epoch(plain, 0), epoch(plain, 1)]
    cache_dir = tmp_path / "cache"
    store = fl.open_store(url, cache_dir=cache_dir, cache_bytes=2**20)
    assert store.cache is not None
    assert (os.stat(cache_dir).st_mode & 0o777) == 0o700
    mark = len(proxy.gets)
    with fl.Loader(store["train"], 64, workers=2, seed=3) as loader:
        first = epoch(loader, 0)
        filled = len(chunk_gets(proxy, mark))
        mark = len(proxy.gets)
        second = epoch(loader, 1)
        assert chunk_gets(proxy, mark) == []
    same(first, ref[0])
    same(second, ref[1])
    assert 40 <= filled <= 44  # every chunk once (the store's validation reads the last ones)
    assert len(store.cache.names()) == 40
    # a new handle (a new job on the node) reads from the same cache: a listing, no chunk GETs
    mark = len(proxy.gets)
    again = fl.open_store(url, cache_dir=cache_dir, cache_bytes=2**20)["train"]
    with fl.Loader(again, 64, workers=1, backend="thread", seed=3) as loader:
        same(epoch(loader, 1), ref[1])
    assert chunk_gets(proxy, mark) == []


def test_sharded_store_is_cached(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """A sharded store's inner chunks (byte ranges) are cached: a second read GETs no range."""
    url = upload(tmp_path, shard_chunks=5)
    expect = values()
    store = fl.open_store(url, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(store["train"].read("X"), expect["X"])
    np.testing.assert_array_equal(store["train"].read("y"), expect["y"])
    assert len(store.cache.names()) == 40
    mark = len(proxy.gets)
    again = fl.open_store(url, cache_dir=tmp_path / "cache")["train"]
    np.testing.assert_array_equal(again.read("X"), expect["X"])
    np.testing.assert_array_equal(again.read("y"), expect["y"])
    # the 8 shard indexes (read once per handle), no inner chunk
    assert len(chunk_gets(proxy, mark)) == 8


def test_cache_respects_its_size(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """A cache a third of the store's chunks evicts to stay under its limit; reads stay exact."""
    url = upload(tmp_path)
    big = fl.open_store(url, cache_dir=tmp_path / "all")
    big["train"].read("X")
    whole = big.cache.usage()
    limit = whole // 3
    store = fl.open_store(url, cache_dir=tmp_path / "small", cache_bytes=limit)
    expect = values()
    for _ in range(2):
        with fl.Loader(store["train"], 50, workers=2, backend="thread", seed=1) as loader:
            rows = np.concatenate([np.array(b["X"]) for b in loader])
        np.testing.assert_array_equal(np.sort(rows[:, 0]), expect["X"][:, 0])
        assert 0 < store.cache.usage() <= limit
    assert 0 < len(store.cache.names()) < 40  # evicted (the workers' copies of the cache did)
    fd = os.open(tmp_path / "small" / "lock", os.O_RDONLY)
    try:
        ledger = _cache._read_ledger(fd)
    finally:
        os.close(fd)
    assert ledger is not None
    assert ledger >= store.cache.usage()


CHILD = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import fastload as fl
    url, cache_dir, limit, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    split = fl.open_store(url, cache_dir=cache_dir, cache_bytes=limit)["train"]
    with fl.Loader(split, 64, workers=2, seed=5) as loader:
        for e in range(epochs):
            loader.set_epoch(e % 2)
            h = hashlib.sha256()
            for b in loader:
                h.update(np.ascontiguousarray(b["X"]).tobytes())
                h.update(np.ascontiguousarray(b["y"]).tobytes())
            print(e % 2, h.hexdigest(), flush=True)
    """
)


def digests(split: fl.Split) -> dict[int, str]:
    out = {}
    with fl.Loader(split, 64, workers=1, backend="thread", seed=5) as loader:
        for e in (0, 1):
            h = hashlib.sha256()
            for x, y in epoch(loader, e):
                h.update(x.tobytes())
                h.update(y.tobytes())
            out[e] = h.hexdigest()
    return out


def all_intact(cache: _cache.ChunkCache) -> None:
    for name in cache.names():
        assert cache.verify(name) is None, name


def test_two_loaders_share_a_cache(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """Two Loader processes (2 workers each) filling and evicting one cache deliver exact batches."""
    url = upload(tmp_path)
    ref = digests(fl.open_store(url)["train"])
    cache_dir = tmp_path / "shared"
    fl.open_store(url, cache_dir=cache_dir)  # create it (as the first job on a node would)
    limit = 10 * 1024  # under half the chunks: both processes evict while the other reads
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(cache_dir), str(limit), "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        lines = [line.split() for line in out.splitlines()]
        assert len(lines) == 4
        for e, digest in lines:
            assert digest == ref[int(e)]
    cache = _cache.ChunkCache(cache_dir, limit)
    assert 0 < cache.usage() <= limit
    assert len(cache.names()) < 40
    all_intact(cache)
    assert os.listdir(cache_dir / "tmp") == []


def test_killed_loader_leaves_no_partial_entry(
    proxy: _LatencyProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL of a Loader and its workers mid-epoch: every entry is whole, later reads are exact."""
    url = upload(tmp_path, values(4000))
    ref = digests(fl.open_store(url)["train"])
    cache_dir = tmp_path / "killed"
    cache = _cache.ChunkCache(cache_dir, 2**20)
    cache.prepare()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(cache_dir), str(2**20), "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(cache.names()) < 10 and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stderr:
            child.stderr.close()
        # the group kill took the child's resource tracker along, which would have unlinked
        # the killed Loader's shared memory (a lone SIGKILL of a Loader leaves nothing behind)
        for segment in Path("/dev/shm").glob(f"fastload-{child.pid}-*"):
            segment.unlink(missing_ok=True)
    assert len(cache.names()) >= 10
    all_intact(cache)
    # what a non-atomic writer killed mid-write would leave: a truncated entry under its name
    victim = cache.names()[0]
    path = cache_dir / "entries" / victim[:2] / victim
    path.write_bytes(path.read_bytes()[:40])
    stray = cache_dir / "tmp" / f"{victim}.1.dead.tmp"  # and a temporary of a killed writer
    stray.write_bytes(b"half")
    split = fl.open_store(url, cache_dir=cache_dir, cache_bytes=2**20)["train"]
    with caplog.at_level(logging.WARNING, "fastload.store._cache"):
        assert digests(split) == ref
    assert [r.message for r in caplog.records if victim in r.message and "deleting" in r.message]
    assert cache.verify(victim) is None  # fetched again and rewritten whole
    all_intact(cache)


def test_full_disk_is_a_clear_error(
    proxy: _LatencyProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC writing an entry is a CacheFullError naming the directory; no temporary is left."""
    url = upload(tmp_path)
    cache_dir = tmp_path / "full"
    split = fl.open_store(url, cache_dir=cache_dir)["train"]

    def full(fd: int, *parts: Any) -> None:
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_cache, "_write_all", full)
    with pytest.raises(CacheFullError, match=r"full.*free space.*cache_bytes.*cache_dir") as info:
        split.read("X")
    assert str(cache_dir) in str(info.value)
    assert isinstance(info.value, OSError)
    with (
        fl.Loader(split, 64, workers=1, backend="thread") as loader,
        pytest.raises(CacheFullError, match=str(cache_dir)),
    ):
        next(iter(loader))
    assert os.listdir(cache_dir / "tmp") == []
    assert split.store.cache.names() == []


def test_changed_object_is_fetched_again(
    proxy: _LatencyProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote chunk replaced by other bytes has another ETag: it is fetched, not served stale."""
    import fsspec

    url = upload(tmp_path)
    other = upload(tmp_path, values(scale=-1.0))
    cache_dir = tmp_path / "cache"
    store = fl.open_store(url, cache_dir=cache_dir)
    np.testing.assert_array_equal(store["train"].read_chunk("X", 0), values()["X"][:CHUNK])
    fs = fsspec.filesystem("s3")
    key = "train/X/c/0/0"
    fs.copy(f"{other[5:]}/{key}", f"{url[5:]}/{key}")
    changed = values(scale=-1.0)["X"][:CHUNK]
    mark = len(proxy.gets)
    fresh = fl.open_store(url, cache_dir=cache_dir)
    np.testing.assert_array_equal(fresh["train"].read_chunk("X", 0), changed)
    assert any(p.split("?")[0].endswith(key) for p in chunk_gets(proxy, mark))
    # an open handle sees the change once its listing is older than LISTING_TTL_S
    fs.copy(f"{url[5:]}/train/X/c/1/0", f"{url[5:]}/{key}")
    monkeypatch.setattr(_cache, "LISTING_TTL_S", 0.0)
    np.testing.assert_array_equal(
        fresh["train"].read_chunk("X", 0), values()["X"][CHUNK : 2 * CHUNK]
    )


def test_damaged_entries(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """A flipped bit in an entry is caught by the cache (evicted, fetched again); bytes that pass
    the cache's checksum still meet the decoder's checks (CorruptStoreError naming the chunk)."""
    url = upload(tmp_path)
    cache_dir = tmp_path / "cache"
    store = fl.open_store(url, cache_dir=cache_dir)
    store["train"].read("X")
    cache = store.cache
    assert cache is not None
    expect = values()["X"]
    names = cache.names()
    path = cache_dir / "entries" / names[0][:2] / names[0]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x40
    path.write_bytes(bytes(raw))
    fresh = fl.open_store(url, cache_dir=cache_dir)
    np.testing.assert_array_equal(fresh["train"].read("X"), expect)
    assert fresh.cache.rejected == 1
    assert cache.verify(names[0]) is None
    # damage the cache's checksum cannot see (the entry rewritten consistently): the decoder's
    payload = bytearray(path.read_bytes()[_cache._HEADER.size :])
    payload[-10] ^= 0x40
    os.unlink(path)
    fresh.cache.put(names[0], bytes(payload))
    with pytest.raises(CorruptStoreError, match=r"chunk \d+ of 'train/X'.*CRC32C"):
        fl.open_store(url, cache_dir=cache_dir)["train"].read("X")
    # a symlink planted as an entry is not followed
    os.unlink(path)
    os.symlink(tmp_path / "elsewhere", path)
    again = fl.open_store(url, cache_dir=cache_dir)
    np.testing.assert_array_equal(again["train"].read("X"), expect)
    assert again.cache.rejected == 1
    assert not path.is_symlink()


def test_cache_directory_must_be_private(proxy: _LatencyProxy, tmp_path: Path) -> None:
    """A cache directory open to other users is refused at open_store, with what to do."""
    url = upload(tmp_path)
    shared = tmp_path / "open"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(CacheError, match=r"chmod 700"):
        fl.open_store(url, cache_dir=shared)
    with pytest.raises(fl.errors.ConfigError, match="cache_dir"):
        fl.open_store(url, cache_bytes=10)
    with pytest.raises(fl.errors.ConfigError, match="positive"):
        fl.open_store(url, cache_dir=tmp_path / "c", cache_bytes=0)
