"""Synthetic datasets: original layouts, determinism, and physics a model can learn from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import uproot

from fastload.errors import ConfigError, SchemaError
from fastload.synthetic import (
    BELLE_PID_INDEX,
    GENERATORS,
    _belle,
    _jets,
    generate,
    make_ahcal,
    make_airshower,
    make_belle,
    make_eosl,
    make_lcd,
    make_photon_showers,
    make_spinodal,
    make_toptagging_landscape,
    make_toptagging_pd4ml,
)
from fastload.synthetic.__main__ import main as cli_main


# --- helpers ------------------------------------------------------------------
def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney with mid-ranks for ties), label 1 = positive."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid_rank[inverse]
    pos = label == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def pd4ml_split(arrays: dict[str, np.ndarray], split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Read a split the way pd4ml's Dataset.load does: len(keys)/2 - 1 inputs per split."""
    n_inputs = len(arrays) // 2 - 1
    return [arrays[f"X_{split}_{i}"] for i in range(n_inputs)], arrays[f"y_{split}"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jet_mass(x: np.ndarray) -> np.ndarray:
    p = x.astype(np.float64).sum(axis=1)
    return np.sqrt(np.maximum(p[:, 0] ** 2 - (p[:, 1:] ** 2).sum(axis=1), 0.0))


# --- module-scoped datasets (generated once) ------------------------------------
@pytest.fixture(scope="module")
def top_npz(tmp_path_factory):
    return make_toptagging_pd4ml(tmp_path_factory.mktemp("top"), n_train=3000, n_test=1000, seed=1)


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    return make_toptagging_landscape(
        tmp_path_factory.mktemp("land"), n_train=400, n_val=150, n_test=200, seed=1
    )


@pytest.fixture(scope="module")
def airshower(tmp_path_factory):
    return make_airshower(tmp_path_factory.mktemp("air"), n_train=2000, n_test=1000, seed=1)


@pytest.fixture(scope="module")
def belle(tmp_path_factory):
    return make_belle(tmp_path_factory.mktemp("belle"), n_train=3000, n_test=1000, seed=1)


@pytest.fixture(scope="module")
def lcd(tmp_path_factory):
    return make_lcd(tmp_path_factory.mktemp("lcd"), events_per_file=120, seed=1)


@pytest.fixture(scope="module")
def ahcal(tmp_path_factory):
    return make_ahcal(tmp_path_factory.mktemp("ahcal"), n_events=1600, n_files=2, seed=1)


# --- TopTagging (pd4ml) -------------------------------------------------------
def test_toptagging_pd4ml_layout(top_npz):
    """File name, keys, shapes and dtypes are those of pd4ml's 1_top_tagging_2M.npz."""
    assert top_npz.name == "1_top_tagging_2M.npz"
    arrays = load_npz(top_npz)
    assert set(arrays) == {"X_train_0", "X_train_1", "y_train", "X_test_0", "X_test_1", "y_test"}
    for split, n in (("train", 3000), ("test", 1000)):
        (x, ttv), y = pd4ml_split(arrays, split)
        assert x.shape == (n, 200, 4)
        assert x.dtype == np.float32
        assert ttv.shape == (n,)
        assert ttv.dtype == np.int64
        assert y.shape == (n,)
        assert y.dtype == np.int64
        assert set(np.unique(y)) == {0, 1}
    assert set(np.unique(arrays["X_train_1"])) == {0, 2}  # train + validation merged
    assert set(np.unique(arrays["X_test_1"])) == {1}


def test_toptagging_constituents_sorted_and_zero_padded(top_npz):
    """Constituents are massless, sorted by falling pT, and padding is all-zero at the end."""
    x = load_npz(top_npz)["X_train_0"]
    pt = np.hypot(x[..., 1], x[..., 2])
    assert np.all(np.diff(pt, axis=1) <= 1e-3)
    real = x[..., 0] > 0
    assert np.all(np.diff(real.astype(int), axis=1) <= 0)  # no real particle after padding
    assert np.all(x[~real] == 0)
    p = np.sqrt((x[..., 1:].astype(np.float64) ** 2).sum(-1))
    np.testing.assert_allclose(x[..., 0][real], p[real], rtol=1e-4)


def test_toptagging_physics(top_npz):
    """Top jets are heavy three-prong jets near 173 GeV, QCD jets lighter; pT in 550-650 GeV."""
    arrays = load_npz(top_npz)
    x, y = arrays["X_train_0"], arrays["y_train"]
    m = jet_mass(x)
    assert 150 < m[y == 1].mean() < 195
    assert m[y == 1].mean() - m[y == 0].mean() > 60
    p = x.astype(np.float64).sum(axis=1)
    jet_pt = np.hypot(p[:, 1], p[:, 2])
    assert jet_pt.min() > 549
    assert jet_pt.max() < 651
    eta = np.arcsinh(p[:, 3] / jet_pt)
    assert np.abs(eta).max() < 2.2
    n_const = (x[..., 0] > 0).sum(axis=1)
    assert n_const[y == 1].mean() > n_const[y == 0].mean()
    assert auc(m, y) > 0.85


# --- TopTagging landscape ---------------------------------------------------------
def test_landscape_layout(landscape):
    """train/val/test.h5 are pandas tables under key 'table' with the 806 original columns."""
    assert [p.name for p in landscape] == ["train.h5", "val.h5", "test.h5"]
    expected = [f"{q}_{i}" for i in range(200) for q in ("E", "PX", "PY", "PZ")]
    expected += ["truthE", "truthPX", "truthPY", "truthPZ", "ttv", "is_signal_new"]
    for path, n, ttv in zip(landscape, (400, 150, 200), (0, 2, 1), strict=True):
        df = pd.read_hdf(path, "table")
        assert list(df.columns) == expected
        assert len(df) == n
        assert list(df.index) == list(range(n))
        assert (df.dtypes.iloc[:804] == np.float32).all()
        assert df["ttv"].dtype == np.int64
        assert df["is_signal_new"].dtype == np.int64
        assert set(df["ttv"]) == {ttv}
        assert set(df["is_signal_new"]) == {0, 1}
        # table format: column selection and row ranges, as older readers use
        with pd.HDFStore(path, "r") as store:
            labels = store.select("table", columns=["is_signal_new"])
            assert labels.shape == (n, 1)
        part = pd.read_hdf(path, "table", start=10, stop=20)
        pd.testing.assert_frame_equal(part, df.iloc[10:20])


def test_landscape_truth_and_constituents(landscape):
    """Truth columns hold the top quark for signal and zeros for QCD; E_0.. are pT-sorted."""
    df = pd.read_hdf(landscape[0], "table")
    sig = df["is_signal_new"].to_numpy() == 1
    truth = df[["truthE", "truthPX", "truthPY", "truthPZ"]].to_numpy(np.float64)
    assert np.all(truth[~sig] == 0)
    m_top = np.sqrt(truth[sig, 0] ** 2 - (truth[sig, 1:] ** 2).sum(axis=1))
    assert abs(m_top.mean() - 173) < 3
    x = df.iloc[:, :800].to_numpy().reshape(-1, 200, 4)
    assert jet_mass(x)[sig].mean() - jet_mass(x)[~sig].mean() > 60


# --- Spinodal and EOSL ---------------------------------------------------------------
def test_spinodal_layout_and_separability(tmp_path):
    """(n, 20, 20) float32 histograms; clumpiness around the thermal ring separates the classes."""
    path = make_spinodal(tmp_path, n_train=1500, n_test=500, seed=2)
    assert path.name == "2_spinodal_29k.npz"
    arrays = load_npz(path)
    assert set(arrays) == {"X_train_0", "y_train", "X_test_0", "y_test"}
    (x,), y = pd4ml_split(arrays, "train")
    assert x.shape == (1500, 20, 20)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    assert arrays["X_test_0"].shape == (500, 20, 20)
    assert np.all(x >= 0)
    assert np.all(x == np.round(x))  # counts
    centre = np.arange(20) - 9.5
    ring = np.minimum(np.hypot(centre[:, None], centre[None, :]).astype(int), 13).ravel()
    flat = x.reshape(len(x), -1).astype(np.float64)
    ring_sum = np.stack([np.bincount(ring, weights=row, minlength=14) for row in flat])
    ring_mean = (ring_sum / np.bincount(ring, minlength=14))[:, ring]
    clumpiness = ((flat - ring_mean) ** 2).sum(axis=1) / flat.sum(axis=1)
    assert auc(clumpiness, y) > 0.75


def test_eosl_layout_separability_and_shifted_test(tmp_path):
    """(n, 24, 24) float32 spectra; mean pT separates EOSL/EOSQ; the test split is shifted."""
    path = make_eosl(tmp_path, n_train=1500, n_test=1500, seed=2)
    assert path.name == "3_EOSL_or_EOSQ_180k.npz"
    arrays = load_npz(path)
    assert set(arrays) == {"X_train_0", "y_train", "X_test_0", "y_test"}
    stats = {}
    for split in ("train", "test"):
        (x,), y = pd4ml_split(arrays, split)
        assert x.shape == (1500, 24, 24)
        assert x.dtype == np.float32
        assert np.allclose(x.max(axis=(1, 2)), 1.0)
        spectrum = x.sum(axis=2)
        mean_pt_bin = (spectrum * np.arange(24)).sum(axis=1) / spectrum.sum(axis=1)
        # EOSQ (label 1) is softer: less radial flow
        assert auc(-mean_pt_bin, y) > 0.7
        stats[split] = mean_pt_bin
    shift = abs(stats["test"].mean() - stats["train"].mean())
    assert shift > 10 * stats["train"].std() / np.sqrt(1500)


# --- Airshower -----------------------------------------------------------------
def test_airshower_layout(airshower):
    """Traces (n,9,9,80), times (n,9,9,1), positions (81,3) per split; -1 marks silent stations."""
    assert airshower.name == "4_airshower_100k_regression.npz"
    arrays = load_npz(airshower)
    assert len(arrays) == 8
    for split, n in (("train", 2000), ("test", 1000)):
        (signal, time, pos), y = pd4ml_split(arrays, split)
        assert signal.shape == (n, 9, 9, 80)
        assert signal.dtype == np.float32
        assert time.shape == (n, 9, 9, 1)
        assert time.dtype == np.float32
        assert pos.shape == (81, 3)
        assert pos.dtype == np.float32
        assert y.shape == (n,)
        assert y.dtype == np.float32
        silent = time[..., 0] == -1
        assert np.all(signal[silent] == -1)
        assert np.all(signal[~silent] >= 0)
        assert np.all(time[~silent] >= 0)
        assert np.all((~silent).sum(axis=(1, 2)) >= 3)
        assert 650 < y.mean() < 800
        assert y.min() >= 550
        assert y.max() <= 1050
    np.testing.assert_array_equal(arrays["X_train_2"], arrays["X_test_2"])
    spacing = np.diff(np.unique(arrays["X_train_2"][:, 0]))
    np.testing.assert_allclose(spacing, 1500.0)


def _airshower_features(signal: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Quadratic expansion of a few per-event summaries (energy, geometry, timing, rise)."""
    hit = time[..., 0] >= 0
    s = np.where(signal < 0, 0, signal).astype(np.float64)
    total = s.sum(axis=(1, 2, 3))
    bins = np.arange(80)
    mean_bin = (s * bins).sum(axis=(1, 2, 3)) / total
    early = s[..., :2].sum(axis=(1, 2, 3)) / total
    grid = (np.arange(9) - 4) * 1.5  # km
    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    slope = np.empty(len(s))
    curvature = np.empty(len(s))
    for i in range(len(s)):
        m = hit[i]
        a = np.c_[np.ones(m.sum()), gx[m], gy[m], gx[m] ** 2 + gy[m] ** 2]
        coef, *_ = np.linalg.lstsq(a, time[i, ..., 0][m], rcond=None)
        slope[i] = np.hypot(coef[1], coef[2])
        curvature[i] = coef[3]
    base = np.stack(
        [np.log(total), hit.sum(axis=(1, 2)), mean_bin, early, slope, curvature], axis=1
    )
    base = (base - base.mean(axis=0)) / base.std(axis=0)
    cols = [np.ones(len(base))] + [base[:, i] for i in range(base.shape[1])]
    cols += [base[:, i] * base[:, j] for i in range(base.shape[1]) for j in range(i, base.shape[1])]
    return np.stack(cols, axis=1)


def test_airshower_xmax_is_learnable(airshower):
    """A quadratic fit on trace/timing summaries predicts Xmax on held-out showers (|r| > 0.5)."""
    arrays = load_npz(airshower)
    f_train = _airshower_features(arrays["X_train_0"], arrays["X_train_1"])
    f_test = _airshower_features(arrays["X_test_0"], arrays["X_test_1"])
    w, *_ = np.linalg.lstsq(f_train, arrays["y_train"], rcond=None)
    r = np.corrcoef(f_test @ w, arrays["y_test"])[0, 1]
    assert r > 0.55


# --- Belle --------------------------------------------------------------------------
def test_belle_layout(belle):
    """(n,100,9) float32 features, (n,100) int64 mothers; padding rows zero with mother -1."""
    assert belle.name == "6_belle_selective_400k.npz"
    arrays = load_npz(belle)
    assert len(arrays) == 6
    for split, n in (("train", 3000), ("test", 1000)):
        (x, mother), y = pd4ml_split(arrays, split)
        assert x.shape == (n, 100, 9)
        assert x.dtype == np.float32
        assert mother.shape == (n, 100)
        assert mother.dtype == np.int64
        assert y.dtype == np.int64
        assert set(np.unique(y)) == {0, 1}
        real = x[..., 8] > 0
        assert np.all(np.diff(real.astype(int), axis=1) <= 0)
        assert np.all(x[~real] == 0)
        assert np.all(mother[~real] == -1)
        # row 0 is the Upsilon(4S), the only real particle without a mother
        assert np.all(x[:, 0, 8] == BELLE_PID_INDEX[300553])
        assert np.all(mother[:, 0] == -1)
        assert np.all(mother[real][:, None].ravel() >= -1)
        assert np.all((mother[:, 1:] >= 0) == real[:, 1:])
        assert np.all(mother < np.arange(100))  # breadth-first order
        assert set(np.unique(x[..., 8])) <= {0.0, *map(float, BELLE_PID_INDEX.values())}


def test_belle_decays_conserve_energy_and_displace_vertices(belle):
    """Final-state energies add up to the Upsilon(4S) energy; B daughters start displaced."""
    arrays = load_npz(belle)
    x, mother = arrays["X_train_0"].astype(np.float64), arrays["X_train_1"]
    n_real = (x[..., 8] > 0).sum(axis=1)
    complete = n_real < 100
    is_mother = np.zeros(mother.shape, dtype=bool)
    rows = np.nonzero(mother >= 0)
    is_mother[rows[0], mother[rows]] = True
    final = (x[..., 8] > 0) & ~is_mother
    e_final = np.where(final, x[..., 1], 0).sum(axis=1)
    np.testing.assert_allclose(e_final[complete], x[complete, 0, 1], rtol=1e-4)
    b_daughters = np.isin(mother, (1, 2))
    flight = np.linalg.norm(x[..., 2:5] - x[:, :1, 2:5], axis=-1)[b_daughters]
    assert np.median(flight) > 0.005  # cm: B mesons fly ~100 um


def test_belle_label_follows_decay_content(belle):
    """Missing energy (neutrinos, K_L) and many photons make an event likelier to fail."""
    arrays = load_npz(belle)
    pid, y = arrays["X_train_0"][..., 8], arrays["y_train"]
    invisible = [BELLE_PID_INDEX[p] for p in (12, -12, 14, -14, 130)]
    n_invisible = np.isin(pid, invisible).sum(axis=1)
    n_photon = (pid == BELLE_PID_INDEX[22]).sum(axis=1)
    assert 0.3 < y.mean() < 0.7
    assert auc(-(n_invisible + 0.1 * n_photon), y) > 0.7


# --- LCD ----------------------------------------------------------------------------
def test_lcd_layout(lcd):
    """One <P>Escan_1_1.h5 per particle with ECAL, HCAL and target of the original shapes."""
    assert [p.name for p in lcd] == [
        "EleEscan_1_1.h5",
        "GammaEscan_1_1.h5",
        "Pi0Escan_1_1.h5",
        "ChPiEscan_1_1.h5",
    ]
    for path, pdg in zip(lcd, (11, 22, 111, 211), strict=True):
        with h5py.File(path, "r") as f:
            assert set(f) == {"ECAL", "HCAL", "target"}
            assert f["ECAL"].shape == (120, 25, 25, 25)
            assert f["ECAL"].dtype == np.float32
            assert f["HCAL"].shape == (120, 5, 5, 60)
            assert f["HCAL"].dtype == np.float32
            assert f["target"].shape == (120, 1, 5)
            assert f["target"].dtype == np.float32
            target = f["target"][:]
            energy = target[:, 0, 1]
            assert energy.min() >= 10
            assert energy.max() <= 510
            assert np.all(target[:, 0, 0] == pdg)
            assert np.all(f["ECAL"][:] >= 0)
            assert np.all(f["HCAL"][:] >= 0)


def test_lcd_showers_differ_by_class(lcd):
    """Pions put most energy in the HCAL, EM showers in the ECAL; the sum tracks the energy."""
    frac = {}
    for path in lcd:
        with h5py.File(path, "r") as f:
            ecal = f["ECAL"][:].sum(axis=(1, 2, 3))
            hcal = f["HCAL"][:].sum(axis=(1, 2, 3))
            energy = f["target"][:, 0, 1]
        frac[path.name.split("Escan")[0]] = (hcal / (ecal + hcal)).mean()
        assert np.corrcoef(ecal + hcal, energy)[0, 1] > 0.9
        if not path.name.startswith("ChPi"):
            # visible energy in units of 1/50 GeV, as the LCD files
            assert 0.8 < np.median(50 * (ecal + hcal) / energy) < 1.2
    assert frac["ChPi"] > 0.5
    assert max(frac["Ele"], frac["Gamma"], frac["Pi0"]) < 0.2
    assert frac["Gamma"] > frac["Ele"]  # photons start later


def test_lcd_file_naming_and_particle_selection(tmp_path):
    """Files count a then b (1..10) and only the requested particles are written."""
    paths = make_lcd(tmp_path, events_per_file=2, files_per_particle=11, particles=("Gamma",))
    names = [p.name for p in paths]
    assert names[0] == "GammaEscan_1_1.h5"
    assert names[9] == "GammaEscan_1_10.h5"
    assert names[10] == "GammaEscan_2_1.h5"
    with pytest.raises(ConfigError, match="Muon"):
        make_lcd(tmp_path, events_per_file=2, particles=("Muon",))


# --- Photon showers -------------------------------------------------------------------
def test_photon_showers_layout_and_scaling(tmp_path):
    """Group 30x30 with energy (n,1) GeV and layers (n,30,30,30) MeV; depth grows with log E."""
    path = make_photon_showers(tmp_path, n=400, seed=2)
    with h5py.File(path, "r") as f:
        assert list(f) == ["30x30"]
        assert set(f["30x30"]) == {"energy", "layers"}
        energy = f["30x30/energy"][:]
        layers = f["30x30/layers"][:]
    assert energy.shape == (400, 1)
    assert energy.dtype == np.float32
    assert layers.shape == (400, 30, 30, 30)
    assert layers.dtype == np.float32
    e = energy[:, 0]
    assert e.min() >= 10
    assert e.max() <= 100
    assert layers.min() == 0
    assert layers[layers > 0].min() >= 0.1  # half-MIP threshold, MeV
    visible = layers.sum(axis=(1, 2, 3))
    assert np.corrcoef(visible, e)[0, 1] > 0.95
    profile = layers.sum(axis=(2, 3))
    depth = (profile * np.arange(30)).sum(axis=1) / profile.sum(axis=1)
    assert np.corrcoef(depth, np.log(e))[0, 1] > 0.2
    # showers are centred in the window
    lateral = layers.sum(axis=(1, 3)).mean(axis=0)
    assert np.argmax(lateral) in (14, 15)


# --- AHCAL --------------------------------------------------------------------------
def test_ahcal_root_layout_and_npz_agree(ahcal):
    """bigtree branches have the documented types and equal the .npz hits event by event."""
    names = ["ahcal_001.root", "ahcal_001.npz", "ahcal_002.root", "ahcal_002.npz"]
    assert [p.name for p in ahcal] == names
    expected = {
        "runNumber": "int32",
        "eventNumber": "int32",
        "beamEnergy": "float32",
        "ahc_nHits": "int32",
    }
    hit_branches = {
        "ahc_hitI": "hit_i",
        "ahc_hitJ": "hit_j",
        "ahc_hitK": "hit_k",
        "ahc_hitEnergy": "hit_energy",
        "ahc_hitTime": "hit_time",
        "ahc_hitX": "hit_x",
        "ahc_hitY": "hit_y",
        "ahc_hitZ": "hit_z",
    }
    for root_path, npz_path in (ahcal[:2], ahcal[2:]):
        with uproot.open(root_path) as f:
            tree = f["bigtree"]
            assert set(tree.keys()) == set(expected) | set(hit_branches)
            data = tree.arrays(library="np")
        npz = load_npz(npz_path)
        n = tree.num_entries
        assert n == 800
        assert npz["offsets"].shape == (n + 1,)
        assert npz["offsets"].dtype == np.int64
        assert npz["offsets"][0] == 0
        np.testing.assert_array_equal(np.diff(npz["offsets"]), npz["n_hits"])
        for name, dtype in expected.items():
            assert data[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(data["ahc_nHits"], npz["n_hits"])
        np.testing.assert_array_equal(data["beamEnergy"], npz["beam_energy"])
        np.testing.assert_array_equal(data["eventNumber"], npz["event_number"])
        for branch, key in hit_branches.items():
            flat = np.concatenate(list(data[branch]))
            assert flat.dtype == npz[key].dtype
            np.testing.assert_array_equal(flat, npz[key])


def test_ahcal_hits_on_grid_and_grow_with_energy(ahcal):
    """Hits sit on tile centres above threshold; hit count and energy grow with beam energy."""
    npz = load_npz(ahcal[1])
    x, z = npz["hit_x"], npz["hit_z"]
    np.testing.assert_allclose((x + 345.0) / 30.0, np.round((x + 345.0) / 30.0), atol=1e-4)
    np.testing.assert_allclose(z / 26.1, npz["hit_k"] - 1, atol=1e-4)
    assert np.all((npz["hit_i"] >= 1) & (npz["hit_i"] <= 24))
    assert np.all((npz["hit_k"] >= 1) & (npz["hit_k"] <= 38))
    assert npz["hit_energy"].min() >= 0.5
    # one file holds all eight energies when n_files=1; here two files share them out
    energies = np.unique(npz["beam_energy"])
    np.testing.assert_array_equal(energies, [10, 30, 50, 70])
    means = [npz["n_hits"][npz["beam_energy"] == e].mean() for e in energies]
    assert np.all(np.diff(means) > 0)
    sums = np.add.reduceat(npz["hit_energy"], npz["offsets"][:-1])
    sum_means = [sums[npz["beam_energy"] == e].mean() for e in energies]
    assert np.all(np.diff(sum_means) > 0)


def test_ahcal_single_format_and_energy_split(tmp_path):
    """formats picks the writers; eight files hold one beam energy each."""
    paths = make_ahcal(tmp_path, n_events=16, n_files=8, formats=("npz",), seed=3)
    assert [p.suffix for p in paths] == [".npz"] * 8
    energies = [np.unique(load_npz(p)["beam_energy"]).tolist() for p in paths]
    assert energies == [[e] for e in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)]
    root_only = make_ahcal(tmp_path / "r", n_events=5, formats="root", seed=3)
    assert [p.name for p in root_only] == ["ahcal_001.root"]
    with pytest.raises(ConfigError, match="formats"):
        make_ahcal(tmp_path, n_events=5, formats=("csv",))
    with pytest.raises(ConfigError, match="n_files"):
        make_ahcal(tmp_path, n_events=2, n_files=3)


# --- determinism ---------------------------------------------------------------------
SMALL = {
    "TopTagging": 30,
    "TopTaggingLandscape": 30,
    "Spinodal": 20,
    "EOSL": 20,
    "Airshower": 20,
    "Belle": 20,
    "LCD": 8,
    "PhotonShowers": 6,
    "AHCAL": 20,
    "LArIAT": 12,
}


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of a generated file, keyed by name."""
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix == ".root":
        with uproot.open(path) as f:
            data = f["bigtree"].arrays(library="np")
        return {k: np.concatenate(list(v)) if v.dtype == object else v for k, v in data.items()}
    if path.name in ("train.h5", "val.h5", "test.h5"):
        df = pd.read_hdf(path, "table")
        return {"values": df.to_numpy(np.float64), "index": df.index.to_numpy()}
    if path.name.endswith(".3d.h5"):  # LArIAT deposits: PyTables VLArrays
        import tables

        with tables.open_file(str(path), "r") as t:
            g = t.root.images3D
            return {
                "C": np.concatenate(g.C.read()),
                "V": np.concatenate(g.V.read()),
                "shape": g.shape.read(),
            }
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None
        )
    return out


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_data_other_seed_other_data(name, tmp_path):
    """Equal seeds give equal arrays (and equal bytes for .npz and HDF5); other seeds differ."""
    a = generate(name, tmp_path / "a", n=SMALL[name], seed=5)
    b = generate(name, tmp_path / "b", n=SMALL[name], seed=5)
    other = generate(name, tmp_path / "c", n=SMALL[name], seed=6)
    assert [p.name for p in a] == [p.name for p in b] == [p.name for p in other]
    differs = False
    for pa, pb, pc in zip(a, b, other, strict=True):
        pandas_file = pa.name in ("train.h5", "val.h5", "test.h5")
        pytables_file = pa.name.endswith(".3d.h5")  # PyTables stamps times into its files
        if pa.suffix == ".npz" or (pa.suffix == ".h5" and not pandas_file and not pytables_file):
            assert sha(pa) == sha(pb), pa.name
        xa, xb, xc = read_all(pa), read_all(pb), read_all(pc)
        assert xa.keys() == xb.keys() == xc.keys()
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key], err_msg=f"{pa.name}:{key}")
            if xa[key].shape != xc[key].shape or not np.array_equal(xa[key], xc[key]):
                differs = True
    assert differs


def test_blocks_do_not_change_layout(tmp_path, monkeypatch):
    """Many small blocks (uneven last block) still give a complete, valid file."""
    monkeypatch.setattr(_jets, "_BLOCK", 7)
    path = make_toptagging_pd4ml(tmp_path, n_train=20, n_test=9, seed=4)
    arrays = load_npz(path)
    assert arrays["X_train_0"].shape == (20, 200, 4)
    assert arrays["X_test_0"].shape == (9, 200, 4)
    assert np.all(arrays["X_train_0"][:, 0, 0] > 0)  # every jet has constituents


def test_failed_generation_leaves_no_file(tmp_path, monkeypatch):
    """An error mid-way leaves neither the target file nor a partial one behind."""
    calls = []

    def failing_block(rng, n):
        calls.append(n)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(rng, n)

    original = _belle._block
    monkeypatch.setattr(_belle, "_BLOCK", 5)
    monkeypatch.setattr(_belle, "_block", failing_block)
    with pytest.raises(RuntimeError, match="boom"):
        make_belle(tmp_path, n_train=12, n_test=5)
    assert list(tmp_path.iterdir()) == []


# --- generate() and the command line ---------------------------------------------------
def test_generate_splits_n_like_the_original(tmp_path):
    """n is shared out in the original's proportions; explicit counts override it."""
    (path,) = generate("Belle", tmp_path, n=50, seed=1)
    arrays = load_npz(path)
    assert len(arrays["y_train"]) == 35
    assert len(arrays["y_test"]) == 15
    (path,) = generate("TopTagging", tmp_path / "t", n=50, n_test=3)
    arrays = load_npz(path)
    assert len(arrays["y_train"]) == 40
    assert len(arrays["y_test"]) == 3
    paths = generate("LCD", tmp_path / "l", n=10, particles=("Ele", "ChPi"))
    assert [p.name for p in paths] == ["EleEscan_1_1.h5", "ChPiEscan_1_1.h5"]
    with h5py.File(paths[0], "r") as f:
        assert f["ECAL"].shape[0] == 5


def test_generate_rejects_bad_arguments(tmp_path):
    """Unknown names get a hint; bad counts and seeds raise ConfigError naming the value."""
    with pytest.raises(ConfigError, match=r"'Bele'.*closest: 'Belle'"):
        generate("Bele", tmp_path, n=10)
    with pytest.raises(ConfigError, match="too small"):
        generate("TopTaggingLandscape", tmp_path, n=2)
    with pytest.raises(ConfigError, match="n_train"):
        make_spinodal(tmp_path, n_train=0, n_test=3)
    with pytest.raises(ConfigError, match="seed"):
        make_eosl(tmp_path, n_train=3, n_test=3, seed=-1)
    with pytest.raises(ConfigError, match="n must be"):
        generate("Belle", tmp_path, n=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_files_and_reports_them(tmp_path, capsys):
    """python -m fastload.synthetic NAME OUT_DIR --events N prints the written paths."""
    assert cli_main(["Spinodal", str(tmp_path), "--events", "10", "--seed", "2", "-q"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "2_spinodal_29k.npz")]
    assert load_npz(Path(out[0]))["X_train_0"].shape == (7, 20, 20)
    with pytest.raises(SystemExit) as exc:
        cli_main(["Nope", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["Belle", str(tmp_path), "--events", "1", "-q"])
    assert exc.value.code == 2


def test_npz_stream_refuses_wrong_sizes(tmp_path):
    """The streaming writer refuses blocks that do not add up to the declared shape."""
    from fastload.synthetic._common import NpzWriter

    with (
        NpzWriter(tmp_path / "a.npz") as npz,
        pytest.raises(SchemaError, match="wrote 3 of 4"),
        npz.stream("x", (4,), np.float32) as put,
    ):
        put(np.zeros(3, np.float32))
    with (
        NpzWriter(tmp_path / "b.npz") as npz,
        pytest.raises(SchemaError, match="does not fit"),
        npz.stream("x", (4, 2), np.float32) as put,
    ):
        put(np.zeros((2, 3), np.float32))
