"""What a feed produces each epoch: one plan per *lane*, merged into one stream of batches.

A broadcast feed has one lane (the plan of a plain ``fl.Loader`` of the same
configuration), which every consumer receives.  A split feed of ``N`` consumers
has ``N`` lanes, the plans of ranks ``r * N + i`` of ``world_size * N`` from the
order layer (docs/order.md): disjoint, together the epoch, equal batch counts.
The engine runs their batches interleaved (lane 0's batch 0, lane 1's batch 0,
..., lane 0's batch 1, ...), so every consumer progresses at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastload._engine import ChunkTable, chunk_table
from fastload._order import EpochPlan
from fastload.loader import Loader


def merged(plans: list[EpochPlan]) -> EpochPlan:
    """Batch ``k * len(plans) + i`` of the result is batch ``k`` of ``plans[i]``."""
    if len(plans) == 1:
        return plans[0]
    n_batches = plans[0].n_batches
    sources, indices, sizes = [], [], []
    for k in range(n_batches):
        for plan in plans:
            lo, hi = int(plan.batch_bounds[k]), int(plan.batch_bounds[k + 1])
            sources.append(plan.source[lo:hi])
            indices.append(plan.index[lo:hi])
            sizes.append(hi - lo)
    bounds = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    return EpochPlan(np.concatenate(sources), np.concatenate(indices), bounds)


def epoch_work(lanes: list[Loader], epoch: int) -> tuple[EpochPlan, ChunkTable]:
    """The merged plan of ``epoch`` and its chunk table (each lane's plan is its loader's)."""
    if len(lanes) == 1:
        return lanes[0]._prepared(epoch)
    plan = merged([lane._prepared(epoch)[0] for lane in lanes])
    first: Any = lanes[0]
    return plan, chunk_table(plan, first._chunk_lens, first._key_offsets, 0)
