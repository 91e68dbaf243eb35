"""CLIC/LCD calorimeter images: ``<P>Escan_<a>_<b>.h5`` with ECAL, HCAL and target.

Geometry (as in the LCD calorimeter-image samples): an ECAL window of
25 x 25 cells of 5.1 mm and 25 layers (tungsten, ~0.9 X0 per layer, ~0.8
interaction lengths in all) followed by an HCAL window of 5 x 5 cells of
30 mm and 60 layers (steel, ~1.1 X0 and ~0.12 lambda_I per layer).  Arrays are
``(event, x, y, layer)``; the particle enters at the centre of the window,
perpendicular to the layers, with sub-millimetre jitter.

Cell values are visible (sampled) energies in GeV: sampling fraction 1/50 in
the ECAL -- the reason users of the original files multiply by 50 -- and 1/40
in the HCAL; cells below half a MIP are zero.

Showers by class (energy uniform in 10-510 GeV):

* ``Ele``: EM shower starting at the ECAL front;
* ``Gamma``: EM shower starting after an exponential conversion depth
  (mean 9/7 X0), so it starts later and fluctuates more;
* ``Pi0``: two photons sharing the energy uniformly, separated at the
  calorimeter (1.5 m away) by the decay opening angle -- two overlapping
  showers, distinguishable at low energy;
* ``ChPi``: a MIP track up to an exponential first interaction (in lambda_I;
  most pions reach the HCAL), then a hadronic shower: an energy-dependent EM
  fraction showering compactly plus a wide, deep hadronic part with reduced
  visible response (e/h > 1), so much of its energy lands in the HCAL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import ConfigError
from . import _common as c
from . import _showers as s

PARTICLES = ("Ele", "Gamma", "Pi0", "ChPi")
PDG_ID = {"Ele": 11, "Gamma": 22, "Pi0": 111, "ChPi": 211}
MASS_GEV = {"Ele": 0.000511, "Gamma": 0.0, "Pi0": 0.134977, "ChPi": 0.13957}
ECAL_SHAPE = (25, 25, 25)
HCAL_SHAPE = (5, 5, 60)
ENERGY_RANGE_GEV = (10.0, 510.0)

_ECAL_LAYERS, _HCAL_LAYERS = 25, 60
_ECAL_CELL_MM, _HCAL_CELL_MM = 5.1, 30.0
_X0 = np.r_[np.full(_ECAL_LAYERS, 0.9), np.full(_HCAL_LAYERS, 1.1)]  # per layer
_LAMBDA = np.r_[np.full(_ECAL_LAYERS, 0.032), np.full(_HCAL_LAYERS, 0.115)]
_X0_MID = np.cumsum(_X0) - _X0 / 2.0
_LAMBDA_MID = np.cumsum(_LAMBDA) - _LAMBDA / 2.0
_LAMBDA_EDGE = np.r_[0.0, np.cumsum(_LAMBDA)]
_X0_EDGE = np.r_[0.0, np.cumsum(_X0)]
_SF_ECAL, _SF_HCAL = 1.0 / 50.0, 1.0 / 40.0
_MIP_ECAL, _MIP_HCAL = 1.5e-4, 5.5e-4  # visible GeV per layer crossed
_QUANTUM_ECAL, _QUANTUM_HCAL = 4.5e-4, 4.0e-3  # visible GeV, sets sampling resolution
_CRITICAL_W_GEV = 0.008
_MOLIERE_W_MM, _MOLIERE_FE_MM = 9.3, 17.0
_CALO_DISTANCE_MM = 1500.0
_BLOCK = 200
_TAG = "lcd"


def _em(energy, start_x0, centre, tmax):
    """Deposits (n, 85) by layer and lateral fractions for an EM shower.

    Returns ECAL (n, 25 layers, 25, 25) and HCAL (n, 60 layers, 5, 5) deposits in GeV.
    """
    b = 0.5
    a = (b * tmax + 1.0)[:, None]
    depth = _X0_MID[None, :] - start_x0[:, None]
    long = energy[:, None] * s.gamma_profile(depth, _X0[None, :], a, b)
    tau = np.clip(depth / tmax[:, None], 0.0, 4.0)
    rel = np.stack([0.3 + 0.1 * tau, 0.9 + 0.2 * tau, 2.5 + 0.3 * tau], axis=-1)
    weight = np.broadcast_to(np.array([0.65, 0.27, 0.08]), rel.shape)
    cen = np.broadcast_to(centre[:, None, :], (*depth.shape, 2))
    e = _ECAL_LAYERS
    ecal = long[:, :e, None, None] * s.cell_fractions(
        cen[:, :e], rel[:, :e] * _MOLIERE_W_MM, weight[:, :e], ECAL_SHAPE[0], _ECAL_CELL_MM
    )
    hcal = long[:, e:, None, None] * s.cell_fractions(
        cen[:, e:], rel[:, e:] * _MOLIERE_FE_MM, weight[:, e:], HCAL_SHAPE[0], _HCAL_CELL_MM
    )
    return ecal, hcal


def _hadronic(energy, start_lambda, centre):
    """ECAL and HCAL deposits of the purely hadronic part of a pion shower."""
    a = (2.0 + 0.3 * np.log(energy))[:, None]
    depth = _LAMBDA_MID[None, :] - start_lambda[:, None]
    long = energy[:, None] * s.gamma_profile(depth, _LAMBDA[None, :], a, 1.2)
    n = energy.size
    w = np.broadcast_to(np.array([0.6, 0.4]), (n, 2))
    e = _ECAL_LAYERS
    ecal_frac = s.cell_fractions(
        centre, np.broadcast_to([12.0, 35.0], (n, 2)), w, 25, _ECAL_CELL_MM
    )
    hcal_frac = s.cell_fractions(
        centre, np.broadcast_to([35.0, 110.0], (n, 2)), w, 5, _HCAL_CELL_MM
    )
    return (
        long[:, :e, None, None] * ecal_frac[:, None],
        long[:, e:, None, None] * hcal_frac[:, None],
    )


def _axis_cell(centre: np.ndarray, n_cells: int, cell_mm: float) -> np.ndarray:
    return np.clip(np.floor(centre / cell_mm + n_cells / 2.0).astype(int), 0, n_cells - 1)


def _mip_track(rng, n, last_layer, centre):
    """Visible MIP deposits along the axis in every layer before ``last_layer``."""
    ecal = np.zeros((n, _ECAL_LAYERS, *ECAL_SHAPE[:2]))
    hcal = np.zeros((n, _HCAL_LAYERS, *HCAL_SHAPE[:2]))
    crossed = np.arange(_ECAL_LAYERS + _HCAL_LAYERS)[None, :] < last_layer[:, None]
    # Landau-like spread: Gamma with a long-ish upper tail
    landau = rng.gamma(6.0, 1.0 / 6.0, crossed.shape) * crossed
    ev = np.arange(n)
    ie, je = _axis_cell(centre, ECAL_SHAPE[0], _ECAL_CELL_MM).T
    ih, jh = _axis_cell(centre, HCAL_SHAPE[0], _HCAL_CELL_MM).T
    ecal[ev, :, ie, je] = _MIP_ECAL * landau[:, :_ECAL_LAYERS]
    hcal[ev, :, ih, jh] = _MIP_HCAL * landau[:, _ECAL_LAYERS:]
    return ecal, hcal


def _block(rng: np.random.Generator, particle: str, n: int):
    """ECAL (n, 25, 25, 25), HCAL (n, 5, 5, 60) float32 visible GeV, target (n, 1, 5) float32."""
    energy = rng.uniform(*ENERGY_RANGE_GEV, n)
    centre = rng.normal(0.0, 0.5, (n, 2))
    mip_e = mip_h = 0.0
    if particle in ("Ele", "Gamma"):
        photon = particle == "Gamma"
        start = rng.exponential(9.0 / 7.0, n) if photon else np.zeros(n)
        tmax = s.em_tmax(energy, _CRITICAL_W_GEV, photon) * (1.0 + 0.06 * rng.standard_normal(n))
        ecal, hcal = _em(energy, start, centre, tmax)
    elif particle == "Pi0":
        z = rng.uniform(0.0, 1.0, n)
        z = np.clip(z, 0.01, 0.99)
        opening = MASS_GEV["Pi0"] / (energy * np.sqrt(z * (1.0 - z)))
        sep = _CALO_DISTANCE_MM * opening
        alpha = rng.uniform(-np.pi, np.pi, n)
        direction = np.stack([np.cos(alpha), np.sin(alpha)], axis=-1)
        ecal = hcal = 0.0
        # energy-weighted centroid on the axis: photon 1 at +(1-z) sep, photon 2 at -z sep
        for frac, offset in ((z, (1.0 - z) * sep), (1.0 - z, -z * sep)):
            e_gamma = frac * energy
            start = rng.exponential(9.0 / 7.0, n)
            tmax = s.em_tmax(e_gamma, _CRITICAL_W_GEV, True) * (1.0 + 0.06 * rng.standard_normal(n))
            tmax = np.maximum(tmax, 0.5)
            ec, hc = _em(e_gamma, start, centre + offset[:, None] * direction, tmax)
            ecal, hcal = ecal + ec, hcal + hc
    elif particle == "ChPi":
        start_lambda = rng.exponential(1.0, n)
        last_layer = np.searchsorted(_LAMBDA_EDGE, start_lambda) - 1
        mip_e, mip_h = _mip_track(rng, n, last_layer, centre)
        # Wigmans: f_em = 1 - (E / 1 GeV)^(k - 1), k ~ 0.82, with event-by-event spread
        f_em = np.clip(1.0 - energy ** (0.82 - 1.0) + 0.1 * rng.standard_normal(n), 0.02, 0.95)
        start_x0 = np.interp(start_lambda, _LAMBDA_EDGE, _X0_EDGE)
        # EM sub-showers come from pi0s carrying a fraction of the energy each
        tmax = np.maximum(s.em_tmax(f_em * energy / 4.0, _CRITICAL_W_GEV, True), 0.5)
        ecal, hcal = _em(f_em * energy, start_x0, centre, tmax)
        # hadronic part: ~40% of its energy is invisible (binding, neutrons)
        he, hh = _hadronic(0.6 * (1.0 - f_em) * energy, start_lambda, centre)
        ecal, hcal = ecal + he, hcal + hh
    else:  # pragma: no cover - validated by the caller
        raise AssertionError(particle)

    ecal = s.sample_cells(rng, ecal * _SF_ECAL, _QUANTUM_ECAL, 0.5 * _MIP_ECAL) + mip_e
    hcal = s.sample_cells(rng, hcal * _SF_HCAL, _QUANTUM_HCAL, 0.5 * _MIP_HCAL) + mip_h
    pz = np.sqrt(energy**2 - MASS_GEV[particle] ** 2)
    target = np.stack([np.full(n, PDG_ID[particle]), energy, np.zeros(n), np.zeros(n), pz], axis=-1)
    # (event, layer, x, y) -> (event, x, y, layer)
    return (
        np.moveaxis(ecal, 1, 3).astype(np.float32),
        np.moveaxis(hcal, 1, 3).astype(np.float32),
        target[:, None, :].astype(np.float32),
    )


def lcd_filename(particle: str, index: int) -> str:
    """Name of the ``index``-th (0-based) file of a particle: ``<P>Escan_<a>_<b>.h5``.

    ``a`` and ``b`` count from 1 with ten ``b`` per ``a``, as in the release
    (``GammaEscan_1_1.h5 ... GammaEscan_1_10.h5, GammaEscan_2_1.h5, ...``).
    """
    return f"{particle}Escan_{index // 10 + 1}_{index % 10 + 1}.h5"


def make_lcd(
    out_dir: str | os.PathLike[str],
    events_per_file: int = 1000,
    files_per_particle: int = 1,
    particles: Sequence[str] = PARTICLES,
    seed: int = 0,
    *,
    progress: bool = False,
) -> list[Path]:
    """Write LCD calorimeter files ``<P>Escan_<a>_<b>.h5``, one class per file.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    events_per_file
        Events in each file.
    files_per_particle
        Files written per particle type.
    particles
        Any of ``"Ele", "Gamma", "Pi0", "ChPi"`` (the class is in the file name).
    seed
        Seed; equal seeds give equal arrays.
    progress
        Show a progress bar.

    Returns
    -------
    list of Path
        Files in particle order, each holding ``ECAL`` (n, 25, 25, 25),
        ``HCAL`` (n, 5, 5, 60) float32 visible energies (GeV, axes x, y,
        layer) and ``target`` (n, 1, 5) float32 = (PDG id, energy GeV, px,
        py, pz); ``target[:, 0, 1]`` is the particle energy.
    """
    events_per_file = c.check_count(
        "events_per_file", events_per_file, owner="fl.synthetic.make_lcd"
    )
    files_per_particle = c.check_count(
        "files_per_particle", files_per_particle, owner="fl.synthetic.make_lcd"
    )
    seed = c.check_seed(seed, owner="fl.synthetic.make_lcd")
    particles = tuple(particles) if not isinstance(particles, str) else (particles,)
    unknown = [p for p in particles if p not in PARTICLES]
    if unknown or not particles:
        raise ConfigError(
            f"particles must be a non-empty selection of {PARTICLES}, got {particles!r}"
        )
    out = c.out_directory(out_dir)
    paths = []
    bar = c.progress(len(particles) * files_per_particle * events_per_file, "LCD", progress)
    with bar:
        for particle in particles:
            for f in range(files_per_particle):
                path = out / lcd_filename(particle, f)
                with c.atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
                    n = events_per_file
                    ecal = h5.create_dataset("ECAL", (n, *ECAL_SHAPE), dtype="f4")
                    hcal = h5.create_dataset("HCAL", (n, *HCAL_SHAPE), dtype="f4")
                    target = h5.create_dataset("target", (n, 1, 5), dtype="f4")
                    for i, start, stop in c.iter_blocks(n, _BLOCK):
                        rng = c.block_rng(seed, _TAG, f"{particle}/{f}", i)
                        e, h, t = _block(rng, particle, stop - start)
                        ecal[start:stop], hcal[start:stop], target[start:stop] = e, h, t
                        bar.update(stop - start)
                paths.append(path)
    return paths
