"""``python -m bench.throughput --remote``: a store over S3 with a fixed latency per request.

A moto S3 server on 127.0.0.1 (``moto[server]``) holds a copy of a
TopTagging-shaped store (``--events``, default 100,000 jets, ~74 MB); a small
reverse proxy on 127.0.0.1 in front of it sleeps ``--latency-ms`` (default
20) before forwarding each request — loopback only, bounded (one thread per
connection).  Both run in a child process (:mod:`bench._remote_server`), as
a remote store never shares the consumer's interpreter.  The loader reads ``s3://`` through the proxy
(``AWS_ENDPOINT_URL``), with and without read-ahead, and the same store read
locally (warm) is the reference: ``--repeats`` epochs each (default 2), the
consumer touching one value per batch; samples/s medians and the peak RSS of
the consumer plus its workers are reported.  The ``remote, cached`` case opens
the store with a local chunk cache (``cache_dir`` in a temporary directory):
its untimed first epoch fills the cache, the timed epochs read from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import fastload as fl

from ._data import build_dataset

REMOTE_EVENTS = 100_000
BUCKET = "fastload-bench"
REPO_ROOT = Path(__file__).resolve().parent.parent


class _S3Server:
    """The moto server + latency proxy child process; ``requests()`` asks its count."""

    def __init__(self, latency_ms: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}._remote_server", str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
            text=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(
                "the moto S3 server process did not start (is moto[server] installed?)"
            )
        address = json.loads(line)
        self.host, self.port = address["host"], address["port"]

    def requests(self) -> int:
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        self.popen.stdin.write("count\n")
        self.popen.stdin.flush()
        return int(self.popen.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class _PeakRSS:
    """Samples the RSS of this process and its descendants every 20 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        me = self._psutil.Process()
        while not self._stop.wait(0.02):
            total = 0
            for proc in (me, *me.children(recursive=True)):
                with contextlib.suppress(self._psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _epochs(loader: fl.Loader, repeats: int, n: int) -> list[float]:
    rates = []
    for epoch in range(repeats + 1):  # epoch 0 starts the workers
        loader.set_epoch(epoch)
        samples = 0
        t0 = time.perf_counter()
        for batch in loader:
            x = batch["X"]
            float(x[0, 0, 0])
            samples += x.shape[0]
            del batch, x
        if samples != n:
            raise RuntimeError(f"an epoch delivered {samples} samples of {n}")
        if epoch:
            rates.append(samples / (time.perf_counter() - t0))
    return rates


def run_remote(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the store through moto + the latency proxy; local vs remote; print and return."""
    n = args.events or REMOTE_EVENTS
    repeats = args.repeats or 2
    temp = None if args.data_dir is not None else Path(tempfile.mkdtemp(prefix="fastload-bench-"))
    root = args.data_dir or temp
    assert root is not None
    server = _S3Server(args.latency_ms)
    cache_root = Path(tempfile.mkdtemp(prefix="fastload-bench-cache-"))
    saved = {k: os.environ.get(k) for k in _ENV}
    load_start = os.getloadavg()
    try:
        host, port = server.host, server.port
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        data = build_dataset("toptagging", n, root, seed=args.seed, progress=False)
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        fs.put(data.store, f"{BUCKET}/toptagging.zarr", recursive=True)
        local = fl.open_store(data.store)["train"]
        remote = fl.open_store(f"s3://{BUCKET}/toptagging.zarr")["train"]
        cached = fl.open_store(
            f"s3://{BUCKET}/toptagging.zarr", cache_dir=cache_root / "cache", cache_bytes=2**34
        )["train"]
        rows: dict[str, Any] = {}
        cases: list[tuple[str, fl.Split, dict[str, Any]]] = [
            ("local warm", local, {}),
            ("remote, no read-ahead", remote, {"readahead_bytes": 0}),
            ("remote, read-ahead", remote, {}),
            ("remote, cached", cached, {}),  # epoch 0 (untimed) fills the cache
        ]
        if args.readahead_bytes is not None:
            for i in (2, 3):
                key, split, _ = cases[i]
                cases[i] = (key, split, {"readahead_bytes": args.readahead_bytes})
        for key, split, options in cases:
            before = server.requests()
            if args.prefetch is not None:
                options = {**options, "prefetch": args.prefetch}
            with (
                _PeakRSS() as rss,
                fl.Loader(
                    split, args.batch_size, workers=args.workers, seed=args.seed, **options
                ) as loader,
            ):
                rates = _epochs(loader, repeats, len(local))
            rows[key] = {
                "samples_per_s": statistics.median(rates),
                "repeats": rates,
                "peak_rss_bytes": rss.peak,
                "requests": server.requests() - before,
            }
    finally:
        _forget_s3_clients()  # they point at the proxy, which is going away
        server.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(cache_root, ignore_errors=True)
    base = rows["local warm"]["samples_per_s"]
    results = {
        "dataset": "toptagging",
        "events": n,
        "store_bytes": sum(p.stat().st_size for p in Path(data.store).rglob("*") if p.is_file())
        if temp is None
        else None,
        "latency_ms": args.latency_ms,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "cases": rows,
        "ratio_readahead": rows["remote, read-ahead"]["samples_per_s"] / base,
        "ratio_no_readahead": rows["remote, no read-ahead"]["samples_per_s"] / base,
        "ratio_cached": rows["remote, cached"]["samples_per_s"] / base,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"TopTagging over S3 (moto on 127.0.0.1 + {args.latency_ms:g} ms per request): {n:,} jets, "
        f"batch {args.batch_size}, {args.workers} workers, {repeats} epochs each"
    )
    for key, r in rows.items():
        print(
            f"  {key:22s} {r['samples_per_s']:10,.0f} samples/s  peak RSS "
            f"{r['peak_rss_bytes'] / 2**20:6.0f} MiB  ({r['requests']} requests)"
        )
    print(
        f"  remote / local: {results['ratio_readahead']:.2f}x with read-ahead, "
        f"{results['ratio_no_readahead']:.2f}x without, {results['ratio_cached']:.2f}x cached "
        "(epochs after the first); load average "
        f"{results['load_average_start']} -> {results['load_average_end']}"
    )
    return results


def _forget_s3_clients() -> None:
    """Close and drop every cached s3fs instance (their endpoint came from our environment)."""
    try:
        import s3fs
        from zarr.core.sync import sync
    except ImportError:
        return
    for fs in list(s3fs.S3FileSystem._cache.values()):
        creator = getattr(fs, "_s3creator", None)
        if creator is None:
            continue
        with contextlib.suppress(Exception):
            if fs.asynchronous:  # created by zarr on its event loop
                sync(creator.__aexit__(None, None, None))
            else:
                s3fs.S3FileSystem.close_session(fs.loop, creator)
    s3fs.S3FileSystem.clear_instance_cache()


_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
