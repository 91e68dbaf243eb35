"""The throughput benchmark keeps working: a --quick run, and the pieces that make its numbers honest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from fastload.bench._contender import RunConfig
from fastload.bench._data import BenchData, build_dataset, pad_ragged
from fastload.bench._measure import BatchError, Consumer
from fastload.bench.baselines.in_memory import InMemory
from fastload.bench.baselines.pipe_queue import PipeQueue
from fastload.bench.throughput import missing_requirement

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench-quick")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.throughput",
            "--quick",
            "--no-progress",
            "--out",
            str(out / "results"),
            "--data-dir",
            str(out / "data"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc, out / "results"


def test_quick_run_succeeds_and_prints_the_table(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """`--quick` exits 0 and prints one table row per contender that ran."""
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "samples/s" in proc.stdout
    assert "MB/s" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    for rec in results["results"]:
        if rec["status"] == "ok":
            assert rec["label"][:34] in proc.stdout
    assert (out / "table.txt").read_text().strip()


def test_quick_results_json_is_complete_and_consistent(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Every contender that ran delivered whole epochs of the same samples, fields, dtypes and shapes."""
    _, out = quick_run
    results = json.loads((out / "results.json").read_text())
    env = results["environment"]
    for key in ("date", "host", "cpu_count_logical", "ram_total_gb", "python", "versions"):
        assert env[key]
    for pkg in ("numpy", "zarr", "torch", "tensorflow"):
        assert pkg in env["versions"]
    ran = [r for r in results["results"] if r["status"] == "ok"]
    assert {r["contender"] for r in ran} >= {"in-memory", "naive-h5py", "pipe-queue"}
    for rec in results["results"]:
        assert rec["status"] in ("ok", "skipped"), rec
        if rec["status"] == "skipped":
            assert rec["note"]
    (dataset,) = results["datasets"].values()
    signatures = {r["summary"]["signature_hash"] for r in ran}
    assert len(signatures) == 1, {r["contender"]: r["summary"]["signature"] for r in ran}
    for rec in ran:
        s = rec["summary"]
        assert s["epoch_check"] == "ok", (rec["contender"], s["epoch_check"])
        assert s["samples_per_epoch"] == dataset["n"]
        assert s["samples_per_s"] > 0
        assert s["mb_per_s"] > 0
        assert s["ttfb_s"] >= 0
        assert s["rss_total_peak_mb"] >= s["rss_consumer_peak_mb"] > 0
        assert not rec.get("leaked_children")
        assert not rec.get("leaked_processes")
        assert not rec.get("leaked_shm")
    first = ran[0]["summary"]["signature"]
    assert [f[0] for f in first] == sorted(f["name"] for f in dataset["fields"])
    assert all(shape[0] == results["config"]["batch_size"] for _, shape, _ in first)
    assert len({r["workers"] for r in results["sweep"]}) >= 2


def test_quick_run_writes_plots(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Both PNGs exist and are real images."""
    _, out = quick_run
    for name in ("throughput.png", "throughput_vs_workers.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5000, name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> BenchData:
    return build_dataset("ahcal", 256, tmp_path_factory.mktemp("bench-tiny"), progress=False)


def test_consumer_catches_missing_and_stale_batches(tiny: BenchData) -> None:
    """A dropped batch fails the epoch check; the same array object twice, or a wrong dtype, is refused."""
    cfg = RunConfig(batch_size=64, workers=0)
    session = InMemory().open(tiny, cfg)
    try:
        consumer = Consumer(tiny.batch_spec(), cfg.batch_size)
        for batch in session.epoch(0):
            consumer(batch)
        assert consumer.end_epoch(tiny) == "ok"
        batches = list(session.epoch(1))
        for batch in batches[1:]:
            consumer(batch)
        assert "of 256 samples" in consumer.end_epoch(tiny)
        # fewer samples pass only when the contender declared exactly that many by design
        for batch in batches[1:]:
            consumer(batch)
        assert consumer.end_epoch(tiny, by_design=256 - len(batches[0]["y"])).startswith("ok (")
        for batch in batches[1:]:
            consumer(batch)
        assert "of 256 samples" in consumer.end_epoch(tiny, by_design=100)
        with pytest.raises(BatchError, match="same array object"):
            consumer(batches[-1])
        wrong = dict(batches[0])
        wrong["y"] = wrong["y"].astype(np.int32)
        with pytest.raises(BatchError, match="'y'"):
            consumer(wrong)
    finally:
        session.close()


def test_pad_ragged_matches_a_loop() -> None:
    """Padding ragged samples gives each sample's rows, zeros after, and the lengths (truncating at max_len)."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 9, 40)
    offsets = np.concatenate([[5], 5 + np.cumsum(counts)])
    values = rng.standard_normal((offsets[-1] + 3, 2)).astype(np.float32)
    padded, lengths = pad_ragged(values[5:], offsets, 6)
    assert padded.shape == (40, 6, 2)
    assert lengths.dtype == np.int64
    for i, c in enumerate(counts):
        k = min(int(c), 6)
        assert lengths[i] == k
        np.testing.assert_array_equal(padded[i, :k], values[offsets[i] : offsets[i] + k])
        assert not padded[i, k:].any()


def test_pipe_queue_releases_workers_when_abandoned(tiny: BenchData) -> None:
    """Breaking out of an epoch and closing leaves no worker process behind."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    session = PipeQueue().open(tiny, RunConfig(batch_size=16, workers=2))
    try:
        batches = session.epoch(0)
        next(batches)
        assert {p.pid for p in me.children(recursive=True)} - before
        batches.close()
    finally:
        session.close()
    left = [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()]
    assert not [p for p in left if p.status() != psutil.STATUS_ZOMBIE]


def test_missing_or_broken_packages_are_skipped_with_a_note() -> None:
    """A contender whose package is absent, broken or too old is skipped with a reason, never silently."""

    class Ghost(InMemory):
        key = "ghost"
        requires = ("no_such_package_for_fastload_bench",)
        install = "pip install ghost"

    class Future(InMemory):
        key = "future"
        requires = ("fastload:NoSuchLoader",)

    note = missing_requirement(Ghost())
    assert note is not None
    assert "no_such_package_for_fastload_bench" in note
    assert "pip install ghost" in note
    assert "does not exist yet" in (missing_requirement(Future()) or "")
    assert "cannot import" in (Ghost().unavailable() or "")
    assert missing_requirement(InMemory()) is None


def test_ragged_mode_compares_ragged_batches_with_ram(tmp_path: Path) -> None:
    """`--ragged`: the four feeds run, their epoch sums check out, the ratios are written."""
    from bench.throughput import main

    out = tmp_path / "out"
    argv = ["--ragged", "--events", "600", "--batch-size", "64", "--workers", "1"]
    assert main([*argv, "--max-seconds", "0", "--out", str(out), "--data-dir", str(tmp_path)]) == 0
    results = json.loads((out / "ragged.json").read_text())
    for key in (
        "in-memory ragged",
        "fastload ragged",
        "fastload ragged, memory_cache",
        "fastload padded",
    ):
        assert results[key]["samples_per_s"] > 0
        assert results[key]["epochs"] >= 1
    assert results["ratio"] > 0
    assert results["ratio_cached"] > 0


def test_lariat_mode_compares_reduced_batches_with_ram(tmp_path: Path) -> None:
    """`--dataset lariat`: the four feeds run, their plane sums check out, one write per event."""
    from bench.throughput import main

    out = tmp_path / "out"
    argv = ["--dataset", "lariat", "--events", "12", "--batch-size", "4", "--workers", "1"]
    assert main([*argv, "--max-seconds", "0", "--out", str(out), "--data-dir", str(tmp_path)]) == 0
    results = json.loads((out / "lariat.json").read_text())
    assert results["events"] == 12
    assert results["chunk_len"] == 1
    for key in ("in-memory", "fastload", "fastload raw", "DLKit-style"):
        assert results[key]["samples_per_s"] > 0
        assert results[key]["epochs"] >= 1
    # the reduced planes of every feed sum alike (checked in the run); the raw feed reads float16
    assert results["fastload"]["epoch_sum"] == pytest.approx(results["in-memory"]["epoch_sum"])
    assert results["fastload raw"]["gb_per_s"] > 0
    decode = results["decode"]
    assert decode["events"] == 12
    assert decode["decoded_into_slot"] == decode["decodes"] == 12
    assert decode["bytes_written_per_event"] == decode["event_nbytes"] == 2 * 240 * 4096 * 2
    assert results["ratio"] > 0
    assert results["ratio_dlkit"] > 0


def test_cold_mode_runs_and_checks_its_eviction(tmp_path: Path) -> None:
    """``--cold`` on a tiny store: the three rates, the ratio and the eviction check are reported."""
    from fastload.bench.throughput import main

    argv = ["--cold", "--events", "4096", "--repeats", "1", "--workers", "1"]
    argv += ["--batch-size", "512", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path)]
    assert main(argv) == 0
    cold = json.loads((tmp_path / "cold.json").read_text())
    assert set(cold["median_bytes_per_s"]) == {"disk", "cold", "warm"}
    assert cold["cold_over_disk"] > 0
    assert "eviction_works" in cold
    assert cold["store_bytes"] > 0


def test_remote_mode_reads_through_the_latency_proxy(tmp_path: Path) -> None:
    """``--remote`` on a tiny store: every case delivers whole epochs, over the proxy."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from fastload.bench.throughput import main

    argv = ["--remote", "--events", "2048", "--repeats", "1", "--workers", "1"]
    argv += ["--batch-size", "512", "--latency-ms", "5", "--data-dir", str(tmp_path / "d")]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    remote = json.loads((tmp_path / "remote.json").read_text())
    cases = remote["cases"]
    assert cases["local warm"]["requests"] == 0
    assert cases["remote, read-ahead"]["requests"] > 0
    assert remote["ratio_readahead"] > 0
    # the cached case's timed epoch reads from the cache: only its first epoch made requests
    assert 0 < cases["remote, cached"]["requests"] < 2 * cases["remote, read-ahead"]["requests"]
    assert remote["ratio_cached"] > 0
