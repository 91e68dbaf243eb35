"""The nine datasets: what ``load`` returns and where their originals may sit.

Each class only declares data (see :class:`fastload.datasets._base.Dataset`);
the converters behind ``originals`` are imported when a conversion runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from fastload.datasets._base import Dataset, Original

PD4ML_SOURCE = (
    "the pd4ml releases on Zenodo, https://doi.org/10.5281/zenodo.6772776 (or `pip install pd4ml`)"
)


def _pd4ml(dataset: str, filename: str) -> Original:
    def convert(src: Path, dst: Path) -> Any:
        from fastload.converters.pd4ml import convert_pd4ml

        return convert_pd4ml(dataset, src, dst)

    return Original(
        f"pd4ml release {filename}", (f"{{name}}/{filename}", filename), convert, os.path.isfile
    )


def _has_landscape(folder: str | os.PathLike[str]) -> bool:
    return all((Path(folder) / f).is_file() for f in ("train.h5", "val.h5", "test.h5"))


def _convert_landscape(src: Path, dst: Path) -> Any:
    from fastload.converters.landscape import convert_landscape

    return convert_landscape(src, dst)


def _has_lcd(folder: str | os.PathLike[str]) -> bool:
    return Path(folder).is_dir() and any(Path(folder).rglob("*Escan_*.h5"))


def _convert_lcd(src: Path, dst: Path) -> Any:
    from fastload.converters.lcd import convert_lcd

    return convert_lcd(src, dst)


def _has_lariat(folder: str | os.PathLike[str]) -> bool:
    return Path(folder).is_dir() and any(Path(folder).rglob("*_*.2d.h5"))


def _convert_lariat(src: Path, dst: Path) -> Any:
    from fastload.converters.lariat import convert_lariat

    return convert_lariat(src, dst)  # serially in this process (workers=0)


def _has_hdf5(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    if p.is_file():
        return True
    return p.is_dir() and any(f.suffix in (".h5", ".hdf5") for f in p.iterdir())


def _convert_photons(src: Path, dst: Path) -> Any:
    from fastload.converters.photons import convert_photons

    return convert_photons(src, dst)


def _has_ahcal(folder: str | os.PathLike[str]) -> bool:
    p = Path(folder)
    return p.is_dir() and (any(p.glob("ahcal_*.root")) or any(p.glob("ahcal_*.npz")))


def _convert_ahcal(src: Path, dst: Path) -> Any:
    """Run the AHCAL converter (module ``converters.ahcal``, imported only now), serially."""
    import importlib

    from fastload.errors import SourceError

    try:
        module: Any = importlib.import_module("fastload.converters.ahcal")
    except ModuleNotFoundError as exc:
        if exc.name != "fastload.converters.ahcal":
            raise
        raise SourceError(
            f"found AHCAL originals at {str(src)!r}, but this installation has no AHCAL converter "
            "(module fastload.converters.ahcal)"
        ) from exc
    return module.convert_ahcal(src, dst, workers=0, progress=sys.stderr.isatty())


class TopTagging(Dataset):
    """Top tagging: 14 TeV hadronic tops vs QCD jets, leading 200 constituents (E, px, py, pz).

    ``X = [X, ttv]`` with ``X`` (n, 200, 4) float32 and ``ttv`` (n,) int64
    (0 train, 1 test, 2 validation in the original release); ``y`` (n,) int64,
    1 = top.  From the pd4ml release the splits are ``train`` (original
    train + validation) and ``test``; from the landscape release
    ``train``, ``val`` and ``test``.
    """

    name = "TopTagging"
    inputs = ("X", "ttv")
    originals = (
        _pd4ml("TopTagging", "1_top_tagging_2M.npz"),
        Original(
            "landscape release train/val/test.h5",
            ("{name}", "."),
            _convert_landscape,
            _has_landscape,
        ),
    )
    obtain = (
        f"{PD4ML_SOURCE}; or the landscape release (train.h5, val.h5, test.h5) from "
        "https://doi.org/10.5281/zenodo.2603256 into <path>/TopTagging/"
    )
    synthetic = "TopTagging"


class Spinodal(Dataset):
    """Spinodal vs Maxwell QCD phase transition: 20x20 pion momentum histograms.

    ``X = [histogram]`` (n, 20, 20) float32; ``y`` (n,) int64, 1 = spinodal.
    Splits ``train``, ``test``.
    """

    name = "Spinodal"
    inputs = ("histogram",)
    originals = (_pd4ml("Spinodal", "2_spinodal_29k.npz"),)
    obtain = PD4ML_SOURCE
    synthetic = "Spinodal"


class EOSL(Dataset):
    """Equation of state (crossover EOSL vs first-order EOSQ): 24x24 pion spectra.

    ``X = [histogram]`` (n, 24, 24) float32; ``y`` (n,) int64, 1 = EOSQ.
    Splits ``train``, ``test``.
    """

    name = "EOSL"
    inputs = ("histogram",)
    originals = (_pd4ml("EOSL", "3_EOSL_or_EOSQ_180k.npz"),)
    obtain = PD4ML_SOURCE
    synthetic = "EOSL"


class Airshower(Dataset):
    """Cosmic-ray air showers on a 9x9 ground array; regression of the shower maximum Xmax.

    ``X = [signal, time, stations]``: ``signal`` (n, 9, 9, 80) and ``time``
    (n, 9, 9, 1) float32 (-1 = no signal) and the station positions (81, 3),
    a store constant that is the same for every event (as pd4ml returns it);
    ``y`` (n,) float32 Xmax.  Splits ``train``, ``test``.
    """

    name = "Airshower"
    inputs = ("signal", "time", "constant:stations")
    originals = (_pd4ml("Airshower", "4_airshower_100k_regression.npz"),)
    obtain = PD4ML_SOURCE
    synthetic = "Airshower"


class Belle(Dataset):
    """Belle II selective MC (SmartBKG): does a generated event pass the skim?

    ``X = [features, mother]``: ``features`` (n, 100, 9) float32 (prodTime,
    energy, x, y, z, px, py, pz, PID) and ``mother`` (n, 100) int32 (index of
    the mother particle, -1 padded); ``y`` (n,) int64, 1 = passes.
    Splits ``train``, ``test``.
    """

    name = "Belle"
    inputs = ("features", "mother")
    originals = (_pd4ml("Belle", "6_belle_selective_400k.npz"),)
    obtain = PD4ML_SOURCE
    synthetic = "Belle"


class LCD(Dataset):
    """LCD calorimeter images of single particles (Ele, Gamma, Pi0, ChPi).

    ``X = [ECAL, HCAL]``: (n, 25, 25, 25) and (n, 5, 5, 60) float32;
    ``y`` (n,) int64, the class index into ``["Ele", "Gamma", "Pi0", "ChPi"]``
    (taken from the file names).  ``energy``, ``target`` and ``origin`` are
    available through :meth:`load_fields`.  Seeded 80/10/10 split into
    ``train``, ``val``, ``test``.
    """

    name = "LCD"
    inputs = ("ECAL", "HCAL")
    originals = (
        Original("per-particle <P>Escan_<a>_<b>.h5 files", ("{name}",), _convert_lcd, _has_lcd),
    )
    obtain = (
        "the LCD calorimeter dataset (EleEscan, GammaEscan, Pi0Escan, ChPiEscan HDF5 files) from CERN "
        "OpenData, http://opendata.cern.ch/record/15012, into <path>/LCD/"
    )
    synthetic = "LCD"


class PhotonShowers(Dataset):
    """Photon calorimeter showers in 30 layers of 30x30 cells.

    ``X = [layers]`` (n, 30, 30, 30) float32; ``y = energy`` (n, 1) float32,
    the incident energy.  Seeded 80/10/10 split into ``train``, ``val``, ``test``.
    """

    name = "PhotonShowers"
    inputs = ("layers",)
    target = "energy"
    originals = (Original("photon shower HDF5 file(s)", ("{name}",), _convert_photons, _has_hdf5),)
    obtain = "the photon shower HDF5 file(s) (group 30x30 with energy and layers) into <path>/PhotonShowers/"
    synthetic = "PhotonShowers"


class AHCAL(Dataset):
    """CALICE AHCAL pion test-beam events, hit level (variable number of hits per event).

    Converted by ``converters.ahcal`` (its own module and schema).  ``X`` holds
    every field of role ``input`` in store order -- ragged hit fields come
    back as :class:`fastload.Ragged` (``values``, ``offsets``) -- and ``y``
    the first field of role ``label``.
    """

    name = "AHCAL"
    inputs = ()
    target = ""
    originals = (
        Original("AHCAL ahcal_<run>.root / .npz files", ("{name}",), _convert_ahcal, _has_ahcal),
    )
    obtain = (
        "the CALICE AHCAL data are not public; place ahcal_<run>.root (tree 'bigtree') or .npz files "
        "into <path>/AHCAL/"
    )
    synthetic = "AHCAL"


class LArIAT(Dataset):
    """LArIAT liquid-argon TPC single particles: two wire planes x 240 wires x 4096 ticks.

    ``X = [features, deposits]``: ``features`` (n, 2, 240, 4096) float16 raw ADC
    (induction, collection plane) and, when the ``.3d.h5`` files were there,
    ``deposits`` as :class:`fastload.Ragged` rows (x, y, z, electrons);
    ``y`` (n,) int64, the class index into the twelve classes of
    ``converters.lariat.CLASSES`` (from the file names).  ``energy``,
    ``track_length``, ``pdg``, the neutrino truth and ``origin`` are available
    through :meth:`load_fields`.  One premixed store with a seeded 80/10/10
    split into ``train``, ``val``, ``test``; one event per chunk.  An event is
    3.9 MB: load a split into memory only for small sets, else read it with
    ``fl.Loader`` and the transforms of :mod:`fastload.transforms` (docs/datasets.md).
    """

    name = "LArIAT"
    inputs = ()
    originals = (
        Original(
            "per-class <class>_<i>.2d.h5 (+ .3d.h5) files",
            ("{name}",),
            _convert_lariat,
            _has_lariat,
        ),
    )
    obtain = (
        "the LArIAT simulation files of LArTPCDNN (<class>_<i>.2d.h5 and .3d.h5, not public) "
        "into <path>/LArIAT/"
    )
    synthetic = "LArIAT"
