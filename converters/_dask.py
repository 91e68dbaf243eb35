"""Run a conversion plan as Dask tasks: one task per block of events.

Pass 1 counts events (and ragged value rows) per block and split; with
``shuffle="auto"`` the blocks holding chunk 0 of some array return those rows,
from which each array's shuffle is chosen as the serial writer would; the store is
then laid out at its final size (:class:`fastload.store.ParallelStore`, with the
layout rule of :class:`fastload.store.StoreLayout`)
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

from fastload.store import ParallelStore, Ragged, SplitSize, StoreLayout, source_entry

from .generic import (
    Block,
    ConversionPlan,
    block_counts,
    convert_block,
    missing_dependency,  # the library's message helper, re-used: no fastload._* import here
    provenance_paths,
    store_options,
)

logger = logging.getLogger("fastload.converters.dask")

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


def _chunk_zero_wants(layout: StoreLayout, block_starts: Starts) -> dict[str, dict[str, int]]:
    """How many leading rows of each array of a block fall into that array's chunk 0."""
    wants: dict[str, dict[str, int]] = {}
    for split, (event_start, n, value_starts) in block_starts.items():
        if n == 0:
            continue
        per_field = {}
        for array in layout.arrays(split, layout.split_chunk_len(split)):
            if array.part == "offsets":
                continue  # a fixed rule: no data needed
            first_row = event_start if not array.part else int(value_starts.get(array.field, 0))
            per_field[array.field] = max(0, array.chunk_len - first_row)
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


class _Tasks:
    """Submit tasks to ``client`` with the run's retries; gather them with a progress bar."""

    def __init__(self, client: Any, *, retries: int, progress: bool) -> None:
        self.client = client
        self.retries = retries
        self.progress = progress

    def map(self, desc: str, fn: Callable[..., Any], *args: list[Any]) -> list[Any]:
        """``[fn(*row) for row in zip(*args)]`` as tasks, in order."""
        futures = self.client.map(fn, *args, retries=self.retries, pure=False)
        return self.gather(futures, desc)

    def gather(self, futures: list[Any], desc: str) -> list[Any]:
        """Results in submission order; the first failure cancels the rest."""
        from distributed import as_completed
        from tqdm import tqdm

        results: dict[Any, Any] = {}
        with tqdm(total=len(futures), desc=desc, unit="task", disable=not self.progress) as bar:
            try:
                for future in as_completed(futures):
                    results[future.key] = future.result()
                    bar.update()
            except BaseException:
                self.client.cancel(futures)
                raise
        return [results[f.key] for f in futures]


def _count(tasks: _Tasks, plan: ConversionPlan, plan_future: Any) -> list[Any]:
    """Pass 1: ``{split: (events, {ragged field: rows})}`` of every block."""
    if not _needs_counting(plan):
        return [{plan.files[b.file].split: (b.stop - b.start, {})} for b in plan.blocks]
    n = len(plan.blocks)
    return tasks.map("counting", count_task, [plan_future] * n, plan.blocks)


def _positions(
    plan: ConversionPlan, counts: list[Any]
) -> tuple[dict[str, SplitSize], list[dict[str, tuple[int, int, dict[str, int]]]]]:
    """Final sizes per split, and where each block's rows go (blocks in order, within each split)."""
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
    return {s: v for s, v in sizes.items() if v.n}, starts


def _auto_shuffles(
    tasks: _Tasks,
    plan: ConversionPlan,
    plan_future: Any,
    layout: StoreLayout,
    sizes: Mapping[str, SplitSize],
    starts: list[dict[str, tuple[int, int, dict[str, int]]]],
) -> dict[str, str]:
    """``shuffle="auto"`` choices, as the serial writer makes them from each array's chunk 0.

    The arrays are laid out before any block is written, so the blocks holding chunk-0
    rows are read first (in parallel; only the first few, unless a split is tiny).
    """
    wants = [_chunk_zero_wants(layout, s) for s in starts]
    needed = [(b, w) for b, w in zip(plan.blocks, wants, strict=True) if w]
    rows = tasks.map(
        "choosing codecs",
        chunk_zero_task,
        [plan_future] * len(needed),
        [b for b, _ in needed],
        [w for _, w in needed],
    )
    return layout.first_chunk_shuffles(rows, {s: layout.split_chunk_len(s) for s in sizes})


def _write_blocks(
    tasks: _Tasks,
    plan_future: Any,
    store: ParallelStore,
    todo: list[tuple[Block, Starts]],
    task: Callable[..., dict[str, Any]],
) -> list[dict[str, Any]]:
    """Pass 2: one task per block (each with a fresh key, so a rerun never reuses a result)."""
    futures = [
        tasks.client.submit(
            task,
            plan_future,
            store,
            b,
            s,
            retries=tasks.retries,
            pure=False,
            key=f"fastload-block-{b.id}-{os.urandom(4).hex()}",
        )
        for b, s in todo
    ]
    return tasks.gather(futures, "blocks")


def _merge_max_len(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{split: {ragged field: longest sample}}`` over every block's result."""
    max_len: dict[str, dict[str, int]] = {}
    for result in results:
        for split, per_field in result.get("max_len", {}).items():
            into = max_len.setdefault(split, {})
            for f, v in per_field.items():
                into[f] = max(into.get(f, 0), int(v))
    return max_len


def _assemble(tasks: _Tasks, store: ParallelStore) -> None:
    """Write the chunks shared by neighbouring blocks, spread over about 4 tasks per worker."""
    pending = store.pending_chunks()
    if not pending:
        return
    workers = len(tasks.client.scheduler_info().get("workers", {}))
    n_batches = max(1, min(len(pending), 4 * workers or 1))
    batches = [pending[i::n_batches] for i in range(n_batches)]
    tasks.map("assembling", assemble_task, [store] * len(batches), batches)


def pack_task(store: ParallelStore, shards: list[tuple[str, int]]) -> int:
    """Pack chunk files into shard files (sharded arrays, after assembling)."""
    store.pack(shards)
    return len(shards)


def _pack(tasks: _Tasks, store: ParallelStore) -> None:
    """Pack the sharded arrays' chunks into shard files, spread over about 4 tasks per worker."""
    pending = store.pending_shards()
    if not pending:
        return
    workers = len(tasks.client.scheduler_info().get("workers", {}))
    n_batches = max(1, min(len(pending), 4 * workers or 1))
    batches = [pending[i::n_batches] for i in range(n_batches)]
    tasks.map("sharding", pack_task, [store] * len(batches), batches)


def _checksums(tasks: _Tasks, plan: ConversionPlan) -> list[dict[str, Any]]:
    """Provenance records of the sources (checksums computed by tasks)."""
    algorithm = plan.spec.store.checksum
    if algorithm == "none":
        return []
    paths = [p for f in plan.files for p in provenance_paths(f)]
    return tasks.map("checksums", source_entry, paths, [algorithm] * len(paths))


def _store_layout(plan: ConversionPlan, opts: dict[str, Any]) -> StoreLayout:
    """The plan's layout; takes the layout options out of ``opts`` (the rest is metadata)."""
    return StoreLayout(
        fields=plan.fields,
        **{
            k: opts.pop(k)
            for k in (
                "codec",
                "clevel",
                "shuffle",
                "chunk_bytes",
                "chunk_len",
                "shard_chunks",
                "value_chunk_len",
            )
            if k in opts
        },
    )


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
    tasks = _Tasks(client, retries=retries, progress=progress)
    # hash=False: a fresh key per run, so a finished run releasing its copy cannot take ours
    plan_future = client.scatter(plan, broadcast=True, hash=False)
    sizes, starts = _positions(plan, _count(tasks, plan, plan_future))
    opts = store_options(plan)
    layout = _store_layout(plan, opts)
    shuffles = None
    if layout.shuffle == "auto":
        shuffles = _auto_shuffles(tasks, plan, plan_future, layout, sizes, starts)
    store = ParallelStore.create(
        dst,
        layout=layout,
        sizes=sizes,
        plan_id=plan.digest,
        shuffles=shuffles,
        overwrite=overwrite,
        resume=resume,
        **opts,
    )
    done = store.finished_blocks() if resume else {}
    todo = [(b, s) for b, s in zip(plan.blocks, starts, strict=True) if b.id not in done]
    if resume:
        logger.info(
            "resuming: %d of %d blocks already written",
            len(plan.blocks) - len(todo),
            len(plan.blocks),
        )
    written = _write_blocks(tasks, plan_future, store, todo, task)
    _assemble(tasks, store)
    _pack(tasks, store)
    sources = _checksums(tasks, plan)
    return store.commit(max_len=_merge_max_len([*done.values(), *written]), sources=sources)
