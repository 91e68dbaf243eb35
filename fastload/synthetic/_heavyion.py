"""Heavy-ion image sets of pd4ml: Spinodal (20x20) and EOSL (24x24).

Spinodal
    Each image is one event's histogram of pion transverse momenta
    (``px`` along axis 1, ``py`` along axis 2, 20 bins each over
    [-1.5, 1.5) GeV; counts as float32).  A thermal (Boltzmann in ``mT``)
    background is common to both classes; spinodal decomposition breaks the
    fireball into clumps, each emitting pions around its own collective
    momentum, so spinodal events (label 1) carry more and stronger
    momentum-space clusters than Maxwell-construction events (label 0).

EOSL
    Each image is a pion spectrum ``dN/(dpT dphi)`` (``pT`` along axis 1,
    24 bins over [0, 2.4) GeV; ``phi`` along axis 2, 24 bins over [0, 2 pi)),
    counts from a blast-wave-like source with elliptic flow, normalised per
    event to unit maximum.  A crossover equation of state (EOSL, label 0) is
    stiffer than a first-order one (EOSQ, label 1): more radial flow (harder
    spectra) and a larger elliptic-flow response.  Event parameters
    (freeze-out temperature, viscosity-like damping, eccentricity,
    multiplicity) overlap between classes.  The test split is drawn from
    shifted parameter ranges (higher freeze-out temperature, lower
    multiplicity), as the original test set came from different simulation
    settings than its training set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _common as c

PION_MASS = 0.1396
SPINODAL_BINS = 20
SPINODAL_RANGE = 1.5  # GeV, histogram covers [-1.5, 1.5) in px and py
EOSL_BINS = 24
EOSL_PT_MAX = 2.4  # GeV
_BLOCK = 2_000


def _spinodal_block(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    n = y.size
    edges = np.linspace(-SPINODAL_RANGE, SPINODAL_RANGE, SPINODAL_BINS + 1)
    centre = 0.5 * (edges[1:] + edges[:-1])
    px = centre[None, :, None]
    py = centre[None, None, :]
    temp = rng.uniform(0.12, 0.16, n)[:, None, None]
    mt = np.sqrt(PION_MASS**2 + px**2 + py**2)
    thermal = np.exp(-(mt - PION_MASS) / temp)
    thermal /= thermal.sum(axis=(1, 2), keepdims=True)

    # clumps: both classes have some; spinodal has more and they carry more pions
    spin = y == 1
    n_clumps = np.where(spin, 2 + rng.poisson(3.0, n), rng.poisson(1.5, n))
    frac = np.where(spin, rng.uniform(0.15, 0.40, n), rng.uniform(0.0, 0.15, n))
    slots = 8
    used = np.arange(slots)[None, :] < np.minimum(n_clumps, slots)[:, None]
    p_c = rng.uniform(0.1, 0.9, (n, slots))
    a_c = rng.uniform(-np.pi, np.pi, (n, slots))
    w_c = rng.uniform(0.08, 0.16, (n, slots))
    weight = rng.exponential(1.0, (n, slots)) * used
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
    cx = (p_c * np.cos(a_c))[:, :, None, None]
    cy = (p_c * np.sin(a_c))[:, :, None, None]
    w2 = (2.0 * w_c**2)[:, :, None, None]
    bumps = np.exp(-((px[:, None] - cx) ** 2 + (py[:, None] - cy) ** 2) / w2)
    bumps /= np.maximum(bumps.sum(axis=(2, 3), keepdims=True), 1e-12)
    clumps = np.einsum("ns,nsij->nij", weight, bumps)

    mult = rng.uniform(250.0, 450.0, n)[:, None, None]
    f = frac[:, None, None]
    expected = mult * ((1.0 - f) * thermal + f * clumps)
    return rng.poisson(expected).astype(np.float32)


def _eosl_block(rng: np.random.Generator, y: np.ndarray, split: str) -> np.ndarray:
    n = y.size
    pt_edges = np.linspace(0.0, EOSL_PT_MAX, EOSL_BINS + 1)
    pt = 0.5 * (pt_edges[1:] + pt_edges[:-1])[None, :, None]
    phi = ((np.arange(EOSL_BINS) + 0.5) * 2.0 * np.pi / EOSL_BINS)[None, None, :]
    eosq = y == 1
    if split == "test":  # different simulation settings than training
        t_fo = rng.uniform(0.130, 0.160, n)
        mult = rng.uniform(800.0, 2500.0, n)
    else:
        t_fo = rng.uniform(0.110, 0.150, n)
        mult = rng.uniform(1500.0, 5000.0, n)
    damping = rng.uniform(0.0, 0.25, n)  # shear-viscosity-like reduction of flow
    beta = np.where(eosq, 0.50, 0.60) * (1.0 - 0.5 * damping) + rng.normal(0.0, 0.03, n)
    ecc = rng.uniform(0.05, 0.45, n)
    v2 = np.where(eosq, 0.16, 0.22) * ecc * (1.0 - damping) + rng.normal(0.0, 0.005, n)
    psi = rng.normal(0.0, 0.15, n)  # event plane near the impact-parameter direction

    t_eff = (t_fo * np.sqrt((1.0 + beta) / (1.0 - beta)))[:, None, None]
    mt = np.sqrt(PION_MASS**2 + pt**2)
    v2_pt = v2[:, None, None] * np.minimum(pt / 1.2, 1.5)
    shape = (
        pt
        * mt
        * np.exp(-mt / t_eff)
        * (1.0 + 2.0 * v2_pt * np.cos(2.0 * (phi - psi[:, None, None])))
    )
    shape /= shape.sum(axis=(1, 2), keepdims=True)
    counts = rng.poisson(mult[:, None, None] * shape).astype(np.float64)
    counts /= np.maximum(counts.max(axis=(1, 2), keepdims=True), 1.0)
    return counts.astype(np.float32)


def _make_images(name, filename, tag, block_fn, shape, out_dir, n_train, n_test, seed, progress):
    counts = {
        "train": c.check_count("n_train", n_train, owner=f"fl.synthetic.make_{name.lower()}"),
        "test": c.check_count("n_test", n_test, owner=f"fl.synthetic.make_{name.lower()}"),
    }
    seed = c.check_seed(seed, owner=f"fl.synthetic.make_{name.lower()}")
    path = c.out_directory(out_dir) / filename
    bar = c.progress(sum(counts.values()), name, progress)
    with bar, c.atomic_output(path) as tmp, c.NpzWriter(tmp) as npz:
        for split, n in counts.items():
            y = np.empty(n, dtype=np.int64)
            with npz.stream(f"X_{split}_0", (n, *shape), np.float32) as put:
                for i, start, stop in c.iter_blocks(n, _BLOCK):
                    rng = c.block_rng(seed, tag, split, i)
                    y[start:stop] = rng.random(stop - start) < 0.5
                    put(block_fn(rng, y[start:stop], split))
                    bar.update(stop - start)
            npz.write(f"y_{split}", y)
    return path


def make_spinodal(
    out_dir: str | os.PathLike[str],
    n_train: int = 20_300,
    n_test: int = 8_700,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write ``2_spinodal_29k.npz`` in the pd4ml layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_test
        Events per split (the original: 29k, 70% train / 30% test).
    seed
        Seed; equal seeds and counts give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The ``.npz`` with ``X_{split}_0`` (n, 20, 20) float32 pion-momentum
        histograms and ``y_{split}`` (n,) int64, 1 = spinodal, 0 = Maxwell.
    """
    return _make_images(
        "Spinodal",
        "2_spinodal_29k.npz",
        "spinodal",
        lambda rng, y, split: _spinodal_block(rng, y),
        (SPINODAL_BINS, SPINODAL_BINS),
        out_dir,
        n_train,
        n_test,
        seed,
        progress,
    )


def make_eosl(
    out_dir: str | os.PathLike[str],
    n_train: int = 12_600,
    n_test: int = 5_400,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write ``3_EOSL_or_EOSQ_180k.npz`` in the pd4ml layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_test
        Events per split (the original: ~180k, 70% / 30%).
    seed
        Seed; equal seeds and counts give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The ``.npz`` with ``X_{split}_0`` (n, 24, 24) float32 pion spectra
        (pT x phi, per-event maximum 1) and ``y_{split}`` (n,) int64,
        1 = EOSQ, 0 = EOSL.  The test split uses shifted event parameters.
    """
    return _make_images(
        "EOSL",
        "3_EOSL_or_EOSQ_180k.npz",
        "eosl",
        _eosl_block,
        (EOSL_BINS, EOSL_BINS),
        out_dir,
        n_train,
        n_test,
        seed,
        progress,
    )
