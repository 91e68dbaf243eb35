"""``shuffle="auto"``: per-array shuffle chosen from the first chunk, the same for any writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import store_files

import fastload as fl
from fastload.errors import ConfigError
from fastload.store import FieldInfo, ParallelStore, SplitSize, StoreLayout
from fastload.store._codecs import choose_shuffle


def _padded(rng: np.random.Generator, n: int) -> np.ndarray:
    """Constituent-list-like: a few real rows per sample, then zero padding (TopTagging)."""
    x = np.zeros((n, 200, 4), dtype=np.float32)
    x[:, :30] = rng.lognormal(size=(n, 30, 4))
    return x


def _smooth(rng: np.random.Generator, n: int) -> np.ndarray:
    """Slowly varying floats, whose high bytes repeat: what byte shuffle is for."""
    return (100.0 + np.cumsum(rng.random(n), dtype=np.float64)).astype(np.float32)


def _codec_shuffle(store: Path, array: str) -> str:
    codecs = zarr.open_array(store / array, mode="r").metadata.codecs
    (blosc,) = [c for c in codecs if hasattr(c, "shuffle")]
    return str(blosc.shuffle.value)


def test_padded_arrays_drop_shuffle_and_smooth_floats_keep_it(
    rng: np.random.Generator,
) -> None:
    assert choose_shuffle(_padded(rng, 64), "lz4", 5) == "none"
    assert choose_shuffle(_smooth(rng, 4096), "lz4", 5) == "byte"
    assert choose_shuffle(_smooth(rng, 4096), "zstd", 1) == "byte"
    assert choose_shuffle(rng.integers(0, 2, 4096), "lz4", 5) == "byte"  # int64 labels
    assert choose_shuffle(rng.integers(0, 255, 4096, dtype=np.uint8), "lz4", 5) == "none"
    assert choose_shuffle(np.empty((0, 3), np.float32), "lz4", 5) == "none"


def test_slow_codecs_keep_shuffle_for_any_gain(rng: np.random.Generator) -> None:
    """zstd decodes slowly anyway: whichever is smaller wins, while LZ4 needs a 10% gain."""
    import numcodecs

    x = _padded(rng, 64)
    sizes = {
        flag: len(numcodecs.Blosc(cname="zstd", clevel=1, shuffle=flag).encode(x.reshape(-1)))
        for flag in (numcodecs.Blosc.SHUFFLE, numcodecs.Blosc.NOSHUFFLE)
    }
    smaller = (
        "byte" if sizes[numcodecs.Blosc.SHUFFLE] < sizes[numcodecs.Blosc.NOSHUFFLE] else "none"
    )
    assert choose_shuffle(x, "zstd", 1) == smaller


def test_auto_is_the_default_and_is_recorded_per_array(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    n = 300
    hits = fl.Ragged.from_list([_smooth(rng, int(k)) for k in rng.integers(0, 20, n)])
    data = {"X": _padded(rng, n), "pt": _smooth(rng, n), "hits": hits}
    path = fl.write_arrays(tmp_path / "a.zarr", {"train": data, "test": data}, chunk_len=64)
    codec = zarr.open_group(path, mode="r").attrs["fastload"]["codec"]
    assert codec["shuffle"] == "auto"
    expected = {"X": "none", "pt": "byte", "hits/values": "byte", "hits/offsets": "byte"}
    assert codec["arrays"] == {
        f"{s}/{k}": v for s in ("test", "train") for k, v in expected.items()
    }
    # the Zarr metadata, which every reader uses, says the same
    names = {"none": "noshuffle", "byte": "shuffle"}
    for key, choice in codec["arrays"].items():
        assert _codec_shuffle(Path(path), key) == names[choice]
    store = fl.open_store(path)["train"]
    np.testing.assert_array_equal(store.read("X"), data["X"])
    np.testing.assert_array_equal(store.read("pt"), data["pt"])
    np.testing.assert_array_equal(store.read("hits").values, hits.values)


def test_fixed_shuffle_is_kept_and_not_recorded(tmp_path: Path, rng: np.random.Generator) -> None:
    path = fl.write_arrays(tmp_path / "b.zarr", {"train": {"X": _padded(rng, 50)}}, shuffle="byte")
    codec = zarr.open_group(path, mode="r").attrs["fastload"]["codec"]
    assert codec["shuffle"] == "byte"
    assert "arrays" not in codec
    assert _codec_shuffle(Path(path), "train/X") == "shuffle"


def test_choice_comes_from_chunk_zero_whatever_the_first_block(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first block smaller than a chunk must not decide: the choice (and the bytes) depend on chunk 0."""
    from fastload.store import _codecs

    seen: list[np.ndarray] = []

    def spy(first_chunk: np.ndarray, cname: str, clevel: int) -> str:
        seen.append(first_chunk.copy())
        return choose_shuffle(first_chunk, cname, clevel)

    monkeypatch.setattr(_codecs, "choose_shuffle", spy)
    x = _padded(rng, 200)
    fl.write_arrays(tmp_path / "whole.zarr", {"train": {"X": x}}, chunk_len=64)
    with fl.create_store(tmp_path / "blocks.zarr", chunk_len=64) as w:
        for lo, hi in ((0, 3), (3, 70), (70, 150), (150, 200)):
            w.append("train", {"X": x[lo:hi]})
    assert len(seen) == 2
    for first in seen:
        np.testing.assert_array_equal(first, x[:64])
    assert store_files(tmp_path / "whole.zarr") == store_files(tmp_path / "blocks.zarr")


def test_parallel_writer_needs_and_uses_the_first_chunk_choices(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    x, pt = _padded(rng, 200), _smooth(rng, 200)
    fields = {
        "X": FieldInfo("X", (200, 4), np.dtype("<f4")),
        "pt": FieldInfo("pt", (), np.dtype("<f4")),
    }
    sizes = {"train": SplitSize(200)}
    layout = StoreLayout(fields, chunk_len=64)
    with pytest.raises(ConfigError, match=r"train/X.*first_chunk_shuffles"):
        ParallelStore.create(tmp_path / "p.zarr", layout=layout, sizes=sizes, plan_id="t")
    blocks = [{"train": {"X": x[a:b], "pt": pt[a:b]}} for a, b in ((0, 10), (10, 200))]
    read: list[int] = []

    def lazily() -> object:
        for i, block in enumerate(blocks):
            read.append(i)
            yield block

    shuffles = layout.first_chunk_shuffles(lazily(), {"train": 64})  # type: ignore[arg-type]
    assert shuffles == {"train/X": "none", "train/pt": "byte"}
    assert read == [0, 1]
    store = ParallelStore.create(
        tmp_path / "p.zarr", layout=layout, sizes=sizes, plan_id="t", shuffles=shuffles
    )
    store.write("train", 0, {"X": x, "pt": pt}, {})
    store.assemble(store.pending_chunks())
    store.commit(max_len={})
    fl.write_arrays(tmp_path / "s.zarr", {"train": {"X": x, "pt": pt}}, chunk_len=64)
    parallel, serial = store_files(tmp_path / "p.zarr"), store_files(tmp_path / "s.zarr")
    for key in ("train/X/c/0/0/0", "train/pt/c/0", "train/X/zarr.json", "train/pt/zarr.json"):
        assert parallel[key] == serial[key], key
