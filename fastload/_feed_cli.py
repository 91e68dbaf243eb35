"""``fastload serve`` and ``fastload status``: run a feed in the foreground, list running feeds.

``fastload serve STORE SPLIT --name scan --batch-size 256 [...]`` runs
``fl.Feed(open_store(STORE)[SPLIT], ...)`` until Ctrl-C or SIGTERM, then
closes it (workers stopped, shared memory unlinked, socket removed) and exits
0; ``--ragged hits`` (repeatable) serves a ragged field as values + offsets,
as ``ragged={"hits": "offsets"}`` does; ``--memory-cache`` keeps the decoded
chunks in shared memory (``memory_cache=True``).  ``fastload status`` prints this
user's feeds, their consumers, positions and lag (``fl.feed.feed_status()``;
``--json`` for the raw entries).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

__all__ = ["serve_main", "status_main"]

_log = logging.getLogger("fastload")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastload serve",
        description="Serve one loader configuration's batches to every training that attaches "
        "with fl.attach(NAME), until Ctrl-C or SIGTERM (docs/feed.md).",
    )
    p.add_argument("store", help="path or URL of a fastload store")
    p.add_argument("split", help="split to serve (e.g. train)")
    p.add_argument("--name", default="feed", help="what consumers attach to (default: feed)")
    p.add_argument("--batch-size", type=int, required=True, help="samples per batch")
    p.add_argument("--mode", choices=("broadcast", "split"), default="broadcast")
    p.add_argument(
        "--consumers", type=int, help="split mode: consumers sharing each epoch (required there)"
    )
    p.add_argument(
        "--min-consumers", type=int, default=1, help="broadcast: consumers before epoch 0 (1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the epoch order (default 0)")
    p.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shuffle every epoch (default; --no-shuffle: store order)",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--window-chunks", type=int, help="shuffle window in chunks (loader default)")
    p.add_argument("--drop-last", action="store_true", help="drop the last incomplete batch")
    p.add_argument("--fields", help="comma-separated fields to deliver (default: all)")
    p.add_argument(
        "--ragged",
        action="append",
        metavar="FIELD",
        help="deliver this ragged field as values + offsets (fl.Ragged), as "
        'ragged={FIELD: "offsets"} does; repeat for several (default: padded)',
    )
    p.add_argument(
        "--memory-cache",
        action="store_true",
        help="keep the decoded chunks in shared memory (memory_cache=True): later epochs "
        "read and decode nothing",
    )
    p.add_argument("--epoch", type=int, default=0, help="first epoch to produce (default 0)")
    p.add_argument("--ahead", type=int, default=32, help="batches a consumer may have queued (32)")
    p.add_argument("--max-consumers", type=int, default=16, help="consumers attached at once (16)")
    p.add_argument("--rank", type=int, help="this node's rank (one feed per node)")
    p.add_argument("--world-size", type=int, help="number of nodes (one feed each)")
    return p


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the feed as Ctrl-C does


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastload serve ...``; returns the exit status."""
    from fastload.errors import FastloadError
    from fastload.feed import Feed
    from fastload.store import open_store

    args = _serve_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    options: dict[str, Any] = {
        "shuffle": args.shuffle,
        "seed": args.seed,
        "workers": args.workers,
        "drop_last": args.drop_last,
    }
    if args.window_chunks is not None:
        options["window_chunks"] = args.window_chunks
    if args.fields:
        options["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
    if args.memory_cache:
        options["memory_cache"] = True
    if args.ragged:
        # checked by the feed's loaders (ConfigError naming the field and the ragged ones)
        options["ragged"] = {field: "offsets" for field in args.ragged}
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        source = open_store(args.store)[args.split]
        with Feed(
            source,
            args.batch_size,
            name=args.name,
            mode=args.mode,
            consumers=args.consumers,
            min_consumers=args.min_consumers,
            rank=args.rank,
            world_size=args.world_size,
            ahead=args.ahead,
            max_consumers=args.max_consumers,
            epoch=args.epoch,
            **options,
        ) as feed:
            ragged = feed.status()["ragged"]
            print(
                f"serving feed {feed.name!r} ({feed.mode}, {len(feed)} batches of "
                f"{args.batch_size} per epoch per consumer, workers {feed.worker_pids()}"
                + (f", ragged {', '.join(ragged)} as values + offsets" if ragged else "")
                + f") at "
                f"{feed.path}; attach with fl.attach({feed.name!r}); Ctrl-C stops it",
                flush=True,
            )
            try:
                while not feed.wait(1.0):
                    pass
            except KeyboardInterrupt:
                _log.info("fastload serve: stopping feed %r", feed.name)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except FastloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during start-up
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"feed {args.name!r} stopped", flush=True)
    return 0


def _cache_column(cache: dict[str, int] | None) -> str:
    if not cache:
        return ""
    return (
        f"  memory_cache {cache['filled']}/{cache['chunks']} chunks filled "
        f"({cache['chunks']} of {cache['of']} cached, {cache['nbytes'] / 1e6:.0f} MB)"
    )


def format_status(feeds: list[dict[str, Any]]) -> str:
    """The table ``fastload status`` prints."""
    if not feeds:
        return "no feeds running for this user"
    lines = []
    for f in feeds:
        if "error" in f and "pid" not in f:
            lines.append(f"{f['name']}: not answering ({f['error']})")
            continue
        lines.append(
            f"{f['name']}  pid {f['pid']}  {f['mode']}  epoch {f['epoch']} batch "
            f"{f['batch']}/{f['n_batches']}  batch_size {f['batch_size']}  workers "
            f"{f['workers']}  consumers {len(f['consumers'])}"
            + (f"  ragged {','.join(f['ragged'])}" if f.get("ragged") else "")
            + _cache_column(f.get("memory_cache"))
            + (f"  error {f['error']}" if f.get("error") else "")
        )
        for c in f["consumers"]:
            rank = f" rank {c['rank']}" if c.get("rank") is not None else ""
            label = f" {c['label']!r}" if c.get("label") else ""
            lines.append(
                f"  consumer {c['id']}{label} pid {c['pid']}{rank} {c['state']}: epoch "
                f"{c['epoch']} batch {c['batch']}  lag {c['lag']}  held {c['held']}"
            )
    return "\n".join(lines)


def status_main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastload status``; returns the exit status."""
    from fastload.feed import feed_status

    p = argparse.ArgumentParser(
        prog="fastload status",
        description="List this user's feeds, their consumers, positions and lag.",
    )
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    feeds = feed_status()
    print(json.dumps(feeds, indent=1) if args.json else format_status(feeds))
    return 0
