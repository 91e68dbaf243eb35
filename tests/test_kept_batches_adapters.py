"""Batches a user keeps stay correct through the framework adapters.

The usual metric pattern, ``torch.cat([b["y"] for b in loader.torch()])``,
``list(loader.tf())`` or ``list(loader.jax())``, holds every batch of an epoch at once.  With data that
wraps the loader's slot ring many times (``id = arange(n)``, n = 24,000,
chunks of a few hundred samples, rings of 2-6 slots), every kept batch must
still hold exactly the samples ``loader.plan(epoch)`` names, for three epochs
kept together, in every holding pattern (all, every k-th, the last one).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastload as fl

pytestmark = pytest.mark.usefixtures("no_leaks")

N = 24_000
CHUNK_LENS = (256, 512, 1000)
EPOCHS = 3
#: (workers, backend): inline, threads and processes share the ring logic differently
ENGINES = [(0, "process"), (2, "thread"), (2, "process")]
# a module fixture is shared by the examples on purpose (the stores are read-only)
PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[int, fl.Split]:
    """One store per chunk length; ``id[i] = i`` and ``x[i] = (2 i, -i)`` identify sample i."""
    ids = np.arange(N, dtype=np.int64)
    arrays = {"id": ids, "x": np.stack([2.0 * ids, -1.0 * ids], axis=1).astype(np.float64)}
    root = tmp_path_factory.mktemp("kept")
    out = {}
    for chunk_len in CHUNK_LENS:
        path = root / f"c{chunk_len}.zarr"
        fl.write_arrays(path, {"train": arrays}, chunk_len=chunk_len)
        out[chunk_len] = fl.open_store(path)["train"]
    return out


def planned_ids(loader: fl.Loader, epoch: int) -> list[np.ndarray]:
    """Sample ids of every batch of ``epoch``, in delivery order (one source: id = index)."""
    plan = loader.plan(epoch)
    return [plan.batch(b)[1] for b in range(plan.n_batches)]


def check_batch(ids: np.ndarray, x: np.ndarray, want: np.ndarray, where: str) -> None:
    np.testing.assert_array_equal(ids, want, err_msg=f"{where}: id")
    np.testing.assert_array_equal(x[:, 0], 2.0 * want, err_msg=f"{where}: x[:, 0]")
    np.testing.assert_array_equal(x[:, 1], -1.0 * want, err_msg=f"{where}: x[:, 1]")


configs = st.fixed_dictionaries(
    {
        "chunk_len": st.sampled_from(CHUNK_LENS),
        "prefetch": st.integers(2, 6),
        "batch_size": st.sampled_from([7, 100, 333, 512, 700]),
        "shuffle": st.booleans(),
        "seed": st.integers(0, 2**16),
        "engine": st.sampled_from(ENGINES),
    }
)


def make_loader(splits: dict[int, fl.Split], cfg: dict, **extra: object) -> fl.Loader:
    workers, backend = cfg["engine"]
    return fl.Loader(
        splits[cfg["chunk_len"]],
        cfg["batch_size"],
        shuffle=cfg["shuffle"],
        seed=cfg["seed"],
        prefetch=cfg["prefetch"],
        workers=workers,
        backend=backend,
        **extra,
    )


# --------------------------------------------------------------------------- torch
@pytest.mark.torch
@PROPERTY
@given(cfg=configs, keep_every=st.sampled_from([1, 1, 3]))
def test_torch_batches_kept_for_three_epochs_match_the_plans(splits, cfg, keep_every) -> None:
    """Every k-th zero-copy CPU batch of 3 epochs, all kept, holds its planned samples."""
    torch = pytest.importorskip("torch")
    with make_loader(splits, cfg) as loader:
        kept = [
            [b for i, b in enumerate(loader.torch()) if i % keep_every == 0] for _ in range(EPOCHS)
        ]
        for epoch, batches in enumerate(kept):
            want = planned_ids(loader, epoch)[::keep_every]
            assert len(batches) == len(want)
            for b, (batch, ids) in enumerate(zip(batches, want, strict=True)):
                check_batch(
                    batch["id"].numpy(), batch["x"].numpy(), ids, f"epoch {epoch} batch {b}"
                )
            if keep_every == 1:  # the metrics idiom: one tensor of the epoch's ids
                got = torch.cat([b["id"] for b in batches]).numpy()
                np.testing.assert_array_equal(got, loader.plan(epoch).index)
                if not cfg["shuffle"]:
                    np.testing.assert_array_equal(np.sort(got), np.arange(N))
        del kept, batches


@pytest.mark.torch
@PROPERTY
@given(cfg=configs)
def test_torch_selection_kept_and_last_batch_kept(splits, cfg) -> None:
    """``(x, y)`` tuples kept for an epoch, and only the last batch kept, hold the planned samples."""
    pytest.importorskip("torch")
    with make_loader(splits, cfg) as loader:
        pairs = list(loader.torch(x="x", y="id"))
        for b, ((x, ids), want) in enumerate(zip(pairs, planned_ids(loader, 0), strict=True)):
            check_batch(ids.numpy(), x.numpy(), want, f"pair {b}")
        del pairs
        last = None
        for batch in loader.torch():  # the loop variable keeps the previous batch alive
            last = batch
        assert last is not None
        check_batch(last["id"].numpy(), last["x"].numpy(), planned_ids(loader, 1)[-1], "last")
        del last, batch


# --------------------------------------------------------------------------- tf
@pytest.mark.tf
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cfg=configs)
def test_tf_elements_kept_for_three_epochs_match_the_plans(splits, cfg) -> None:
    """Every element of 3 epochs of ``loader.tf()``, iterated eagerly and all kept, is its plan's."""
    pytest.importorskip("tensorflow")
    with make_loader(splits, cfg) as loader:
        ds = loader.tf(x="x", y="id", prefetch=3)
        kept = [list(ds) for _ in range(EPOCHS)]
        for epoch, elements in enumerate(kept):
            want = planned_ids(loader, epoch)
            assert len(elements) == len(want)
            for b, ((x, ids), w) in enumerate(zip(elements, want, strict=True)):
                check_batch(ids.numpy(), x.numpy(), w, f"epoch {epoch} element {b}")
            got = np.concatenate([ids.numpy() for _, ids in elements])
            np.testing.assert_array_equal(got, loader.plan(epoch).index)
        del kept, ds


# --------------------------------------------------------------------------- jax
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cfg=configs, keep_every=st.sampled_from([1, 1, 3]))
def test_jax_batches_kept_for_three_epochs_match_the_plans(splits, cfg, keep_every) -> None:
    """Every k-th zero-copy ``jax.Array`` batch of 3 epochs, all kept, holds its planned samples.

    On the CPU the arrays alias the slots (``device_put`` of the views), so a
    slot reused under a live array would show here as another batch's ids.
    """
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True), make_loader(splits, cfg) as loader:  # id and x are 64-bit
        batches = loader.jax()
        assert batches.zero_copy
        kept = [[b for i, b in enumerate(batches) if i % keep_every == 0] for _ in range(EPOCHS)]
        for epoch, elements in enumerate(kept):
            want = planned_ids(loader, epoch)[::keep_every]
            assert len(elements) == len(want)
            for b, (batch, ids) in enumerate(zip(elements, want, strict=True)):
                check_batch(
                    np.asarray(batch["id"]), np.asarray(batch["x"]), ids, f"epoch {epoch} batch {b}"
                )
            if keep_every == 1:
                got = np.concatenate([np.asarray(b["id"]) for b in elements])
                np.testing.assert_array_equal(got, loader.plan(epoch).index)
        pairs = list(loader.jax(x="x", y="id"))  # (x, y) tuples, one more epoch kept
        for b, ((x, ids), want) in enumerate(zip(pairs, planned_ids(loader, EPOCHS), strict=True)):
            check_batch(np.asarray(ids), np.asarray(x), want, f"pair {b}")
        del kept, elements, batches, pairs
