"""`fastload serve` / `fastload status`: a feed served from the command line, attached from Python.

The feed runs as `python -m fastload serve ...` in a subprocess; this process attaches with
`fl.attach`, checks the batches against a plain Loader, asks `python -m fastload status`, and
stops the feed with SIGINT or SIGTERM: exit 0, consumers told, nothing left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from leaks import shm_segments, wait_until

import fastload as fl
from fastload.errors import FeedClosedError, FeedConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def feed_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("feeds") / "d"
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 numbered samples (``y = i``, ``X = [i, -i]``) in chunks of 20."""
    path = tmp_path_factory.mktemp("cli-store") / "s.zarr"
    i = np.arange(400)
    arrays = {"X": np.stack([i, -i], axis=1).astype(np.float32), "y": i.astype(np.int64)}
    fl.write_arrays(path, {"train": arrays}, chunk_len=20)
    return path


def fastload_cli(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "fastload", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        **popen,  # type: ignore[arg-type]
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = fastload_cli(*args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_attach_status_and_stop(store: Path, feed_dir: Path, stop: signal.Signals) -> None:
    """A CLI-served feed gives a plain Loader's batches; status lists it and the consumer;
    Ctrl-C / SIGTERM stops it with exit 0, the consumer gets FeedClosedError, nothing leaks."""
    serve = fastload_cli(
        "serve", str(store), "train", "--name", "cli", "--batch-size", "16", "--workers", "1",
        "--seed", "3", "--ahead", "4",  # the stop lands mid-epoch: 25 batches > ahead
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
        assert first.startswith("serving feed 'cli' (broadcast, 25 batches"), first + (
            serve.stderr.read() if serve.stderr else ""
        )
        with fl.Loader(fl.open_store(store)["train"], 16, seed=3, workers=0) as loader:
            want = [b["y"].copy() for b in loader]
        consumer = fl.attach("cli", batch_size=16, seed=3, shuffle=True, label="trainer")
        got = [b["y"].copy() for b in consumer]
        assert len(got) == len(want) == 25
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)

        status = run_cli("status")
        assert status.returncode == 0, status.stderr
        assert "cli  pid" in status.stdout
        assert "consumer" in status.stdout
        assert "'trainer'" in status.stdout
        assert "lag" in status.stdout
        raw = json.loads(run_cli("status", "--json").stdout)
        (entry,) = raw
        assert entry["name"] == "cli"
        assert entry["pid"] == serve.pid
        assert [c["label"] for c in entry["consumers"]] == ["trainer"]
        workers = entry["workers"]
        assert workers
        assert all(alive(p) for p in workers)

        serve.send_signal(stop)
        out, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err
        assert "feed 'cli' stopped" in out
        assert "Traceback" not in err
        with pytest.raises(FeedClosedError):
            list(consumer)
        consumer.close()
    finally:
        if serve.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                serve.kill()
            serve.communicate()
    assert not shm_segments(serve.pid)
    assert wait_until(lambda: not any(alive(p) for p in workers), 10.0)
    assert not list(feed_dir.iterdir())  # the socket is gone
    assert "no feeds running" in run_cli("status").stdout


def test_serve_split_mode_and_errors(store: Path) -> None:
    """--mode split needs --consumers (one error line, exit 2); a missing split is one line too."""
    missing = run_cli("serve", str(store), "nosuch", "--batch-size", "8")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:")
    assert "Traceback" not in missing.stderr
    split = run_cli("serve", str(store), "train", "--batch-size", "8", "--mode", "split")
    assert split.returncode == 2
    assert "consumers" in split.stderr
    assert "Traceback" not in split.stderr


# --------------------------------------------------------------------------- --ragged
@pytest.fixture(scope="module")
def ragged_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 samples in chunks of 16: ``id = i`` and ``i % 7`` rows of ragged ``hits`` (3 float32)."""
    path = tmp_path_factory.mktemp("cli-ragged") / "r.zarr"
    counts = np.arange(120) % 7
    rows = np.arange(3 * int(counts.sum()), dtype=np.float32).reshape(-1, 3)
    arrays = {"hits": fl.Ragged.from_counts(rows, counts), "id": np.arange(120, dtype=np.int64)}
    fl.write_arrays(path, {"train": arrays}, chunk_len=16)
    return path


def stop_serving(serve: subprocess.Popen) -> tuple[str, str]:
    """SIGINT the feed and wait for it (killed if it does not stop); its stdout and stderr."""
    try:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
        return serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                serve.kill()
            serve.communicate()


def test_serve_ragged_gives_the_loaders_values_and_offsets(
    ragged_store: Path, feed_dir: Path, no_leaks
) -> None:
    """`serve --ragged hits` is `ragged={"hits": "offsets"}`: a consumer gets a plain Loader's
    `fl.Ragged` rows and offsets; attach checks the setting; status names the field."""
    serve = fastload_cli(
        "serve", str(ragged_store), "train", "--name", "rg", "--batch-size", "8",
        "--workers", "2", "--seed", "4", "--ragged", "hits", "--memory-cache",
    )  # fmt: skip
    workers: list[int] = []
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
        assert first.startswith("serving feed 'rg' (broadcast, 15 batches"), first + (
            serve.stderr.read() if serve.stderr else ""
        )
        assert "ragged hits as values + offsets" in first
        ragged = {"hits": "offsets"}
        with fl.Loader(
            fl.open_store(ragged_store)["train"], 8, seed=4, workers=0, ragged=ragged
        ) as loader:
            want = [(b["hits"].rebased(), b["id"].copy()) for b in loader]
            want = [((v.copy(), o.copy()), i) for (v, o), i in want]
            want_specs = loader.output_specs
        with fl.attach("rg", batch_size=8, seed=4, ragged=ragged) as consumer:
            assert consumer.output_specs == want_specs
            assert consumer.output_specs["hits"].ragged
            got = []
            for batch in consumer:
                hits = batch["hits"]
                assert isinstance(hits, fl.Ragged)
                values, offsets = hits.rebased()
                got.append(((values.copy(), offsets.copy()), batch["id"].copy()))
            entry = json.loads(run_cli("status", "--json").stdout)[0]
            assert entry["ragged"] == ["hits"]
            # the epoch is over: every chunk was decoded once into the cache
            cache = entry["memory_cache"]
            assert cache["chunks"] == cache["of"] == cache["filled"] == 8, cache
            assert cache["nbytes"] > 0
            table = run_cli("status").stdout
            assert "ragged hits" in table
            assert "memory_cache 8/8 chunks filled" in table
            workers = entry["workers"]
        assert len(got) == len(want) == 15
        for k, (((gv, go), gi), ((wv, wo), wi)) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_array_equal(go, wo, err_msg=f"batch {k} offsets")
            np.testing.assert_array_equal(gv, wv, err_msg=f"batch {k} values")
            assert gv.dtype == wv.dtype == np.float32
            np.testing.assert_array_equal(gi, wi, err_msg=f"batch {k} id")
        # a consumer that wants the field padded (or names another mode) is refused
        with pytest.raises(FeedConfigError, match=r"ragged=\{'hits': 'offsets'\}"):
            fl.attach("rg", ragged={"hits": "pad"})
        out, err = stop_serving(serve)
        assert "feed 'rg' stopped" in out
        assert serve.returncode == 0, err
        assert "Traceback" not in err
    finally:
        stop_serving(serve)
    assert not shm_segments(serve.pid)
    assert wait_until(lambda: not any(alive(p) for p in workers), 10.0)
    assert not list(feed_dir.iterdir())


def test_serve_without_ragged_serves_padded_and_refuses_an_offsets_consumer(
    ragged_store: Path, no_leaks
) -> None:
    serve = fastload_cli(
        "serve", str(ragged_store), "train", "--name", "pad", "--batch-size", "8",
        "--workers", "1",
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
        assert first.startswith("serving feed 'pad'"), first
        assert "ragged" not in first
        with pytest.raises(FeedConfigError, match="ragged="):
            fl.attach("pad", ragged={"hits": "offsets"})
        with fl.attach("pad") as consumer:
            assert not consumer.output_specs["hits"].ragged
        entry = json.loads(run_cli("status", "--json").stdout)[0]
        assert entry["ragged"] == []
        assert entry["memory_cache"] is None
        _, err = stop_serving(serve)
        assert serve.returncode == 0, err
    finally:
        stop_serving(serve)
    assert not shm_segments(serve.pid)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--ragged", "nosuch"], "nosuch"),  # not a field
        (["--ragged", "id"], "id"),  # a field of fixed length
        (["--ragged", "hits", "--fields", "id"], "hits"),  # not delivered
    ],
)
def test_serve_ragged_of_a_field_that_is_not_variable_length_is_one_error_line(
    ragged_store: Path, feed_dir: Path, args: list[str], field: str, no_leaks
) -> None:
    """The feed's loaders' ConfigError: names the field and lists the ragged fields; exit 2."""
    bad = run_cli("serve", str(ragged_store), "train", "--batch-size", "8", *args)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.startswith("error:")
    assert f"ragged= names {field!r}" in bad.stderr
    assert "ragged fields:" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not feed_dir.exists() or not list(feed_dir.iterdir())  # no socket left
