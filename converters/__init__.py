"""Converters from original physics datasets to fastload stores.

Command line: ``python -m converters NAME SRC DST [options]`` (see
``docs/converting.md``).  Python::

    from converters import convert
    convert("toptagging", "downloads/1_top_tagging_2M.npz", "datasets/TopTagging.zarr")

Modules: :mod:`converters.pd4ml` (the five pd4ml ``.npz`` releases),
:mod:`converters.landscape` (Top Tagging ``train/val/test.h5``),
:mod:`converters.lcd` (per-particle LCD files), :mod:`converters.photons`
(photon showers), :mod:`converters.generic` (spec-driven conversion of ROOT,
HDF5, Parquet, npy/npz sources), :mod:`converters.inspection` (``python -m
converters inspect FILE``: what a source holds and a starter spec),
:mod:`converters._common` (shared block streaming, validation and verification),
:mod:`converters._cli`.
"""

from __future__ import annotations

import os
from typing import Any

from ._common import ConversionReport, ConvertOptions

__all__ = ["ConversionReport", "ConvertOptions", "convert", "names"]


def names() -> list[str]:
    """Every converter name of ``python -m converters`` (``convert`` accepts each, and aliases)."""
    from ._cli import EXTERNAL, commands

    return sorted([*commands(), *EXTERNAL])


def convert(name: str, src: Any, dst: str | os.PathLike[str], /, **options: Any) -> Any:
    """Convert with converter ``name`` -- any name of ``python -m converters`` -- from ``src`` to ``dst``.

    Parameters
    ----------
    name
        One of :func:`names` (or an alias such as ``"landscape"``), case-insensitive.
    src
        Original file or directory; for ``"generic"`` the spec file (or ``None`` with
        ``overrides``); for ``"premix"`` the class stores, ``{name: path}`` or
        ``["NAME=PATH", ...]``.
    dst
        The store to write.
    **options
        The converter's keywords: for the dataset converters any field of
        :class:`ConvertOptions` plus ``split``, ``split_seed``, ``group``, ``key``,
        ``with_truth``; for ``"generic"``/``"ahcal"`` those of
        :func:`converters.generic.convert` plus ``overrides`` (and ``format`` for ahcal);
        for ``"premix"`` those of :func:`converters.premix.premix`.

    Returns
    -------
    ConversionReport
        For the dataset converters; ``generic``, ``ahcal`` and ``premix`` return the store path.

    Raises
    ------
    fastload.errors.ConfigError
        ``name`` is not a converter (the message lists the known names).
    """
    from ._cli import lookup

    return lookup(name)(src, dst, **options)
