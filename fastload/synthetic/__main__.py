"""Command line: ``python -m fastload.synthetic NAME OUT_DIR [--events N] [--seed S] [--set K=V]``.

NAME is case-insensitive (``lariat`` = ``LArIAT``); ``--set KEY=VALUE`` (repeatable) passes a
keyword of the generator, e.g. ``--set ticks=512 --set classes=muon,electron`` for LArIAT: a
value with a comma becomes a tuple, an integer an int.

The files written go to stdout, one per line; the progress bar (only when stderr is a
terminal), log lines and ``error:`` lines go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import ConfigError, FastloadError
from . import GENERATORS, generate


def _value(text: str) -> Any:
    if "," in text:
        return tuple(_value(t) for t in text.split(",") if t)
    try:
        return int(text)
    except ValueError:
        return text


def _params(items: list[str]) -> dict[str, Any]:
    """``["ticks=512", "classes=a,b"]`` -> ``{"ticks": 512, "classes": ("a", "b")}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = _value(value.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    """Generate one synthetic dataset; print the files written, one per line."""
    parser = argparse.ArgumentParser(
        prog="python -m fastload.synthetic",
        description="Write a synthetic dataset in its original release's file layout.",
    )
    parser.add_argument(
        "name", metavar="NAME", help=f"dataset to generate, one of {sorted(GENERATORS)}"
    )
    parser.add_argument("out_dir", help="directory to write into (created if missing)")
    parser.add_argument(
        "--events",
        "-n",
        type=int,
        default=None,
        help="total number of events, split like the original (default: generator default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generator keyword, e.g. ticks=512 or classes=muon,electron (repeatable)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if argv is None:  # the program itself: configure logging (library code never does)
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
        logging.getLogger("fastload").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        paths = generate(
            args.name,
            args.out_dir,
            n=args.events,
            seed=args.seed,
            progress=not args.quiet and sys.stderr.isatty(),
            **_params(args.params),
        )
    except FastloadError as exc:
        parser.exit(2, f"error: {exc}\n")
    except TypeError as exc:  # a --set keyword the generator does not take
        parser.exit(2, f"error: {exc}\n")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
