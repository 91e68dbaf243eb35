"""Parametrised calorimeter showers shared by the LCD and photon-shower generators.

Longitudinal profiles are Gamma distributions in radiation lengths (EM,
Longo-Sestili with ``t_max = ln(E/E_c) + C``) or interaction lengths
(hadronic); lateral profiles are sums of 2D Gaussians, integrated exactly over
square cells (separable, via ``erf``).  Cell-by-cell sampling fluctuations
are Gamma distributed with variance proportional to the mean.
"""

from __future__ import annotations

import math

import numpy as np

_LGAMMA = np.frompyfunc(math.lgamma, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    sign = np.sign(x)
    ax = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * ax)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-ax * ax))


def gamma_profile(depth: np.ndarray, width: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of a Gamma(a, rate b) profile in layers centred at ``depth`` of ``width``.

    ``depth`` is measured from the shower start (negative: before it, giving 0);
    ``a`` and ``b`` broadcast against ``depth`` (usually shape (n, 1)).  The
    midpoint rule keeps leakage beyond the last layer out of the sum.
    """
    lg = _LGAMMA(np.asarray(a, dtype=object)).astype(np.float64)
    t = np.maximum(depth, 1e-9)
    log_pdf = a * np.log(b) + (a - 1.0) * np.log(t) - b * t - lg
    return np.where(depth > 0, np.exp(log_pdf) * width, 0.0)


def em_tmax(energy_gev: np.ndarray, critical_gev: float, photon: bool | np.ndarray) -> np.ndarray:
    """Depth of the EM shower maximum in X0 (Rossi: ln(E/Ec) - 0.5 e, + 0.5 gamma)."""
    return np.log(energy_gev / critical_gev) + np.where(photon, 0.5, -0.5)


def cell_fractions(
    centre: np.ndarray, sigma: np.ndarray, weight: np.ndarray, n_cells: int, cell_mm: float
) -> np.ndarray:
    """Energy fractions in an ``n_cells x n_cells`` grid of a sum of round 2D Gaussians.

    Parameters
    ----------
    centre
        (..., 2) shower axis position in mm relative to the grid centre.
    sigma, weight
        (..., K) widths in mm and weights of the Gaussians.
    n_cells, cell_mm
        Grid size and cell pitch.

    Returns
    -------
    np.ndarray
        (..., n_cells, n_cells); sums to less than 1 where the shower leaks
        out of the grid.
    """
    edges = (np.arange(n_cells + 1) - n_cells / 2.0) * cell_mm
    s = np.sqrt(2.0) * sigma[..., None]
    fx = 0.5 * np.diff(erf((edges - centre[..., None, 0:1]) / s), axis=-1)
    fy = 0.5 * np.diff(erf((edges - centre[..., None, 1:2]) / s), axis=-1)
    return np.einsum("...k,...ki,...kj->...ij", weight, fx, fy)


def sample_cells(
    rng: np.random.Generator, mean: np.ndarray, quantum: float, threshold: float
) -> np.ndarray:
    """Fluctuate cell energies (variance ``quantum * mean``) and zero those below threshold.

    A cell collects a Poisson number of particles, each leaving an exponential
    energy of mean ``quantum / 2`` (a compound Poisson sum: mean ``mean``,
    variance ``quantum * mean``).  Cells expecting many particles use the
    normal limit.  Most cells expect almost none: for those, the total count
    is drawn once and spread over the cells in proportion to their
    expectations (the multinomial that independent Poissons are, given their
    sum), which is exact and avoids millions of Poisson draws.
    """
    theta = quantum / 2.0
    flat_mean = np.maximum(mean, 0.0).ravel()
    lam = flat_mean / theta
    count = np.zeros(lam.size, dtype=np.int64)
    out = np.zeros(lam.size)

    large = np.flatnonzero(lam >= 60.0)
    out[large] = flat_mean[large] + np.sqrt(quantum * flat_mean[large]) * rng.standard_normal(
        large.size
    )
    middle = np.flatnonzero((lam >= 0.05) & (lam < 60.0))
    count[middle] = rng.poisson(lam[middle])
    sparse = np.flatnonzero((lam > 0.0) & (lam < 0.05))
    if sparse.size:
        cum = np.cumsum(lam[sparse])
        total = rng.poisson(cum[-1])
        picks = np.searchsorted(cum, rng.random(total) * cum[-1], side="right")
        np.add.at(count, sparse[np.minimum(picks, sparse.size - 1)], 1)

    filled = np.flatnonzero(count > 0)
    out[filled] = rng.gamma(count[filled], theta)
    out[out < threshold] = 0.0
    return out.reshape(mean.shape)
