"""Command line: ``python -m fastload.synthetic NAME OUT_DIR [--events N] [--seed S]``.

The files written go to stdout, one per line; the progress bar (only when stderr is a
terminal), log lines and ``error:`` lines go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import FastloadError
from . import GENERATORS, generate


def main(argv: list[str] | None = None) -> int:
    """Generate one synthetic dataset; print the files written, one per line."""
    parser = argparse.ArgumentParser(
        prog="python -m fastload.synthetic",
        description="Write a synthetic dataset in its original release's file layout.",
    )
    parser.add_argument("name", choices=sorted(GENERATORS), help="dataset to generate")
    parser.add_argument("out_dir", help="directory to write into (created if missing)")
    parser.add_argument(
        "--events",
        "-n",
        type=int,
        default=None,
        help="total number of events, split like the original (default: generator default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
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
        )
    except FastloadError as exc:
        parser.exit(2, f"error: {exc}\n")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
