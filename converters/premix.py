"""``python -m converters premix``: one shuffled store from several class stores.

A premixed store and an on-the-fly :class:`fastload.Mix` of the same sources
hold the same samples, so the two ways of feeding a classifier can be compared
(bench.throughput does).  The sources are read through :class:`fastload.Loader`
(chunk-permuted, window-shuffled, decoded by worker processes), in lock step:
output block ``j`` takes batch ``j`` of every source, where source ``s``'s batch
size is ``ceil(n_s / n_blocks)``; the block is shuffled and written.  So every
block holds the classes in their overall proportions (within one sample),
every sample is written exactly once, and memory stays bounded by one block.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import fastload as fl
from fastload.errors import ConfigError, FastloadError, StoreError
from fastload.mix import check_field_agreement

_DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else "premix stores"


def premix(
    output: str | Path,
    sources: dict[str, fl.Store],
    *,
    splits: Sequence[str] | None = None,
    label_field: str = "label",
    seed: int = 0,
    block_size: int = 65536,
    window_chunks: int = 4,
    workers: int = 1,
    overwrite: bool = False,
    codec: str = "lz4",
    progress: bool | None = None,
) -> str:
    """Write ``output``: for each split, all samples of all ``sources`` shuffled together, plus a class label.

    Parameters
    ----------
    output
        Path of the new store.
    sources
        Class name -> opened store; the label of a sample is its source's position here.
    splits
        Splits to premix (default: those present in every source).
    label_field
        Name of the int64 label field added (must not exist in the sources).
    seed, window_chunks
        Shuffling of each source (as in :class:`fastload.Loader`) and of each block.
    block_size
        Samples per output block (memory bound).
    workers
        Decode workers per source loader.
    progress
        Show a progress bar (tqdm, on stderr); ``None``: only when stderr is a terminal.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    if not sources:
        raise ConfigError("premix needs at least one source store")
    stores = list(sources.values())
    names = list(sources)
    common = [s for s in stores[0].splits if all(s in st for st in stores[1:])]
    chosen = list(splits) if splits else common
    missing = [s for s in chosen if s not in common]
    if missing or not chosen:
        raise ConfigError(
            f"splits {missing or chosen} are not present in every source store ({names})"
        )
    fields = tuple(f for f in stores[0].fields if all(f in st.fields for st in stores[1:]))
    if label_field in fields:
        raise ConfigError(
            f"label field {label_field!r} already exists in the sources; pass another --label-field"
        )
    # fields are store-wide, so one split shows whether they agree
    check_field_agreement({n: st[chosen[0]] for n, st in sources.items()}, fields, label_field)
    first = stores[0]
    field_meta = {f: {"role": first.fields[f].role, "doc": first.fields[f].doc} for f in fields} | {
        label_field: {"role": "label", "doc": f"class index into labels {names}"}
    }
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E3779B9]))
    with fl.create_store(
        output,
        name=Path(str(output).rstrip("/")).name.removesuffix(".zarr"),
        task="classification",
        codec=codec,
        fields=field_meta,
        labels=names,
        converter="premix",
        converter_version=fl.__version__,
        overwrite=overwrite,
    ) as writer:
        for split in chosen:
            parts = [st[split] for st in stores]
            total = sum(len(p) for p in parts)
            n_blocks = max(1, math.ceil(total / block_size))
            loaders = [
                fl.Loader(
                    p,
                    batch_size=max(1, math.ceil(len(p) / n_blocks)),
                    shuffle=True,
                    seed=seed,
                    fields=fields,
                    workers=workers,
                    window_chunks=window_chunks,
                )
                for p in parts
            ]
            try:
                iterators = [iter(ld) for ld in loaders]
                bar = tqdm(
                    total=total, desc=f"premix {split}", unit="samples", disable=not progress
                )
                for _ in range(n_blocks):
                    pieces, labels = [], []
                    for label, it in enumerate(iterators):
                        batch = next(it, None)
                        if batch is None:
                            continue
                        pieces.append(_unpad(batch, parts[label], fields))
                        labels.append(
                            np.full(len(next(iter(batch.values()))), label, dtype=np.int64)
                        )
                    if not pieces:
                        break
                    block = _concat(pieces, fields, parts[0])
                    block[label_field] = np.concatenate(labels)
                    order = rng.permutation(len(block[label_field]))
                    writer.append(split, _take(block, order))
                    bar.update(len(order))
                bar.close()
            finally:
                for ld in loaders:
                    ld.close()
    return str(output)


def _unpad(
    batch: dict[str, np.ndarray], split: fl.Split, fields: tuple[str, ...]
) -> dict[str, object]:
    """Copy a batch out of shared memory; ragged fields back to :class:`fastload.Ragged`."""
    out: dict[str, object] = {}
    for f in fields:
        if split.fields[f].ragged:
            padded, lens = batch[f], batch[f"{f}_len"]
            keep = np.arange(padded.shape[1])[None, :] < lens[:, None]
            out[f] = fl.Ragged.from_counts(padded[keep], lens)
        else:
            out[f] = batch[f].copy()
    return out


def _concat(
    pieces: list[dict[str, object]], fields: tuple[str, ...], split: fl.Split
) -> dict[str, object]:
    block: dict[str, object] = {}
    for f in fields:
        if split.fields[f].ragged:
            rags = [p[f] for p in pieces]
            values = np.concatenate([r.values for r in rags])  # type: ignore[attr-defined]
            counts = np.concatenate([r.counts for r in rags])  # type: ignore[attr-defined]
            block[f] = fl.Ragged.from_counts(values, counts)
        else:
            block[f] = np.concatenate([p[f] for p in pieces])  # type: ignore[misc]
    return block


def _take(block: dict[str, object], order: np.ndarray) -> dict[str, object]:
    out: dict[str, object] = {}
    for f, v in block.items():
        if isinstance(v, fl.Ragged):
            counts = v.counts[order]
            first = np.cumsum(counts) - counts
            rows = np.repeat(v.offsets[:-1][order] - first, counts) + np.arange(int(counts.sum()))
            out[f] = fl.Ragged.from_counts(v.values[rows], counts)
        else:
            out[f] = v[order]  # type: ignore[index]
    return out


def open_sources(
    sources: Mapping[str, str | Path | fl.Store] | Sequence[str],
) -> dict[str, fl.Store]:
    """``{name: store}`` from ``{name: path or Store}`` or from ``["NAME=PATH" or "PATH", ...]``.

    A bare PATH is named by its store's name; names must be unique.
    """
    if isinstance(sources, Mapping):
        return {
            name: st if isinstance(st, fl.Store) else fl.open_store(st)
            for name, st in sources.items()
        }
    if isinstance(sources, (str, Path)):
        raise ConfigError(
            f"premix sources must be a list of NAME=PATH items or a {{name: path}} mapping, got {sources!r}"
        )
    opened: dict[str, fl.Store] = {}
    for item in sources:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        store = fl.open_store(path)
        opened[name or store.name] = store
    if len(opened) != len(sources):
        raise ConfigError("source class names must be unique; name them explicitly as NAME=PATH")
    return opened


def premix_paths(
    output: str | Path,
    sources: Mapping[str, str | Path | fl.Store] | Sequence[str],
    **options: Any,
) -> str:
    """:func:`premix` from store paths (see :func:`open_sources`); ``converters.convert("premix", ...)``."""
    return premix(output, open_sources(sources), **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code.

    Prints the ``wrote ...`` summary on stdout (unless ``--quiet``) or one ``error:`` line on
    stderr; 0 written, 1 failed, 2 refused (bad sources or options, an existing store).
    Called without ``argv`` (as the program) it configures logging for itself.
    """
    if argv is None:
        from ._cli import configure_logging, wants_quiet

        configure_logging(wants_quiet(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m converters premix", description=_DESCRIPTION)
    parser.add_argument("output", help="path of the premixed store to write")
    parser.add_argument(
        "sources", nargs="+", help="class stores, as PATH or NAME=PATH (NAME is the class name)"
    )
    parser.add_argument(
        "--split",
        action="append",
        dest="splits",
        help="split to premix (repeatable; default: all common)",
    )
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-size", type=int, default=65536, help="samples per written block (memory bound)"
    )
    parser.add_argument("--window-chunks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="decode workers per source")
    parser.add_argument("--codec", default="lz4", choices=("lz4", "zstd"))
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        path = premix_paths(
            args.output,
            args.sources,
            splits=args.splits,
            label_field=args.label_field,
            seed=args.seed,
            block_size=args.block_size,
            window_chunks=args.window_chunks,
            workers=args.workers,
            overwrite=args.overwrite,
            codec=args.codec,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FastloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        store = fl.open_store(path)
        sizes = ", ".join(f"{s}={len(store[s])}" for s in store.splits)
        print(f"wrote {path} ({sizes}; fields {', '.join(store.fields)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
