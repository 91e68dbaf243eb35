"""Keras 3 on its three backends: ``model.fit(FastloadPyDataset(...))`` with TensorFlow, torch, JAX.

``KERAS_BACKEND`` is read once, when Keras is first imported, so each backend
runs in a fresh interpreter.  There a tiny model fits 4 epochs (Keras'
default ``shuffle=True``) on separable data; the child reports the losses and
which samples every item held, and this test checks that the loss falls and
that Keras epoch ``e`` was served exactly the batches of loader epoch ``e``
(the backends peek at the first batch differently, see
``fastload/adapters/keras.py``), every batch once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastload as fl

pytestmark = pytest.mark.usefixtures("no_leaks")

REPO = Path(__file__).resolve().parents[1]
N = 448  # 14 batches of 32: more than any backend peeks at
EPOCHS = 4
#: what each backend needs besides Keras
BACKENDS = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}

CHILD = textwrap.dedent(
    """
    import glob, json, os, sys
    import numpy as np
    import fastload as fl
    import keras
    from fastload.adapters.keras import FastloadPyDataset

    store, out = sys.argv[1], sys.argv[2]
    served = []  # per item: the sample ids it held; None where an epoch begins

    class Recording(FastloadPyDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            # w = 1 + id / 2**20 is exact in float32: a weight of ~1 that names the sample
            served.append(np.rint((item[2] - 1.0) * 2**20).astype(int).tolist())
            return item

        def on_epoch_begin(self):
            served.append(None)
            super().on_epoch_begin()

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="f")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    with fl.Loader(fl.open_store(store)["train"], 32, seed=7, workers=1) as loader:
        ds = Recording(loader, x="f", y="y", sample_weight="w")
        history = model.fit(ds, epochs=EPOCHS, verbose=0)
        plans = []
        for e in range(EPOCHS):
            plan = loader.plan(e)
            plans.append([plan.batch(b)[1].tolist() for b in range(plan.n_batches)])
        loader_epoch = loader.epoch
    leftover = glob.glob(f"/dev/shm/fastload-{os.getpid()}-*")
    json.dump(
        {
            "backend": keras.backend.backend(),
            "loss": history.history["loss"],
            "served": served,
            "plans": plans,
            "loader_epoch": loader_epoch,
            "leftover": leftover,
        },
        open(out, "w"),
    )
    """
).replace("EPOCHS", str(EPOCHS))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Separable features ``f`` of labels ``y``; ``w = 1 + id / 2**20`` identifies the sample."""
    ids = np.arange(N)
    y = (ids % 2).astype(np.float32)
    noise = 0.5 * np.sin(ids[:, None] * np.array([1.3, 2.9, 4.1, 7.7]))
    f = ((2 * y - 1)[:, None] * np.array([1.0, 0.5, -0.5, 0.2]) + noise).astype(np.float32)
    w = (1.0 + ids / 2**20).astype(np.float32)
    assert np.array_equal(np.rint((w - 1.0) * 2**20), ids)
    path = tmp_path_factory.mktemp("keras") / "sep.zarr"
    fl.write_arrays(path, {"train": {"f": f, "y": y, "w": w}}, chunk_len=64)
    return str(path)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_model_fit_learns_and_sees_loader_epochs_on_backend(
    backend: str, store_path: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"Keras backend {backend!r} needs {BACKENDS[backend]}")
    pytest.importorskip("keras")
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, store_path, str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["backend"] == backend
    assert result["leftover"] == []  # the loader freed its shared memory
    losses = result["loss"]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["loader_epoch"] == EPOCHS  # the peek consumed no loader epoch

    served = result["served"]
    starts = [k for k, ids in enumerate(served) if ids is None]
    assert len(starts) >= EPOCHS
    epochs = starts[-EPOCHS:]  # torch and JAX peek inside an epoch bracket of their own
    for e, start in enumerate(epochs):
        end = epochs[e + 1] if e + 1 < EPOCHS else len(served)
        got = sorted(tuple(ids) for ids in served[start + 1 : end])
        want = sorted(tuple(ids) for ids in result["plans"][e])
        assert got == want, f"Keras epoch {e} was not served loader epoch {e}'s batches"
