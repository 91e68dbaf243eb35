"""Cosmic-ray air showers on a 9x9 ground array: pd4ml ``4_airshower_100k_regression.npz``.

Physics model (after the toy array of Erdmann, Glombitza & Walz, Astropart.
Phys. 97 (2018) 46, used by pd4ml):

* 81 water-Cherenkov stations on a square grid of 1500 m spacing, about
  1400 m above sea level (vertical depth of the ground 880 g/cm^2).
* Primaries: energy log-uniform in 10^18.5-10^20 eV, mass p/He/N/Fe, zenith
  up to 60 degrees (uniform in cos^2), uniform azimuth, core in the central
  cell.  ``Xmax`` follows the elongation rate (58 g/cm^2 per decade) with a
  mass-dependent mean and spread (p: -0, 60; Fe: -100, 20 g/cm^2).
* Stations see the shower front from a point source at ``Xmax`` (isothermal
  atmosphere, scale height 8 km): arrival times carry a curvature
  ``~ r^2 / (2 c R_max)`` -- deeper showers are closer to the ground and
  curve more.  The lateral distribution steepens and the electromagnetic
  share grows as the distance ``DX`` from ``Xmax`` to the ground shrinks;
  the electromagnetic pulse is wider (longer rise time) for deep showers and
  far stations, the muon pulse stays short.
* Traces: 80 bins of 25 ns in VEM, starting at the first particle, with
  counting noise.  Stations below 3 VEM did not trigger: their 80 trace bins
  and their time are -1.  Events need at least three triggered stations.
* Arrival times are in microseconds relative to the earliest triggered
  station.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _common as c

GRID = 9
SPACING_M = 1500.0
N_BINS = 80
BIN_NS = 25.0
TRIGGER_VEM = 3.0
GROUND_DEPTH = 880.0  # g/cm^2, vertical
GROUND_ALTITUDE_M = 1400.0
SCALE_HEIGHT_M = 8000.0
SEA_LEVEL_DEPTH = 1030.0
C_M_PER_NS = 0.299792458
_LN_A = np.array([0.0, np.log(4.0), np.log(14.0), np.log(56.0)])  # p, He, N, Fe
_BLOCK = 1_000
_TAG = "airshower"


def station_positions() -> np.ndarray:
    """Station coordinates (81, 3) float32 in metres, row-major over the 9x9 grid.

    ``x`` runs along grid axis 0 and ``y`` along axis 1, centred on the array;
    ``z`` is a fixed gentle terrain relative to the mean array altitude.
    """
    idx = (np.arange(GRID) - (GRID - 1) / 2.0) * SPACING_M
    x, y = np.meshgrid(idx, idx, indexing="ij")
    z = 30.0 * np.sin(x / 2500.0) * np.cos(y / 3500.0) + 0.004 * x
    return np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)


def _erlang2_cdf(t: np.ndarray, theta: np.ndarray) -> np.ndarray:
    u = np.maximum(t, 0.0) / theta
    return 1.0 - np.exp(-u) * (1.0 + u)


def _candidates(rng: np.random.Generator, m: int, pos: np.ndarray):
    lg_e = rng.uniform(18.5, 20.0, m)
    ln_a = _LN_A[rng.integers(0, _LN_A.size, m)]
    xmax = (
        750.0 + 58.0 * (lg_e - 19.0) - 25.0 * ln_a + (60.0 - 10.0 * ln_a) * rng.standard_normal(m)
    )
    xmax = np.clip(xmax, 550.0, 1050.0)
    cos_t = np.sqrt(rng.uniform(0.25, 1.0, m))
    sin_t = np.sqrt(1.0 - cos_t**2)
    az = rng.uniform(0.0, 2.0 * np.pi, m)
    axis = np.stack([sin_t * np.cos(az), sin_t * np.sin(az), cos_t], axis=-1)
    core = np.concatenate([rng.uniform(-0.5, 0.5, (m, 2)) * SPACING_M, np.zeros((m, 1))], -1)

    dx = np.maximum(GROUND_DEPTH / cos_t - xmax, 20.0)
    h_max = -SCALE_HEIGHT_M * np.log(xmax * cos_t / SEA_LEVEL_DEPTH) - GROUND_ALTITUDE_M
    r_max = np.maximum(h_max, 200.0) / cos_t  # core to Xmax along the axis, metres

    d = pos[None, :, :] - core[:, None, :]  # (m, 81, 3)
    along = np.einsum("mkj,mj->mk", d, axis)
    r = np.sqrt(np.maximum(np.sum(d**2, axis=-1) - along**2, 0.0))
    source = core + r_max[:, None] * axis
    dist = np.linalg.norm(pos[None, :, :] - source[:, None, :], axis=-1)
    t_arr = (dist - r_max[:, None]) / C_M_PER_NS  # ns after the core, spherical front

    energy_eev = 10.0 ** (lg_e - 18.0)
    s1000 = 15.0 * energy_eev**0.95 * np.exp(-(dx - 300.0) / 700.0)
    beta = (2.6 - 0.6 * np.clip(dx / 1000.0, 0.0, 1.5))[:, None]
    rr = np.maximum(r, 100.0)
    s_mean = s1000[:, None] * (rr / 1000.0) ** -beta * ((rr + 700.0) / 1700.0) ** -beta
    noise = np.sqrt(s_mean + (0.1 * s_mean) ** 2)
    s_obs = np.maximum(s_mean + noise * rng.standard_normal(s_mean.shape), 0.0)
    f_mu = np.clip(
        0.1 + 0.45 * dx[:, None] / 1000.0 + 0.1 * rr / 2000.0 + 0.03 * ln_a[:, None], 0.05, 0.9
    )
    geo = rr**2 / (2.0 * C_M_PER_NS * r_max[:, None])  # ns, front curvature delay
    return xmax, s_obs, f_mu, geo, t_arr


def _block(rng: np.random.Generator, n: int, pos: np.ndarray):
    """Signal (n, 9, 9, 80), time (n, 9, 9, 1), both float32, and Xmax (n,) float32."""
    keep = []
    filled = 0
    while filled < n:
        cand = _candidates(rng, n - filled + 32, pos)
        ok = np.flatnonzero(np.sum(cand[1] >= TRIGGER_VEM, axis=1) >= 3)[: n - filled]
        keep.append(tuple(a[ok] for a in cand))
        filled += ok.size
    xmax, s_obs, f_mu, geo, t_arr = (np.concatenate(parts) for parts in zip(*keep, strict=True))

    # Traces only for triggered stations (about a fifth of the array).
    hit = s_obs >= TRIGGER_VEM
    ev, st = np.nonzero(hit)
    s_hit, f_hit, g_hit = s_obs[ev, st], f_mu[ev, st], geo[ev, st]
    edges = (np.arange(N_BINS + 1) * BIN_NS).astype(np.float32)
    theta_em = (np.minimum(20.0 + 0.2 * g_hit, 600.0) / 2.0).astype(np.float32)[:, None]
    em = np.diff(_erlang2_cdf(edges, theta_em), axis=-1)
    tau_mu = (60.0 + 0.05 * g_hit).astype(np.float32)[:, None]
    mu = np.diff(-np.exp(-edges / tau_mu), axis=-1)
    f = f_hit.astype(np.float32)[:, None]
    pulse = s_hit.astype(np.float32)[:, None] * (f * mu + (1.0 - f) * em)
    pulse += np.sqrt(0.5 * pulse) * rng.standard_normal(pulse.shape, dtype=np.float32)
    pulse += 0.02 * rng.standard_normal(pulse.shape, dtype=np.float32)
    trace = np.full((n, GRID * GRID, N_BINS), -1.0, dtype=np.float32)
    trace[ev, st] = np.maximum(pulse, 0.0)

    t0 = t_arr + 10.0 * rng.standard_normal(t_arr.shape)
    first = np.min(np.where(hit, t0, np.inf), axis=1, keepdims=True)
    time = np.where(hit, (t0 - first) / 1000.0, -1.0)
    shape = (n, GRID, GRID)
    return (
        trace.reshape(*shape, N_BINS),
        time.reshape(*shape, 1).astype(np.float32),
        xmax.astype(np.float32),
    )


def make_airshower(
    out_dir: str | os.PathLike[str],
    n_train: int = 7_000,
    n_test: int = 3_000,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Write ``4_airshower_100k_regression.npz`` in the pd4ml layout.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_train, n_test
        Showers per split (the original: 100k, 70% / 30%).
    seed
        Seed; equal seeds and counts give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The ``.npz`` with, per split, ``X_{split}_0`` (n, 9, 9, 80) float32
        traces in VEM, ``X_{split}_1`` (n, 9, 9, 1) float32 arrival times in
        microseconds (both -1 for stations that did not trigger),
        ``X_{split}_2`` (81, 3) float32 station positions in metres (the same
        array in both splits) and ``y_{split}`` (n,) float32 Xmax in g/cm^2.
    """
    counts = {
        "train": c.check_count("n_train", n_train, owner="fl.synthetic.make_airshower"),
        "test": c.check_count("n_test", n_test, owner="fl.synthetic.make_airshower"),
    }
    seed = c.check_seed(seed, owner="fl.synthetic.make_airshower")
    path = c.out_directory(out_dir) / "4_airshower_100k_regression.npz"
    pos = station_positions()
    bar = c.progress(sum(counts.values()), "Airshower", progress)
    with bar, c.atomic_output(path) as tmp, c.NpzWriter(tmp) as npz:
        for split, n in counts.items():
            time = np.empty((n, GRID, GRID, 1), dtype=np.float32)
            y = np.empty(n, dtype=np.float32)
            with npz.stream(f"X_{split}_0", (n, GRID, GRID, N_BINS), np.float32) as put:
                for i, start, stop in c.iter_blocks(n, _BLOCK):
                    rng = c.block_rng(seed, _TAG, split, i)
                    signal, time[start:stop], y[start:stop] = _block(rng, stop - start, pos)
                    put(signal)
                    bar.update(stop - start)
            npz.write(f"X_{split}_1", time)
            npz.write(f"X_{split}_2", pos)
            npz.write(f"y_{split}", y)
    return path
