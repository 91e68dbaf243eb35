"""Timed epochs into one consumer, with each epoch's checksum compared: the special bench modes.

``--ragged`` (bench/_ragged.py) and ``--dataset lariat`` (bench/_lariat.py) feed one consumer
from several sources, each a function ``epoch -> iterator of batches``; the consumer returns
``(samples, checksum)`` per batch, and an epoch whose checksum differs from the expected one
is an error, never a figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Feed = Callable[[int], Iterator[dict[str, Any]]]
Consume = Callable[[dict[str, Any]], tuple[int, float]]


def timed_epochs(
    epochs: Feed, consume: Consume, seconds: float, want: float | None, what: str
) -> dict[str, Any]:
    """Whole epochs until ``seconds`` have passed (at least one); rates and the last checksum.

    ``want``: every epoch's checksum must equal it (``rtol=1e-6``); ``None`` checks nothing
    (the run that measures it).  ``what`` names the checksum in the error.
    """
    samples = 0
    t0 = time.perf_counter()
    first = None
    e = 0
    while True:
        epoch_sum = 0.0
        for batch in epochs(e):
            rows, total = consume(batch)
            del batch
            if first is None:
                first = time.perf_counter() - t0
            samples += rows
            epoch_sum += total
        if want is not None and not np.isclose(epoch_sum, want, rtol=1e-6):
            raise RuntimeError(f"epoch {e}: {what} sum to {epoch_sum}, expected {want}")
        e += 1
        if time.perf_counter() - t0 >= seconds:
            break
    elapsed = time.perf_counter() - t0
    return {
        "samples_per_s": samples / elapsed,
        "epochs": e,
        "seconds": elapsed,
        "first_batch_s": first,
        "epoch_sum": epoch_sum,
    }
