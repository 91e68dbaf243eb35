"""The ragged GCN of ``python -m bench.train --model gcn-ragged`` (bench/_train_ragged.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl
from fastload.bench import _train_ragged as R


def _jets(n: int, seed: int) -> tuple[fl.Ragged, np.ndarray]:
    """Toy jets: (E, px, py, pz) rows; class 1 jets are wider and have more constituents."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    counts = np.where(y == 1, rng.integers(20, 40, n), rng.integers(5, 15, n))
    owner = np.repeat(np.arange(n), counts)
    width = np.where(y[owner] == 1, 0.4, 0.05)
    pt = rng.exponential(20.0, owner.size) + 1.0
    eta = width * rng.standard_normal(owner.size)
    phi = np.pi - 0.1 + width * rng.standard_normal(owner.size)  # across the phi wrap
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    rows = np.stack([np.sqrt(px**2 + py**2 + pz**2), px, py, pz], axis=1).astype(np.float32)
    return fl.Ragged.from_counts(rows, counts), y


def test_graph_batch_shapes() -> None:
    jets, _ = _jets(6, 0)
    g = R.graph_batch(jets)
    n = int(jets.counts.sum())
    assert g["x"].shape == (n, 4)
    assert np.isfinite(g["x"]).all()
    assert g["counts"].tolist() == jets.counts.tolist()
    src, dst = g["edge_index"]
    assert (g["batch"][src] == g["batch"][dst]).all()  # no edge between jets
    # a self-loop plus k neighbours per node, or all the others in a jet of <= k + 1
    want = np.repeat(np.minimum(jets.counts - 1, R.K_NEIGHBOURS) + 1, jets.counts)
    assert np.bincount(dst, minlength=n).tolist() == want.tolist()
    assert np.abs(g["x"][:, 3]).max() < 2.0  # phirel wrapped, not ~2 pi


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_ragged_gcn_step_lowers_the_loss(framework: str) -> None:
    pytest.importorskip("torch" if framework == "torch" else "tensorflow")
    jets, y = _jets(64, 1)
    batch = (R.graph_batch(jets), y)
    runner = R.runner(framework, seed=0, lr=3e-3, threads=1)
    model, step = runner.new_model()
    losses = [step(batch) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses
    scores = runner.scores(model, batch[0])
    assert scores.shape == (64,)
    assert ((scores > 0.5) == y).mean() > 0.9
