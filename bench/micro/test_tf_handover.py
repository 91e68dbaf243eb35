"""What ``loader.tf()`` costs per element, against tf.data's own floor, in one run.

Three ways to get a (256, 200, 4) float32 batch plus labels out of an eager
``tf.data`` iterator with ``prefetch(2)``:

- *ready arrays*: ``from_generator`` over arrays that already exist (no
  loader, no copy of ours; numpy-allocated, so not 64-byte aligned);
- *loader.tf()*: fastload's adapter over a 2-worker loader (shuffled);
- *aligned copy*: the same loader, the adapter as it was before (a fresh
  64-byte-aligned numpy copy of each field before yielding).

Besides wall time, each records ``cpu_ms_per_element``: this process's CPU
time (the consumer and tf.data's threads; the loader's workers are other
processes) per element, which a loaded machine disturbs much less.
``python -m pytest bench/micro/test_tf_handover.py --benchmark-enable``; the
figures are in docs/training.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

import fastload as fl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

from fastload.adapters.tf import aligned_copy  # noqa: E402  (after importorskip)

BATCH = 256
ROUNDS = 200  # elements per measurement


def _drain(iterator: Iterator[object]) -> None:
    for _ in range(ROUNDS):
        next(iterator)


def _measure(benchmark, iterator: Iterator[object]) -> None:
    _drain(iterator)
    cpu = time.process_time()
    benchmark.pedantic(_drain, args=(iterator,), rounds=5)
    benchmark.extra_info["cpu_ms_per_element"] = (time.process_time() - cpu) / (5 * ROUNDS) * 1e3
    benchmark.extra_info["ms_per_element"] = benchmark.stats["mean"] / ROUNDS * 1e3


def _signature() -> tuple[object, object]:
    return (tf.TensorSpec((BATCH, 200, 4), tf.float32), tf.TensorSpec((BATCH,), tf.int64))


@pytest.fixture(scope="module")
def jets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = BATCH * 64
    return {
        "X": rng.standard_normal((n, 200, 4)).astype(np.float32),
        "y": rng.integers(0, 2, n).astype(np.int64),
    }


@pytest.mark.bench
def test_from_generator_ready_arrays(benchmark, jets: dict[str, np.ndarray]) -> None:
    """Ready (unaligned) arrays through ``from_generator`` + prefetch, no loader."""
    ready = [
        (jets["X"][i : i + BATCH], jets["y"][i : i + BATCH]) for i in range(0, 8 * BATCH, BATCH)
    ]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield from ready

    iterator = iter(
        tf.data.Dataset.from_generator(generate, output_signature=_signature()).prefetch(2)
    )
    _measure(benchmark, iterator)


@pytest.mark.bench
@pytest.mark.parametrize("handover", ["loader.tf()", "aligned copy"])
def test_loader_tf(benchmark, jets: dict[str, np.ndarray], handover: str) -> None:
    """fastload's adapter, as it is and with the former aligned copy, over the same loader."""
    with fl.Loader(fl.from_arrays(jets), BATCH, shuffle=True, seed=0, workers=2) as loader:
        if handover == "loader.tf()":
            dataset = loader.tf(x="X", y="y", repeat=True)
        else:

            def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                while True:
                    for batch in loader:
                        x, y = aligned_copy(batch["X"]), aligned_copy(batch["y"])
                        del batch
                        yield x, y

            dataset = tf.data.Dataset.from_generator(
                generate, output_signature=_signature()
            ).prefetch(2)
        iterator = iter(dataset)
        _measure(benchmark, iterator)
        del iterator, dataset


def _fcn() -> object:
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [
            keras.Input((200, 4)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


@pytest.mark.bench
@pytest.mark.parametrize("feed", ["loader.tf()", "in-memory tf.data"])
def test_model_fit_epoch(benchmark, jets: dict[str, np.ndarray], feed: str) -> None:
    """One ``model.fit`` epoch (64 batches, a small FCN): fastload vs tensors already in TF memory.

    The in-memory peer is what tf.data's guide recommends for data that fits:
    ``from_tensor_slices(...).shuffle(...).batch(...).prefetch(AUTOTUNE)``.
    """
    model = _fcn()
    with fl.Loader(
        fl.from_arrays(jets), BATCH, shuffle=True, seed=0, workers=2, drop_last=True
    ) as loader:
        if feed == "loader.tf()":
            dataset = loader.tf(x="X", y="y")
        else:
            dataset = (
                tf.data.Dataset.from_tensor_slices((jets["X"], jets["y"]))
                .shuffle(len(jets["y"]), seed=0)
                .batch(BATCH, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE)
            )
        fit = {"verbose": 0, "shuffle": False}  # both datasets shuffle themselves
        model.fit(dataset, epochs=1, **fit)  # compiles the train function
        cpu = time.process_time()
        benchmark.pedantic(model.fit, args=(dataset,), kwargs=fit, rounds=3)
        steps = 3 * len(loader)
        benchmark.extra_info["cpu_ms_per_step"] = (time.process_time() - cpu) / steps * 1e3
        benchmark.extra_info["ms_per_step"] = benchmark.stats["mean"] / len(loader) * 1e3
