"""Command line: ``python -m converters NAME SRC DST [options]``.

``python -m converters inspect FILE`` is not a converter: it describes a source
file and prints a starter spec for ``generic`` (:mod:`converters.inspection`).

Exit status: 0 converted; 1 the conversion failed (bad input, verification,
I/O error); 2 refused (usage error, an existing store without
``--overwrite``, a converter that is not installed); 130 interrupted.  Errors
print one ``error: ...`` line, never a traceback.

``generic``, ``ahcal`` and ``premix`` are converters of their own modules;
their names are dispatched lazily to ``converters.<module>:main(argv)`` with
the rest of the command line.

Streams: the one-line ``wrote ...`` summary goes to stdout; progress bars
(only when stderr is a terminal), log messages (``logging``, configured here
for the command line only) and ``error:`` lines go to stderr -- the same for
every converter.

This module is also the one registry of converter names: :func:`registry`
serves the command line and :func:`converters.convert` alike.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastload._messages import closest
from fastload.errors import ConfigError, FastloadError, StoreExistsError

from ._common import ConversionReport, ConvertOptions

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130

#: converters living in their own modules: CLI name -> (module relative to this package,
#: what it converts); each has ``main(argv)`` and a Python function (see :func:`registry`)
EXTERNAL: dict[str, tuple[str, str]] = {
    "generic": (".generic", "any ROOT/HDF5/Parquet/npy source described by a spec file"),
    "ahcal": (".ahcal", "CALICE AHCAL hit-level ROOT/npz files"),
    "premix": (".premix", "several stores premixed into one"),
}

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Command:
    """One built-in converter: help text, extra arguments and how to run it."""

    help: str
    src_help: str
    #: returns the report (a ``{store: report}`` mapping when it writes several stores)
    run: Callable[[argparse.Namespace, ConvertOptions], Any]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: the Python API: ``convert(src, dst, **options)``
    convert: Callable[..., Any] | None = None


def configure_logging(quiet: bool = False) -> None:
    """For a command line only (never called by library code): log lines on stderr.

    fastload's and the converters' INFO messages (e.g. why a conversion runs with Dask)
    are shown unless ``quiet``; other libraries stay at WARNING.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in ("fastload", __package__ or "converters"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)


def wants_quiet(argv: Sequence[str]) -> bool:
    return any(a in ("-q", "--quiet") for a in argv)


def _pd4ml(dataset: str) -> Command:
    from .pd4ml import LAYOUTS

    layout = LAYOUTS[dataset]

    def convert(src: PathLike, dst: PathLike, /, **options: Any) -> ConversionReport:
        from .pd4ml import convert_pd4ml

        return convert_pd4ml(dataset, src, dst, **options)

    def run(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
        return convert(args.src, args.dst, options=options)

    return Command(
        help=f"{dataset}: pd4ml release {layout.filename} (splits train, test)",
        src_help=f"{layout.filename}, or a directory holding it",
        run=run,
        convert=convert,
    )


def _convert_landscape(src: PathLike, dst: PathLike, /, **options: Any) -> ConversionReport:
    from .landscape import convert_landscape

    return convert_landscape(src, dst, **options)


def _convert_lcd(src: PathLike, dst: PathLike, /, **options: Any) -> ConversionReport:
    from .lcd import convert_lcd

    return convert_lcd(src, dst, **options)


def _convert_lariat(src: PathLike, dst: PathLike, /, **options: Any) -> Any:
    from .lariat import convert_lariat

    return convert_lariat(src, dst, **options)


def _lariat_arguments(parser: argparse.ArgumentParser) -> None:
    _split_arguments(parser)
    parser.add_argument(
        "--per-class",
        action="store_true",
        help="write DST/<class>.zarr, one store per class (default: one premixed store DST)",
    )
    parser.add_argument(
        "--no-3d", action="store_true", help="leave out the .3d.h5 deposits (field 'deposits')"
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        help="reader processes decoding the gzip HDF5 (default auto: min(4, cores) from 256 MiB "
        "of sources on; 0 reads in this process)",
    )


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text) if text != "0" else 0


def _run_lariat(args: argparse.Namespace, options: ConvertOptions) -> Any:
    return _convert_lariat(
        args.src,
        args.dst,
        per_class=args.per_class,
        with_3d=False if args.no_3d else "auto",
        workers=args.workers,
        split=args.split,
        split_seed=args.split_seed,
        options=options,
    )


def _convert_photons(src: PathLike, dst: PathLike, /, **options: Any) -> ConversionReport:
    from .photons import convert_photons

    return convert_photons(src, dst, **options)


def _convert_generic(spec: PathLike | None, dst: PathLike, /, **options: Any) -> str:
    from .generic import convert_spec_file

    return convert_spec_file(spec, dst, **options)


def _convert_ahcal(src: PathLike, dst: PathLike, /, **options: Any) -> str:
    from .ahcal import convert_ahcal

    return convert_ahcal(src, dst, **options)


def _convert_premix(sources: Any, dst: PathLike, /, **options: Any) -> str:
    from .premix import premix_paths

    return premix_paths(dst, sources, **options)


#: the Python functions of the converters in :data:`EXTERNAL`
_EXTERNAL_CONVERT: dict[str, Callable[..., Any]] = {
    "generic": _convert_generic,
    "ahcal": _convert_ahcal,
    "premix": _convert_premix,
}


def _split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        type=_fractions,
        default=None,
        metavar="TRAIN,VAL,TEST",
        help="fractions of the seeded split (default 0.8,0.1,0.1; a 0 drops that split)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split (default 0)")


def _landscape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", default="table", help="HDFStore key of the table (default 'table')"
    )
    parser.add_argument(
        "--with-truth", action="store_true", help="also store the top four-vector as 'truth'"
    )


def _photon_arguments(parser: argparse.ArgumentParser) -> None:
    _split_arguments(parser)
    parser.add_argument(
        "--group", default="30x30", help="HDF5 group with energy and layers (default '30x30')"
    )


def _run_landscape(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    return _convert_landscape(
        args.src, args.dst, key=args.key, with_truth=args.with_truth, options=options
    )


def _run_lcd(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    return _convert_lcd(
        args.src, args.dst, split=args.split, split_seed=args.split_seed, options=options
    )


def _run_photons(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    return _convert_photons(
        args.src,
        args.dst,
        group=args.group,
        split=args.split,
        split_seed=args.split_seed,
        options=options,
    )


def commands() -> dict[str, Command]:
    """The built-in converters by CLI name."""
    return {
        "toptagging": _pd4ml("TopTagging"),
        "toptagging-landscape": Command(
            "TopTagging: landscape release train.h5/val.h5/test.h5 (splits train, val, test)",
            "directory holding train.h5, val.h5 and test.h5",
            _run_landscape,
            _landscape_arguments,
            _convert_landscape,
        ),
        "spinodal": _pd4ml("Spinodal"),
        "eosl": _pd4ml("EOSL"),
        "airshower": _pd4ml("Airshower"),
        "belle": _pd4ml("Belle"),
        "lcd": Command(
            "LCD: directory of <P>Escan_<a>_<b>.h5 files, P in Ele, Gamma, Pi0, ChPi (seeded split)",
            "directory searched recursively for <P>Escan_<a>_<b>.h5",
            _run_lcd,
            _split_arguments,
            _convert_lcd,
        ),
        "lariat": Command(
            "LArIAT: directory of <class>_<i>.2d.h5 (+ .3d.h5) files, one premixed store or one "
            "per class (seeded split)",
            "directory searched recursively for <class>_<i>.2d.h5",
            _run_lariat,
            _lariat_arguments,
            _convert_lariat,
        ),
        "photons": Command(
            "PhotonShowers: HDF5 file(s) with group 30x30/{energy,layers} (seeded split)",
            "an HDF5 file or a directory of them",
            _run_photons,
            _photon_arguments,
            _convert_photons,
        ),
    }


_ALIASES = {"photon-showers": "photons", "landscape": "toptagging-landscape"}


def registry() -> dict[str, Callable[..., Any]]:
    """Every converter name of the command line (aliases included) -> its Python function."""
    table: dict[str, Callable[..., Any]] = {}
    for name, cmd in commands().items():
        assert cmd.convert is not None
        table[name] = cmd.convert
    table.update(_EXTERNAL_CONVERT)
    for alias, target in _ALIASES.items():
        table[alias] = table[target]
    return table


def lookup(name: str) -> Callable[..., Any]:
    """The Python function of converter ``name`` (case-insensitive); ConfigError if unknown."""
    table = registry()
    key = name.lower()
    if key not in table:
        raise ConfigError(
            f"unknown converter {name!r}{closest(key, list(table))}; known: {sorted(table)}"
        )
    return table[key]


def _fractions(text: str) -> dict[str, float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three numbers TRAIN,VAL,TEST, got {text!r}"
        ) from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers TRAIN,VAL,TEST, got {text!r}")
    return dict(zip(("train", "val", "test"), values, strict=True))


_UNITS = {
    "": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}


def parse_bytes(text: str) -> int:
    """``"4MiB"`` -> 4194304; plain integers are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match[2].lower() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 4194304, 4MiB or 8MB, got {text!r}"
        )
    value = int(float(match[1]) * _UNITS[match[2].lower()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _common_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("dst", help="store to write, e.g. datasets/TopTagging.zarr")
    common.add_argument(
        "--overwrite", action="store_true", help="replace an existing complete store"
    )
    common.add_argument(
        "--codec", choices=("lz4", "zstd"), default="lz4", help="Blosc codec (default lz4)"
    )
    common.add_argument(
        "--clevel",
        type=int,
        choices=range(10),
        default=5,
        metavar="0-9",
        help="compression level (default 5)",
    )
    common.add_argument(
        "--chunk-bytes",
        type=parse_bytes,
        default=None,
        help="uncompressed bytes per chunk, e.g. 4MiB (default: the store's, 4 MiB)",
    )
    common.add_argument(
        "--block-events",
        type=_positive_int,
        default=None,
        help="events read from the source per block (default: about 64 MiB)",
    )
    common.add_argument(
        "--allow-nonfinite", action="store_true", help="store NaN/inf instead of refusing them"
    )
    common.add_argument("--no-verify", action="store_true", help="skip the read-back verification")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m converters``."""
    external = "\n".join(
        f"  {name:<22}{what} (module {mod})" for name, (mod, what) in EXTERNAL.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m converters",
        description="Convert original physics datasets to fastload stores (see docs/converting.md).",
        epilog=f"converters in their own modules (arguments as documented there):\n{external}\n\n"
        "python -m converters inspect FILE: what a source file holds and a starter spec for "
        "generic (docs/byod.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="name", metavar="NAME", required=True)
    common = _common_arguments()
    for name, cmd in commands().items():
        aliases = [a for a, target in _ALIASES.items() if target == name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, aliases=aliases)
        p.add_argument("src", help=cmd.src_help)
        for action in common._actions:
            p._add_action(action)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
    return parser


def _options(args: argparse.Namespace) -> ConvertOptions:
    return ConvertOptions(
        overwrite=args.overwrite,
        codec=args.codec,
        clevel=args.clevel,
        chunk_bytes=args.chunk_bytes,
        block_events=args.block_events,
        allow_nonfinite=args.allow_nonfinite,
        verify=not args.no_verify,
        quiet=args.quiet,
    )


def _dispatch_external(name: str, argv: list[str]) -> int:
    relative, what = EXTERNAL[name]
    module_name = importlib.util.resolve_name(relative, __package__)
    try:
        module: Any = importlib.import_module(relative, __package__)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(
            f"error: converter {name!r} ({what}) is not available in this installation: "
            f"module {module_name} is missing",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return int(module.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter CLI; returns the exit status (see the module docstring).

    Called without ``argv`` (as the program) it configures logging for itself.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        configure_logging(wants_quiet(args_list))
    if args_list and args_list[0] == "inspect":  # not a converter: describes a source file
        from .inspection import main as inspect_main

        return inspect_main(args_list[1:])
    if args_list and args_list[0] in EXTERNAL:
        return _dispatch_external(args_list[0], args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    name = _ALIASES.get(args.name, args.name)
    try:
        options = _options(args)
        report = commands()[name].run(args, options)
    except StoreExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ImportError as exc:  # an optional package; the message names its extra
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (FastloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "interrupted: the destination was left unchanged (partial output removed)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        for one in report.values() if isinstance(report, dict) else [report]:
            print(one.summary())
    return EXIT_OK
