"""Per-batch transforms on a TopTagging-shaped batch (what workers run after the gather)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.transforms import FourVectorFeatures, KNNAdjacency, PadTruncate, Standardize


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
