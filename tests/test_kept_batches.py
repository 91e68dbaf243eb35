"""Batches the consumer keeps stay correct: a slot is reused only once nothing reads it.

Every test keeps batches as users do — all of them in a list, the last few,
every k-th, or only a view derived from a field — while the ring wraps many
times, and checks every kept value against ``loader.plan(epoch)`` (the
delivery order).  On the old engine, which recycled a slot as soon as the next
batch was requested, all of them return overwritten values.
"""

from __future__ import annotations

import collections
import logging
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload._engine._engine import MIN_KEPT_SLOTS
from fastload.errors import ConfigError

N = 400
#: (workers, backend): inline (a LocalArena), a thread (LocalArena), processes (shared memory)
CHEAP_ENGINES = [(0, "process"), (1, "thread")]
PROCESS_ENGINE = (2, "process")
SCALE = np.array([1.0, 2.0, 3.0], dtype=np.float32)


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """``stores(chunk_len)``: a split of N samples with ``id = arange(N)`` and ``v = id * SCALE``."""
    made: dict[int, fl.Split] = {}

    def get(chunk_len: int) -> fl.Split:
        if chunk_len not in made:
            path = tmp_path_factory.mktemp("kept") / f"c{chunk_len}.zarr"
            ids = np.arange(N, dtype=np.int64)
            v = ids[:, None].astype(np.float32) * SCALE
            fl.write_arrays(path, {"train": {"id": ids, "v": v}}, chunk_len=chunk_len)
            made[chunk_len] = fl.open_store(path)["train"]
        return made[chunk_len]

    return get


def expected_ids(plan: fl.EpochPlan, b: int) -> np.ndarray:
    return plan.index[plan.batch_bounds[b] : plan.batch_bounds[b + 1]]


def assert_batch(batch, plan, b: int, where: str) -> None:
    ids = expected_ids(plan, b)
    np.testing.assert_array_equal(batch["id"], ids, err_msg=f"{where}: id of batch {b}")
    np.testing.assert_array_equal(
        batch["v"], ids[:, None].astype(np.float32) * SCALE, err_msg=f"{where}: v of batch {b}"
    )


def collect_epochs(loader: fl.Loader, epochs: int):
    """Every batch of ``epochs`` epochs, kept as delivered (no copy), with each epoch's plan."""
    kept = []
    for _ in range(epochs):
        plan = loader.plan()
        kept.append((plan, list(loader)))
    return kept


def assert_all(kept, where: str) -> None:
    for e, (plan, batches) in enumerate(kept):
        assert len(batches) == plan.n_batches
        for b, batch in enumerate(batches):
            assert_batch(batch, plan, b, f"{where}, epoch {e}")


# --------------------------------------------------------------------------- collect everything
@settings(max_examples=25, deadline=None)
@given(
    chunk_len=st.sampled_from([5, 16, 64]),
    batch_size=st.integers(1, 24),
    prefetch=st.integers(2, 6),
    shuffle=st.booleans(),
    engine=st.sampled_from(CHEAP_ENGINES),
    max_kept_bytes=st.sampled_from([None, 0, 3000]),
)
def test_every_batch_of_three_epochs_kept_in_a_list(
    stores, chunk_len, batch_size, prefetch, shuffle, engine, max_kept_bytes
):
    """list(loader) for 3 epochs equals the plans, whether kept batches fit the bound or not.

    With a small ``max_kept_bytes`` the bound is reached early: later batches
    arrive as copies while the ring wraps many times under the kept ones.
    """
    workers, backend = engine
    loader = fl.Loader(
        stores(chunk_len),
        batch_size,
        shuffle=shuffle,
        seed=batch_size,
        workers=workers,
        backend=backend,
        prefetch=prefetch,
        max_kept_bytes=max_kept_bytes,
    )
    with loader, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "batches kept by the consumer", UserWarning)
        kept = collect_epochs(loader, 3)
        assert_all(kept, f"chunk_len={chunk_len} batch_size={batch_size} engine={engine}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("max_kept_bytes", [None, 0])
def test_every_batch_kept_with_worker_processes(stores, max_kept_bytes, no_leaks):
    """The same with two worker processes and shared memory; nothing is left behind."""
    workers, backend = PROCESS_ENGINE
    with (
        fl.Loader(
            stores(16), 7, workers=workers, backend=backend, max_kept_bytes=max_kept_bytes
        ) as loader,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "batches kept by the consumer", UserWarning)
        kept = collect_epochs(loader, 3)
    assert_all(kept, "process workers")  # also after close(): the kept arrays map the memory


# --------------------------------------------------------------------------- other holding patterns
@pytest.mark.parametrize("engine", [*CHEAP_ENGINES, PROCESS_ENGINE])
def test_keep_the_last_few(stores, engine):
    """A sliding window of the last 3 batches stays intact while the ring wraps."""
    workers, backend = engine
    with fl.Loader(stores(16), 8, workers=workers, backend=backend, prefetch=2) as loader:
        for _ in range(2):
            plan = loader.plan()
            last: collections.deque = collections.deque(maxlen=3)
            for b, batch in enumerate(loader):
                last.append((b, batch))
                for k, held in last:
                    assert_batch(held, plan, k, f"{engine} after batch {b}")


@pytest.mark.parametrize("engine", [*CHEAP_ENGINES, PROCESS_ENGINE])
def test_keep_every_kth_and_recycle_the_rest(stores, engine):
    """Every 5th batch kept stays correct; the dropped ones' slots are reused, not the reserve."""
    workers, backend = engine
    with fl.Loader(stores(16), 4, workers=workers, backend=backend) as loader:
        plan = loader.plan()
        kept, addresses = [], set()
        for b, batch in enumerate(loader):
            addresses.add(batch["id"].ctypes.data)
            if b % 5 == 0:
                kept.append((b, batch))
        ring = loader._engine.batch_slots
    assert plan.n_batches == N // 4
    for b, batch in kept:
        assert_batch(batch, plan, b, f"{engine} kept")
    assert len(addresses) <= len(kept) + ring + MIN_KEPT_SLOTS


@pytest.mark.parametrize("engine", [*CHEAP_ENGINES, PROCESS_ENGINE])
def test_a_derived_view_keeps_its_batch(stores, engine):
    """Keeping only ``b['v'][:, 0]`` (dropping the batch dict) keeps the slot."""
    workers, backend = engine
    with fl.Loader(stores(5), 6, workers=workers, backend=backend, prefetch=2) as loader:
        plan = loader.plan()
        columns = [batch["v"][:, 0] for batch in loader]
    for b, column in enumerate(columns):
        np.testing.assert_array_equal(column, expected_ids(plan, b).astype(np.float32))


@pytest.mark.parametrize("engine", [*CHEAP_ENGINES, PROCESS_ENGINE])
def test_drop_each_batch_loop_is_zero_copy_on_a_small_ring(stores, engine):
    """The usual loop gets arrays over shared memory and cycles through a few slots only."""
    workers, backend = engine
    with fl.Loader(stores(16), 4, workers=workers, backend=backend) as loader:
        addresses = set()
        for _ in range(3):
            for batch in loader:
                assert not batch["id"].flags.owndata
                assert batch["id"].base is not None
                addresses.add(batch["id"].ctypes.data)
        ring = loader._engine.batch_slots
    # the ring's in-flight slots plus the one the loop variable holds while the next is prepared
    assert len(addresses) <= ring + 2 < 3 * loader.plan(0).n_batches


# --------------------------------------------------------------------------- read-only, bound, copy
def test_batches_are_read_only(stores):
    """Lent arrays and their views are read-only; copies are the user's."""
    with fl.Loader(stores(16), 8, workers=0) as loader:
        batch = next(iter(loader))
        with pytest.raises(ValueError, match="read-only"):
            batch["v"][0, 0] = -1.0
        view = batch["v"][:, 1:]
        with pytest.raises(ValueError, match="read-only"):
            view[...] = 0
        own = batch["v"].copy()
        own[0, 0] = -1.0  # a copy is the user's
    with fl.Loader(stores(16), 8, workers=0, copy=True) as loader:
        batch = next(iter(loader))
        assert batch["v"].flags.writeable
        assert batch["v"].flags.owndata


@pytest.mark.parametrize("engine", [CHEAP_ENGINES[0], PROCESS_ENGINE])
def test_bound_warns_once_then_delivers_copies(stores, engine, caplog):
    """Past max_kept_bytes: one warning (and log record), then correct copies; lending resumes."""
    workers, backend = engine
    with fl.Loader(stores(16), 4, workers=workers, backend=backend, max_kept_bytes=0) as loader:
        with (
            caplog.at_level(logging.WARNING, logger="fastload"),
            pytest.warns(UserWarning, match="max_kept_bytes") as record,
        ):
            kept = collect_epochs(loader, 2)
        assert len([w for w in record if "batches kept" in str(w.message)]) == 1
        assert len([r for r in caplog.records if "batches kept" in r.getMessage()]) == 1
        assert_all(kept, f"{engine} past the bound")
        batches = [batch for _, epoch in kept for batch in epoch]
        lent = [not batch["id"].flags.owndata for batch in batches]
        assert sum(lent) <= MIN_KEPT_SLOTS  # the first few are lent, the rest are copies
        assert all(batch["id"].flags.owndata for batch in batches[MIN_KEPT_SLOTS:])
        del kept, batches
        # kept batches released: lending resumes (and no second warning)
        plan = loader.plan()
        for b, batch in enumerate(loader):
            assert not batch["id"].flags.owndata
            assert_batch(batch, plan, b, "after release")


def test_copy_true_never_pins_a_slot(stores):
    """copy=True keeps nothing lent: no warning even with max_kept_bytes=0, and correct values."""
    with fl.Loader(stores(16), 4, workers=0, copy=True, max_kept_bytes=0) as loader:
        kept = collect_epochs(loader, 2)  # filterwarnings=error: a warning would fail
        assert loader._engine.slots.kept == 0
    assert_all(kept, "copy=True")
    assert all(batch["id"].flags.owndata for _, epoch in kept for batch in epoch)


def test_max_kept_bytes_is_validated(stores):
    for bad in (-1, 1.5, "1G", True):
        with pytest.raises(ConfigError, match="max_kept_bytes"):
            fl.Loader(stores(16), 4, workers=0, max_kept_bytes=bad)
