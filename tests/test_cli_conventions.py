"""What users of the command lines and one-liners rely on (issue 10 items 3, 4, 7, 8, 9; issue 11 items 4, 7).

Serial below a size threshold and a serial fallback without Dask; one ``error:`` line naming the
fastload extra for every missing optional package; summaries on stdout, diagnostics on stderr,
progress bars only on a terminal; pd4ml's positional ``load``; one converter registry; relative
imports inside converters/ and bench/; packaging metadata that tells the truth.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import fastload as fl
import fastload.converters as converters
import fastload.datasets as fd
from fastload import synthetic
from fastload.converters import ahcal
from fastload.converters._cli import EXTERNAL, build_parser
from fastload.converters._cli import main as cli
from fastload.converters._spec import load_spec
from fastload.converters.generic import DASK_MIN_SOURCE_BYTES, choose_execution, plan_conversion
from fastload.errors import ConfigError, FastloadError

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; stderr is a pipe (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def block(*modules: str) -> str:
    """Code that makes ``import m`` fail for each module, as if it were not installed."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)


CLI = "import sys\nfrom converters._cli import main\nsys.argv = ['python -m converters', *sys.argv[1:]]\nsys.exit(main())\n"


@pytest.fixture(scope="module")
def ahcal_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic AHCAL original (ROOT and npz twins) in <dir>/AHCAL/."""
    root = tmp_path_factory.mktemp("ahcal-data")
    synthetic.make_ahcal(root / "AHCAL", n_events=120, n_files=2, seed=5)
    return root


def read_all(path: Path) -> dict[str, dict[str, object]]:
    store = fl.open_store(path)
    return {s: {f: store[s].read(f) for f in store.fields} for s in store.splits}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].keys() == b[split].keys()
        for field, x in a[split].items():
            y = b[split][field]
            if isinstance(x, fl.Ragged):
                np.testing.assert_array_equal(x.values, y.values)
                np.testing.assert_array_equal(x.offsets, y.offsets)
            else:
                np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ serial or Dask (item 3)
def test_ahcal_load_of_a_small_original_starts_no_dask(ahcal_src: Path, tmp_path: Path) -> None:
    """AHCAL.load converts in-process: `distributed` is never imported; arrays equal --serial's."""
    data = Path(shutil.copytree(ahcal_src, tmp_path / "datasets"))
    code = (
        "import sys, numpy as np\n"
        "import fastload.datasets as fd\n"
        "X, y = fd.AHCAL.load('train', sys.argv[1], verbose=False)\n"
        "hits, n_hits = X\n"
        "np.savez(sys.argv[2], values=hits.values, offsets=hits.offsets, n_hits=n_hits, y=y)\n"
        "print(sorted(m for m in ('distributed', 'dask') if m in sys.modules))\n"
    )
    out = run_python(code, str(data), str(tmp_path / "got.npz"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert "Traceback" not in out.stderr
    assert ahcal.main([str(ahcal_src / "AHCAL"), str(tmp_path / "ref.zarr"), "--serial", "-q"]) == 0
    ref = fl.open_store(tmp_path / "ref.zarr")["train"]
    with np.load(tmp_path / "got.npz") as got:
        np.testing.assert_array_equal(got["values"], ref.read("hits").values)
        np.testing.assert_array_equal(got["offsets"], ref.read("hits").offsets)
        np.testing.assert_array_equal(got["n_hits"], ref.read("n_hits"))
        np.testing.assert_array_equal(got["y"], ref.read("beam_energy"))


def test_cli_without_dask_converts_serially(ahcal_src: Path, tmp_path: Path) -> None:
    """The documented `python -m converters ahcal SRC DST --format npz` on an install without Dask:
    small input, serial, no Dask import; and `--workers 2` falls back to serial with a log line."""
    src = str(ahcal_src / "AHCAL")
    code = block("dask", "distributed") + CLI
    auto = run_python(code, "ahcal", src, str(tmp_path / "a.zarr"), "--format", "npz")
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.startswith("wrote ")
    assert "Traceback" not in auto.stderr
    assert "converting serially" in auto.stderr  # why no Dask: the input is small
    forced = run_python(code, "ahcal", src, str(tmp_path / "b.zarr"), "--workers", "2", "-q")
    assert forced.returncode == 0, forced.stderr
    assert "Dask is not installed" in forced.stderr
    assert "fastload[dask]" in forced.stderr
    assert forced.stdout == ""  # -q: no summary
    assert ahcal.main([src, str(tmp_path / "ref.zarr"), "--format", "npz", "--serial", "-q"]) == 0
    reference = read_all(tmp_path / "ref.zarr")
    assert_same(read_all(tmp_path / "a.zarr"), reference)
    assert_same(read_all(tmp_path / "b.zarr"), reference)


def test_auto_threshold_and_the_reason_logged(
    ahcal_src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """workers='auto': serial below the threshold, Dask (min(4, cores) workers) from it on; the
    choice and its reason are logged; an explicit request is honoured; resume needs Dask."""
    import fastload.converters._dask as dask_driver

    spec, source_dir = ahcal.load_ahcal_spec(ahcal_src / "AHCAL", "npz")
    plan = plan_conversion(spec, source_dir)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    small = choose_execution(plan, workers="auto")
    assert not small.dask
    assert "converting serially" in small.reason
    assert f"< {DASK_MIN_SOURCE_BYTES / 2**20:,.0f} MiB" in small.reason
    big = choose_execution(plan, workers="auto", dask_min_bytes=1)
    assert (big.dask, big.workers) == (True, 4)
    assert "converting with Dask (4 workers)" in big.reason
    assert choose_execution(plan, workers=3).workers == 3
    assert not choose_execution(plan, workers=0).dask
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert not choose_execution(plan, workers="auto", dask_min_bytes=1).dask
    with pytest.raises(ConfigError, match="--resume"):
        choose_execution(plan, workers=0, resume=True)
    with pytest.raises(ConfigError, match="workers"):
        choose_execution(plan, workers=-1)

    # convert() logs why it starts Dask (the cluster and the driver are stood in for here)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    started = {}

    class FakeClient:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_client(*, workers=None, scheduler=None):
        started["workers"] = workers
        return FakeClient()

    monkeypatch.setattr(dask_driver, "dask_client", fake_client)
    monkeypatch.setattr(dask_driver, "convert_dask", lambda plan, dst, **kw: str(dst))
    caplog.set_level(logging.INFO, logger="fastload.converters")
    ahcal.convert_ahcal(
        ahcal_src / "AHCAL", tmp_path / "d.zarr", format="npz", workers="auto", dask_min_bytes=1
    )
    assert started == {"workers": 4}
    assert any("converting with Dask (4 workers)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    ahcal.convert_ahcal(ahcal_src / "AHCAL", tmp_path / "s.zarr", format="npz", workers="auto")
    assert any("converting serially" in r.getMessage() for r in caplog.records)
    assert fl.open_store(tmp_path / "s.zarr").splits


# ------------------------------------------------------------ missing optional packages (item 8)
def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("missing", ["uproot", "awkward"])
def test_ahcal_root_without_uproot_is_one_error_line(
    ahcal_src: Path, tmp_path: Path, missing: str
) -> None:
    proc = run_python(
        block(missing) + CLI, "ahcal", str(ahcal_src / "AHCAL"), str(tmp_path / "r.zarr")
    )
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "fastload[root]" in line
    assert repr(missing) in line
    assert not (tmp_path / "r.zarr").exists()


def test_pandas_sources_without_pandas_or_tables_are_one_error_line(tmp_path: Path) -> None:
    """Landscape (pandas) and a generic pandas source name `fastload[pandas]`."""
    synthetic.make_toptagging_landscape(tmp_path / "land", n_train=5, n_val=3, n_test=3, seed=1)
    landscape = run_python(
        block("pandas") + CLI,
        "toptagging-landscape",
        str(tmp_path / "land"),
        str(tmp_path / "l.zarr"),
    )
    assert landscape.returncode == 2
    assert "fastload[pandas]" in one_error_line(landscape)
    generic = run_python(
        block("tables") + CLI,
        "generic",
        str(tmp_path / "g.zarr"),
        "--source-dir",
        str(tmp_path / "land"),
        "--set",
        'source.files=["train.h5"]',
        "--set",
        "source.format=pandas",
        "--set",
        "fields.ttv.source=ttv",
        "--set",
        "label.from=none",
        "--set",
        "split.by=fraction",
        "--set",
        "split.fractions={train = 1.0}",
    )
    assert generic.returncode == 2
    line = one_error_line(generic)
    assert "fastload[pandas]" in line
    assert "'tables'" in line


def test_bench_throughput_without_matplotlib_says_so_first_and_skips_the_plots(
    tmp_path: Path,
) -> None:
    """The check runs before the benchmark; results and tables are written, no PNGs, exit 0."""
    out = tmp_path / "out"
    code = block("matplotlib") + (
        "from bench.throughput import main\n"
        "sys.exit(main(['--quick', '--dataset', 'toptagging', '--events', '300', '--contenders',"
        " 'in-memory', '--sweep-workers', '', '--max-seconds', '1', '--no-progress',"
        f" '--out', {str(out)!r}, '--data-dir', {str(tmp_path / 'data')!r}]))\n"
    )
    proc = run_python(code, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    first_note = next(i for i, line in enumerate(lines) if "matplotlib is not installed" in line)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_note < first_data  # said at start, not discovered after the run
    assert "fastload[bench]" in lines[first_note]
    assert "Traceback" not in proc.stderr
    assert json.loads((out / "results.json").read_text())["results"]
    assert (out / "table.txt").is_file()
    assert not list(out.glob("*.png"))


# --------------------------------------------------------------- streams and bars (item 4)
def test_every_converter_prints_its_summary_on_stdout(
    ahcal_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Built-in (spinodal), spec-driven (ahcal) and premix: `wrote ...` on stdout, nothing on stderr."""
    synthetic.generate("Spinodal", tmp_path / "sp", n=40, seed=0)
    assert cli(["spinodal", str(tmp_path / "sp"), str(tmp_path / "s.zarr")]) == 0
    spinodal = capsys.readouterr()
    args = [str(ahcal_src / "AHCAL"), str(tmp_path / "a.zarr"), "--format", "npz", "--serial"]
    assert cli(["ahcal", *args]) == 0
    ahcal_out = capsys.readouterr()
    premix_args = [str(tmp_path / "m.zarr"), f"a={tmp_path / 's.zarr'}", f"b={tmp_path / 's.zarr'}"]
    assert cli(["premix", *premix_args]) == 0
    premix_out = capsys.readouterr()
    for captured in (spinodal, ahcal_out, premix_out):
        assert captured.out.startswith("wrote "), captured
        assert captured.out.count("\n") == 1
        assert captured.err == ""


def test_no_progress_bar_when_stderr_is_not_a_terminal(ahcal_src: Path, tmp_path: Path) -> None:
    """`python -m converters` (ahcal, spinodal) and `python -m fastload.synthetic` with stderr
    piped: no tqdm output at all (tqdm draws with carriage returns and `|` bars)."""
    synthetic.generate("Spinodal", tmp_path / "sp", n=40, seed=0)
    runs = [
        run_python(
            CLI, "ahcal", str(ahcal_src / "AHCAL"), str(tmp_path / "a.zarr"), "--format", "npz"
        ),
        run_python(CLI, "spinodal", str(tmp_path / "sp"), str(tmp_path / "s.zarr")),
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fastload.synthetic",
                "EOSL",
                str(tmp_path / "eosl"),
                "-n",
                "50",
            ],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        ),
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        assert "\r" not in proc.stderr
        assert "it/s" not in proc.stderr
        assert "ev/s" not in proc.stderr
        assert "%|" not in proc.stderr
    assert runs[0].stdout.startswith("wrote ")
    assert runs[1].stdout.startswith("wrote ")
    assert runs[2].stdout.strip().endswith(".npz")  # the files written, one per line


def test_library_code_does_not_print() -> None:
    """No print() in the converters (but the command-line functions), datasets or synthetic.

    converters/_dask.py belongs to the store layout work and is checked there."""
    allowed = {
        "main",
        "run_from_args",
        "_dispatch_external",
        "print_description",
        "_list_contenders",
    }
    paths = [
        *(p for p in (REPO / "converters").glob("*.py") if p.name != "_dask.py"),
        *(REPO / "fastload" / "datasets").glob("*.py"),
        *(REPO / "fastload" / "synthetic").glob("*.py"),
    ]
    offenders = []
    for path in paths:
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in allowed:
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "print"
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} in {fn.name}")
    assert offenders == []


# ------------------------------------------------------------------ pd4ml conventions (item 9)
def test_pd4ml_positional_load_and_force_download(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pd4ml's `load(split, path, force_download)` works positionally; force_download=True
    downloads nothing, says so on the fastload.datasets logger, and returns the same data."""
    synthetic.generate("Spinodal", tmp_path / "Spinodal", n=40, seed=2)
    X, y = fd.Spinodal.load("train", tmp_path, False)
    caplog.set_level(logging.INFO, logger="fastload.datasets")
    caplog.clear()
    X2, y2 = fd.Spinodal.load("train", tmp_path, True)
    np.testing.assert_array_equal(X2[0], X[0])
    np.testing.assert_array_equal(y2, y)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "does not download" in warned[0].getMessage()


# ---------------------------------------------------------------- one registry (issue 11.7)
def cli_names() -> set[str]:
    parser = build_parser()
    assert parser._subparsers is not None
    return set(parser._subparsers._group_actions[0].choices) | set(EXTERNAL)


def test_every_cli_converter_name_is_accepted_by_convert(tmp_path: Path) -> None:
    names = cli_names()
    assert {"ahcal", "generic", "premix", "spinodal", "landscape", "photon-showers"} <= names
    assert set(converters.names()) <= names
    for name in sorted(names):
        # a missing source: the converter itself must answer, not the name lookup
        with pytest.raises((FastloadError, OSError)) as info:
            converters.convert(name, tmp_path / "missing", tmp_path / f"{name}.zarr")
        assert "unknown converter" not in str(info.value), name
    with pytest.raises(ConfigError, match=r"unknown converter 'ahcl'.*closest: 'ahcal'"):
        converters.convert("ahcl", tmp_path, tmp_path / "x.zarr")


def test_convert_ahcal_and_generic_from_python(ahcal_src: Path, tmp_path: Path) -> None:
    """converters.convert("ahcal"/"generic", ...) write the same store as the command line."""
    src = ahcal_src / "AHCAL"
    assert cli(["ahcal", str(src), str(tmp_path / "cli.zarr"), "--format", "npz", "-q"]) == 0
    path = converters.convert("ahcal", src, tmp_path / "py.zarr", format="npz")
    assert_same(read_all(Path(path)), read_all(tmp_path / "cli.zarr"))
    generic = converters.convert(
        "generic", ahcal.spec_path("npz"), tmp_path / "gen.zarr", source_dir=src
    )
    assert_same(read_all(Path(generic)), read_all(tmp_path / "cli.zarr"))
    assert load_spec(ahcal.spec_path("npz")).name


# -------------------------------------------------------- relative imports (issue 11 item 4)
def test_converters_and_bench_import_each_other_only_relatively() -> None:
    """No absolute `converters`/`bench` import inside those packages (converters/_dask.py excepted)."""
    bad = []
    for pkg in ("converters", "bench"):
        for path in (REPO / pkg).rglob("*.py"):
            if path == REPO / "converters" / "_dask.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    if name.split(".")[0] in ("converters", "bench"):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert bad == []


def test_packages_work_under_another_parent(tmp_path: Path) -> None:
    """Copied under a parent package (as fastload.converters / fastload.bench will be), the
    converter registry and the benchmark import without touching the top-level names."""
    parent = tmp_path / "elsewhere"
    parent.mkdir()
    (parent / "__init__.py").write_text("")
    for pkg in ("converters", "bench"):
        shutil.copytree(REPO / pkg, parent / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys\n"
        "import elsewhere.converters as c, elsewhere.converters.ahcal, elsewhere.bench.throughput\n"
        "import elsewhere.bench.train, elsewhere.bench.models\n"
        "from elsewhere.bench._siblings import converters_module\n"
        "assert converters_module('pd4ml').__name__ == 'elsewhere.converters.pd4ml'\n"
        "assert 'premix' in c.names()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('converters', 'bench')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ------------------------------------------------------------------ packaging (item 7)
def test_packaging_metadata_tells_the_truth() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["requires-python"] == ">=3.11"
    assert meta["tool"]["ruff"]["target-version"] == "py311"
    assert "Typing :: Typed" in project["classifiers"]
    assert (REPO / "fastload" / "py.typed").is_file()
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["fastload"]
    assert "cloudpickle>=3.0" in project["dependencies"]
    assert "google-crc32c>=1.5" in project["dependencies"]
    assert not any(d.startswith("h5py") and "<" in d for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("h5py<") for d in extras["tf"])
    assert not any("moto" in d for d in extras["s3"])
    assert any(d.startswith("moto") for d in extras["dev"])
    for name, deps in extras.items():
        if name != "all":  # exact pins only where the README's set-up command and CI use them
            assert not [d for d in deps if "==" in d], name
    assert "torch>=2.1" in extras["torch"]
    assert "torch==2.13.0" in extras["all"]
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[all]'" in readme
    assert "3.10" not in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.index("ruff check .") < ci.index("ruff format --check .") < ci.index("-m pytest")
