"""What an install puts into site-packages, and the ``fastload`` console script."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

import fastload as fl
from fastload._cli import main

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_checkout_is_installed_under_fastload() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    mapping = {"fastload": "fastload", **setuptools["package-dir"]}
    expected = set()
    for top, installed_as in (
        ("fastload", "fastload"),
        ("converters", "fastload.converters"),
        ("bench", "fastload.bench"),
    ):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            expected.add(".".join([installed_as, *rel]))
    assert set(setuptools["packages"]) >= expected, sorted(expected - set(setuptools["packages"]))
    assert mapping["fastload.converters"] == "converters"
    assert mapping["fastload.bench"] == "bench"
    # nothing generic at the top level of site-packages
    assert {p.split(".")[0] for p in setuptools["packages"]} == {"fastload"}


def test_installed_names_resolve_to_the_checkout_folders() -> None:
    import fastload.bench.throughput
    import fastload.converters

    assert Path(fastload.converters.__file__).parent == ROOT / "converters"
    assert Path(fastload.bench.throughput.__file__).parent == ROOT / "bench"


def test_console_script_inspects_a_store(tmp_path: Path, capsys) -> None:
    path = tmp_path / "toy.zarr"
    fl.write_arrays(path, {"train": {"X": np.zeros((10, 3), np.float32), "y": np.arange(10)}})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "train: 10 samples" in out
    assert "field X: float32(3,)" in out
    assert main(["inspect", str(tmp_path / "missing.zarr")]) == 2
    assert "no store at" in capsys.readouterr().err


def test_console_script_lists_commands_and_refuses_unknown_ones(capsys) -> None:
    assert main(["--help"]) == 0
    assert "convert" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_dash_m_fastload_runs_the_same_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastload", "convert", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
