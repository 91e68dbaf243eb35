"""Per-batch transforms on a TopTagging-shaped batch (what workers run after the gather)."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl
from fastload.transforms import (
    FourVectorFeatures,
    KNNAdjacency,
    PadTruncate,
    Standardize,
    knn_edges,
    wrap_angle,
)


def _jets(rng: np.random.Generator, batch: int = 1024) -> dict[str, np.ndarray]:
    pt = rng.exponential(20.0, (batch, 200)) + 1.0
    eta, phi = rng.normal(0, 0.3, (batch, 200)), rng.normal(0, 0.3, (batch, 200))
    x = np.stack(
        [pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1
    )
    mult = rng.poisson(40, batch).clip(2, 200)
    x[np.arange(200)[None, :] >= mult[:, None]] = 0.0
    return {"X": x.astype(np.float32), "y": rng.integers(0, 2, batch)}


@pytest.mark.bench
def test_four_vector_features(benchmark, rng: np.random.Generator) -> None:
    """ParticleNet's seven constituent features for 1024 jets of up to 200 constituents."""
    batch = _jets(rng)
    out = benchmark(FourVectorFeatures("X", points_out="points"), batch)
    assert out["features"].shape == (1024, 100, 7)


@pytest.mark.bench
def test_knn_adjacency(benchmark, rng: np.random.Generator) -> None:
    """k=7 nearest neighbours in (etarel, phirel) for 1024 jets of 100 points (pd4ml's GCN input)."""
    batch = FourVectorFeatures("X", points_out="points")(_jets(rng))
    out = benchmark(KNNAdjacency("points", k=7), batch)
    assert out["knn_indices"].shape[:2] == (1024, 100)


@pytest.mark.bench
def test_pad_truncate(benchmark, rng: np.random.Generator) -> None:
    """Truncate 200 constituents to 100 with a mask."""
    batch = _jets(rng)
    out = benchmark(PadTruncate("X", 100, mask_out="mask"), batch)
    assert out["X"].shape == (1024, 100, 4)


@pytest.mark.bench
def test_standardize(benchmark, rng: np.random.Generator) -> None:
    """Per-feature standardisation of (1024, 200, 4) float32."""
    batch = _jets(rng)
    out = benchmark(Standardize("X", mean=np.zeros(4), std=np.ones(4)), batch)
    assert out["X"].shape == (1024, 200, 4)


def _knn_per_event(graph: fl.Ragged, k: int) -> np.ndarray:
    """knn_edges as it was before its blocks (with self-loops): a stable numpy sort per event."""
    values, offsets = graph.rebased()
    e, p = values[:, 0].astype(np.float64), values[:, 1].astype(np.float64)
    sources, targets = [], []
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        m, kk = hi - lo, min(k, hi - lo - 1)
        rows = np.arange(lo, hi, dtype=np.int64)
        de = e[lo:hi, None] - e[None, lo:hi]
        dp = wrap_angle(p[lo:hi, None] - p[None, lo:hi])
        dist = de * de + dp * dp
        np.fill_diagonal(dist, np.inf)
        cols = np.broadcast_to(np.arange(m), (m, m))
        neighbours = lo + np.lexsort((cols, dist), axis=-1)[:, :kk]
        neighbours = np.concatenate([rows[:, None], neighbours], axis=1)
        sources.append(neighbours.reshape(-1))
        targets.append(np.repeat(rows, neighbours.shape[1]))
    return np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)


@pytest.mark.bench
@pytest.mark.parametrize("path", ["blocks", "per_event"])
def test_knn_edges_ragged(benchmark, rng: np.random.Generator, path: str) -> None:
    """k=7 kNN edges with self-loops for 256 ragged jets of Poisson(40) (2..100) constituents."""
    counts = rng.poisson(40, 256).clip(2, 100)
    coords = np.stack([rng.normal(0, 0.3, counts.sum()), rng.normal(0, 0.3, counts.sum())], axis=1)
    graph = fl.Ragged.from_counts(coords, counts)
    if path == "blocks":
        edges = benchmark(knn_edges, graph, 0, 1, 7, self_loops=True)
    else:
        edges = benchmark(_knn_per_event, graph, 7)
    np.testing.assert_array_equal(edges, knn_edges(graph, 0, 1, 7, self_loops=True))
