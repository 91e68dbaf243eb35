"""What ``loader.tf()`` costs per element, against tf.data's own floor, in one run.

Three ways to get a (256, 200, 4) float32 batch plus labels out of an eager
``tf.data`` iterator with ``prefetch(2)``:

- *floor*: ``from_generator`` over arrays that already exist (no loader, no
  copy of ours): what any generator-fed dataset pays per element;
- *loader.tf()*: fastload's adapter over a 2-worker loader (shuffled);
- *aligned copy*: the same loader, the adapter as it was before (a fresh
  64-byte-aligned numpy copy of each field before yielding).

``python -m pytest bench/micro/test_tf_handover.py --benchmark-enable``; the
ratios are in docs/frameworks.md.
"""

from __future__ import annotations

import os
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
def test_from_generator_floor(benchmark, jets: dict[str, np.ndarray]) -> None:
    """Ready arrays through ``from_generator`` + prefetch: tf.data's own cost per element."""
    ready = [
        (jets["X"][i : i + BATCH], jets["y"][i : i + BATCH]) for i in range(0, 8 * BATCH, BATCH)
    ]

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield from ready

    iterator = iter(
        tf.data.Dataset.from_generator(generate, output_signature=_signature()).prefetch(2)
    )
    _drain(iterator)
    benchmark.pedantic(_drain, args=(iterator,), rounds=5)
    benchmark.extra_info["ms_per_element"] = benchmark.stats["mean"] / ROUNDS * 1e3


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
        _drain(iterator)
        benchmark.pedantic(_drain, args=(iterator,), rounds=5)
        benchmark.extra_info["ms_per_element"] = benchmark.stats["mean"] / ROUNDS * 1e3
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
        model.fit(dataset, epochs=1, verbose=0)  # compiles the train function
        benchmark.pedantic(model.fit, args=(dataset,), kwargs={"verbose": 0}, rounds=3)
        benchmark.extra_info["ms_per_step"] = benchmark.stats["mean"] / len(loader) * 1e3
