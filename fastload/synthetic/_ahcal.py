"""CALICE AHCAL pion test-beam events: a ROOT ``bigtree`` and the same hits as ``.npz``.

There is no public release, so the layout is ours, modelled on the CALICE
``bigtree`` ntuples: one entry per event with ``runNumber``, ``eventNumber``
(int32), ``beamEnergy`` (float32, GeV), the hit counter ``ahc_nHits`` (int32)
and jagged per-hit branches ``ahc_hitI``, ``ahc_hitJ``, ``ahc_hitK`` (int32,
1-based cell column, row and layer), ``ahc_hitEnergy`` (float32, MIP),
``ahc_hitTime`` (float32, ns) and ``ahc_hitX``, ``ahc_hitY``, ``ahc_hitZ``
(float32, mm, cell centres).  Positions are three jagged branches, not one
jagged (n, 3) branch, because that is what the ntuples use and what uproot
writes natively.  The ``.npz`` twin stores the hits flat with
``offsets`` (n+1,) int64: event ``e`` owns hits ``offsets[e]:offsets[e+1]``.

Physics model: the AHCAL technological prototype -- 38 layers (pitch
26.1 mm, ~0.11 interaction lengths each) of 24 x 24 scintillator tiles of
30 mm.  Pions of 10-80 GeV travel as a MIP (one ~1 MIP hit per layer) to an
exponential first interaction, then shower: deposits spread longitudinally
with a Gamma profile in interaction lengths that deepens with ``ln E`` and
laterally as a compact electromagnetic core (fraction growing with energy)
plus a wide hadronic halo, some of it delayed (neutrons).  Deposits are summed
per tile and tiles below half a MIP dropped, so the hit count and the summed
energy (~42 MIP per GeV for electromagnetic energy, less for hadronic) grow
with the beam energy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import _common as c

TREE = "bigtree"
BEAM_ENERGIES_GEV = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
N_LAYERS = 38
N_CELLS = 24
CELL_MM = 30.0
LAYER_PITCH_MM = 26.1
FORMATS = ("root", "npz")
_LAMBDA_PER_LAYER = 0.11
_MIP_PER_GEV = 42.0
_THRESHOLD_MIP = 0.5
_C_MM_PER_NS = 299.792458
_BLOCK = 2_000
_TAG = "ahcal"
_HIT_FIELDS = ("I", "J", "K", "Energy", "Time", "X", "Y", "Z")
_NPZ_HIT_KEYS = {
    "I": "hit_i",
    "J": "hit_j",
    "K": "hit_k",
    "Energy": "hit_energy",
    "Time": "hit_time",
    "X": "hit_x",
    "Y": "hit_y",
    "Z": "hit_z",
}


def file_energies(index: int, n_files: int) -> tuple[float, ...]:
    """Beam energies present in file ``index`` of ``n_files``.

    Energies are dealt round-robin: one file holds all eight, eight files hold
    one each, more files repeat the cycle.
    """
    f = min(n_files, len(BEAM_ENERGIES_GEV))
    return tuple(e for j, e in enumerate(BEAM_ENERGIES_GEV) if j % f == index % f)


def _deposits(rng: np.random.Generator, beam: np.ndarray):
    """Flat raw deposits: tile key (event, layer, column, row), energy (MIP), time (ns).

    Millions of deposits per block: draws are float32 and each random number
    is drawn only for the deposits that need it.
    """
    f4 = np.float32
    n = beam.size
    energy = beam * (1.0 + 0.01 * rng.standard_normal(n))
    start = rng.exponential(1.0, n) / _LAMBDA_PER_LAYER  # first interaction, in layers
    axis = rng.normal(0.0, 10.0, (n, 2)).astype(f4)  # beam spot, mm

    # MIP track up to the interaction: one deposit per layer on the beam axis
    n_mip = np.minimum(np.floor(start).astype(np.int64), N_LAYERS)
    ev_m = np.repeat(np.arange(n), n_mip)
    layer_m = np.arange(ev_m.size) - np.repeat(np.cumsum(n_mip) - n_mip, n_mip)
    e_m = rng.standard_gamma(6.0, ev_m.size, dtype=f4) / f4(6.0)
    t_m = f4(0.5) * rng.standard_normal(ev_m.size, dtype=f4)

    # shower: deposit count and visible energy grow with the beam energy
    f_em = np.clip(1.0 - energy ** (0.82 - 1.0) + 0.08 * rng.standard_normal(n), 0.02, 0.95)
    visible = _MIP_PER_GEV * energy * (f_em + 0.65 * (1.0 - f_em))
    n_dep = rng.poisson(50.0 * energy**0.8) * (start < N_LAYERS)
    ev_s = np.repeat(np.arange(n), n_dep)
    m = ev_s.size
    core = rng.random(m, dtype=f4) < f_em[ev_s]
    halo = ~core
    n_core = int(core.sum())
    # compact EM core; hadronic halo deeper (mean ~ (2 + 0.3 ln E) / 1.2 lambda) and wider
    depth = np.empty(m, dtype=f4)
    depth[core] = f4(0.3) * rng.standard_gamma(2.0, n_core, dtype=f4)
    halo_mean = ((2.0 + 0.3 * np.log(energy)) / 1.2).astype(f4)[ev_s[halo]]
    depth[halo] = halo_mean / f4(3.0) * rng.standard_gamma(3.0, m - n_core, dtype=f4)
    layer_s = np.floor(start[ev_s] + depth / f4(_LAMBDA_PER_LAYER)).astype(np.int64)
    radius = rng.standard_gamma(2.0, m, dtype=f4) * np.where(core, f4(12.0), f4(60.0))
    angle = rng.random(m, dtype=f4) * f4(2.0 * np.pi)
    x_s = axis[ev_s, 0] + radius * np.cos(angle)
    y_s = axis[ev_s, 1] + radius * np.sin(angle)
    per_deposit = (visible / np.maximum(n_dep, 1)).astype(f4)
    e_s = rng.standard_gamma(1.5, m, dtype=f4) / f4(1.5) * per_deposit[ev_s]
    t_s = rng.standard_normal(m, dtype=f4)
    delayed = np.flatnonzero(halo & (rng.random(m, dtype=f4) < f4(0.1)))  # neutrons
    t_s[delayed] += f4(50.0) * rng.standard_exponential(delayed.size, dtype=f4)

    ev = np.concatenate([ev_m, ev_s])
    layer = np.concatenate([layer_m, layer_s])
    x = np.concatenate([axis[ev_m, 0], x_s])
    y = np.concatenate([axis[ev_m, 1], y_s])
    col = np.floor(x / f4(CELL_MM) + f4(N_CELLS / 2.0)).astype(np.int64)
    row = np.floor(y / f4(CELL_MM) + f4(N_CELLS / 2.0)).astype(np.int64)
    e = np.concatenate([e_m, e_s])
    t = np.concatenate([t_m, t_s]) + (layer * (LAYER_PITCH_MM / _C_MM_PER_NS)).astype(f4)
    inside = (layer < N_LAYERS) & (col >= 0) & (col < N_CELLS) & (row >= 0) & (row < N_CELLS)
    cells = N_LAYERS * N_CELLS * N_CELLS
    key = ev * cells + (layer * N_CELLS + col) * N_CELLS + row
    return key[inside], e[inside], t[inside]


def _block(rng: np.random.Generator, beam: np.ndarray):
    """Hits of a block of events: (n_hits (n,) int32, dict of flat hit arrays)."""
    n = beam.size
    key, e, t = _deposits(rng, beam)
    # sum deposits per tile; a tile's time is its earliest deposit
    order = np.argsort(key, kind="stable")
    key, e, t = key[order], e[order], t[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    energy = np.add.reduceat(e, starts)
    time = np.minimum.reduceat(t, starts)
    key = key[starts]
    keep = energy >= _THRESHOLD_MIP
    key, energy, time = key[keep], energy[keep], time[keep]

    event, cell = np.divmod(key, N_LAYERS * N_CELLS * N_CELLS)
    layer, rest = np.divmod(cell, N_CELLS * N_CELLS)
    col, row = np.divmod(rest, N_CELLS)
    hits = {
        "I": (col + 1).astype(np.int32),
        "J": (row + 1).astype(np.int32),
        "K": (layer + 1).astype(np.int32),
        "Energy": energy.astype(np.float32),
        "Time": time.astype(np.float32),
        "X": ((col - (N_CELLS - 1) / 2.0) * CELL_MM).astype(np.float32),
        "Y": ((row - (N_CELLS - 1) / 2.0) * CELL_MM).astype(np.float32),
        "Z": (layer * LAYER_PITCH_MM).astype(np.float32),
    }
    return np.bincount(event, minlength=n).astype(np.int32), hits


def _check_formats(formats) -> tuple[str, ...]:
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ConfigError(f"formats must be a non-empty selection of {FORMATS}, got {formats!r}")
    return tuple(f for f in FORMATS if f in formats)


def make_ahcal(
    out_dir: str | os.PathLike[str],
    n_events: int = 10_000,
    n_files: int = 1,
    seed: int = 0,
    formats: str | Sequence[str] = FORMATS,
    *,
    progress: bool = False,
) -> list[Path]:
    """Write AHCAL pion events as ``ahcal_<run>.root`` and/or ``ahcal_<run>.npz``.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing).
    n_events
        Events in all files together (split as evenly as possible).
    n_files
        Number of runs (files); beam energies are dealt over them by
        :func:`file_energies` -- eight files give one energy each.
    seed
        Seed; equal seeds give equal hits in both formats.
    formats
        ``"root"`` and/or ``"npz"``.
    progress
        Show a progress bar.

    Returns
    -------
    list of Path
        Per run, the ROOT file (tree ``bigtree``) then the ``.npz``.  The
        ``.npz`` holds ``hit_energy``, ``hit_time``, ``hit_x``, ``hit_y``,
        ``hit_z`` (float32), ``hit_i``, ``hit_j``, ``hit_k`` (int32),
        ``offsets`` (n+1,) int64, ``n_hits`` (n,) int32, ``beam_energy`` (n,)
        float32, ``run_number`` and ``event_number`` (n,) int32.
    """
    n_events = c.check_count("n_events", n_events, owner="fl.synthetic.make_ahcal")
    n_files = c.check_count("n_files", n_files, owner="fl.synthetic.make_ahcal")
    if n_events < n_files:
        raise ConfigError(f"n_events ({n_events}) must be at least n_files ({n_files})")
    formats = _check_formats(formats)
    seed = c.check_seed(seed, owner="fl.synthetic.make_ahcal")
    if "root" in formats:  # fail before generating anything
        c.require("uproot", "root")
        c.require("awkward", "root")
    out = c.out_directory(out_dir)
    paths: list[Path] = []
    with c.progress(n_events, "AHCAL", progress) as bar:
        for f in range(n_files):
            run = f + 1
            n = n_events // n_files + (f < n_events % n_files)
            blocks = _run_blocks(seed, run, n, file_energies(f, n_files), bar)
            if "npz" in formats:  # both writers need the hits: keep them
                blocks = list(blocks)
            if "root" in formats:
                paths.append(_write_root(out / f"ahcal_{run:03d}.root", blocks))
            if "npz" in formats:
                paths.append(_write_npz(out / f"ahcal_{run:03d}.npz", blocks))
    return paths


def _run_blocks(seed: int, run: int, n: int, energies: tuple[float, ...], bar):
    """Yield ``(event branches, n_hits, hits)`` for the blocks of one run."""
    choices = np.array(energies, dtype=np.float32)
    for i, start, stop in c.iter_blocks(n, _BLOCK):
        rng = c.block_rng(seed, _TAG, f"run{run}", i)
        beam = choices[rng.integers(0, choices.size, stop - start)]
        n_hits, hits = _block(rng, beam.astype(np.float64))
        events = {
            "runNumber": np.full(stop - start, run, np.int32),
            "eventNumber": np.arange(start, stop, dtype=np.int32),
            "beamEnergy": beam,
        }
        bar.update(stop - start)
        yield events, n_hits, hits


def _write_root(path: Path, blocks) -> Path:
    uproot = c.require("uproot", "root")
    ak = c.require("awkward", "root")
    with c.atomic_output(path) as tmp, uproot.recreate(tmp) as rootfile:
        tree = None
        for events, n_hits, hits in blocks:
            # one record of jagged hit fields -> branches ahc_hit*, counter ahc_nHits
            jagged = ak.zip({f"hit{k}": ak.unflatten(v, n_hits) for k, v in hits.items()})
            if tree is None:
                tree = rootfile.mktree(
                    TREE,
                    {**{k: v.dtype for k, v in events.items()}, "ahc": jagged.type},
                    title="AHCAL pion test beam (synthetic)",
                    counter_name=lambda counted: f"{counted}_nHits",
                    field_name=lambda outer, inner: f"{outer}_{inner}",
                )
            tree.extend({**events, "ahc": jagged})
    return path


def _write_npz(path: Path, blocks) -> Path:
    n_hits = np.concatenate([b[1] for b in blocks])
    offsets = np.zeros(n_hits.size + 1, dtype=np.int64)
    np.cumsum(n_hits, out=offsets[1:])
    total = int(offsets[-1])
    with c.atomic_output(path) as tmp, c.NpzWriter(tmp) as npz:
        for field in _HIT_FIELDS:
            dtype = blocks[0][2][field].dtype
            with npz.stream(_NPZ_HIT_KEYS[field], (total,), dtype) as put:
                for _, _, hits in blocks:
                    put(hits[field])
        npz.write("offsets", offsets)
        npz.write("n_hits", n_hits)
        npz.write("beam_energy", np.concatenate([b[0]["beamEnergy"] for b in blocks]))
        npz.write("run_number", np.concatenate([b[0]["runNumber"] for b in blocks]))
        npz.write("event_number", np.concatenate([b[0]["eventNumber"] for b in blocks]))
    return path
