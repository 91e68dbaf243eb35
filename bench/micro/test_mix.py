"""Mixing on the fly: planning a mixed epoch, and assembling mixed batches end to end."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl
from fastload._order import MixConfig, OrderConfig, SourceShape, plan_epoch


@pytest.mark.bench
def test_plan_mixed_epoch(benchmark) -> None:
    """Epoch plan of a 0.5/0.5 mix of two 1M-sample sources (chunks of 1024, batches of 1024)."""
    sources = (SourceShape(n=1_000_000, chunk_len=1024), SourceShape(n=1_000_000, chunk_len=1024))
    order = OrderConfig(batch_size=1024, shuffle=True, seed=0, window_chunks=4)
    mix = MixConfig(weights=(0.5, 0.5))
    plan = benchmark(plan_epoch, sources, order, 0, mix)
    assert plan.n_batches == 2_000_000 // 1024
    source, _ = plan.batch(0)
    assert np.count_nonzero(source == 0) == 512


@pytest.mark.bench
def test_mixed_loader_epoch_in_thread(benchmark, class_stores: list[fl.Store]) -> None:
    """One epoch of ``fl.Loader(fl.Mix(...), workers=0)``: decode, gather and label in the calling thread."""
    mix = fl.Mix(
        {"a": class_stores[0]["train"], "b": class_stores[1]["train"]},
        weights=[0.5, 0.5],
        label_field="y",
    )
    with fl.Loader(mix, batch_size=1024, workers=0, seed=0) as loader:

        def epoch() -> int:
            return sum(len(batch["y"]) for batch in loader)

        samples = benchmark(epoch)
    assert samples == len(class_stores[0]["train"]) + len(class_stores[1]["train"])
