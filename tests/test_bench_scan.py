"""`python -m bench.scan` keeps working: a tiny run of both setups, exact epochs, nothing leaked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from leaks import shm_segments

REPO = Path(__file__).resolve().parent.parent


def _tiny_scan(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.scan`` with 2 trainings on 1024 samples for 1.5 s, results in OUT."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "bench.scan", "--consumers", "2", "--events", "1024"),
            *("--duration", "1.5", "--warmup", "0.5", *extra, "--out", str(tmp_path / "out")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_scan_runs_both_setups_with_exact_epochs_and_no_leak(tmp_path: Path) -> None:
    """2 trainings on a tiny store: every training delivers, completed epochs check out, the
    table and the JSON say so, and no /dev/shm segment of the run's processes is left."""
    before = shm_segments()
    proc = _tiny_scan(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "aggregate feed / loaders" in proc.stdout
    results = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert [r["setup"] for r in results["setups"]] == ["loaders", "feed"]
    for setup in results["setups"]:
        assert len(setup["consumers"]) == 2
        for c in setup["consumers"]:
            assert c["samples"] > 0
            assert c["samples_per_s"] > 0
            assert 0.0 <= c["data_wait_frac"] <= 1.0
            # 1024 samples, 4 batches an epoch: every training completes epochs, all exact
            assert c["epochs_done"] >= 1
            assert c["epoch_verdicts"]
            assert set(c["epoch_verdicts"]) == {"ok"}
        assert setup["decode_cpu_s"] > 0
        assert setup["pss_total_mb"] > 0
        assert setup["leaked_shm"] == []
        assert not setup["killed_lingering"]
    assert results["feed_vs_loaders"] > 0
    assert shm_segments() - before == set()


def test_scan_cached_setups_deliver_exact_epochs_and_report_their_ratios(tmp_path: Path) -> None:
    """``feed+cache`` (memory_cache=True in the feed) beside plain loaders: exact epochs, and
    the ratio against the loaders is reported in the table and the JSON."""
    before = shm_segments()
    proc = _tiny_scan(tmp_path, "--setups", "loaders,feed+cache")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "aggregate feed+cache / loaders:" in proc.stdout
    results = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert [r["setup"] for r in results["setups"]] == ["loaders", "feed+cache"]
    for setup in results["setups"]:
        for c in setup["consumers"]:
            assert c["epochs_done"] >= 1
            assert set(c["epoch_verdicts"]) == {"ok"}
    assert set(results["cached_ratios"]) == {"feed+cache_vs_loaders"}
    assert results["cached_ratios"]["feed+cache_vs_loaders"] > 0
    assert shm_segments() - before == set()


def test_scan_fcn_trains_in_every_setup_and_counts_data_memory(tmp_path: Path) -> None:
    """``--model fcn`` with 2 trainings: every setup trains (steps, losses, learning rates of
    the scan), the feed setups decode once, data PSS is counted from the data-free setup, and
    nothing is left in /dev/shm."""
    pytest.importorskip("torch")
    before = shm_segments()
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scan",
            "--model",
            "fcn",
            "--consumers",
            "2",
            "--events",
            "1500",
            "--batch-size",
            "64",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--ahead",
            "8",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "scan.json").read_text())
    by = {r["setup"]: r for r in results["setups"]}
    assert list(by) == ["compute", "memory", "loaders", "feed", "hosted"]
    for setup, r in by.items():
        assert [c["lr"] for c in r["consumers"]] == [5e-4, 1e-3], setup
        for c in r["consumers"]:
            assert c["steps"] > 0, setup
            assert c["samples"] == 64 * c["steps"], setup
            assert 0.0 <= c["data_wait_frac"] <= 1.0
            assert c["step_ms"] > 0
            assert c["loss_first"] > 0
            assert c["loss_last"] > 0
        assert r["leaked_shm"] == []
        assert not r["killed_lingering"]
        assert r["pss_total_mb"] > 0
    assert by["compute"]["data_pss_mb"] == 0
    assert by["compute"]["decode_cpu_s"] == 0
    assert by["memory"]["decode_cpu_s"] == 0
    for setup in ("loaders", "feed", "hosted"):
        assert by[setup]["decode_cpu_s"] > 0
    assert by["feed"]["pss_parts_mb"]["feed process"] > 0
    assert by["hosted"]["pss_parts_mb"]["feed process"] == 0
    assert results["data_memory"]["one_loader_data_pss_mb"] > 0
    assert "data PSS: feed" in proc.stdout
    assert "aggregate hosted feed / loaders" in proc.stdout
    assert shm_segments() - before == set()
