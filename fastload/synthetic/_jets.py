"""Top-tagging jets: the pd4ml ``.npz`` and the landscape ``train/val/test.h5`` layouts.

Physics model (a sketch that keeps what a tagger learns from):

* Jets have ``pT`` uniform in 550-650 GeV and ``|eta| < 2`` (the selection
  of the original samples).
* A top jet is the three decay partons of ``t -> b W, W -> q q'`` (top mass
  ~173 GeV, W mass ~80 GeV, decays isotropic in their rest frames), boosted
  to the jet; events whose partons fall outside ``R = 0.75`` of the top axis
  are redrawn, as the original required all partons to be matched in the jet.
* A QCD jet is one hard parton with one or two collinear splittings: soft
  momentum fraction and angle drawn log-uniformly, so the jet mass falls
  steeply with a long tail (mean well below the top mass).
* Each parton fragments into a Poisson number of massless constituents that
  grows with ``log(pT)``; momentum fractions are Gamma distributed and the
  angle to the parton is ``kT / pT`` with an exponential ``kT``, so soft
  particles spread wide.  A few soft underlying-event particles are added.
  Constituents outside ``R = 0.8`` of the jet axis are dropped, then all
  constituents are scaled together so the jet ``pT`` is the drawn one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _common as c
from . import _kinematics as k

N_CONSTITUENTS = 200
JET_RADIUS = 0.8
TOP_MASS, TOP_WIDTH = 173.0, 1.4
W_MASS, W_WIDTH = 80.4, 2.1
B_MASS = 4.8
_PRONG_SLOTS = 64  # constituents per parton (3 partons + UE fill the 200 slots)
_UE_SLOTS = N_CONSTITUENTS - 3 * _PRONG_SLOTS
_BLOCK = 10_000
_TAG = "toptagging"

# ttv flag of the original samples (pd4ml docstring): 0 train, 1 test, 2 validation
TTV_TRAIN, TTV_TEST, TTV_VAL = 0, 1, 2


def _top_partons(rng: np.random.Generator, n: int):
    """Lab four-vectors of (b, q, q') for ``n`` top decays, and the tops themselves."""
    partons = np.empty((n, 3, 4))
    tops = np.empty((n, 4))
    filled = 0
    while filled < n:
        m = n - filled + 16
        pt = rng.uniform(550.0, 650.0, m)
        eta = rng.uniform(-2.0, 2.0, m)
        phi = rng.uniform(-np.pi, np.pi, m)
        m_top = np.clip(rng.normal(TOP_MASS, TOP_WIDTH, m), 165.0, 181.0)
        m_w = np.clip(rng.normal(W_MASS, W_WIDTH, m), 74.0, 86.0)
        top = k.from_pt_eta_phi(pt, eta, phi, m_top)

        # t -> b W in the top rest frame
        p_star = k.two_body_momentum(m_top, B_MASS, m_w)
        axis = k.isotropic(rng, (m,))
        w = np.concatenate([np.sqrt(m_w**2 + p_star**2)[:, None], p_star[:, None] * axis], -1)
        b = np.concatenate([np.sqrt(B_MASS**2 + p_star**2)[:, None], -p_star[:, None] * axis], -1)
        # W -> q q' in the W rest frame, then into the top frame
        axis_q = k.isotropic(rng, (m,))
        half = (m_w / 2.0)[:, None]
        q1 = np.concatenate([half, half * axis_q], -1)
        q2 = np.concatenate([half, -half * axis_q], -1)
        beta_w = k.velocity(w)
        q1, q2 = k.boost(q1, beta_w), k.boost(q2, beta_w)

        beta_t = k.velocity(top)[:, None, :]
        lab = k.boost(np.stack([b, q1, q2], axis=1), beta_t)
        _, p_eta, p_phi = k.pt_eta_phi(lab)
        dr = np.hypot(p_eta - eta[:, None], k.wrap_phi(p_phi - phi[:, None]))
        ok = np.all(dr < JET_RADIUS - 0.05, axis=1)
        take = np.flatnonzero(ok)[: n - filled]
        partons[filled : filled + take.size] = lab[take]
        tops[filled : filled + take.size] = top[take]
        filled += take.size
    return partons, tops


def _qcd_partons(rng: np.random.Generator, n: int):
    """(pT, eta, phi) of up to three partons of a QCD jet, and the jet axis."""
    pt = rng.uniform(550.0, 650.0, n)
    eta = rng.uniform(-2.0, 2.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    # first splitting: log-uniform soft fraction and angle (collinear/soft enhanced)
    z1 = np.exp(rng.uniform(np.log(0.01), np.log(0.5), n))
    th1 = np.exp(rng.uniform(np.log(0.02), np.log(0.7), n))
    a1 = rng.uniform(-np.pi, np.pi, n)
    lead_eta = eta + z1 * th1 * np.cos(a1)
    lead_phi = phi + z1 * th1 * np.sin(a1)
    soft_eta = eta - (1.0 - z1) * th1 * np.cos(a1)
    soft_phi = phi - (1.0 - z1) * th1 * np.sin(a1)
    # second, softer emission off the leading parton in half of the jets
    has2 = rng.random(n) < 0.5
    z2 = np.exp(rng.uniform(np.log(0.005), np.log(0.15), n)) * has2
    th2 = np.exp(rng.uniform(np.log(0.02), np.log(0.5), n))
    a2 = rng.uniform(-np.pi, np.pi, n)
    pts = np.stack([(1.0 - z1) * (1.0 - z2) * pt, z1 * pt, (1.0 - z1) * z2 * pt], axis=1)
    etas = np.stack([lead_eta, soft_eta, lead_eta + th2 * np.cos(a2)], axis=1)
    phis = np.stack([lead_phi, soft_phi, lead_phi + th2 * np.sin(a2)], axis=1)
    return pts, etas, k.wrap_phi(phis), pt, eta, phi


def _fragment(rng, prong_pt, prong_eta, prong_phi, jet_pt, jet_eta, jet_phi):
    """Constituents (n, 200, 4) float32 (E, px, py, pz), pT-sorted and zero-padded.

    Works on flat arrays of real constituents only (about a quarter of the
    200 slots), then scatters them into the padded layout.
    """
    n = prong_pt.shape[0]
    lam = 4.0 + 5.0 * np.log(np.maximum(prong_pt, 5.0) / 5.0)
    count = np.minimum(1 + rng.poisson(lam), _PRONG_SLOTS) * (prong_pt > 0)
    prong = np.repeat(np.arange(3 * n), count.ravel())
    # momentum fractions with a leading particle and a long soft tail
    x = rng.standard_exponential(prong.size, dtype=np.float32) ** 1.7
    x /= np.bincount(prong, weights=x, minlength=3 * n)[prong].astype(np.float32)
    pt = x * prong_pt.ravel()[prong].astype(np.float32)
    r = 0.5 * rng.standard_exponential(prong.size, dtype=np.float32) / np.maximum(pt, 1e-3)
    alpha = rng.random(prong.size, dtype=np.float32) * np.float32(2 * np.pi)
    eta = prong_eta.ravel()[prong] + r * np.cos(alpha)
    phi = prong_phi.ravel()[prong] + r * np.sin(alpha)
    jet = prong // 3

    # underlying event: a few soft particles spread over the jet area
    n_ue = np.minimum(rng.poisson(3.0, n), _UE_SLOTS)
    ue_jet = np.repeat(np.arange(n), n_ue)
    ue_r = JET_RADIUS * np.sqrt(rng.random(ue_jet.size))
    ue_a = rng.uniform(-np.pi, np.pi, ue_jet.size)
    pt = np.concatenate([pt, rng.exponential(1.0, ue_jet.size)])
    eta = np.concatenate([eta, jet_eta[ue_jet] + ue_r * np.cos(ue_a)])
    phi = k.wrap_phi(np.concatenate([phi, jet_phi[ue_jet] + ue_r * np.sin(ue_a)]))
    jet = np.concatenate([jet, ue_jet])

    # anti-kT keeps what lies within R of the axis
    keep = (np.hypot(eta - jet_eta[jet], k.wrap_phi(phi - jet_phi[jet])) < JET_RADIUS) & (pt > 0.1)
    pt, eta, phi, jet = pt[keep], eta[keep], phi[keep], jet[keep]
    # Out-of-cone losses and the UE shift the jet pT; scale back to the drawn one.
    sum_px = np.bincount(jet, weights=pt * np.cos(phi), minlength=n)
    sum_py = np.bincount(jet, weights=pt * np.sin(phi), minlength=n)
    pt = pt * (jet_pt / np.maximum(np.hypot(sum_px, sum_py), 1e-9))[jet]

    # order by jet, then by falling pT; slot = rank within the jet
    order = np.argsort(jet + 1.0 / (1.0 + pt), kind="stable")
    pt, eta, phi, jet = pt[order], eta[order], phi[order], jet[order]
    first = np.searchsorted(jet, np.arange(n))
    slot = np.arange(jet.size) - first[jet]
    out = np.zeros((n, N_CONSTITUENTS, 4), dtype=np.float32)
    out[jet, slot] = k.from_pt_eta_phi(pt, eta, phi)
    return out


def generate_jets(rng: np.random.Generator, is_top: np.ndarray):
    """Constituents (n, 200, 4) as (E, px, py, pz) float32 sorted by pT, and truth tops (n, 4).

    Truth four-vectors are the top quark for top jets and zeros for QCD jets.
    """
    n = is_top.size
    n_top = int(is_top.sum())
    prong_pt = np.empty((n, 3))
    prong_eta = np.empty((n, 3))
    prong_phi = np.empty((n, 3))
    jet_pt = np.empty(n)
    jet_eta = np.empty(n)
    jet_phi = np.empty(n)
    truth = np.zeros((n, 4))

    partons, tops = _top_partons(rng, n_top)
    prong_pt[is_top], prong_eta[is_top], prong_phi[is_top] = k.pt_eta_phi(partons)
    jet_pt[is_top], jet_eta[is_top], jet_phi[is_top] = k.pt_eta_phi(tops)
    truth[is_top] = tops

    qcd = ~is_top
    q = _qcd_partons(rng, n - n_top)
    prong_pt[qcd], prong_eta[qcd], prong_phi[qcd] = q[0], q[1], q[2]
    jet_pt[qcd], jet_eta[qcd], jet_phi[qcd] = q[3], q[4], q[5]

    x = _fragment(rng, prong_pt, prong_eta, prong_phi, jet_pt, jet_eta, jet_phi)
    return x, truth.astype(np.float32)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Balanced-on-average labels: 1 = top, 0 = QCD."""
    return (rng.random(n) < 0.5).astype(np.int64)


def make_toptagging_pd4ml(
    out_dir: str | os.PathLike[str],
    n_train: int = 16_000,
    n_test: int = 4_000,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write ``1_top_tagging_2M.npz`` in the pd4ml layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_test
        Jets per split (the original has ~1.6M and ~400k).
    seed
        Seed; equal seeds and counts give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The ``.npz`` file, holding ``X_{split}_0`` (n, 200, 4) float32
        constituent (E, px, py, pz), ``X_{split}_1`` (n,) int64 ttv flag and
        ``y_{split}`` (n,) int64 label (1 = top) for split in train, test.
    """
    counts = {
        "train": c.check_count("n_train", n_train, owner="fl.synthetic.make_toptagging_pd4ml"),
        "test": c.check_count("n_test", n_test, owner="fl.synthetic.make_toptagging_pd4ml"),
    }
    seed = c.check_seed(seed, owner="fl.synthetic.make_toptagging_pd4ml")
    path = c.out_directory(out_dir) / "1_top_tagging_2M.npz"
    bar = c.progress(sum(counts.values()), "TopTagging", progress)
    with bar, c.atomic_output(path) as tmp, c.NpzWriter(tmp) as npz:
        for split, n in counts.items():
            ttv = np.full(n, TTV_TEST if split == "test" else TTV_TRAIN, dtype=np.int64)
            if split == "train":
                # pd4ml merged the original train (1.2M) and validation (0.4M)
                # samples, in that order, into its train split.
                ttv[round(0.75 * n) :] = TTV_VAL
            y = np.empty(n, dtype=np.int64)
            with npz.stream(f"X_{split}_0", (n, N_CONSTITUENTS, 4), np.float32) as put:
                for i, start, stop in c.iter_blocks(n, _BLOCK):
                    rng = c.block_rng(seed, _TAG, split, i)
                    y[start:stop] = _labels(rng, stop - start)
                    x, _ = generate_jets(rng, y[start:stop] == 1)
                    put(x)
                    bar.update(stop - start)
            npz.write(f"X_{split}_1", ttv)
            npz.write(f"y_{split}", y)
    return path


def landscape_columns() -> list[str]:
    """The 806 column names of the landscape files, in file order."""
    cols = [f"{q}_{i}" for i in range(N_CONSTITUENTS) for q in ("E", "PX", "PY", "PZ")]
    return [*cols, "truthE", "truthPX", "truthPY", "truthPZ", "ttv", "is_signal_new"]


def make_toptagging_landscape(
    out_dir: str | os.PathLike[str],
    n_train: int = 12_000,
    n_val: int = 4_000,
    n_test: int = 4_000,
    seed: int = 0,
    *,
    progress: bool = False,
) -> list[Path]:
    """Write ``train.h5``, ``val.h5`` and ``test.h5`` in the top-tagging landscape layout.

    Each file is a pandas HDFStore holding one DataFrame under key ``table``
    in ``format="table"``, with columns ``E_0, PX_0, PY_0, PZ_0, E_1, ...,
    PZ_199`` (float32), ``truthE, truthPX, truthPY, truthPZ`` (float32, the
    top quark; zeros for QCD), ``ttv`` (int64: 0 train, 2 val, 1 test) and
    ``is_signal_new`` (int64, 1 = top).  The index runs 0..n-1 in each file.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_val, n_test
        Jets per file (the original has 1.2M, 400k, 400k).
    seed
        Seed; equal seeds give equal tables.
    progress
        Show a progress bar.

    Returns
    -------
    list of Path
        The three files, in the order train, val, test.
    """
    pd = c.require("pandas", "pandas")
    c.require("tables", "pandas")
    counts = {
        "train": c.check_count("n_train", n_train, owner="fl.synthetic.make_toptagging_landscape"),
        "val": c.check_count("n_val", n_val, owner="fl.synthetic.make_toptagging_landscape"),
        "test": c.check_count("n_test", n_test, owner="fl.synthetic.make_toptagging_landscape"),
    }
    ttv_of = {"train": TTV_TRAIN, "val": TTV_VAL, "test": TTV_TEST}
    seed = c.check_seed(seed, owner="fl.synthetic.make_toptagging_landscape")
    out = c.out_directory(out_dir)
    columns = landscape_columns()
    paths = []
    bar = c.progress(sum(counts.values()), "TopTaggingLandscape", progress)
    with bar:
        for split, n in counts.items():
            path = out / f"{split}.h5"
            with c.atomic_output(path) as tmp, pd.HDFStore(tmp, mode="w") as store:
                for i, start, stop in c.iter_blocks(n, _BLOCK):
                    rng = c.block_rng(seed, _TAG + "-landscape", split, i)
                    y = _labels(rng, stop - start)
                    x, truth = generate_jets(rng, y == 1)
                    floats = np.concatenate([x.reshape(len(x), -1), truth], axis=1)
                    index = pd.RangeIndex(start, stop)
                    frame = pd.concat(
                        [
                            pd.DataFrame(floats, columns=columns[:-2], index=index),
                            pd.DataFrame(
                                {
                                    "ttv": np.full(stop - start, ttv_of[split], np.int64),
                                    "is_signal_new": y,
                                },
                                index=index,
                            ),
                        ],
                        axis=1,
                    )
                    store.append("table", frame, format="table", index=False)
                    bar.update(stop - start)
            paths.append(path)
    return paths
