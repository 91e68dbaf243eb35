"""Run a conversion plan as Dask tasks: one task per block of events.

Pass 1 counts events (and ragged value rows) per block and split; with
``shuffle="auto"`` the blocks holding chunk 0 of some array return those rows,
from which each array's shuffle is chosen as the serial writer would; the store is
then laid out at its final size (:class:`fastload.store._parallel.ParallelStore`)
and pass 2 converts every block in a task that writes its rows at their final
position.  Chunks shared by two blocks are assembled from fragments after all
blocks are done, so the chunk bytes equal those of a serial conversion.

A failed task is retried (``retries``); if it still fails, the run stops with
the task's exception (naming the source file) and leaves the partial store
under its temporary name, marked incomplete.  A rerun with ``resume=True``
skips the blocks already written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from converters.generic import (
    Block,
    ConversionPlan,
    block_counts,
    convert_block,
    provenance_paths,
    store_options,
)
from fastload.errors import missing_dependency
from fastload.store._codecs import first_chunk_shuffles
from fastload.store._parallel import ParallelStore, SplitSize, default_chunk_len
from fastload.store._provenance import source_entry
from fastload.store._ragged import Ragged
from fastload.store._schema import value_chunk_len

Starts = Mapping[
    str, tuple[int, int, Mapping[str, int]]
]  # split -> (event start, events, value starts)


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: on ``scheduler`` if given, else on a local cluster of processes.

    The local cluster listens on 127.0.0.1 only, runs one thread per worker process (the
    readers and Blosc already use native threads) and is shut down on exit.
    """
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        raise missing_dependency("distributed", "dask") from None
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or min(4, os.cpu_count() or 1)
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def count_task(plan: ConversionPlan, block: Block) -> dict[str, tuple[int, dict[str, int]]]:
    """Pass 1: events and ragged rows per split of one block (reads count branches only)."""
    with plan.open(block.file) as reader:
        return block_counts(plan, block, reader)


def write_task(
    plan: ConversionPlan, store: ParallelStore, block: Block, starts: Starts
) -> dict[str, Any]:
    """Pass 2: convert one block and write it at its final rows; returns the block's ``max_len``."""
    with plan.open(block.file) as reader:
        parts = convert_block(plan, block, reader)
    result: dict[str, Any] = {"max_len": {}}
    for split, (event_start, expected, value_starts) in starts.items():
        data = parts.get(split)
        got = 0 if data is None else len(next(iter(data.values())))
        if got != expected:
            raise RuntimeError(
                f"block {block.id} of {plan.files[block.file].path!r} gave {got} events for split {split!r} "
                f"but {expected} were counted; did the source change during the conversion?"
            )
        if data is not None:
            result["max_len"][split] = store.write(split, event_start, data, value_starts)
    store.mark_done(block.id, result)
    return result


def assemble_task(store: ParallelStore, chunks: list[tuple[str, int]]) -> int:
    """Write chunks shared by neighbouring blocks from their fragments."""
    store.assemble(chunks)
    return len(chunks)


Wants = Mapping[str, Mapping[str, int]]  # split -> field -> rows of chunk 0 in the block


def _chunk_zero_wants(
    plan: ConversionPlan, block_starts: Starts, chunk_len: int, chunk_bytes: int
) -> dict[str, dict[str, int]]:
    """How many leading rows of each array of a block fall into that array's chunk 0."""
    wants: dict[str, dict[str, int]] = {}
    for split, (event_start, n, value_starts) in block_starts.items():
        if n == 0:
            continue
        per_field = {}
        for fname, info in plan.fields.items():
            if info.ragged:
                value_chunk = value_chunk_len(info, chunk_bytes)
                per_field[fname] = max(0, value_chunk - int(value_starts.get(fname, 0)))
            else:
                per_field[fname] = max(0, chunk_len - event_start)
        if any(per_field.values()):
            wants[split] = per_field
    return wants


def chunk_zero_task(
    plan: ConversionPlan, block: Block, wants: Wants
) -> dict[str, dict[str, np.ndarray]]:
    """The rows of one block that lie in chunk 0 of some array (a ragged field: its values)."""
    with plan.open(block.file) as reader:
        parts = convert_block(plan, block, reader)
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, per_field in wants.items():
        for fname, rows in per_field.items():
            data = parts.get(split, {}).get(fname)
            if data is None or rows == 0:
                continue
            if isinstance(data, Ragged):
                lo = int(data.offsets[0])
                values = np.asarray(data.values)[lo : min(int(data.offsets[-1]), lo + rows)]
            else:
                values = np.asarray(data)[:rows]
            out.setdefault(split, {})[fname] = values.copy()
    return out


def _needs_counting(plan: ConversionPlan) -> bool:
    return bool(plan.ragged_fields) or plan.spec.split.kind == "fraction"


def _gather(client: Any, futures: list[Any], desc: str, progress: bool) -> list[Any]:
    """Results in submission order, with a progress bar; the first failure cancels the rest."""
    from distributed import as_completed
    from tqdm import tqdm

    results: dict[Any, Any] = {}
    with tqdm(total=len(futures), desc=desc, unit="task", disable=not progress) as bar:
        try:
            for future in as_completed(futures):
                results[future.key] = future.result()
                bar.update()
        except BaseException:
            client.cancel(futures)
            raise
    return [results[f.key] for f in futures]


def convert_dask(
    plan: ConversionPlan,
    dst: str | os.PathLike[str],
    *,
    client: Any,
    overwrite: bool = False,
    resume: bool = False,
    retries: int = 2,
    progress: bool = False,
    task: Callable[..., dict[str, Any]] = write_task,
) -> str:
    """Write the store for ``plan`` with Dask tasks on ``client``; returns the store path.

    ``task`` is the pass-2 task (``write_task`` or a wrapper of it with the same signature).
    """
    # hash=False: a fresh key per run, so a finished run releasing its copy cannot take ours
    plan_future = client.scatter(plan, broadcast=True, hash=False)
    if _needs_counting(plan):
        futures = client.map(
            count_task, [plan_future] * len(plan.blocks), plan.blocks, retries=retries, pure=False
        )
        counts = _gather(client, futures, "counting", progress)
    else:
        counts = [{plan.files[b.file].split: (b.stop - b.start, {})} for b in plan.blocks]

    # final positions: blocks in order, within each split
    sizes: dict[str, SplitSize] = {
        s: SplitSize(0, {f: 0 for f in plan.ragged_fields}) for s in plan.splits
    }
    starts: list[dict[str, tuple[int, int, dict[str, int]]]] = []
    for per_split in counts:
        block_starts: dict[str, tuple[int, int, dict[str, int]]] = {}
        for split, (n, rows) in per_split.items():
            size = sizes[split]
            block_starts[split] = (size.n, n, dict(size.rows))
            sizes[split] = SplitSize(
                size.n + n, {f: size.rows[f] + rows.get(f, 0) for f in size.rows}
            )
        starts.append(block_starts)

    opts = store_options(plan)
    written_sizes = {s: v for s, v in sizes.items() if v.n}
    if opts["shuffle"] == "auto":
        # chosen as the serial writer would, from chunk 0 of each array; the arrays are
        # laid out before any block is written, so the blocks holding chunk-0 rows are
        # read first (in parallel; only the first few, unless a split is tiny)
        chunk_len = opts["chunk_len"] or default_chunk_len(plan.fields, opts["chunk_bytes"])
        wants = [_chunk_zero_wants(plan, s, chunk_len, opts["chunk_bytes"]) for s in starts]
        needed = [(b, w) for b, w in zip(plan.blocks, wants, strict=True) if w]
        futures = client.map(
            chunk_zero_task,
            [plan_future] * len(needed),
            [b for b, _ in needed],
            [w for _, w in needed],
            retries=retries,
            pure=False,
        )
        opts["shuffles"] = first_chunk_shuffles(
            _gather(client, futures, "choosing codecs", progress),
            fields=plan.fields,
            splits=list(written_sizes),
            chunk_len=chunk_len,
            chunk_bytes=opts["chunk_bytes"],
            codec={"cname": opts["codec"], "clevel": opts["clevel"]},
        )
    store = ParallelStore.create(
        dst,
        fields=plan.fields,
        sizes=written_sizes,
        plan_id=plan.digest,
        overwrite=overwrite,
        resume=resume,
        **opts,
    )
    done = store.finished_blocks() if resume else {}
    todo = [(b, s) for b, s in zip(plan.blocks, starts, strict=True) if b.id not in done]
    if resume and progress:
        print(
            f"resuming: {len(plan.blocks) - len(todo)} of {len(plan.blocks)} blocks already written"
        )
    futures = [
        client.submit(
            task,
            plan_future,
            store,
            b,
            s,
            retries=retries,
            pure=False,
            key=f"fastload-block-{b.id}-{os.urandom(4).hex()}",
        )
        for b, s in todo
    ]
    written = _gather(client, futures, "blocks", progress)

    max_len: dict[str, dict[str, int]] = {}
    for result in [*done.values(), *written]:
        for split, per_field in result.get("max_len", {}).items():
            into = max_len.setdefault(split, {})
            for f, v in per_field.items():
                into[f] = max(into.get(f, 0), int(v))

    pending = store.pending_chunks()
    if pending:
        n_batches = max(
            1, min(len(pending), 4 * len(client.scheduler_info().get("workers", {})) or 1)
        )
        batches = [pending[i::n_batches] for i in range(n_batches)]
        _gather(
            client,
            client.map(assemble_task, [store] * len(batches), batches, retries=retries, pure=False),
            "assembling",
            progress,
        )

    sources: list[dict[str, Any]] = []
    algorithm = plan.spec.store.checksum
    if algorithm != "none":
        paths = [p for f in plan.files for p in provenance_paths(f)]
        sources = _gather(
            client,
            client.map(source_entry, paths, [algorithm] * len(paths), retries=retries, pure=False),
            "checksums",
            progress,
        )
    return store.commit(max_len=max_len, sources=sources)
