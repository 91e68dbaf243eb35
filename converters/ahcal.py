"""CALICE AHCAL hit-level test-beam data: the shipped spec run by the generic converter.

``python -m converters ahcal SRC DST [--format root|npz] [--workers N | --serial] ...``

The whole conversion is declared in ``converters/specs/ahcal.toml`` (ROOT
``bigtree`` ntuples) and ``converters/specs/ahcal-npz.toml`` (the ``.npz``
release): the stored fields are

* ``hits`` -- ragged, one float32 row per hit: ``(x, y, z, energy, time)``
  in mm, mm, mm, MIP, ns (:class:`fastload.Ragged`: values + offsets);
* ``n_hits`` -- int32 hit count;
* ``beam_energy`` -- float32 beam energy in GeV, the regression target.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastload.errors import ConfigError

from ._spec import ConversionSpec, load_spec
from .generic import add_run_arguments, convert, overrides_from_args, run_from_args

SPECS_DIR = Path(__file__).resolve().parent / "specs"
SPEC_FILES = {"root": "ahcal.toml", "npz": "ahcal-npz.toml"}
HIT_COLUMNS = ("x", "y", "z", "energy", "time")


def spec_path(fmt: str = "root") -> Path:
    """The shipped spec for the ``"root"`` or ``"npz"`` release."""
    if fmt not in SPEC_FILES:
        raise ConfigError(f"AHCAL format must be one of {tuple(SPEC_FILES)}, got {fmt!r}")
    return SPECS_DIR / SPEC_FILES[fmt]


def detect_format(src: Path) -> str:
    """``"root"`` or ``"npz"`` from a file's extension or from what a directory holds."""
    if src.is_file():
        return "npz" if src.suffix == ".npz" else "root"
    if any(src.glob("*.root")):
        return "root"
    if any(src.glob("*.npz")):
        return "npz"
    raise ConfigError(
        f"{str(src)!r} holds no AHCAL .root or .npz files; pass the directory of ahcal_*.root files"
    )


def load_ahcal_spec(
    src: str | Path, fmt: str | None = None, overrides: Sequence[str] = ()
) -> tuple[ConversionSpec, Path]:
    """The shipped spec for ``src`` (a directory or one file) and the directory its globs start from."""
    path = Path(src)
    if not path.exists():
        raise ConfigError(f"AHCAL source {str(path)!r} does not exist")
    fmt = fmt or detect_format(path)
    extra = [f'source.files=["{path.name}"]'] if path.is_file() else []
    spec = load_spec(spec_path(fmt), overrides=[*extra, *overrides])
    return spec, (path.parent if path.is_file() else path)


def convert_ahcal(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    /,
    *,
    format: str | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> str:
    """Convert AHCAL files (a directory or one file) with the shipped spec; returns the store path.

    ``options`` are those of :func:`converters.generic.convert`; the default converts
    serially in this process, ``workers="auto"`` uses Dask only for large inputs.
    """
    spec, source_dir = load_ahcal_spec(src, format, overrides)
    return convert(spec, dst, source_dir=source_dir, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m converters ahcal SRC DST [options]``; returns the exit status.

    Called without ``argv`` (as the program) it configures logging for itself.
    """
    if argv is None:
        from ._cli import configure_logging, wants_quiet

        configure_logging(wants_quiet(sys.argv[1:]))
    parser = argparse.ArgumentParser(
        prog="python -m converters ahcal",
        description="Convert CALICE AHCAL hit-level files (ROOT bigtree or .npz) with the shipped spec "
        f"({', '.join(SPEC_FILES.values())} in {SPECS_DIR}).",
    )
    parser.add_argument("src", help="directory of ahcal_*.root (or *.npz) files, or one file")
    parser.add_argument("dst", help="store to write, e.g. datasets/AHCAL.zarr")
    parser.add_argument(
        "--format", choices=tuple(SPEC_FILES), help="release format (default: from SRC)"
    )
    add_run_arguments(parser)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        spec, source_dir = load_ahcal_spec(args.src, args.format, overrides_from_args(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_from_args(spec, args.dst, str(source_dir), args)


if __name__ == "__main__":
    raise SystemExit(main())
