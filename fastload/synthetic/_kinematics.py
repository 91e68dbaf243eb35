"""Vectorised relativistic kinematics for the particle-level generators.

Four-vectors are arrays whose last axis is ``(E, px, py, pz)``; every function
works on any leading shape, so whole blocks of events are handled at once.
"""

from __future__ import annotations

import numpy as np


def isotropic(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit 3-vectors uniformly distributed on the sphere, shape ``shape + (3,)``."""
    cos_t = rng.uniform(-1.0, 1.0, shape)
    phi = rng.uniform(-np.pi, np.pi, shape)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)


def two_body_momentum(m: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Momentum of either daughter in the rest frame of a two-body decay ``m -> m1 m2``."""
    m, m1, m2 = np.broadcast_arrays(m, m1, m2)
    arg = (m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2)
    return np.sqrt(np.maximum(arg, 0.0)) / (2.0 * m)


def boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost four-vectors from a frame moving with velocity ``beta`` into the lab.

    ``beta`` has the leading shape of ``p4`` (or broadcasts to it) and a last
    axis of 3.
    """
    b2 = np.sum(beta**2, axis=-1, keepdims=True)
    b2 = np.minimum(b2, 1.0 - 1e-15)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    e = p4[..., :1]
    p = p4[..., 1:]
    bp = np.sum(beta * p, axis=-1, keepdims=True)
    # (gamma - 1) / beta^2 written as gamma^2 / (gamma + 1): finite at beta = 0.
    coef = gamma**2 / (gamma + 1.0) * bp + gamma * e
    return np.concatenate([gamma * (e + bp), p + coef * beta], axis=-1)


def velocity(p4: np.ndarray) -> np.ndarray:
    """Velocity 3-vector ``p / E`` of four-vectors."""
    return p4[..., 1:] / p4[..., :1]


def mass(p4: np.ndarray) -> np.ndarray:
    """Invariant mass (negative squared masses from rounding give 0)."""
    m2 = p4[..., 0] ** 2 - np.sum(p4[..., 1:] ** 2, axis=-1)
    return np.sqrt(np.maximum(m2, 0.0))


def phase_space(
    rng: np.random.Generator, parent_mass: np.ndarray, masses: np.ndarray
) -> np.ndarray:
    """Rest-frame four-momenta of an n-body decay, shape ``masses.shape + (4,)``.

    Momenta are random Gaussian 3-vectors made to sum to zero; one common scale
    is then solved (Newton, from above) so that the energies add up to the
    parent mass.  This conserves four-momentum exactly and is isotropic, which
    is all a plausible synthetic event needs; it is not flat phase space.
    Slots with mass ``nan`` are unused and come back as zero vectors.
    """
    used = ~np.isnan(masses)
    m = np.where(used, masses, 0.0)
    q = rng.standard_normal((*masses.shape, 3)) * used[..., None]
    n_used = np.maximum(used.sum(axis=-1, keepdims=True), 1)
    q -= (q.sum(axis=-2) / n_used)[..., None, :]
    q *= used[..., None]
    qn = np.linalg.norm(q, axis=-1)
    # Start where sum(s*|q|) = M: f(s) >= 0 there and f is convex and rising,
    # so Newton descends monotonically onto the root.
    s = parent_mass / np.maximum(qn.sum(axis=-1), 1e-12)
    for _ in range(40):
        e = np.sqrt(m**2 + (s[..., None] * qn) ** 2)
        f = e.sum(axis=-1) - parent_mass
        df = np.sum(s[..., None] * qn**2 / np.maximum(e, 1e-300), axis=-1)
        s = np.maximum(s - np.where(df > 0, f / np.maximum(df, 1e-300), 0.0), 0.0)
        if np.all(np.abs(f) < 1e-9 * np.maximum(parent_mass, 1.0)):
            break
    p = q * s[..., None, None]
    e = np.sqrt(m**2 + np.sum(p**2, axis=-1)) * used
    return np.concatenate([e[..., None], p], axis=-1)


def from_pt_eta_phi(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, m: float | np.ndarray = 0.0
) -> np.ndarray:
    """Four-vectors ``(E, px, py, pz)`` from transverse momentum, pseudorapidity and azimuth."""
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + np.asarray(m) ** 2)
    return np.stack([e, px, py, pz], axis=-1)


def pt_eta_phi(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transverse momentum, pseudorapidity and azimuth of four-vectors."""
    pt = np.hypot(p4[..., 1], p4[..., 2])
    eta = np.arcsinh(p4[..., 3] / np.maximum(pt, 1e-12))
    phi = np.arctan2(p4[..., 2], p4[..., 1])
    return pt, eta, phi


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Map angles into ``[-pi, pi)``."""
    return (phi + np.pi) % (2.0 * np.pi) - np.pi
