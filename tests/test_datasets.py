"""fastload.datasets: pd4ml-style ``load`` from synthetic originals, exact against the files.

Every dataset goes synthetic original (tiny sizes) -> automatic conversion on
the first ``load`` -> store -> ``load``, and every array ``load`` returns is
compared with the values read straight from the original files (np.load,
pandas, h5py).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastload.datasets as fd
from fastload import synthetic
from fastload.errors import ConfigError, DatasetNotFoundError, SourceError, SplitNotFoundError

REPO = Path(__file__).resolve().parents[1]
PD4ML_SIZES = {"n_train": 24, "n_test": 9}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """A data directory with every synthetic original in the layout ``load`` looks for."""
    root = tmp_path_factory.mktemp("datasets")
    synthetic.make_toptagging_pd4ml(root / "TopTagging", seed=1, **PD4ML_SIZES)
    synthetic.make_spinodal(root / "Spinodal", seed=2, **PD4ML_SIZES)
    synthetic.make_eosl(root / "EOSL", seed=3, **PD4ML_SIZES)
    synthetic.make_airshower(root / "Airshower", seed=4, **PD4ML_SIZES)
    synthetic.make_belle(root / "Belle", seed=5, **PD4ML_SIZES)
    synthetic.make_lcd(root / "LCD", events_per_file=6, files_per_particle=2, seed=6)
    synthetic.make_photon_showers(root / "PhotonShowers", n=15, seed=7)
    return root


@pytest.fixture
def data_dir(originals, tmp_path) -> Path:
    """A private copy of the originals (conversions write stores beside them)."""
    return Path(shutil.copytree(originals, tmp_path / "datasets"))


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


PD4ML = [
    (fd.TopTagging, "1_top_tagging_2M.npz", 2),
    (fd.Spinodal, "2_spinodal_29k.npz", 1),
    (fd.EOSL, "3_EOSL_or_EOSQ_180k.npz", 1),
    (fd.Airshower, "4_airshower_100k_regression.npz", 3),
    (fd.Belle, "6_belle_selective_400k.npz", 2),
]


@pytest.mark.parametrize(("cls", "filename", "n_inputs"), PD4ML, ids=[c.name for c, _, _ in PD4ML])
def test_pd4ml_load_equals_the_npz(data_dir, caplog, cls, filename, n_inputs):
    """load() converts once, then returns [X_s_0, X_s_1, ...], y_s exactly as in the npz."""
    raw = npz(data_dir / cls.name / filename)
    caplog.set_level(logging.INFO, logger="fastload.datasets")
    for i, split in enumerate(("train", "test")):
        caplog.clear()
        X, y = cls.load(split, path=data_dir)
        assert ("converting" in caplog.text) == (i == 0)  # only the first call converts
        assert isinstance(X, list)
        assert len(X) == n_inputs
        for j, x in enumerate(X):
            want = raw[f"X_{split}_{j}"]
            assert x.shape == want.shape
            np.testing.assert_array_equal(x, want)
        np.testing.assert_array_equal(y, raw[f"y_{split}"])
        assert y.shape == raw[f"y_{split}"].shape
    assert (data_dir / f"{cls.name}.zarr").is_dir()


def test_toptagging_from_the_landscape_release(tmp_path, caplog):
    """With only train/val/test.h5 present, TopTagging.load converts them; val is a split."""
    import pandas as pd

    caplog.set_level(logging.INFO, logger="fastload.datasets")
    folder = tmp_path / "TopTagging"
    synthetic.make_toptagging_landscape(folder, n_train=20, n_val=7, n_test=8, seed=3)
    for split in ("train", "val", "test"):
        X, y = fd.TopTagging.load(split, path=tmp_path)
        frame = pd.read_hdf(folder / f"{split}.h5", key="table")
        np.testing.assert_array_equal(X[0].reshape(len(frame), 800), frame.iloc[:, :800].to_numpy())
        np.testing.assert_array_equal(X[1], frame["ttv"].to_numpy())
        np.testing.assert_array_equal(y, frame["is_signal_new"].to_numpy())
    assert "landscape release" in caplog.text


def test_lcd_load_labels_and_every_field(data_dir):
    """LCD: X = [ECAL, HCAL], y from the file names; energy/target/origin via load_fields."""
    files = sorted((data_dir / "LCD").glob("*.h5"))
    raw = {}
    for f in files:
        with h5py.File(f, "r") as h5:
            raw[f.name] = {k: h5[k][:] for k in ("ECAL", "HCAL", "target")}
    store = fd.LCD.open(data_dir)
    assert store.labels == ["Ele", "Gamma", "Pi0", "ChPi"]
    names = [Path(s["path"]).name for s in store.provenance["files"]]
    total = 0
    for split in ("train", "val", "test"):
        X, y = fd.LCD.load(split, path=data_dir)
        fields = fd.LCD.load_fields(split, path=data_dir)
        assert len(X) == 2
        assert X[0].shape[1:] == (25, 25, 25)
        assert X[1].shape[1:] == (5, 5, 60)
        for i, (fi, row) in enumerate(fields["origin"]):
            src = raw[names[fi]]
            np.testing.assert_array_equal(X[0][i], src["ECAL"][row])
            np.testing.assert_array_equal(X[1][i], src["HCAL"][row])
            np.testing.assert_array_equal(fields["target"][i], src["target"][row])
            assert fields["energy"][i] == src["target"][row, 0, 1]
            assert names[fi].startswith(store.labels[y[i]] + "Escan_")
        total += len(y)
    assert total == 4 * 2 * 6


def test_photon_showers_load(data_dir):
    """PhotonShowers: X = [layers], y = energy (n, 1), rows equal to the file's."""
    with h5py.File(data_dir / "PhotonShowers" / "photon_showers.h5", "r") as h5:
        layers, energy = h5["30x30/layers"][:], h5["30x30/energy"][:]
    n = 0
    for split in ("train", "val", "test"):
        X, y = fd.PhotonShowers.load(split, path=data_dir, verbose=False)
        rows = fd.PhotonShowers.load_fields(split, path=data_dir, fields=["origin"])["origin"][:, 1]
        np.testing.assert_array_equal(X[0], layers[rows])
        np.testing.assert_array_equal(y, energy[rows])
        assert y.shape == (len(rows), 1)
        n += len(rows)
    assert n == 15


def test_store_is_used_without_originals(data_dir, capsys, caplog):
    """Once converted, the originals may go: load reads the store alone."""
    X, y = fd.Spinodal.load("test", path=data_dir)
    shutil.rmtree(data_dir / "Spinodal")
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="fastload.datasets")
    caplog.clear()
    X2, y2 = fd.Spinodal.load("test", path=data_dir)
    np.testing.assert_array_equal(X2[0], X[0])
    np.testing.assert_array_equal(y2, y)
    assert capsys.readouterr().err == ""
    assert caplog.records == []
    with pytest.raises(SplitNotFoundError, match="'val' not in store"):
        fd.Spinodal.load("val", path=data_dir)


def test_not_found_explains_how_to_get_the_data(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        fd.Belle.load("train", path=tmp_path)
    message = str(info.value)
    assert "Belle.zarr" in message
    assert "6_belle_selective_400k.npz" in message
    assert "zenodo" in message.lower()
    assert "python -m fastload.synthetic Belle" in message
    assert isinstance(info.value, FileNotFoundError)


def test_registry():
    assert set(fd.REGISTRY) >= {
        "TopTagging",
        "Spinodal",
        "EOSL",
        "Airshower",
        "Belle",
        "LCD",
        "PhotonShowers",
    }
    assert fd.get("toptagging") is fd.TopTagging
    with pytest.raises(ConfigError, match="closest: 'Belle'"):
        fd.get("Bele")


def test_import_is_light():
    """Importing fastload.datasets loads no converter, pandas, torch or tensorflow."""
    code = (
        "import sys, fastload.datasets\n"
        "bad = [m for m in ('converters', 'pandas', 'torch', 'tensorflow') if m in sys.modules]\n"
        "print(bad)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ahcal_load_is_wired_to_converters_ahcal(tmp_path, monkeypatch, caplog):
    """AHCAL.load runs converters.ahcal.convert_ahcal(src, dst) serially, returns inputs/label by role."""
    import fastload as fl

    caplog.set_level(logging.INFO, logger="fastload.datasets")
    (tmp_path / "AHCAL").mkdir()
    (tmp_path / "AHCAL" / "ahcal_1.npz").write_bytes(b"")
    calls = []
    hits = fl.Ragged.from_counts(np.arange(10, dtype=np.float32).reshape(5, 2), np.array([2, 0, 3]))

    def fake_convert(src, dst, **options):
        calls.append(([str(src), str(dst)], options["workers"]))
        fields = {"hits": {"role": "input"}, "n_hits": {"role": "aux"}, "energy": {"role": "label"}}
        block = {
            "hits": hits,
            "n_hits": np.array([2, 0, 3]),
            "energy": np.array([10.0, 20.0, 30.0]),
        }
        fl.write_arrays(dst, {"train": block}, fields=fields, task="regression")
        return str(dst)

    fake = types.ModuleType("fastload.converters.ahcal")
    fake.convert_ahcal = fake_convert
    monkeypatch.setitem(sys.modules, "fastload.converters.ahcal", fake)
    X, y = fd.AHCAL.load("train", path=tmp_path)
    assert calls == [([str(tmp_path / "AHCAL"), str(tmp_path / "AHCAL.zarr")], 0)]  # 0: serial
    assert "converting" in caplog.text
    assert len(X) == 1
    np.testing.assert_array_equal(X[0].values, hits.values)
    np.testing.assert_array_equal(X[0].offsets, hits.offsets)
    np.testing.assert_array_equal(y, [10.0, 20.0, 30.0])

    other = tmp_path / "other"
    (other / "AHCAL").mkdir(parents=True)
    (other / "AHCAL" / "ahcal_2.npz").write_bytes(b"")

    def failing(src, dst, **options):
        raise ConfigError("the spec does not fit")

    fake.convert_ahcal = failing
    with pytest.raises(ConfigError, match="does not fit"):  # the converter's own error type
        fd.AHCAL.prepare(other, verbose=False)
    monkeypatch.setitem(sys.modules, "fastload.converters.ahcal", None)
    with pytest.raises(SourceError, match="no AHCAL converter"):
        fd.AHCAL.prepare(other, verbose=False)


def test_ahcal_round_trip_through_converters_ahcal(tmp_path):
    """Real wiring: synthetic AHCAL files -> converters.ahcal -> AHCAL.load; every event exact.

    The generic converter keeps source order inside each split, so each stored
    event is matched to its source event by content, and the matches must
    cover every source event once, in increasing order per split.
    """
    files = synthetic.make_ahcal(tmp_path / "AHCAL", n_events=30, n_files=2, seed=4)
    events = {}
    for path in sorted(p for p in files if p.suffix == ".npz"):
        raw = npz(path)
        hits = np.stack([raw[f"hit_{c}"] for c in ("x", "y", "z", "energy", "time")], axis=1)
        for e in range(len(raw["n_hits"])):
            row = hits[raw["offsets"][e] : raw["offsets"][e + 1]]
            key = (float(raw["beam_energy"][e]), row.astype(np.float32).tobytes())
            events[key] = len(events)
    matched = []
    for split in ("train", "val", "test"):
        X, y = fd.AHCAL.load(split, path=tmp_path, verbose=False)
        hits, n_hits = X
        assert y.dtype == np.float32
        index = [events[(float(y[e]), hits[e].tobytes())] for e in range(len(y))]
        np.testing.assert_array_equal(n_hits, np.diff(hits.offsets))
        assert index == sorted(index)
        matched.extend(index)
    assert sorted(matched) == list(range(30))
