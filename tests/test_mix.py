"""``fl.Mix`` defaults and validation: what a user who passes no weights gets, and bad weights.

Two class stores like a user's: 3,000 "gamma" and 1,000 "pi0" events whose
``id`` field names the sample.  With the default weights an epoch must use
the data in its own proportions, every sample at most once, and (when the
batch size allows exact proportions) every sample exactly once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError

pytestmark = pytest.mark.usefixtures("no_leaks")

SIZES = {"gamma": 3000, "pi0": 1000}


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fl.Split]:
    root = tmp_path_factory.mktemp("mix")
    out = {}
    for name, n in SIZES.items():
        ids = np.arange(n, dtype=np.int64)
        path = root / f"{name}.zarr"
        fl.write_arrays(path, {"train": {"id": ids, "e": ids.astype(np.float32)}}, chunk_len=128)
        out[name] = fl.open_store(path)["train"]
    return out


def delivered(loader: fl.Loader) -> dict[int, list[int]]:
    """Ids per source label of one epoch."""
    seen: dict[int, list[int]] = {0: [], 1: []}
    for batch in loader:
        for label, i in zip(batch["label"].tolist(), batch["id"].tolist(), strict=True):
            seen[label].append(i)
    return seen


def test_default_weights_follow_the_sources_sizes(classes) -> None:
    """No weights: shares 3:1, so an epoch of batch 500 delivers every sample exactly once."""
    mix = fl.Mix(classes)
    assert mix.weights == (3000.0, 1000.0)
    assert "gamma=0.75" in repr(mix)
    with fl.Loader(mix, 500, workers=0, seed=1) as loader:
        assert len(loader) == 8
        first = next(iter(loader))
        np.testing.assert_array_equal(np.bincount(first["label"]), [375, 125])
    with fl.Loader(mix, 500, workers=0, seed=1) as loader:
        seen = delivered(loader)
    for label, n in enumerate(SIZES.values()):
        assert sorted(seen[label]) == list(range(n))


def test_default_weights_leave_less_than_a_batch_unused(classes) -> None:
    """batch_size 512 (the reported case): not one [512, 512] batch, but 7 batches using 3,584 samples."""
    with fl.Loader(fl.Mix(classes), 512, workers=0) as loader:
        seen = delivered(loader)
    used = len(seen[0]) + len(seen[1])
    assert used > sum(SIZES.values()) - 512
    assert len(set(seen[0])) == len(seen[0])
    assert len(set(seen[1])) == len(seen[1])
    assert len(seen[0]) == 3 * len(seen[1])  # the data's own proportions, in every batch


def test_explicit_equal_weights_keep_their_meaning(classes) -> None:
    """weights={"gamma": 1, "pi0": 1}: equal shares; the epoch ends when pi0 runs out."""
    with fl.Loader(fl.Mix(classes, {"gamma": 1, "pi0": 1}), 500, workers=0) as loader:
        seen = delivered(loader)
    assert len(seen[0]) == len(seen[1]) == 1000


@pytest.mark.parametrize(
    ("weights", "bad"),
    [
        ((1.0, math.inf), "pi0"),
        ((math.nan, 1.0), "gamma"),
        ({"gamma": 1.0, "pi0": -2.0}, "pi0"),
        ((0.0, 1.0), "gamma"),
        (("a", 1.0), "gamma"),
        ((True, 1.0), "gamma"),
        ((1.0, None), "pi0"),
    ],
)
def test_bad_weights_fail_in_mix_naming_the_source(classes, weights, bad) -> None:
    """Infinite, NaN, negative, zero or non-numeric weights: ConfigError naming weights and the source."""
    with pytest.raises(ConfigError, match=rf"weights.*{bad!r}"):
        fl.Mix(classes, weights)


def test_malformed_weights_fail_in_mix(classes) -> None:
    with pytest.raises(ConfigError, match="weights"):
        fl.Mix(classes, 1.0)
    with pytest.raises(ConfigError, match="2 sources"):
        fl.Mix(classes, (1.0,))
    with pytest.raises(ConfigError, match="missing"):
        fl.Mix(classes, {"gamma": 1.0})
