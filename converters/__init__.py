"""Converters from original physics datasets to fastload stores.

Command line: ``python -m converters NAME SRC DST [options]`` (see
``docs/converting.md``).  Python::

    from converters import convert
    convert("toptagging", "downloads/1_top_tagging_2M.npz", "datasets/TopTagging.zarr")

Modules: :mod:`converters.pd4ml` (the five pd4ml ``.npz`` releases),
:mod:`converters.landscape` (Top Tagging ``train/val/test.h5``),
:mod:`converters.lcd` (per-particle LCD files), :mod:`converters.photons`
(photon showers), :mod:`converters._common` (shared block streaming,
validation and verification), :mod:`converters._cli`.
"""

from __future__ import annotations

import os
from typing import Any

from converters._common import ConversionReport, ConvertOptions

__all__ = ["ConversionReport", "ConvertOptions", "convert", "names"]


def names() -> list[str]:
    """CLI names of the built-in converters (``convert`` accepts these)."""
    from converters._cli import commands

    return sorted(commands())


def convert(
    name: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], /, **options: Any
) -> ConversionReport:
    """Convert dataset ``name`` (a CLI name, e.g. ``"toptagging"`` or ``"lcd"``) from ``src`` to ``dst``.

    Parameters
    ----------
    name
        One of :func:`names`.
    src, dst
        Original file or directory; the store to write.
    **options
        Converter-specific keywords (``split``, ``split_seed``, ``group``, ``key``,
        ``with_truth``) and any field of :class:`ConvertOptions`.

    Returns
    -------
    ConversionReport
    """
    from converters.landscape import convert_landscape
    from converters.lcd import convert_lcd
    from converters.pd4ml import CLI_NAMES, convert_pd4ml
    from converters.photons import convert_photons
    from fastload.errors import ConfigError

    key = name.lower()
    if key in CLI_NAMES:
        return convert_pd4ml(CLI_NAMES[key], src, dst, **options)
    table = {
        "toptagging-landscape": convert_landscape,
        "landscape": convert_landscape,
        "lcd": convert_lcd,
        "photons": convert_photons,
        "photon-showers": convert_photons,
    }
    if key not in table:
        raise ConfigError(f"unknown converter {name!r}; known: {names()}")
    return table[key](src, dst, **options)
