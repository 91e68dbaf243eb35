"""The ``fastload`` console script: one entry point for the project's command-line tools.

``fastload convert NAME SRC DST ...``  the converters (same as ``python -m converters`` in a checkout)
``fastload synthetic NAME DIR ...``    originals in the datasets' own layouts (``python -m fastload.synthetic``)
``fastload bench [throughput|train|convert|scan] ...``  the benchmarks (``python -m bench.throughput`` ...)
``fastload inspect STORE``             what a store holds: splits, sizes, fields, chunking, checksums
``fastload inspect FILE``              what a source file holds and a starter conversion spec
                                     (``python -m converters inspect``: a path that is not a store)
``fastload serve STORE SPLIT --name N --batch-size B ...``  a feed, in the foreground (docs/feed.md)
``fastload status``                    this user's feeds, their consumers, positions and lag

Each subcommand hands its remaining arguments to the tool's own parser, so ``--help`` works at
every level and the options are those documented for the ``python -m`` forms.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_TOOLS = {
    "convert": ("fastload.converters._cli", "the dataset converters (python -m converters)"),
    "synthetic": ("fastload.synthetic.__main__", "synthetic originals in the datasets' layouts"),
    "bench": (None, "benchmarks: throughput (default), train, convert, scan"),
    "inspect": (None, "print what a store, or a source file to convert, holds"),
    "serve": (None, "run a feed (fl.attach(NAME) from trainings) until Ctrl-C"),
    "status": (None, "list this user's feeds, their consumers and lag"),
}
_BENCHES = {
    "throughput": "fastload.bench.throughput",
    "train": "fastload.bench.train",
    "convert": "fastload.bench.convert_throughput",
    "scan": "fastload.bench.scan",
}


def _usage() -> str:
    lines = ["usage: fastload COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (_, doc) in _TOOLS.items()]
    lines += ["", "`fastload COMMAND --help` lists each command's options."]
    return "\n".join(lines)


def _is_source(path: str) -> bool:
    """True for a path that is not a store: a source file (or npy directory) to inspect.

    Something at ``path`` that is not a store is a source; a missing path is a source when
    it has a file extension other than ``.zarr`` (so ``run1.root`` is reported missing as a
    source file, ``out.zarr`` as a store).
    """
    from pathlib import PurePath

    from fastload.store import probe_store

    if path.startswith("-") or "://" in path:
        return False
    found = probe_store(path)
    suffix = PurePath(path).suffix.lower()
    return found == "foreign" or (found == "missing" and suffix not in ("", ".zarr"))


def _inspect(argv: Sequence[str]) -> int:
    import argparse

    from fastload.errors import FastloadError
    from fastload.store import open_store

    if argv and _is_source(argv[0]):
        # a ROOT/HDF5/Parquet/npz file: the converters' inspector lists it and writes a spec
        module = importlib.import_module("fastload.converters.inspection")
        return int(module.main(list(argv)))
    parser = argparse.ArgumentParser(
        prog="fastload inspect",
        description="Describe a store; given a source file (.root, .h5, .parquet, .npz, ...) "
        "instead, list what it holds and print a starter conversion spec "
        "(python -m converters inspect FILE --help).",
    )
    parser.add_argument("store", help="path or URL of a fastload store, or a source file")
    args = parser.parse_args(list(argv))
    try:
        store = open_store(args.store)
    except FastloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{store.path}  name={store.name!r} task={store.task!r}")
    for name in store.splits:
        split = store[name]
        print(f"  {name}: {len(split)} samples in {split.n_chunks} chunks of {split.chunk_len}")
    for field in store.fields.values():
        kind = "ragged " if field.ragged else ""
        print(f"  field {field.name}: {kind}{field.dtype}{tuple(field.shape)} role={field.role}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastload COMMAND ...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in _TOOLS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if command == "inspect":
        return _inspect(rest)
    if command in ("serve", "status"):
        from fastload import _feed_cli

        run = _feed_cli.serve_main if command == "serve" else _feed_cli.status_main
        return run(rest)
    if command == "bench":
        which = rest[0] if rest and rest[0] in _BENCHES else "throughput"
        rest = rest[1:] if rest and rest[0] in _BENCHES else rest
        module_name = _BENCHES[which]
    else:
        module_name = _TOOLS[command][0]  # type: ignore[assignment]
    module = importlib.import_module(module_name)  # type: ignore[arg-type]
    if argv is not None:
        return int(module.main(rest) or 0)
    # run as the program: each tool then configures logging for itself, as with `python -m`
    sys.argv = [f"fastload {command}", *rest]
    return int(module.main() or 0)


if __name__ == "__main__":  # pragma: no cover - python -m fastload._cli
    sys.exit(main())
