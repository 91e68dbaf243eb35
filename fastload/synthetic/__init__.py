"""Synthetic stand-ins for the physics datasets, written in their original on-disk layouts.

The real releases cannot be downloaded everywhere fastload is tested, so these
generators write files with the same names, keys, shapes, dtypes and file
splits as the originals, filled with physically plausible, learnable content
for any number of events.  Converters read them exactly as they would read the
real files.  ``docs/datasets.md`` describes every layout, the undocumented
details we had to choose, and what is synthetic about the content.

=====================  ============================================  =====================
name                   files                                         generator
=====================  ============================================  =====================
TopTagging             ``1_top_tagging_2M.npz`` (pd4ml)              make_toptagging_pd4ml
TopTaggingLandscape    ``train.h5``, ``val.h5``, ``test.h5``         make_toptagging_landscape
Spinodal               ``2_spinodal_29k.npz`` (pd4ml)                make_spinodal
EOSL                   ``3_EOSL_or_EOSQ_180k.npz`` (pd4ml)           make_eosl
Airshower              ``4_airshower_100k_regression.npz`` (pd4ml)   make_airshower
Belle                  ``6_belle_selective_400k.npz`` (pd4ml)        make_belle
LCD                    ``<P>Escan_<a>_<b>.h5`` per particle           make_lcd
PhotonShowers          ``photon_showers.h5`` (group ``30x30``)       make_photon_showers
AHCAL                  ``ahcal_<run>.root`` + ``ahcal_<run>.npz``    make_ahcal
LArIAT                 ``<class>_<i>.2d.h5`` + ``<class>_<i>.3d.h5``  make_lariat
=====================  ============================================  =====================

Every generator is deterministic in its seed and event counts (the ``.npz``
files are byte-identical; HDF5 and ROOT files hold identical arrays), streams
its events in blocks so files larger than memory can be written (the
``.npz`` writers keep only the small per-event arrays in memory; AHCAL keeps
one run's hits when it writes the ``.npz``), and writes each file under a
temporary name that is renamed only when the file is complete.

Command line: ``python -m fastload.synthetic NAME OUT_DIR [--events N] [--seed S]`` (NAME
case-insensitive; ``--set KEY=VALUE`` passes a generator keyword such as ``ticks=512``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import _validate
from .._messages import closest
from ..errors import ConfigError
from ._ahcal import make_ahcal
from ._airshower import make_airshower
from ._belle import PID_INDEX as BELLE_PID_INDEX  # PDG code -> Belle PID feature value
from ._belle import make_belle
from ._heavyion import make_eosl, make_spinodal
from ._jets import make_toptagging_landscape, make_toptagging_pd4ml
from ._lariat import make_lariat
from ._lcd import make_lcd
from ._photons import make_photon_showers

__all__ = [
    "BELLE_PID_INDEX",
    "GENERATORS",
    "canonical_name",
    "generate",
    "make_ahcal",
    "make_airshower",
    "make_belle",
    "make_eosl",
    "make_lariat",
    "make_lcd",
    "make_photon_showers",
    "make_spinodal",
    "make_toptagging_landscape",
    "make_toptagging_pd4ml",
]

GENERATORS: dict[str, Callable[..., Path | list[Path]]] = {
    "TopTagging": make_toptagging_pd4ml,
    "TopTaggingLandscape": make_toptagging_landscape,
    "Spinodal": make_spinodal,
    "EOSL": make_eosl,
    "Airshower": make_airshower,
    "Belle": make_belle,
    "LCD": make_lcd,
    "PhotonShowers": make_photon_showers,
    "AHCAL": make_ahcal,
    "LArIAT": make_lariat,
}
"""Generators keyed by dataset name; each takes ``out_dir`` first and ``seed=``."""


def _split(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Split ``n`` events by ``fractions``; the rounding remainder goes to the first split."""
    if n < len(fractions):
        raise ConfigError(f"n={n} is too small to fill the splits {list(fractions)}")
    counts = {k: max(1, int(n * f)) for k, f in fractions.items()}
    first = next(iter(counts))
    counts[first] += n - sum(counts.values())
    return {f"n_{k}": v for k, v in counts.items()}


def _lcd_params(n: int, kw: dict[str, Any]) -> dict[str, int]:
    particles = kw.get("particles", ("Ele", "Gamma", "Pi0", "ChPi"))
    per_particle = math.ceil(n / max(len(tuple(particles)), 1))
    events_per_file = kw.get("events_per_file", min(1000, per_particle))
    return {
        "events_per_file": events_per_file,
        "files_per_particle": math.ceil(per_particle / max(int(events_per_file), 1)),
    }


def _lariat_params(n: int, kw: dict[str, Any]) -> dict[str, int]:
    from ._lariat import CLASSES

    classes = kw.get("classes", CLASSES)
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    per_class = math.ceil(n / max(len(classes), 1))
    events_per_file = kw.get("events_per_file", min(500, per_class))
    return {
        "events_per_file": events_per_file,
        "files_per_class": math.ceil(per_class / max(int(events_per_file), 1)),
    }


# How ``n`` events are shared out, following each original's proportions.
_PARAMS_OF_N: dict[str, Callable[[int, dict[str, Any]], dict[str, int]]] = {
    "TopTagging": lambda n, kw: _split(n, {"train": 0.8, "test": 0.2}),
    "TopTaggingLandscape": lambda n, kw: _split(n, {"train": 0.6, "val": 0.2, "test": 0.2}),
    "Spinodal": lambda n, kw: _split(n, {"train": 0.7, "test": 0.3}),
    "EOSL": lambda n, kw: _split(n, {"train": 0.7, "test": 0.3}),
    "Airshower": lambda n, kw: _split(n, {"train": 0.7, "test": 0.3}),
    "Belle": lambda n, kw: _split(n, {"train": 0.7, "test": 0.3}),
    "LCD": _lcd_params,
    "PhotonShowers": lambda n, kw: {"n": n},
    "AHCAL": lambda n, kw: {"n_events": n},
    "LArIAT": _lariat_params,
}


def generate(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **kw: Any,
) -> list[Path]:
    """Generate dataset ``name`` into ``out_dir`` and return the files written.

    Parameters
    ----------
    name
        A key of :data:`GENERATORS`.
    out_dir
        Directory to write into (created if missing).
    n
        Total number of events, shared out in the original's proportions
        (train/test 70/30 for the pd4ml image and graph sets, 80/20 for pd4ml
        TopTagging, 60/20/20 for the landscape files; LCD divides ``n`` over
        its particle types in files of at most 1000 events, LArIAT over its classes in
        files of at most 500).  ``None`` uses
        the generator's default sizes.
    seed
        Seed of the generator.
    progress
        Show a progress bar.
    **kw
        Passed to the generator; explicit counts such as ``n_test=`` override
        those derived from ``n``.

    Returns
    -------
    list of Path
        The files written.
    """
    name = canonical_name(name)
    params: dict[str, Any] = {}
    if n is not None:
        n = _validate.integer(n, name="n", minimum=1, owner="fl.synthetic.generate")
        params = _PARAMS_OF_N[name](n, kw)
    params.update(kw)
    result = GENERATORS[name](out_dir, seed=seed, progress=progress, **params)
    return list(result) if isinstance(result, list) else [result]


def canonical_name(name: str) -> str:
    """The key of :data:`GENERATORS` that ``name`` names, case-insensitively; ConfigError if none."""
    for key in GENERATORS:
        if key.lower() == str(name).lower():
            return key
    raise ConfigError(
        f"unknown synthetic dataset {name!r}; known: {sorted(GENERATORS)}"
        f"{closest(name, list(GENERATORS))}"
    )
