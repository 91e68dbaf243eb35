"""LArIAT liquid-argon TPC events: ``<class>_<i>.2d.h5`` wire images + ``<class>_<i>.3d.h5`` deposits.

Layout (as LArTPCDNN and its ROOT-to-HDF5 converter read and write it): one
particle class per file, the class is the file name's prefix before the first
``_``.

* ``<class>_<i>.2d.h5`` (h5py): ``features`` (n, 2, 240, 4096) float16 raw ADC
  of the two wire planes (0: induction, 1: collection) x 240 wires x 4096
  time ticks, gzip level 4, HDF5 chunks (1, 2, 240, 4096); per-event float32
  (n,) datasets ``Eng`` (kinetic energy of the primary, GeV), ``Track_length``
  (cm), ``pdg`` and the neutrino truth ``enu_truth``, ``lep_mom_truth``,
  ``mode_truth`` (-9999: single particles).  The later variant of the files
  (``names="later"``) calls ``features`` ``images`` and ``Eng`` ``Energy``.
* ``<class>_<i>.3d.h5`` (PyTables, zlib level 5): group ``images3D`` with the
  VLArrays ``C`` (per event an (n_i, 3) float32 array of x, y, z in cm of the
  charge deposits) and ``V`` ((n_i,) float32, ionisation electrons of each
  deposit), and the arrays ``shape`` = [240, 240, ticks] and ``unbinned`` = [1].

Geometry (ours; the release does not document it): the active volume is
x (drift) in [0, 47.5) cm, y in [-20, 20) cm, z (beam) in [0, 90) cm.  The
drift coordinate maps linearly onto the ticks (``tick = x / 47.5 * ticks``);
the induction plane's wires (pitch 0.4 cm) measure
``u = 0.5 z + 0.866 (y + 20)``, the collection plane's ``v = 0.5 z + 0.866 (20 - y)``.
The 2D images are computed from the stored 3D deposits by :func:`project`
(``V`` electrons x a gain, one wire per deposit, a unipolar shaping of the
collection signal and a bipolar one of the induction signal over 9 ticks,
rounded to whole ADC counts and clipped to [-200, 1700]), so the two files
agree exactly.

Physics (cheap but plausible; kinetic energy uniform in 0.1-2 GeV, primaries
entering at the front face, mostly along z):

* tracks: muons and charged pions at minimum ionisation (2.1 MeV/cm) with a
  Bragg rise if they stop, protons and kaons with their heavier
  residual-range dE/dx (so more charge per wire, shorter tracks); multiple
  scattering; pions and protons interact (exponential, 85 cm) into a star of
  short proton tracks; stopped mu+/pi+/K+ decay (Michel electron, muon),
  stopped pi-/K- and antiprotons give capture/annihilation stars;
* showers: electrons start showering at once (a 1-MIP trunk), photons after an
  exponential conversion gap (mean 18 cm) with a 2-MIP trunk, pi0 give two
  photons at their decay opening angle; the shower's depth (Gamma profile,
  X0 = 14 cm) and branching grow with ``ln E``.

Deposits: a track step of 0.05 cm, about 0.5 MeV per shower deposit
(roughly 1-10 thousand deposits per event; the real files hold 15-30 thousand).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import ConfigError
from . import _common as c

CLASSES = (
    "electron",
    "antielectron",
    "pion0",
    "photon",
    "pionPlus",
    "pionMinus",
    "proton",
    "antiproton",
    "muon",
    "antimuon",
    "kaonMinus",
    "kaonPlus",
)
PDG = {
    "electron": 11,
    "antielectron": -11,
    "pion0": 111,
    "photon": 22,
    "pionPlus": 211,
    "pionMinus": -211,
    "proton": 2212,
    "antiproton": -2212,
    "muon": 13,
    "antimuon": -13,
    "kaonMinus": -321,
    "kaonPlus": 321,
}
PLANES, WIRES, TICKS = 2, 240, 4096
EVENT_KEYS = ("Eng", "Track_length", "pdg", "enu_truth", "lep_mom_truth", "mode_truth")
NEUTRINO_KEYS = ("enu_truth", "lep_mom_truth", "mode_truth")
NO_NEUTRINO = -9999.0
#: dataset names of the original files and of the later variant
NAMES = {
    "original": {"features": "features", "Eng": "Eng"},
    "later": {"features": "images", "Eng": "Energy"},
}
ENERGY_RANGE_GEV = (0.1, 2.0)
ADC_RANGE = (-200.0, 1700.0)
DRIFT_CM, HALF_HEIGHT_CM, LENGTH_CM = 47.5, 20.0, 90.0
WIRE_PITCH_CM = 0.4

_MASS_MEV = {
    "mu": 105.66,
    "pi": 139.57,
    "p": 938.27,
    "K": 493.68,
    "e": 0.511,
    "pi0": 134.98,
}
_MIP = 2.1  # MeV/cm
_STEP = 0.05  # cm per track deposit
_SHOWER_QUANTUM = 0.5  # MeV per shower deposit
_ELECTRONS_PER_MEV = 1e6 / 23.6 * 0.7  # W = 23.6 eV, recombination 0.7
_GAIN = (0.0032, 0.008)  # ADC per electron: induction, collection
_X0_CM, _EC_MEV, _LAMBDA_CM = 14.0, 32.0, 85.0
_TAG = "lariat"
_KERNEL_T = np.arange(-4, 5, dtype=np.float64)
_COLLECTION_KERNEL = np.exp(-0.5 * (_KERNEL_T / 2.0) ** 2)
_COLLECTION_KERNEL /= _COLLECTION_KERNEL.sum()
_INDUCTION_KERNEL = -_KERNEL_T * np.exp(-0.5 * (_KERNEL_T / 2.0) ** 2)
_INDUCTION_KERNEL /= np.abs(_INDUCTION_KERNEL).sum() / 2.0


# ----------------------------------------------------------------- projection
def wire_coordinates(
    C: np.ndarray, ticks: int = TICKS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Induction wire, collection wire and tick (float) of deposits ``C`` (n, 3) in cm."""
    x, y, z = (C[:, k].astype(np.float64) for k in range(3))
    u = (0.5 * z + 0.866 * (y + HALF_HEIGHT_CM)) / WIRE_PITCH_CM
    v = (0.5 * z + 0.866 * (HALF_HEIGHT_CM - y)) / WIRE_PITCH_CM
    return u, v, x / DRIFT_CM * ticks


def project(C: np.ndarray, V: np.ndarray, ticks: int = TICKS) -> np.ndarray:
    """The (2, 240, ticks) float16 wire images of deposits ``C`` (n, 3) cm with ``V`` (n,) electrons.

    The synthetic 2D files hold exactly ``project`` of the 3D file's event.
    """
    u, v, t = wire_coordinates(C, ticks)
    tick = np.floor(t).astype(np.int64)
    out = np.zeros((PLANES, WIRES, ticks), dtype=np.float64)
    charge = V.astype(np.float64)
    for plane, (w, kernel) in enumerate(((u, _INDUCTION_KERNEL), (v, _COLLECTION_KERNEL))):
        wire = np.floor(w).astype(np.int64)
        inside = (wire >= 0) & (wire < WIRES) & (tick >= 0) & (tick < ticks)
        flat = wire[inside] * ticks + tick[inside]
        hist = np.bincount(flat, weights=charge[inside] * _GAIN[plane], minlength=WIRES * ticks)
        hist = hist.reshape(WIRES, ticks)
        image = out[plane]
        for k, weight in zip(_KERNEL_T.astype(int), kernel, strict=True):
            if k >= 0:
                image[:, k:] += weight * hist[:, : ticks - k]
            else:
                image[:, :k] += weight * hist[:, -k:]
    return np.clip(np.rint(out), *ADC_RANGE).astype(np.float16)


# --------------------------------------------------------------------- tracks
class _Stopping:
    """Residual-range dE/dx of a particle of mass ``m`` (Bragg-Kleeman scaled from protons, MIP floor)."""

    def __init__(self, mass: float) -> None:
        self.ratio = _MASS_MEV["p"] / mass
        r = np.geomspace(1e-3, 5e4, 4000)
        self.r = r
        dedx = self.dedx(r)
        self.energy = np.concatenate([[0.0], np.cumsum(0.5 * (dedx[1:] + dedx[:-1]) * np.diff(r))])
        self.energy += dedx[0] * r[0]

    def dedx(self, residual: np.ndarray) -> np.ndarray:
        return np.maximum(_MIP, 17.9 * np.maximum(residual * self.ratio, 1e-3) ** -0.435)

    def range_of(self, kinetic_mev: float) -> float:
        return float(np.interp(kinetic_mev, self.energy, self.r))


_STOPPING = {k: _Stopping(m) for k, m in _MASS_MEV.items() if k in ("mu", "pi", "p", "K")}


def _inside(p: np.ndarray) -> np.ndarray:
    return (
        (p[:, 0] >= 0)
        & (p[:, 0] < DRIFT_CM)
        & (np.abs(p[:, 1]) < HALF_HEIGHT_CM)
        & (p[:, 2] >= 0)
        & (p[:, 2] < LENGTH_CM)
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.standard_normal(3))


class _Event:
    """Deposits of one event, collected from every particle."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.points: list[np.ndarray] = []
        self.energy: list[np.ndarray] = []

    def add(self, points: np.ndarray, mev: np.ndarray) -> None:
        keep = _inside(points)
        self.points.append(points[keep])
        self.energy.append(mev[keep])

    # a charged track; returns its end point, whether it stopped, and its length inside
    def track(
        self,
        kind: str,
        start: np.ndarray,
        direction: np.ndarray,
        kinetic_mev: float,
        *,
        interacts: bool,
    ) -> tuple[np.ndarray, bool]:
        rng = self.rng
        stopping = _STOPPING[kind]
        full = stopping.range_of(kinetic_mev)
        length, stops = full, True
        if interacts:
            depth = rng.exponential(_LAMBDA_CM)
            if depth < full:
                length, stops = depth, False
        n = max(2, int(length / _STEP))
        scatter = 0.3 / np.sqrt(max(kinetic_mev, 5.0))  # rad per sqrt(cm), larger when slow
        kicks = rng.normal(0.0, scatter * np.sqrt(_STEP), (n, 3))
        dirs = _unit(direction[None, :] + np.cumsum(kicks, axis=0))
        points = start[None, :] + np.cumsum(dirs * _STEP, axis=0)
        residual = full - _STEP * np.arange(1, n + 1)
        mev = stopping.dedx(np.maximum(residual, _STEP)) * _STEP
        mev *= rng.gamma(6.0, 1.0 / 6.0, n)
        self.add(points, mev)
        end = points[-1]
        if not stops:  # a hadronic interaction: a star of short protons
            for _ in range(rng.integers(1, 4)):
                self.track(
                    "p", end, _random_direction(rng), rng.exponential(60.0) + 5.0, interacts=False
                )
            if rng.random() < 0.5 and kind == "pi":
                rest = float(np.interp(full - length, stopping.r, stopping.energy))
                self.track(
                    "pi",
                    end,
                    _unit(dirs[-1] + 0.5 * _random_direction(rng)),
                    0.4 * rest,
                    interacts=False,
                )
        return end, stops

    def michel(self, at: np.ndarray) -> None:
        self.shower(
            at, _random_direction(self.rng), self.rng.uniform(10.0, 50.0), gap=0.0, trunk_mips=1
        )

    def star(self, at: np.ndarray, n_tracks: int, kind: str, mean_mev: float) -> None:
        for _ in range(n_tracks):
            self.track(
                kind,
                at,
                _random_direction(self.rng),
                self.rng.exponential(mean_mev) + 5.0,
                interacts=False,
            )

    def shower(
        self, start: np.ndarray, direction: np.ndarray, mev: float, *, gap: float, trunk_mips: int
    ) -> None:
        rng = self.rng
        origin = start + direction * gap
        trunk = min(rng.exponential(3.0) + 1.0, mev / (_MIP * trunk_mips) / 2)
        n_trunk = max(1, int(trunk / _STEP))
        pts = origin[None, :] + direction[None, :] * (_STEP * np.arange(1, n_trunk + 1))[:, None]
        trunk_mev = trunk_mips * _MIP * _STEP * rng.gamma(6.0, 1.0 / 6.0, n_trunk)
        self.add(pts, trunk_mev)
        left = mev - trunk_mev.sum()
        n = int(left / _SHOWER_QUANTUM)
        if n <= 0:
            return
        shower_start = origin + direction * trunk
        tmax = max(np.log(mev / _EC_MEV) + (0.5 if trunk_mips == 2 else -0.5), 0.3)
        b = 0.5
        depth = rng.gamma(b * tmax + 1.0, 1.0 / b, n) * _X0_CM
        # branches: sub-showers along rays at small angles to the axis
        n_branch = int(3 + 4 * np.log1p(mev / 100.0))
        theta = np.abs(rng.normal(0.0, 0.12, n_branch)) + 0.02
        phi = rng.uniform(0.0, 2 * np.pi, n_branch)
        which = rng.integers(0, n_branch, n)
        e1 = _unit(np.cross(direction, [0.0, 1.0, 0.0]) + 1e-9)
        e2 = np.cross(direction, e1)
        lateral = depth * np.tan(theta[which])
        offset = lateral[:, None] * (
            np.cos(phi[which])[:, None] * e1[None, :] + np.sin(phi[which])[:, None] * e2[None, :]
        )
        offset += rng.normal(0.0, 0.3, (n, 3))
        pts = shower_start[None, :] + depth[:, None] * direction[None, :] + offset
        self.add(pts, np.full(n, left / n) * rng.gamma(4.0, 0.25, n))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        C = np.concatenate(self.points).astype(np.float32)
        V = (np.concatenate(self.energy) * _ELECTRONS_PER_MEV).astype(np.float32)
        return C, V


def _photon_gap(rng: np.random.Generator) -> float:
    return float(rng.exponential(9.0 / 7.0 * _X0_CM))


def _event(rng: np.random.Generator, cls: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Deposits ``C`` (n, 3) cm, ``V`` (n,) electrons and the kinetic energy (GeV) of one event."""
    energy = rng.uniform(*ENERGY_RANGE_GEV)
    mev = energy * 1000.0
    ev = _Event(rng)
    start = np.array([rng.uniform(12.0, 36.0), rng.uniform(-8.0, 8.0), rng.uniform(0.0, 2.0)])
    direction = _unit(np.array([rng.normal(0.0, 0.12), rng.normal(0.0, 0.12), 1.0]))
    if cls in ("electron", "antielectron"):
        ev.shower(start, direction, mev, gap=0.0, trunk_mips=1)
    elif cls == "photon":
        ev.shower(start, direction, mev, gap=_photon_gap(rng), trunk_mips=2)
    elif cls == "pion0":
        total = mev + _MASS_MEV["pi0"]
        z = np.clip(rng.uniform(), 0.05, 0.95)
        e1, e2 = z * total, (1 - z) * total
        opening = np.arccos(np.clip(1.0 - _MASS_MEV["pi0"] ** 2 / (2.0 * e1 * e2), -1.0, 1.0))
        normal = _unit(np.cross(direction, _random_direction(rng)))
        for e, angle in ((e1, (1 - z) * opening), (e2, -z * opening)):
            d = _unit(direction * np.cos(angle) + normal * np.sin(angle))
            ev.shower(start, d, e, gap=_photon_gap(rng), trunk_mips=2)
    elif cls in ("muon", "antimuon"):
        end, stopped = ev.track("mu", start, direction, mev, interacts=False)
        if stopped and (cls == "antimuon" or rng.random() < 0.25):
            ev.michel(end)
    elif cls in ("pionPlus", "pionMinus"):
        end, stopped = ev.track("pi", start, direction, mev, interacts=True)
        if stopped and cls == "pionPlus":
            mu_end, _ = ev.track("mu", end, _random_direction(rng), 4.1, interacts=False)
            ev.michel(mu_end)
        elif stopped:
            ev.star(end, int(rng.integers(1, 4)), "p", 30.0)
    elif cls in ("proton", "antiproton"):
        end, stopped = ev.track("p", start, direction, mev, interacts=True)
        if stopped and cls == "antiproton":
            ev.star(end, int(rng.integers(2, 5)), "pi", 250.0)
            ev.shower(
                end,
                _random_direction(rng),
                rng.uniform(100.0, 500.0),
                gap=_photon_gap(rng),
                trunk_mips=2,
            )
    elif cls in ("kaonPlus", "kaonMinus"):
        end, stopped = ev.track("K", start, direction, mev, interacts=True)
        if stopped and cls == "kaonPlus":
            mu_end, mu_stopped = ev.track("mu", end, _random_direction(rng), 152.0, interacts=False)
            if mu_stopped:
                ev.michel(mu_end)
        elif stopped:
            ev.star(end, int(rng.integers(1, 4)), "p", 40.0)
    else:  # pragma: no cover - validated by the caller
        raise AssertionError(cls)
    C, V = ev.arrays()
    if len(C) == 0:  # everything left the volume: keep one tiny deposit at the entry point
        C, V = start[None, :].astype(np.float32), np.ones(1, dtype=np.float32)
    return C, V, energy


def lariat_filename(cls: str, index: int, kind: str) -> str:
    """``<class>_<index>.<kind>.h5`` with ``kind`` ``"2d"`` or ``"3d"``."""
    return f"{cls}_{index}.{kind}.h5"


def make_lariat(
    out_dir: str | os.PathLike[str],
    events_per_file: int = 500,
    files_per_class: int = 1,
    classes: Sequence[str] = CLASSES,
    ticks: int = TICKS,
    seed: int = 0,
    *,
    names: str = "original",
    with_3d: bool = True,
    progress: bool = False,
) -> list[Path]:
    """Write LArIAT files ``<class>_<i>.2d.h5`` (and ``<class>_<i>.3d.h5``), one class per file.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    events_per_file
        Events in each file (the release has about 500; one event is 3.9 MB as float16
        before compression).
    files_per_class
        Files per class, numbered from 0.
    classes
        A selection of :data:`CLASSES` (the class is the file name's prefix).
    ticks
        Time ticks per wire (4096 in the release; fewer for small test data).
    seed
        Seed; equal seeds give equal arrays.
    names
        ``"original"`` (``features``, ``Eng``) or ``"later"`` (``images``, ``Energy``).
    with_3d
        Also write the ``.3d.h5`` deposit files (needs PyTables).
    progress
        Show a progress bar.

    Returns
    -------
    list of Path
        The files written, per class and index the 2D file and then the 3D one.
    """
    owner = "fl.synthetic.make_lariat"
    events_per_file = c.check_count("events_per_file", events_per_file, owner=owner)
    files_per_class = c.check_count("files_per_class", files_per_class, owner=owner)
    ticks = c.check_count("ticks", ticks, minimum=16, owner=owner)
    seed = c.check_seed(seed, owner=owner)
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    unknown = [k for k in classes if k not in CLASSES]
    if unknown or not classes:
        raise ConfigError(f"classes must be a non-empty selection of {CLASSES}, got {classes!r}")
    if names not in NAMES:
        raise ConfigError(f"names must be one of {sorted(NAMES)}, got {names!r}")
    if with_3d:
        c.require("tables", "pandas")
    key = NAMES[names]
    out = c.out_directory(out_dir)
    paths: list[Path] = []
    with c.progress(len(classes) * files_per_class * events_per_file, "LArIAT", progress) as bar:
        for cls in classes:
            for f in range(files_per_class):
                path2 = out / lariat_filename(cls, f, "2d")
                path3 = out / lariat_filename(cls, f, "3d") if with_3d else None
                with contextlib.ExitStack() as stack:
                    tmp2 = stack.enter_context(c.atomic_output(path2))
                    tmp3 = stack.enter_context(c.atomic_output(path3)) if path3 else None
                    _write_file(tmp2, tmp3, cls, f, events_per_file, ticks, seed, key, bar)
                paths += [path2] if path3 is None else [path2, path3]
    return paths


def _write_file(
    path2: Path,
    path3: Path | None,
    cls: str,
    index: int,
    n: int,
    ticks: int,
    seed: int,
    key: dict[str, str],
    bar: object,
) -> None:
    """Write one 2D file (and its 3D twin) of ``n`` events of class ``cls``."""
    with contextlib.ExitStack() as stack:
        h5 = stack.enter_context(h5py.File(path2, "w"))
        images = h5.create_dataset(
            key["features"],
            (n, PLANES, WIRES, ticks),
            dtype="f2",
            chunks=(1, PLANES, WIRES, ticks),
            compression="gzip",
            compression_opts=4,
        )
        vc = vv = None
        if path3 is not None:
            tables = c.require("tables", "pandas")
            t3 = stack.enter_context(tables.open_file(str(path3), "w"))
            filters = tables.Filters(complevel=5, complib="zlib")
            group = t3.create_group("/", "images3D")
            atom = tables.Float32Atom(shape=(3,))
            vc = t3.create_vlarray(group, "C", atom, filters=filters)
            vv = t3.create_vlarray(group, "V", tables.Float32Atom(), filters=filters)
            t3.create_array(group, "shape", np.array([WIRES, WIRES, ticks], dtype=np.int64))
            t3.create_array(group, "unbinned", np.array([1], dtype=np.int64))
        per_event = {k: np.full(n, NO_NEUTRINO, dtype=np.float32) for k in EVENT_KEYS}
        for i in range(n):
            rng = c.block_rng(seed, _TAG, f"{cls}/{index}", i)
            C, V, energy = _event(rng, cls)
            images[i] = project(C, V, ticks)
            per_event["Eng"][i] = energy
            per_event["Track_length"][i] = np.linalg.norm(C - C[:1], axis=1).max()
            per_event["pdg"][i] = PDG[cls]
            if vc is not None and vv is not None:
                vc.append(C)
                vv.append(V)
            bar.update(1)  # type: ignore[attr-defined]
        for k, values in per_event.items():
            h5.create_dataset(key.get(k, k), data=values)
