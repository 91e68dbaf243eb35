"""``python -m converters premix``: one shuffled store from several class stores."""

from __future__ import annotations

import numpy as np
import pytest

import fastload as fl
from fastload.converters.premix import main, premix
from fastload.errors import ConfigError


def _class_store(path, n, base, chunk_len=64):
    """Samples identifiable by X[:, 0] == base + i, with a ragged field whose rows repeat the id."""
    ids = base + np.arange(n)
    X = (ids[:, None] * np.ones((1, 3))).astype(np.float32)
    counts = ids % 4
    hits = fl.Ragged.from_counts(np.repeat(ids, counts).astype(np.float32)[:, None], counts)
    fl.write_arrays(
        path,
        {
            "train": {"X": X, "hits": hits},
            "test": {
                "X": X[:50],
                "hits": fl.Ragged.from_counts(
                    np.repeat(ids[:50], counts[:50]).astype(np.float32)[:, None], counts[:50]
                ),
            },
        },
        chunk_len=chunk_len,
    )
    return fl.open_store(path)


@pytest.fixture
def two_classes(tmp_path):
    return {
        "a": _class_store(tmp_path / "a.zarr", 700, 0),
        "b": _class_store(tmp_path / "b.zarr", 300, 10_000, 32),
    }


def test_every_sample_once_with_its_label(two_classes, tmp_path):
    """The premixed store holds each source sample exactly once, labelled with its class, ragged fields intact."""
    out = premix(tmp_path / "mixed.zarr", two_classes, block_size=128, workers=0, progress=False)
    store = fl.open_store(out)
    assert store.labels == ["a", "b"]
    split = store["train"]
    ids = split.read("X")[:, 0].astype(int)
    labels = split.read("label")
    assert sorted(ids) == [*range(700), *range(10_000, 10_300)]
    assert np.array_equal(labels, (ids >= 10_000).astype(int))
    hits = split.read("hits")
    for i in range(0, len(ids), 37):
        assert np.array_equal(hits[i][:, 0], np.full(ids[i] % 4, ids[i], dtype=np.float32))
    assert len(store["test"]) == 100


def test_blocks_keep_class_proportions_and_are_shuffled(two_classes, tmp_path):
    """Every written block holds the classes in their overall 7:3 proportion, in shuffled order."""
    store = fl.open_store(
        premix(
            tmp_path / "m.zarr",
            two_classes,
            splits=["train"],
            block_size=100,
            workers=0,
            progress=False,
        )
    )
    labels = store["train"].read("label")
    for start in range(0, 1000, 100):
        assert abs(int(labels[start : start + 100].sum()) - 30) <= 1
    ids = store["train"].read("X")[:, 0]
    assert not np.all(np.diff(ids[labels == 0]) > 0)


def test_same_seed_same_store(two_classes, tmp_path):
    """Premixing is deterministic for a seed and changes with it."""

    def ids(name, seed):
        path = premix(
            tmp_path / name, two_classes, splits=["train"], seed=seed, workers=0, progress=False
        )
        return fl.open_store(path)["train"].read("X")[:, 0]

    assert np.array_equal(ids("s1.zarr", 1), ids("s1b.zarr", 1))
    assert not np.array_equal(ids("s1c.zarr", 1), ids("s2.zarr", 2))


def test_cli(two_classes, tmp_path, capsys):
    """The CLI names classes, refuses an existing store without --overwrite, and reports bad sources."""
    a, b = two_classes["a"].path, two_classes["b"].path
    out = str(tmp_path / "cli.zarr")
    assert main([out, f"gamma={a}", f"pi0={b}", "--quiet", "--workers", "0"]) == 0
    assert fl.open_store(out).labels == ["gamma", "pi0"]
    assert main([out, f"gamma={a}", f"pi0={b}", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([str(tmp_path / "x.zarr"), str(tmp_path / "missing.zarr")]) == 2
    assert "missing.zarr" in capsys.readouterr().err


def test_label_field_collision(two_classes, tmp_path):
    """A label field that already exists in the sources is refused before writing."""
    with pytest.raises(ConfigError, match="label field 'X'"):
        premix(tmp_path / "bad.zarr", two_classes, label_field="X", progress=False)
    assert not (tmp_path / "bad.zarr").exists()


def test_fields_that_differ_between_sources_are_refused(two_classes, tmp_path):
    """Same field name, another per-sample shape in one source: nothing is written."""
    odd = tmp_path / "odd.zarr"
    fl.write_arrays(
        odd,
        {
            "train": {"X": np.zeros((40, 4), np.float32)},
            "test": {"X": np.zeros((10, 4), np.float32)},
        },
    )
    sources = {"a": two_classes["a"], "odd": fl.open_store(odd)}
    with pytest.raises(ConfigError, match=r"field 'X' differs between Mix sources"):
        premix(tmp_path / "bad.zarr", sources, progress=False)
    assert not (tmp_path / "bad.zarr").exists()
