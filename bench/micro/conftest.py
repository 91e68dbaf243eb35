"""Shared fixtures: small stores on disk with TopTagging- and LCD-shaped samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastload as fl

_N = 16_384


def _toptagging_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-padded (200, 4) float32 jets with ~40 real constituents (compresses ~4x like the real set)."""
    x = rng.standard_normal((n, 200, 4)).astype(np.float32)
    mult = rng.poisson(40, n).clip(1, 200)
    x[np.arange(200)[None, :] >= mult[:, None]] = 0.0
    return x


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def toptagging_store(
    tmp_path_factory: pytest.TempPathFactory, rng: np.random.Generator
) -> fl.Store:
    """A one-split store of 16k jets (chunks of 1024 samples, ~3.3 MB each)."""
    path = Path(tmp_path_factory.mktemp("micro")) / "toptagging.zarr"
    y = rng.integers(0, 2, _N).astype(np.int64)
    fl.write_arrays(path, {"train": {"X": _toptagging_like(rng, _N), "y": y}})
    return fl.open_store(path)


@pytest.fixture(scope="session")
def class_stores(
    tmp_path_factory: pytest.TempPathFactory, rng: np.random.Generator
) -> list[fl.Store]:
    """Two per-class stores (no label field) for mixing on the fly."""
    root = Path(tmp_path_factory.mktemp("micro-mix"))
    stores = []
    for k in range(2):
        path = root / f"class{k}.zarr"
        fl.write_arrays(path, {"train": {"X": _toptagging_like(rng, _N // 2)}})
        stores.append(fl.open_store(path))
    return stores
