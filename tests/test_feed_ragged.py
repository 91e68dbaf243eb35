"""Feeds of ragged fields delivered as values + offsets (``fl.Feed(..., ragged={f: "offsets"})``).

Every consumer must get exactly the batches of a plain ``fl.Loader`` of the same
settings (``fl.Ragged`` values, offsets and the other fields), in broadcast and
split modes, shuffled or not, with thread and process workers, with and without a
worker transform of the ragged field; ``output_specs`` (ragged flag and row
bounds), ``.torch()``, ``.tf()``, ``copy=True`` and ``state_dict`` as the loader's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from leaks import wait_until
from test_feed import run_threads

import fastload as fl
import fastload.transforms as T
from fastload.errors import (
    ConfigError,
    FeedClosedError,
    FeedConfigError,
    FeedError,
    RaggedBoundError,
)

RAGGED = {"hits": "offsets"}


@pytest.fixture(autouse=True)
def feed_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's feeds in a private directory."""
    path = tmp_path_factory.mktemp("feeds") / "d"
    monkeypatch.setenv("FASTLOAD_FEED_DIR", str(path))
    return path


def hits_source(counts: list[int], chunk_len: int, seed: int = 0) -> fl.MemorySplit:
    """Sample ``i`` has ``counts[i]`` rows (eta, phi, pT) of ``hits`` and ``id = i``."""
    rng = np.random.default_rng(seed)
    total = int(np.sum(counts))
    rows = np.stack(
        [rng.normal(size=total), rng.uniform(-np.pi, np.pi, total), rng.exponential(10, total)],
        axis=1,
    ).astype(np.float32)
    hits = fl.Ragged.from_counts(rows, np.asarray(counts, dtype=np.int64))
    ids = np.arange(len(counts), dtype=np.int64)
    return fl.from_arrays({"hits": hits, "id": ids}, chunk_len=chunk_len)


def pipeline() -> T.Compose:
    """A worker transform of the ragged field: ragged outputs (with bounds) and dense ones."""
    return T.Compose(
        [
            T.TruncateRows("hits", 3, key=2, out="lead"),
            T.KnnEdges("lead", 2, eta=0, phi=1),
            T.EventSum("hits", 2, out="pt_sum"),
        ]
    )


def snapshot(batch: dict[str, Any]) -> dict[str, Any]:
    """Owned copies of a batch: ``(values, offsets)`` for ragged fields (offsets from 0)."""
    out: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, fl.Ragged):
            values, offsets = value.rebased()
            out[name] = ("ragged", values.copy(), offsets.copy())
        else:
            out[name] = np.array(value)
    return out


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]], what: str = "") -> None:
    assert len(got) == len(want), f"{what}: {len(got)} batches, want {len(want)}"
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(w), f"{what} batch {k}"
        for name, value in w.items():
            msg = f"{what} batch {k} field {name}"
            if isinstance(value, tuple):
                assert isinstance(g[name], tuple), msg
                np.testing.assert_array_equal(g[name][2], value[2], err_msg=msg)
                np.testing.assert_array_equal(g[name][1], value[1], err_msg=msg)
                assert g[name][1].dtype == value[1].dtype, msg
            else:
                np.testing.assert_array_equal(g[name], value, err_msg=msg)
                assert g[name].dtype == value.dtype, msg


def loader_epochs(source, batch_size, epochs, **options) -> list[list[dict[str, Any]]]:
    with fl.Loader(source, batch_size, workers=0, ragged=RAGGED, **options) as loader:
        return [[snapshot(b) for b in loader] for _ in range(epochs)]


def consume(name: str, epochs: int, out: dict, key: object, **attach: Any) -> None:
    """Attach and record ``epochs`` epochs, checking each batch is read-only ``fl.Ragged``."""
    try:
        with fl.attach(name, **attach) as consumer:
            got = []
            for _ in range(epochs):
                epoch = []
                for batch in consumer:
                    for value in batch.values():
                        if isinstance(value, fl.Ragged):
                            assert not value.values.flags.writeable
                            assert not value.offsets.flags.writeable
                            assert int(value.offsets[0]) == 0
                        else:
                            assert not value.flags.writeable
                    epoch.append(snapshot(batch))
                got.append(epoch)
            out[key] = (got, consumer.state_dict(), consumer.output_specs)
    except BaseException as exc:  # reported by the test thread
        out[key] = exc


def assert_specs_equal(got: dict, want: dict) -> None:
    assert got == want
    for name, spec in want.items():  # the bounds take no part in ==
        assert got[name].ragged == spec.ragged, name
        assert (got[name].max_len, got[name].max_rows) == (spec.max_len, spec.max_rows), name


def check_feed_equals_loaders(
    source, batch_size, *, mode: str, n_consumers: int, epochs: int = 2, workers: int = 0, **options
) -> None:
    """Every consumer of a feed gets its plain Loader's epochs (rank ``i`` of N when split)."""
    split = mode == "split"
    wants, specs = [], []
    for i in range(n_consumers):
        ranks = {"rank": i, "world_size": n_consumers} if split else {}
        wants.append(loader_epochs(source, batch_size, epochs, **ranks, **options))
        with fl.Loader(source, batch_size, workers=0, ragged=RAGGED, **ranks, **options) as plain:
            specs.append(plain.output_specs)
    feed_options = {"mode": "split", "consumers": n_consumers} if split else {}
    out: dict = {}
    with fl.Feed(
        source,
        batch_size,
        name="rg",
        workers=workers,
        min_consumers=1 if split else n_consumers,
        ragged=RAGGED,
        **feed_options,
        **options,
    ):
        run_threads(
            [
                lambda i=i: consume("rg", epochs, out, i, **({"rank": i} if split else {}))
                for i in range(n_consumers)
            ]
        )
    for i in range(n_consumers):
        assert not isinstance(out[i], BaseException), out[i]
        got, state, output_specs = out[i]
        for e in range(epochs):
            assert_same(got[e], wants[i][e], f"consumer {i} epoch {e}")
        assert state["epoch"] == epochs
        assert_specs_equal(output_specs, specs[i])


# --------------------------------------------------------------------------- exact batches
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=90),
    chunk_len=st.integers(1, 13),
    batch_size=st.integers(1, 20),
    mode=st.sampled_from(["broadcast", "split"]),
    n_consumers=st.integers(1, 3),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    transform=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_consumers_get_the_plain_loaders_ragged_batches(
    counts, chunk_len, batch_size, mode, n_consumers, shuffle, drop_last, transform, seed
):
    if mode == "split":
        drop_last = True  # equal batch counts per rank
    n = len(counts)
    world = n_consumers if mode == "split" else 1
    assume(n >= batch_size * world if drop_last else n >= world)
    source = hits_source(counts, chunk_len, seed)
    options: dict[str, Any] = {"shuffle": shuffle, "seed": seed, "drop_last": drop_last}
    if transform:
        options["transform"] = pipeline()
    check_feed_equals_loaders(source, batch_size, mode=mode, n_consumers=n_consumers, **options)


@pytest.mark.parametrize("mode", ["broadcast", "split"])
@pytest.mark.parametrize("transform", [False, True])
def test_process_workers_serve_the_plain_loaders_ragged_batches(mode, transform, no_leaks):
    counts = [int(k * 7 % 11) for k in range(150)]
    source = hits_source(counts, chunk_len=9, seed=3)
    options: dict[str, Any] = {"shuffle": True, "seed": 5, "drop_last": mode == "split"}
    if transform:
        options["transform"] = pipeline()
    check_feed_equals_loaders(source, 8, mode=mode, n_consumers=2, workers=2, **options)


def test_a_store_with_process_workers(split_a, no_leaks):
    """The conftest store (ragged ``hits`` of 0..4 rows, chunks of 7) read by two workers."""
    check_feed_equals_loaders(split_a, 6, mode="broadcast", n_consumers=2, workers=2, seed=2)


def test_kept_batches_stay_correct_while_the_ring_turns():
    """Every batch of two epochs kept: pinned ones, and copies past the share, stay exact."""
    counts = [int(k * 5 % 8) for k in range(240)]
    source = hits_source(counts, chunk_len=10)
    want = loader_epochs(source, 4, 2, seed=1)
    with (
        fl.Feed(source, 4, name="keep", workers=0, seed=1, ragged=RAGGED, max_kept_bytes=1 << 16),
        fl.attach("keep") as consumer,
    ):
        with pytest.warns(UserWarning, match="receives copies"):
            kept = [list(consumer) for _ in range(2)]
        for e in range(2):
            assert_same([snapshot(b) for b in kept[e]], want[e], f"epoch {e}")


def test_copy_true_gives_owned_ragged_copies():
    source = hits_source([3, 0, 5, 2, 7, 1, 4], chunk_len=3)
    want = loader_epochs(source, 3, 1, seed=0)
    with (
        fl.Feed(source, 3, name="cp", workers=0, ragged=RAGGED),
        fl.attach("cp", copy=True) as consumer,
    ):
        got = list(consumer)
    for batch in got:
        hits = batch["hits"]
        assert isinstance(hits, fl.Ragged)
        for array in (hits.values, hits.offsets):
            assert array.flags.writeable
            assert array.flags.owndata
    assert_same([snapshot(b) for b in got], want[0])


def test_state_dict_resumes_a_plain_loader_and_a_consumer_skips_forward():
    source = hits_source([int(k * 3 % 7) for k in range(100)], chunk_len=6)
    want = loader_epochs(source, 8, 6, seed=9)
    with fl.Feed(source, 8, name="st", workers=0, seed=9, ragged=RAGGED):
        with fl.attach("st") as consumer:
            it = iter(consumer)
            head = [snapshot(next(it)) for _ in range(3)]
            state = consumer.state_dict()
            it.close()
        assert_same(head, want[0][:3])
        with fl.Loader(source, 8, workers=0, seed=9, ragged=RAGGED) as plain:
            plain.load_state_dict(state)
            assert_same([snapshot(b) for b in plain], want[0][3:])
        # (the feed may have run on a few epochs for the first consumer; it never goes back)
        later = {"epoch": 5, "batch": 5, "fingerprint": state["fingerprint"]}
        with fl.attach("st") as consumer:
            consumer.load_state_dict(later)
            assert_same([snapshot(b) for b in consumer], want[5][5:])


# --------------------------------------------------------------------------- adapters
@pytest.mark.torch
def test_consumer_torch_gives_the_loaders_nested_tensors():
    torch = pytest.importorskip("torch")
    source = hits_source([int(k * 7 % 11) for k in range(60)], chunk_len=8)
    options = {"seed": 4, "ragged": RAGGED}
    with (
        fl.Loader(source, 10, workers=0, **options) as plain,
        fl.Feed(source, 10, name="tt", workers=0, **options),
        fl.attach("tt") as consumer,
    ):
        with plain.torch() as want_it, consumer.torch() as got_it:
            n = 0
            for got, want in zip(got_it, want_it, strict=True):
                assert got["hits"].is_nested
                assert want["hits"].is_nested
                for a, b in zip(got["hits"].unbind(), want["hits"].unbind(), strict=True):
                    assert torch.equal(a, b)
                assert torch.equal(got["id"], want["id"])
                n += 1
        assert n == len(plain)


@pytest.mark.tf
def test_consumer_tf_gives_the_loaders_ragged_tensors():
    tf = pytest.importorskip("tensorflow")
    source = hits_source([int(k * 7 % 11) for k in range(60)], chunk_len=8)
    # drop_last: a consumer's .tf() declares a static batch dimension only then (docs/feed.md)
    options = {"seed": 4, "ragged": RAGGED, "drop_last": True}
    with (
        fl.Loader(source, 10, workers=0, **options) as plain,
        fl.Feed(source, 10, name="tf", workers=0, **options),
        fl.attach("tf") as consumer,
    ):
        want_ds, got_ds = plain.tf(), consumer.tf()
        assert isinstance(got_ds.element_spec["hits"], tf.RaggedTensorSpec)
        assert got_ds.element_spec["hits"] == want_ds.element_spec["hits"]
        n = 0
        for got, want in zip(got_ds, want_ds, strict=True):
            assert isinstance(got["hits"], tf.RaggedTensor)
            np.testing.assert_array_equal(got["hits"].flat_values, want["hits"].flat_values)
            np.testing.assert_array_equal(got["hits"].row_splits, want["hits"].row_splits)
            np.testing.assert_array_equal(got["id"], want["id"])
            n += 1
        assert n == len(plain)


# --------------------------------------------------------------------------- settings
def test_attach_compares_the_ragged_setting():
    source = hits_source([1, 2, 3, 4], chunk_len=2)
    with fl.Feed(source, 2, name="cmp", workers=0, ragged=RAGGED) as feed:
        with fl.attach("cmp", ragged=RAGGED) as consumer:
            assert consumer.config["ragged"] == RAGGED
        with pytest.raises(FeedConfigError, match="ragged="):
            fl.attach("cmp", ragged={"hits": "pad"})
        feed.close()
    with fl.Feed(source, 2, name="pad", workers=0):
        with pytest.raises(FeedConfigError, match="ragged="):
            fl.attach("pad", ragged=RAGGED)
        with fl.attach("pad", ragged={"hits": "pad"}) as consumer:
            assert not consumer.output_specs["hits"].ragged


def test_a_ragged_rows_bound_the_first_epoch_exceeds_is_refused_at_construction(no_leaks):
    source = hits_source([5] * 20, chunk_len=4)
    with pytest.raises(ConfigError, match=r"ragged_rows\['hits'\]"):
        fl.Feed(source, 4, name="small", workers=2, ragged=RAGGED, ragged_rows={"hits": 12})


def test_a_consumer_transform_of_the_ragged_field_equals_the_loaders_worker_transform():
    """``consumer_transform=`` gets the feed's ``fl.Ragged`` batches (read-only views)."""
    source = hits_source([int(k * 7 % 11) for k in range(80)], chunk_len=8)
    options = {"seed": 3, "ragged": RAGGED}
    want = loader_epochs(source, 8, 1, seed=3, transform=pipeline())
    with (
        fl.Loader(source, 8, workers=0, transform=pipeline(), **options) as plain,
        fl.Feed(source, 8, name="ct", workers=0, **options),
        fl.attach("ct", consumer_transform=pipeline()) as consumer,
    ):
        assert_specs_equal(consumer.output_specs, plain.output_specs)
        assert_same([snapshot(b) for b in consumer], want[0])


# --------------------------------------------------------------------------- slot bounds
#: 12 empty samples and 4 of 9 rows, batches of 4: with seed 1, epoch 0's fullest batch
#: holds 18 rows (two long samples), epoch 1's 27 (three)
BOUND_COUNTS = [0] * 12 + [9] * 4
BOUND_SEED = 1


def fullest_batches(source, epochs: int, **options: Any) -> list[int]:
    """Most rows of ``hits`` in one batch of each epoch of a plain Loader."""
    with fl.Loader(source, 4, workers=0, ragged=RAGGED, seed=BOUND_SEED, **options) as plain:
        return [max(len(b["hits"].values) for b in plain) for _ in range(epochs)]


def test_default_ragged_slots_hold_the_longest_samples_so_no_epoch_overflows(no_leaks):
    """Unbounded, a slot holds the batch_size longest samples of the store: a later epoch
    with fuller batches than epoch 0's (27 rows against 18) is served whole."""
    source = hits_source(BOUND_COUNTS, chunk_len=4)
    assert fullest_batches(source, 2) == [18, 27]
    with fl.Feed(source, 4, name="wide", workers=2, seed=BOUND_SEED, ragged=RAGGED) as feed:
        assert feed._engine.spec.packed_rows["hits"] == 4 * 9  # the 4 longest samples
        check_epochs = loader_epochs(source, 4, 3, seed=BOUND_SEED)
        with fl.attach("wide") as consumer:
            for e in range(3):
                assert_same([snapshot(b) for b in consumer], check_epochs[e], f"epoch {e}")


def test_a_later_epoch_above_ragged_rows_tells_every_consumer_the_field_rows_and_bound(
    no_leaks,
):
    """ragged_rows={'hits': 18} fits epoch 0 (checked at construction) but not epoch 1:
    every consumer gets FeedClosedError naming the field, the rows needed, the bound and
    the fix, with the Loader's ConfigError as its cause; close() re-raises it; nothing leaks."""
    source = hits_source(BOUND_COUNTS, chunk_len=4)
    bound = {"hits": 18}
    with fl.Loader(
        source, 4, workers=0, ragged=RAGGED, seed=BOUND_SEED, ragged_rows=bound
    ) as plain:
        list(plain)
        with pytest.raises(ConfigError) as loader_error:
            list(plain)
    want = str(loader_error.value)
    assert "27 rows of ragged field 'hits'" in want
    assert "ragged_rows['hits'] to at least 27" in want
    epoch0 = loader_epochs(source, 4, 1, seed=BOUND_SEED, ragged_rows=bound)[0]
    out: dict = {}
    feed = fl.Feed(
        source, 4, name="tight", workers=2, seed=BOUND_SEED, ragged=RAGGED,
        ragged_rows=bound, min_consumers=2,
    )  # fmt: skip
    try:

        def consumer(key: int) -> None:
            got: list = []
            try:
                with fl.attach("tight") as c:
                    for _ in range(2):
                        got.append([snapshot(b) for b in c])
            except BaseException as exc:
                out[key] = (got, exc)

        workers = feed.worker_pids()
        assert workers
        run_threads([lambda i=i: consumer(i) for i in range(2)])
        assert feed.wait(30)
        # a failed feed stops its workers at once, before close()
        assert wait_until(lambda: not any(psutil.pid_exists(p) for p in workers), 10.0)
    finally:
        with pytest.raises(FeedError, match=r"failed in epoch 1: .*27 rows"):
            feed.close()
    for key in range(2):
        got, exc = out[key]
        assert len(got) == 1  # epoch 0 whole, epoch 1 not delivered
        assert_same(got[0], epoch0, f"consumer {key} epoch 0")
        assert isinstance(exc, FeedClosedError), exc
        text = str(exc)
        assert "feed 'tight' failed in epoch 1: ConfigError" in text
        assert want in text  # the field, the rows needed, the bound and what to do
        assert isinstance(exc.__cause__, ConfigError)
        assert str(exc.__cause__) == want


class DeclaresTooFewRows(T.Transform):
    """Passes ``hits`` and ``id`` through, declaring at most 18 rows of ``hits`` per batch."""

    def output_spec(self, inputs):
        return {
            "hits": dataclasses.replace(inputs["hits"], max_rows=18),
            "id": inputs["id"],
        }

    def __call__(self, batch):
        return {"hits": batch["hits"], "id": batch["id"]}


def test_a_transforms_ragged_bound_exceeded_in_a_later_epoch_is_the_consumers_cause():
    """A transform's declared max_rows that a batch of epoch 1 exceeds: the Loader raises
    RaggedBoundError; the feed's consumer gets FeedClosedError with it as the cause."""
    source = hits_source(BOUND_COUNTS, chunk_len=4)
    with fl.Loader(
        source, 4, workers=0, ragged=RAGGED, seed=BOUND_SEED, transform=DeclaresTooFewRows()
    ) as plain:
        list(plain)
        with pytest.raises(RaggedBoundError, match="'hits'"):
            list(plain)
    feed = fl.Feed(
        source, 4, name="tb", workers=0, seed=BOUND_SEED, ragged=RAGGED,
        transform=DeclaresTooFewRows(),
    )  # fmt: skip
    try:
        with fl.attach("tb") as consumer:
            assert len(list(consumer)) == 4
            with pytest.raises(FeedClosedError, match="failed in epoch 1: RaggedBoundError") as e:
                list(consumer)
        assert isinstance(e.value.__cause__, RaggedBoundError)
        assert "ragged output 'hits'" in str(e.value.__cause__)
        assert "raise the bound" in str(e.value)
    finally:
        with pytest.raises(FeedError, match=r"failed in epoch 1: transform .*ragged output 'hits'"):
            feed.close()
