"""JAX adapter: ``loader.jax()`` batches equal the numpy batches, zero-copy on the CPU.

Zero-copy is checked where the memory is: ``/proc/self/maps`` names the file a
pointer's page is mapped from, and a zero-copy ``jax.Array`` lives in the
loader's ``/dev/shm/fastload-*`` segment, a ``copy=True`` one does not.
Batches kept across epochs (holding their slots) are in
tests/test_kept_batches_adapters.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError, FieldNotFoundError

jax = pytest.importorskip("jax")

from fastload.adapters.jax import JaxBatches, to_jax  # noqa: E402  (after importorskip)

pytestmark = pytest.mark.usefixtures("no_leaks")

N = 600
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> fl.Split:
    """``id`` (int32) and ``x = (2 id, -id)`` identify each sample; ``big`` is int64 past 2**32."""
    ids = np.arange(N)
    path = tmp_path_factory.mktemp("jax") / "ids.zarr"
    arrays = {
        "id": ids.astype(np.int32),
        "x": np.stack([2.0 * ids, -1.0 * ids], axis=1).astype(np.float32),
        "flag": ids % 3 == 0,
        "big": ids.astype(np.int64) + 2**40,
    }
    fl.write_arrays(path, {"train": arrays}, chunk_len=64)
    return fl.open_store(path)["train"]


def mapped_file(pointer: int) -> str:
    """The path of the mapping that holds ``pointer`` in this process ('' if anonymous)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        start, end = (int(v, 16) for v in parts[0].split("-"))
        if start <= pointer < end:
            return parts[5] if len(parts) > 5 else ""
    raise AssertionError(f"address {pointer:#x} is not mapped")


def test_jax_batches_equal_numpy_batches(split: fl.Split) -> None:
    """Same seed: loader.jax() gives the numpy loader's values, dtypes and order, epoch after epoch."""
    fields = ["id", "x", "flag"]
    with (
        fl.Loader(split, 64, seed=5, workers=2, fields=fields) as a,
        fl.Loader(split, 64, seed=5, workers=1, backend="thread", fields=fields) as b,
    ):
        batches = a.jax()
        assert isinstance(batches, JaxBatches)
        assert len(batches) == len(a)
        for _ in range(3):
            n = 0
            for got, want in zip(batches, b, strict=True):
                assert set(got) == set(fields)
                for name in fields:
                    assert isinstance(got[name], jax.Array)
                    assert got[name].dtype == want[name].dtype
                    np.testing.assert_array_equal(np.asarray(got[name]), want[name])
                n += 1
            assert n == len(a)
        assert a.epoch == b.epoch == 3


def test_cpu_arrays_live_in_shared_memory_and_copies_do_not(split: fl.Split) -> None:
    """Zero-copy: the array's buffer is in the loader's /dev/shm segment; copy=True owns its own."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps")
    with fl.Loader(split, 64, seed=1, workers=1, fields=["id", "x"]) as loader:
        shared = loader.jax()
        assert shared.zero_copy
        batch = next(iter(shared))
        where = mapped_file(batch["x"].unsafe_buffer_pointer())
        assert "/dev/shm/fastload-" in where or "/fastload-" in where, where
        del batch
        owned = loader.jax(copy=True)
        assert not owned.zero_copy
        batch = next(iter(owned))
        assert "fastload-" not in mapped_file(batch["x"].unsafe_buffer_pointer())
        np.testing.assert_array_equal(np.asarray(batch["x"])[:, 0], 2.0 * np.asarray(batch["id"]))
        del batch


def test_selection_device_and_lifecycle(split: fl.Split) -> None:
    """x=/y= structures, device='cpu', state_dict resume, close() and with."""
    with fl.Loader(split, 100, seed=2, workers=0, drop_last=True) as loader:
        plan = loader.plan(0)
        pairs = loader.jax(x="x", y="id", device="cpu")
        x, ids = next(iter(pairs))
        assert x.devices() == {jax.devices("cpu")[0]}
        np.testing.assert_array_equal(np.asarray(ids), plan.batch(0)[1])
        np.testing.assert_array_equal(np.asarray(x)[:, 1], -1.0 * plan.batch(0)[1])
        nested = loader.jax(x={"features": "x"}, y="flag", sample_weight="id")
        (inputs, flag, w) = next(iter(nested))
        assert set(inputs) == {"features"}
        assert flag.dtype == np.bool_
        assert w.dtype == np.int32
        with pytest.raises(FieldNotFoundError, match="'x'"):
            loader.jax(x="X")
        with pytest.raises(ConfigError, match="platform name"):
            loader.jax(device=3)
        with pytest.raises(ConfigError, match="no 'tpu' backend"):
            loader.jax(device="tpu")
    # resume mid-epoch through the adapter's state_dict
    with fl.Loader(split, 100, seed=2, workers=0, fields=["id"]) as loader:
        batches = to_jax(loader)
        it = iter(batches)
        next(it), next(it)
        state = batches.state_dict()
        it.close()
    with fl.Loader(split, 100, seed=2, workers=0, fields=["id"]) as loader:
        batches = loader.jax()
        batches.load_state_dict(state)
        rest = [np.asarray(b["id"]) for b in batches]
        want = loader.plan(0)
        assert len(rest) == want.n_batches - 2
        np.testing.assert_array_equal(rest[0], want.batch(2)[1])
    loader = fl.Loader(split, 100, workers=1, fields=["id"])
    with loader.jax() as batches:
        next(iter(batches))  # an iteration in progress: closing ends it and the loader
    with pytest.raises(ConfigError, match="closed"):
        iter(batches)
    with pytest.raises(ConfigError, match="closed"):
        iter(loader)


def test_64_bit_fields_are_refused_unless_jax_keeps_them(split: fl.Split) -> None:
    """int64 would silently become int32 (2**40 + i -> i); with x64 enabled the values are exact."""
    with fl.Loader(split, 100, seed=0, workers=0, fields=["id", "big"]) as loader:
        with pytest.raises(ConfigError, match=r"'big' is int64.*jax_enable_x64"):
            loader.jax()
        loader.jax(x="id")  # fields left out are not checked
        with jax.enable_x64(True):
            batch = next(iter(loader.jax()))
            assert batch["big"].dtype == np.int64
            np.testing.assert_array_equal(
                np.asarray(batch["big"]) - 2**40, np.asarray(batch["id"]).astype(np.int64)
            )
            made_under_x64 = loader.jax()
        with pytest.raises(ConfigError, match="'big' is int64"):
            next(iter(made_under_x64))  # checked again when iterated without x64


def test_import_fastload_loads_neither_jax_nor_lightning() -> None:
    code = (
        "import sys, fastload, fastload.adapters;"
        "bad = [m for m in ('jax', 'lightning', 'pytorch_lightning') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_feed_consumer_jax_gives_the_feeds_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``consumer.jax()``: the plan's batches as jax.Arrays, epoch after epoch, as ``loader.jax()``."""
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(tmp_path / "feeds"))
    i = np.arange(203, dtype=np.int32)
    source = fl.from_arrays(
        {"X": np.stack([i, -i], axis=1).astype(np.float32), "y": i}, chunk_len=7
    )
    with fl.Loader(source, 16, workers=0, seed=4) as loader:
        want = [[b["y"].copy() for b in loader] for _ in range(2)]
    with fl.Feed(source, 16, name="jfeed", workers=1, seed=4), fl.attach("jfeed") as consumer:
        batches = consumer.jax(x="X", y="y")
        assert len(batches) == len(want[0])
        for epoch in want:
            got = list(batches)
            assert len(got) == len(epoch)
            for (x, y), expected in zip(got, epoch, strict=True):
                assert isinstance(y, jax.Array)
                np.testing.assert_array_equal(np.asarray(y), expected)
                np.testing.assert_array_equal(np.asarray(x)[:, 0], expected.astype(np.float32))
