"""Belle II generator-level decay trees: pd4ml ``6_belle_selective_400k.npz``.

Physics model:

* Every event is ``Upsilon(4S) -> B0 anti-B0`` in the Belle II boosted frame
  (7 GeV e- on 4 GeV e+: the Upsilon(4S) moves along +z with
  ``beta*gamma ~ 0.28``), from a beam spot a few micrometres wide.
* A compact table of the main B, D, D*, D_s, J/psi and light-resonance decay
  modes (branching fractions rounded from the PDG tables, renormalised over
  the modes listed) is applied generation by generation, fully vectorised.
  Decays conserve four-momentum (``_kinematics.phase_space``); weakly
  decaying particles fly an exponential proper distance, so production
  vertices and times are displaced.  Final-state particles at generator level:
  ``e, mu, nu, gamma, pi+-, K+-, K_S0, K_L0, p``.
* Particles are listed breadth first (Upsilon(4S) at row 0, the B mesons at
  rows 1 and 2, then their daughters, ...), so a mother's row is always smaller
  than its daughters'.  Lists longer than 100 are cut at 100.
* The label imitates the downstream selection (a reconstructed hadronic
  B0 tag and event-level cuts): an event is likelier to pass when one B
  decays fully hadronically into few charged tracks, and likelier to fail
  with neutrinos or K_L0 (missing energy) or many photons.

Layout of one event (``X_{split}_0`` row): 100 particles x 9 features
``prodTime`` (ns), ``E`` (GeV), ``x, y, z`` (cm), ``px, py, pz`` (GeV),
``PID``; ``X_{split}_1`` holds the row of each particle's mother, -1 for the
Upsilon(4S) and for padding rows.  Padding rows are all zeros in the
features.  As in the release, PID is not the PDG code itself but a category
index (a float, 0 = padding): :data:`PID_INDEX` maps PDG codes to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _common as c
from . import _kinematics as k

MAX_PARTICLES = 100
N_FEATURES = 9
FEATURES = ("prodTime", "E", "x", "y", "z", "px", "py", "pz", "PID")
C_CM_PER_NS = 29.9792458
_BLOCK = 5_000
_TAG = "belle"
_MAX_DAUGHTERS = 5

# pdg: (mass GeV, c*tau cm, charge); antiparticles are derived by conjugation
_PARTICLES: dict[int, tuple[float, float, int]] = {
    300553: (10.5794, 0.0, 0),
    511: (5.27966, 0.04555, 0),
    411: (1.86966, 0.03118, 1),
    421: (1.86484, 0.01229, 0),
    413: (2.01026, 0.0, 1),
    423: (2.00685, 0.0, 0),
    431: (1.96835, 0.01504, 1),
    443: (3.0969, 0.0, 0),
    313: (0.89555, 0.0, 0),
    213: (0.77526, 0.0, 1),
    113: (0.77526, 0.0, 0),
    221: (0.547862, 0.0, 0),
    111: (0.134977, 2.55e-6, 0),
    211: (0.13957, 0.0, 1),
    321: (0.493677, 0.0, 1),
    310: (0.497611, 0.0, 0),
    130: (0.497611, 0.0, 0),
    22: (0.0, 0.0, 0),
    11: (0.000511, 0.0, -1),
    13: (0.105658, 0.0, -1),
    12: (0.0, 0.0, 0),
    14: (0.0, 0.0, 0),
    2212: (0.938272, 0.0, 1),
}
_SELF_CONJUGATE = {300553, 443, 113, 221, 111, 310, 130, 22}

# parent: [(weight, daughters), ...] for particles; antiparticles by conjugation
_DECAYS: dict[int, list[tuple[float, tuple[int, ...]]]] = {
    300553: [(1.0, (511, -511))],
    511: [
        (0.12, (-411, 211)),
        (0.10, (-413, 211)),
        (0.12, (-411, 213)),
        (0.10, (-413, 213)),
        (0.08, (-411, 211, 111)),
        (0.06, (-413, 211, 211, -211)),
        (0.05, (-411, 211, 211, -211)),
        (0.05, (-411, 431)),
        (0.04, (-413, 431)),
        (0.03, (-421, 111)),
        (0.02, (443, 310)),
        (0.01, (443, 313)),
        (0.01, (313, 22)),
        (0.01, (321, -211)),
        (0.01, (211, -211)),
        (0.03, (-411, 321)),
        (0.06, (-411, -11, 12)),
        (0.06, (-413, -11, 12)),
        (0.06, (-411, -13, 14)),
        (0.06, (-413, -13, 14)),
    ],
    411: [
        (0.094, (-321, 211, 211)),
        (0.016, (310, 211)),
        (0.062, (-321, 211, 211, 111)),
        (0.070, (310, 211, 111)),
        (0.044, (310, -11, 12)),
        (0.044, (130, -11, 12)),
        (0.040, (310, -13, 14)),
        (0.040, (130, -13, 14)),
        (0.030, (310, 211, 211, -211)),
        (0.010, (211, 111)),
    ],
    421: [
        (0.039, (-321, 211)),
        (0.140, (-321, 211, 111)),
        (0.080, (-321, 211, 211, -211)),
        (0.028, (310, 211, -211)),
        (0.012, (310, 111)),
        (0.010, (130, 111)),
        (0.035, (-321, -11, 12)),
        (0.033, (-321, -13, 14)),
        (0.050, (-321, 211, 111, 111)),
        (0.020, (310, 211, -211, 111)),
        (0.004, (321, -321)),
        (0.002, (211, -211)),
    ],
    413: [(0.677, (421, 211)), (0.307, (411, 111)), (0.016, (411, 22))],
    423: [(0.647, (421, 111)), (0.353, (421, 22))],
    431: [
        (0.054, (321, -321, 211)),
        (0.015, (310, 321)),
        (0.017, (221, 211)),
        (0.011, (211, 211, -211)),
        (0.089, (221, 213)),
        (0.060, (321, -321, 211, 111)),
    ],
    443: [
        (0.060, (11, -11)),
        (0.060, (13, -13)),
        (0.006, (213, -211)),
        (0.006, (-213, 211)),
        (0.006, (113, 111)),
        (0.020, (211, -211, 111, 111)),
    ],
    313: [(0.667, (321, -211)), (0.167, (310, 111)), (0.166, (130, 111))],
    213: [(1.0, (211, 111))],
    113: [(1.0, (211, -211))],
    221: [
        (0.394, (22, 22)),
        (0.327, (111, 111, 111)),
        (0.229, (211, -211, 111)),
        (0.050, (211, -211, 22)),
    ],
    111: [(0.988, (22, 22)), (0.012, (11, -11, 22))],
}


def _conjugate(pdg: int) -> int:
    return pdg if abs(pdg) in _SELF_CONJUGATE else -pdg


def _species() -> list[int]:
    codes = []
    for pdg in _PARTICLES:
        codes.append(pdg)
        if pdg not in _SELF_CONJUGATE:
            codes.append(-pdg)
    return codes


SPECIES: tuple[int, ...] = tuple(_species())
# Category index of each PDG code as stored in the PID feature (0 = padding).
PID_INDEX: dict[int, int] = {pdg: i + 1 for i, pdg in enumerate(SPECIES)}
_INDEX = {pdg: i for i, pdg in enumerate(SPECIES)}
_MASS = np.array([_PARTICLES[abs(p)][0] for p in SPECIES])
_CTAU = np.array([_PARTICLES[abs(p)][1] for p in SPECIES])
_CHARGE = np.array([_PARTICLES[abs(p)][2] * (1 if p > 0 else -1) for p in SPECIES])
_PID = np.array([PID_INDEX[p] for p in SPECIES], dtype=np.float64)
_INVISIBLE = np.isin(np.abs(SPECIES), [12, 14, 130])
_PHOTON = np.array(SPECIES) == 22


def _mode_table():
    parents, weights, daughters = [], [], []
    for pdg, modes in _DECAYS.items():
        for sign in (1, -1):
            if sign == -1 and pdg in _SELF_CONJUGATE:
                continue
            for w, ds in modes:
                parents.append(_INDEX[pdg * sign])
                weights.append(w)
                conj = ds if sign == 1 else tuple(_conjugate(d) for d in ds)
                daughters.append([_INDEX[d] for d in conj] + [-1] * (_MAX_DAUGHTERS - len(ds)))
    parents = np.array(parents)
    order = np.argsort(parents, kind="stable")
    parents = parents[order]
    weights = np.array(weights)[order]
    daughters = np.array(daughters)[order]
    cum = np.empty_like(weights)
    for p in np.unique(parents):
        sel = parents == p
        cw = np.cumsum(weights[sel])
        cum[sel] = cw / cw[-1]
        cum[np.flatnonzero(sel)[-1]] = 1.0
    stable = np.ones(len(SPECIES), dtype=bool)
    stable[parents] = False
    return parents + cum, daughters, stable


_MODE_KEY, _MODE_DAUGHTERS, _STABLE = _mode_table()


def _choose_modes(rng: np.random.Generator, species: np.ndarray) -> np.ndarray:
    return np.searchsorted(_MODE_KEY, species + rng.random(species.size), side="right")


def _rows(vtx: np.ndarray, p4: np.ndarray, species: np.ndarray) -> np.ndarray:
    """Feature rows in :data:`FEATURES` order from (x, y, z, t) vertices and four-momenta."""
    return np.concatenate(
        [vtx[:, 3:], p4[:, :1], vtx[:, :3], p4[:, 1:], _PID[species][:, None]], axis=1
    )


def _block(rng: np.random.Generator, n: int):
    """Features (n, 100, 9) float32, mother rows (n, 100) int64, labels (n,) int64."""
    feats = np.zeros((n, MAX_PARTICLES, N_FEATURES))
    mother = np.full((n, MAX_PARTICLES), -1, dtype=np.int64)
    count = np.ones(n, dtype=np.int64)
    # per event and B meson (index 0/1): charged, invisible, photon final states
    tally = np.zeros((3, n, 2))

    y4s = _INDEX[300553]
    pz = 3.0 + 0.003 * rng.standard_normal(n)
    p4 = np.stack([np.sqrt(_MASS[y4s] ** 2 + pz**2), np.zeros(n), np.zeros(n), pz], axis=-1)
    vtx = np.stack(
        [
            0.001 * rng.standard_normal(n),
            6e-6 * rng.standard_normal(n),
            0.035 * rng.standard_normal(n),
            np.zeros(n),
        ],
        axis=-1,
    )
    event = np.arange(n)
    slot = np.zeros(n, dtype=np.int64)
    species = np.full(n, y4s)
    feats[:, 0] = _rows(vtx, p4, species)
    bmeson = np.full(n, -1)

    while event.size:
        mass = _MASS[species]
        # weak decays fly before decaying: proper length ~ Exp(c*tau)
        length = rng.exponential(1.0, event.size) * _CTAU[species]
        # displacement = (p / m) * length; time = (E / m) * length / c
        flight = np.concatenate([p4[:, 1:], p4[:, :1] / C_CM_PER_NS], axis=1) / mass[:, None]
        decay_vtx = vtx + flight * length[:, None]

        modes = _choose_modes(rng, species)
        dau = _MODE_DAUGHTERS[modes]
        used = dau >= 0
        dmass = np.where(used, _MASS[np.maximum(dau, 0)], np.nan)
        rest = k.phase_space(rng, mass, dmass)
        lab = k.boost(rest, k.velocity(p4)[:, None, :])

        row, col = np.nonzero(used)
        d_event = event[row]
        d_species = dau[row, col]
        d_p4 = lab[row, col]
        d_vtx = decay_vtx[row]
        d_bmeson = np.where(species[row] == y4s, col, bmeson[row])
        first = np.searchsorted(d_event, d_event, side="left")
        d_slot = count[d_event] + np.arange(d_event.size) - first
        count += np.bincount(d_event, minlength=n)

        final = _STABLE[d_species]
        for t, flag in enumerate(
            (_CHARGE[d_species] != 0, _INVISIBLE[d_species], _PHOTON[d_species])
        ):
            sel = final & flag
            np.add.at(tally[t], (d_event[sel], d_bmeson[sel]), 1)

        fits = d_slot < MAX_PARTICLES
        e_, s_ = d_event[fits], d_slot[fits]
        feats[e_, s_] = _rows(d_vtx[fits], d_p4[fits], d_species[fits])
        mother[e_, s_] = slot[row][fits]

        go = fits & ~final
        event, slot, species = d_event[go], d_slot[go], d_species[go]
        p4, vtx, bmeson = d_p4[go], d_vtx[go], d_bmeson[go]

    charged, invisible, photons = tally
    hadronic_tag = np.any((invisible == 0) & (charged >= 2) & (charged <= 7), axis=1)
    score = (
        2.0 * hadronic_tag
        + 0.7 * np.all(invisible == 0, axis=1)
        - 0.08 * (photons.sum(axis=1) - 12.0)
        - 2.6
        + rng.logistic(0.0, 0.6, n)
    )
    return feats.astype(np.float32), mother, (score > 0).astype(np.int64)


def make_belle(
    out_dir: str | os.PathLike[str],
    n_train: int = 28_000,
    n_test: int = 12_000,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write ``6_belle_selective_400k.npz`` in the pd4ml layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_test
        Events per split (the original: 400k, 70% / 30%).
    seed
        Seed; equal seeds and counts give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The ``.npz`` with ``X_{split}_0`` (n, 100, 9) float32 particle
        features (see :data:`FEATURES`; PID as :data:`PID_INDEX`),
        ``X_{split}_1`` (n, 100) int64 mother rows (-1: none or padding) and
        ``y_{split}`` (n,) int64, 1 = passes the selection.
    """
    counts = {
        "train": c.check_count("n_train", n_train, owner="fl.synthetic.make_belle"),
        "test": c.check_count("n_test", n_test, owner="fl.synthetic.make_belle"),
    }
    seed = c.check_seed(seed, owner="fl.synthetic.make_belle")
    path = c.out_directory(out_dir) / "6_belle_selective_400k.npz"
    bar = c.progress(sum(counts.values()), "Belle", progress)
    with bar, c.atomic_output(path) as tmp, c.NpzWriter(tmp) as npz:
        for split, n in counts.items():
            mothers = np.empty((n, MAX_PARTICLES), dtype=np.int64)
            y = np.empty(n, dtype=np.int64)
            with npz.stream(f"X_{split}_0", (n, MAX_PARTICLES, N_FEATURES), np.float32) as put:
                for i, start, stop in c.iter_blocks(n, _BLOCK):
                    rng = c.block_rng(seed, _TAG, split, i)
                    x, mothers[start:stop], y[start:stop] = _block(rng, stop - start)
                    put(x)
                    bar.update(stop - start)
            npz.write(f"X_{split}_1", mothers)
            npz.write(f"y_{split}", y)
    return path
