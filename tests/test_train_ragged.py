"""The ragged GCN of ``python -m bench.train --model gcn-ragged`` (bench/_train_ragged.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl
from fastload.bench import _train_ragged as R


def _jets(n: int, seed: int, counts: np.ndarray | None = None) -> tuple[fl.Ragged, np.ndarray]:
    """Toy jets: (E, px, py, pz) rows; class 1 jets are wider and have more constituents."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    if counts is None:
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


def _assert_graphs_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize(("workers", "backend"), [(0, "thread"), (2, "process")])
def test_worker_graph_equals_the_consumer_graph_batch(workers: int, backend: str) -> None:
    """The graph built in the workers equals graph_batch on the same batch, exactly."""
    rng = np.random.default_rng(3)
    n = 150
    # 1 constituent (a self-loop only), <= k others, and > MAX_PARTICLES (truncated)
    counts = rng.choice([1, 2, 5, 8, 9, 40, 99, 100, 101, 140], n)
    jets, y = _jets(n, 2, counts)
    source = fl.from_arrays({"particles": jets, "y": y.astype(np.int64)}, chunk_len=16)
    options = R.loader_options(workers)
    common = {"ragged": options.pop("ragged"), "shuffle": True, "seed": 5}
    batches = 0
    with (
        fl.Loader(source, 32, backend=backend, **common, **options) as loader,
        fl.Loader(source, 32, workers=0, **common) as plain,
    ):
        for epoch in range(2):  # the second epoch reuses the slots
            loader.set_epoch(epoch)
            plain.set_epoch(epoch)
            for got, raw in zip(loader, plain, strict=True):
                assert set(got) == {"x", "edge_index", "y"}
                np.testing.assert_array_equal(got["y"], raw["y"])
                g = R.worker_graph(got)
                _assert_graphs_equal(g, R.graph_batch(raw["particles"]))
                assert g["x"].flags.writeable
                assert g["edge_index"].flags.c_contiguous
                batches += 1
    assert batches == 2 * 5  # 150 / 32: four full batches and a short one
    assert (counts > R.MAX_PARTICLES).any()  # truncation exercised


def test_worker_graph_refuses_edges_outside_their_jet() -> None:
    """Per-jet local edge numbers (not batch-wide) are refused, not trained on."""
    jets, _ = _jets(4, 0)
    batch = R.graph_transform()({"particles": jets})
    edges = batch["edge_index"]
    values, offsets = edges.rebased()
    local = values - np.repeat(jets.offsets[:-1], np.diff(offsets))[:, None]
    with pytest.raises(ValueError, match="outside its jet"):
        R.worker_graph({**batch, "edge_index": fl.Ragged(local, offsets)})
