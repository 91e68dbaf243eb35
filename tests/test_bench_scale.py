"""bench.scale prints the 20 TB plan of docs/scale.md: its arithmetic and its two measurements."""

from __future__ import annotations

import json
import math
import os

import pytest

from fastload.bench import scale


def _plan(**overrides: float) -> dict[str, float]:
    inputs = {k: float(v) for k, (v, _) in scale.INPUTS.items()}
    inputs.update(overrides)
    return {name: value for name, value, _ in scale.plan(inputs)}


def test_plan_arithmetic_matches_its_formulas() -> None:
    p = _plan()
    events = 20e12 / 3_932_160
    assert p["events"] == pytest.approx(events)
    assert p["chunk_files"] == pytest.approx(9 * events)
    assert p["shard_files"] == 9 * math.ceil(events / 64)
    assert p["node_events_per_s_lariat"] == 8 * 2_000
    assert p["node_gb_s_raw_decoded"] == pytest.approx(16_000 * 3_932_160 / 1e9)
    assert p["cores_raw"] == pytest.approx(16_000 * (3.08e-3 + 7.60e-3))
    assert p["convert_core_h_total"] == pytest.approx(20 * 1e6 / 75.0 / 3600)
    shards = math.ceil(events / 64)
    assert p["shards_index_uncached_fraction"] == pytest.approx((shards - 65_536) / shards)
    assert _plan(dataset_tb=1.0)["shards_index_uncached_fraction"] == 0.0


def test_an_override_moves_what_depends_on_it_and_nothing_else() -> None:
    base, faster = _plan(), _plan(gpu_events_per_s_lariat=4_000.0)
    assert faster["node_gb_s_reduced"] == pytest.approx(2 * base["node_gb_s_reduced"])
    assert faster["cores_raw"] == pytest.approx(2 * base["cores_raw"])
    assert faster["shard_files"] == base["shard_files"]
    assert faster["convert_core_h_total"] == base["convert_core_h_total"]


def test_formulas_refuse_anything_but_arithmetic() -> None:
    assert scale._evaluate("ceil(a / 2) * (b - 1)", {"a": 3, "b": 4}) == 6.0
    assert scale._evaluate("max(0, a - b)", {"a": 3, "b": 4}) == 0.0
    with pytest.raises(ValueError, match="unsupported"):
        scale._evaluate("__import__('os').getcwd()", {})
    with pytest.raises(ValueError, match="unsupported"):
        scale._evaluate("a ** 2", {"a": 3})


def test_cli_measures_small_and_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    args = ["--measure", "--plan-samples", "5000", "--reduction-events", "1", "--json"]
    assert scale.main([*args, "--set", "gpus_per_node=4"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["measured"]
    assert 0 < m["reduction_cpu_s_per_event"] < 5
    assert m["plan_held_mb"] == pytest.approx(
        (5000 * (2 + 8) + 8 * (5000 // 32 + 2)) / 1e6, rel=0.01
    )
    assert out["inputs"]["reduction_cpu_s_per_event"] == m["reduction_cpu_s_per_event"]
    assert out["plan"]["node_events_per_s_lariat"] == 4 * 2_000
    if affinity is not None:
        assert os.sched_getaffinity(0) == affinity  # the pin to one core is undone


def test_cli_table_and_bad_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale.main([]) == 0
    text = capsys.readouterr().out
    assert "shard_files" in text
    assert "= dense_arrays * ceil(events / shard_chunks)" in text
    with pytest.raises(SystemExit):
        scale.main(["--set", "no_such_input=1"])
