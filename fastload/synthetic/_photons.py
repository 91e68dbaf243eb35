"""High-granularity photon showers ("Getting High", Buhmann et al. 2021): one HDF5 file.

Geometry (ILD-like silicon-tungsten ECAL): 30 layers of 5 x 5 mm^2 silicon
cells -- the first 20 behind 2.1 mm of tungsten (0.6 X0), the last 10 behind
4.2 mm (1.2 X0) -- cut to a 30 x 30 cell window around the shower axis.
Arrays are ``(event, layer, x, y)``.

Photons of 10-100 GeV (uniform) hit the centre of the window
perpendicularly.  Each converts after an exponential depth (mean 9/7 X0) and
showers with a Gamma longitudinal profile whose maximum grows like
``ln(E / E_c)``; the lateral profile (core + halo, Moliere radius of
tungsten) widens with depth.  Cells hold the visible energy in the silicon in
MeV: the sampling fraction halves behind the thicker absorbers, cell energies
fluctuate with the number of crossing particles, and cells below half a MIP
(0.1 MeV) read zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from . import _common as c
from . import _showers as s

GROUP = "30x30"
N_LAYERS = 30
N_CELLS = 30
CELL_MM = 5.0
ENERGY_RANGE_GEV = (10.0, 100.0)
_X0 = np.r_[np.full(20, 0.6), np.full(10, 1.2)]
_X0_MID = np.cumsum(_X0) - _X0 / 2.0
_SAMPLING = 0.0137 * 0.6 / _X0  # visible / deposited; thicker tungsten, smaller share
_QUANTUM_MEV = 0.4
_THRESHOLD_MEV = 0.1  # half a MIP in 0.5 mm of silicon
_CRITICAL_W_GEV = 0.008
_MOLIERE_W_MM = 9.3
_BLOCK = 500
_TAG = "photon-showers"


def _block(rng: np.random.Generator, n: int):
    """Energy (n, 1) float32 GeV and layers (n, 30, 30, 30) float32 MeV."""
    energy = rng.uniform(*ENERGY_RANGE_GEV, n)
    start = rng.exponential(9.0 / 7.0, n)
    tmax = s.em_tmax(energy, _CRITICAL_W_GEV, True) * (1.0 + 0.06 * rng.standard_normal(n))
    b = 0.5
    depth = _X0_MID[None, :] - start[:, None]
    deposit_mev = (
        1000.0
        * energy[:, None]
        * s.gamma_profile(depth, _X0[None, :], (b * tmax + 1.0)[:, None], b)
    )
    tau = np.clip(depth / tmax[:, None], 0.0, 4.0)
    sigma = _MOLIERE_W_MM * np.stack([0.3 + 0.1 * tau, 0.9 + 0.2 * tau, 2.5 + 0.3 * tau], axis=-1)
    weight = np.broadcast_to(np.array([0.65, 0.27, 0.08]), sigma.shape)
    centre = np.broadcast_to(rng.normal(0.0, 0.5, (n, 1, 2)), (n, N_LAYERS, 2))
    frac = s.cell_fractions(centre, sigma, weight, N_CELLS, CELL_MM)
    visible = (deposit_mev * _SAMPLING[None, :])[:, :, None, None] * frac
    layers = s.sample_cells(rng, visible, _QUANTUM_MEV, _THRESHOLD_MEV)
    return energy[:, None].astype(np.float32), layers.astype(np.float32)


def make_photon_showers(
    out_dir: str | os.PathLike[str], n: int = 10_000, seed: int = 0, *, progress: bool = False
) -> Path:
    """Write ``photon_showers.h5`` in the "Getting High" layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n
        Number of showers.
    seed
        Seed; equal seeds give equal arrays.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The file, with group ``30x30`` holding ``energy`` (n, 1) float32
        incident energy in GeV and ``layers`` (n, 30, 30, 30) float32 cell
        energies in MeV (axes layer, x, y).
    """
    n = c.check_count("n", n, owner="fl.synthetic.make_photon_showers")
    seed = c.check_seed(seed, owner="fl.synthetic.make_photon_showers")
    path = c.out_directory(out_dir) / "photon_showers.h5"
    bar = c.progress(n, "PhotonShowers", progress)
    with bar, c.atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        group = h5.create_group(GROUP)
        energy = group.create_dataset("energy", (n, 1), dtype="f4")
        layers = group.create_dataset("layers", (n, N_LAYERS, N_CELLS, N_CELLS), dtype="f4")
        for i, start, stop in c.iter_blocks(n, _BLOCK):
            rng = c.block_rng(seed, _TAG, "all", i)
            energy[start:stop], layers[start:stop] = _block(rng, stop - start)
            bar.update(stop - start)
    return path
