"""Functional and property tests of ``fl.Loader`` and ``fl.Mix`` (the prefetch engine).

The stores of ``conftest.py`` make every sample identifiable from its values,
so each test checks *which* samples arrive, not only how many.  Most examples
run inline (``workers=0``) or on threads for speed; explicit cases cover the
process backend, which shares the same executor code.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import weakref
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload._order import OrderConfig, SourceShape, mix_counts, plan_epoch
from fastload._spec import FieldSpec
from fastload.errors import ConfigError, WorkerError
from fastload.transforms import Transform

pytestmark = pytest.mark.usefixtures("no_leaks")


# Every test here runs over both shipped Sources: the stores of conftest.py, and the same
# samples as in-memory splits (fl.from_arrays), which must give the very same batches.
@pytest.fixture(scope="module", params=["store", "memory"])
def source_kind(request) -> str:
    return request.param


def _as(kind: str, split: fl.Split) -> fl.Split:
    if kind == "store":
        return split
    return fl.from_arrays(split.arrays(), chunk_len=split.chunk_len, name=split.name)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def split_a(source_kind, split_a):
    return _as(source_kind, split_a)


@pytest.fixture(scope="module")
def split_b(source_kind, split_b):
    return _as(source_kind, split_b)


@pytest.fixture(scope="module")
def split_small_values(source_kind, split_small_values):
    # in memory there are no value chunks: the same samples, padded and truncated the same way
    return _as(source_kind, split_small_values)


#: value offset of split_a's and split_b's samples (see conftest.py): X[i] = base + 100 i + ...
SOURCE_BASE = (0.0, 100_000.0)
PROPERTY = settings(max_examples=20, deadline=None)
#: (workers, backend) combinations cheap enough for property tests
FAST_ENGINES = [(0, "process"), (1, "thread"), (2, "thread")]
ALL_ENGINES = [*FAST_ENGINES, (1, "process"), (2, "process")]
engines = st.sampled_from(FAST_ENGINES)


# --------------------------------------------------------------------------- helpers
def collect(loader: fl.Loader) -> list[dict[str, np.ndarray]]:
    """Owned copies of every batch of one epoch (independent of the loader's shared memory)."""
    return [{k: v.copy() for k, v in batch.items()} for batch in loader]


def ids_of(batch: Mapping[str, np.ndarray], source: np.ndarray | None = None) -> np.ndarray:
    """Sample indices of a batch; ``source`` gives each row's source for mixed batches."""
    base = 0.0 if source is None else np.asarray(SOURCE_BASE)[source][:, None, None]
    return np.rint((batch["X"] - base)[:, 0, 0] / 100.0).astype(np.int64)


def padded(ragged: fl.Ragged, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded ``(len(rows), length, ...)`` values and lengths of samples ``rows``."""
    out = np.zeros((rows.size, length, *ragged.values.shape[1:]), dtype=ragged.values.dtype)
    lens = np.zeros(rows.size, dtype=np.int64)
    for k, r in enumerate(rows.tolist()):
        sample = ragged[r][:length]
        out[k, : len(sample)] = sample
        lens[k] = len(sample)
    return out, lens


#: split -> its values (weak: an entry goes with its split, so no id is ever reused)
_STORE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def store_values(split: fl.Split) -> dict[str, np.ndarray | fl.Ragged]:
    """Every field of a split, read once through ``Split.read`` (``MemorySplit.read`` in memory)."""
    if split not in _STORE_CACHE:
        _STORE_CACHE[split] = {f: split.read(f) for f in split.fields}
    return _STORE_CACHE[split]


def expected_batch(
    splits: list[fl.Split],
    source: np.ndarray,
    index: np.ndarray,
    fields: tuple[str, ...],
    label_field: str | None = None,
) -> dict[str, np.ndarray]:
    """What a batch of samples ``(source, index)`` must hold, from the stores themselves."""
    out: dict[str, list[np.ndarray]] = {}
    length = max(s.max_len("hits") for s in splits)  # the loader's default padding
    for s, i in zip(source.tolist(), index.tolist(), strict=True):
        values = store_values(splits[s])
        for f in fields:
            if isinstance(values[f], fl.Ragged):
                v, n = padded(values[f], np.array([i]), length)
                out.setdefault(f, []).append(v[0])
                out.setdefault(f"{f}_len", []).append(n[0])
            else:
                out.setdefault(f, []).append(values[f][i])
        if label_field is not None:
            out.setdefault(label_field, []).append(np.int64(s))
    return {k: np.stack(v) for k, v in out.items()}


def assert_batches_match_plan(
    batches: list[dict[str, np.ndarray]],
    plan,
    splits: list[fl.Split],
    fields: tuple[str, ...],
    label_field: str | None = None,
) -> None:
    """Every batch holds exactly the plan's samples, with the stores' values and dtypes."""
    assert len(batches) == plan.n_batches
    for b, batch in enumerate(batches):
        source, index = plan.batch(b)
        want = expected_batch(splits, source, index, fields, label_field)
        assert set(batch) == set(want)
        for k, v in want.items():
            assert batch[k].dtype == v.dtype, k
            np.testing.assert_array_equal(batch[k], v, err_msg=f"batch {b} field {k}")


def assert_same_batches(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    """Two runs delivered the same batches, field for field."""
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.keys() == y.keys()
        for f in x:
            np.testing.assert_array_equal(x[f], y[f], err_msg=f"batch {k} field {f}")


# --------------------------------------------------------------------------- exactly once
@PROPERTY
@given(
    batch_size=st.integers(1, 20),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
    window=st.integers(1, 4),
    world_size=st.integers(1, 3),
    drop_last=st.booleans(),
    epoch=st.integers(0, 3),
    engine=engines,
)
def test_every_sample_exactly_once_per_epoch(
    split_a, batch_size, shuffle, seed, window, world_size, drop_last, epoch, engine
):
    """Batches follow loader.plan(); ranks are disjoint and together cover every sample once."""
    workers, backend = engine
    if drop_last and (len(split_a) // world_size) // batch_size == 0:
        with pytest.raises(ConfigError, match="no batch"):
            fl.Loader(split_a, batch_size, world_size=world_size, drop_last=True, workers=0)
        return
    per_rank = []
    for rank in range(world_size):
        with fl.Loader(
            split_a,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            window_chunks=window,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            workers=workers,
            backend=backend,
            fields=("X",),
        ) as loader:
            loader.set_epoch(epoch)
            plan = loader.plan()
            batches = collect(loader)
        assert len(batches) == plan.n_batches == len(loader)
        sizes = [len(b["X"]) for b in batches]
        assert sizes == np.diff(plan.batch_bounds).tolist()
        assert all(s == batch_size for s in sizes[:-1])
        ids = np.concatenate([ids_of(b) for b in batches]) if batches else np.zeros(0, int)
        np.testing.assert_array_equal(ids, plan.index)
        if drop_last:
            assert all(s == batch_size for s in sizes)
            assert len(batches) == (len(split_a) // world_size) // batch_size
        per_rank.append(ids)
    everything = np.concatenate(per_rank)
    assert np.unique(everything).size == everything.size  # disjoint, no repeats
    if not drop_last:
        np.testing.assert_array_equal(np.sort(everything), np.arange(len(split_a)))
    else:
        assert len({len(r) for r in per_rank}) == 1  # equal steps on every rank (DDP)


@PROPERTY
@given(
    batch_size=st.integers(2, 12),
    seed=st.integers(0, 2**16),
    world_size=st.integers(1, 3),
    engine=engines,
)
def test_mixed_ranks_are_disjoint_and_equal_length(
    split_a, split_b, batch_size, seed, world_size, engine
):
    """With a Mix, every rank gets the same number of batches and no (source, sample) twice."""
    workers, backend = engine
    pairs, lengths = [], []
    for rank in range(world_size):
        loader = fl.Loader(
            fl.Mix({"a": split_a, "b": split_b}),
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            workers=workers,
            backend=backend,
            fields=("X",),
        )
        with loader:
            batches = collect(loader)
        lengths.append(len(batches))
        for batch in batches:
            ids = ids_of(batch, batch["label"])
            pairs.extend(zip(batch["label"].tolist(), ids.tolist(), strict=True))
    assert len(set(lengths)) == 1
    assert len(set(pairs)) == len(pairs)


@PROPERTY
@given(
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 2**16),
    window=st.integers(1, 3),
    engine=engines,
)
def test_batch_membership_is_the_order_layers(split_a, batch_size, seed, window, engine):
    """Batches hold the order layer's samples, sorted by index inside each batch."""
    workers, backend = engine
    with fl.Loader(
        split_a, batch_size, seed=seed, window_chunks=window, workers=workers, backend=backend
    ) as loader:
        batches = collect(loader)
    raw = plan_epoch(
        [SourceShape(len(split_a), split_a.chunk_len)],
        OrderConfig(batch_size=batch_size, seed=seed, window_chunks=window),
        0,
    )
    for b, batch in enumerate(batches):
        ids = ids_of(batch)
        np.testing.assert_array_equal(ids, np.sort(raw.batch(b)[1]))


# --------------------------------------------------------------------------- content
@PROPERTY
@given(
    batch_size=st.integers(1, 20),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
    fields=st.sampled_from([("X", "y", "hits"), ("hits",), ("y", "X"), ("hits", "y")]),
    engine=engines,
)
def test_batches_equal_store_values(split_a, batch_size, shuffle, seed, fields, engine):
    """Every field of every batch equals Split.read at the plan's indices (ragged: zero padded + _len)."""
    workers, backend = engine
    with fl.Loader(
        split_a,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        fields=fields,
        workers=workers,
        backend=backend,
    ) as loader:
        plan = loader.plan()
        batches = collect(loader)
    assert_batches_match_plan(batches, plan, [split_a], fields)


@PROPERTY
@given(
    batch_size=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    pad=st.sampled_from([None, 1, 3, 6]),
    engine=engines,
)
def test_ragged_values_spanning_several_value_chunks(
    split_small_values, batch_size, seed, pad, engine
):
    """Ragged samples whose values cross value-chunk boundaries arrive intact (or truncated to pad)."""
    workers, backend = engine
    split = split_small_values
    with fl.Loader(
        split,
        batch_size,
        seed=seed,
        fields=("hits", "y"),
        pad=None if pad is None else {"hits": pad},
        workers=workers,
        backend=backend,
    ) as loader:
        plan = loader.plan()
        batches = collect(loader)
    hits = store_values(split)["hits"]
    length = pad or split.max_len("hits")
    for b, batch in enumerate(batches):
        index = plan.batch(b)[1]
        want, lens = padded(hits, index, length)
        np.testing.assert_array_equal(batch["hits"], want)
        np.testing.assert_array_equal(batch["hits_len"], lens)
        np.testing.assert_array_equal(batch["y"], index % 3)


def test_ragged_field_padding_and_explicit_pad(split_a):
    """A ragged field arrives as (B, L, 2) + (B,) lengths; `pad` truncates longer samples."""
    with fl.Loader(split_a, 10, shuffle=False, workers=0, fields=("hits",)) as loader:
        first = next(iter(loader))
        assert first["hits"].shape == (10, 4, 2)
        np.testing.assert_array_equal(first["hits_len"], np.arange(10) % 5)
        assert np.all(first["hits"][0] == 0)  # sample 0 has no hits: all padding
        np.testing.assert_array_equal(first["hits"][3, :3, 1], [0, 1, 2])
        assert np.all(first["hits"][3, 3:] == 0)
    with fl.Loader(
        split_a, 10, shuffle=False, workers=0, fields=("hits",), pad={"hits": 2}
    ) as loader:
        first = next(iter(loader))
        assert first["hits"].shape == (10, 2, 2)
        np.testing.assert_array_equal(first["hits_len"], np.minimum(np.arange(10) % 5, 2))
        np.testing.assert_array_equal(first["hits"][4, :, 0], [4, 4])


def test_output_specs_describe_batches(split_a):
    """loader.output_specs gives the per-sample shape and dtype of every delivered field."""
    with fl.Loader(split_a, 8, workers=0) as loader:
        specs = loader.output_specs
        batch = next(iter(loader))
        assert set(specs) == set(batch) == {"X", "y", "hits", "hits_len"}
        for name, spec in specs.items():
            assert batch[name].shape[1:] == spec.shape
            assert batch[name].dtype == spec.dtype


def test_unknown_field_is_refused(split_a):
    """Selecting a field the store lacks raises a KeyError naming the field and a close match."""
    with pytest.raises(KeyError, match=r"'Xx'.*closest: 'X'"):
        fl.Loader(split_a, 8, fields=("Xx",), workers=0)


@pytest.mark.parametrize(
    ("option", "value"),
    [("workers", -1), ("prefetch", 1), ("backend", "fork"), ("batch_size", 0), ("rank", 3)],
)
def test_bad_configuration_raises_config_error(split_a, option, value):
    """Invalid loader options are refused when the loader is built."""
    kwargs = {"batch_size": 8, "workers": 0, "world_size": 2}
    kwargs[option] = value
    batch_size = kwargs.pop("batch_size")
    with pytest.raises(ConfigError, match=option) as raised:
        fl.Loader(split_a, batch_size, **kwargs)
    assert "Config" not in str(raised.value)  # the public parameter, not an internal class


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "fl.Loader: batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 8, "seed": -1}, "fl.Loader: seed must be"),
        ({"batch_size": 8, "shuffle": "yes"}, "fl.Loader: shuffle must be True or False"),
        (
            {"batch_size": 8, "rank": 2, "world_size": 2},
            r"fl.Loader: rank must be in \[0, world_size=2\)",
        ),
    ],
)
def test_errors_name_the_public_parameter(split_a, kwargs, message):
    """Messages say ``batch_size``, not ``OrderConfig.batch_size``."""
    kwargs = dict(kwargs)  # the parameter is shared by every run of the test
    batch_size = kwargs.pop("batch_size")
    with pytest.raises(ConfigError, match=message):
        fl.Loader(split_a, batch_size, workers=0, **kwargs)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("shuffle", [True, False])
def test_same_batches_for_every_worker_count_and_backend(split_a, shuffle):
    """Same seed and config give identical batches inline, on threads and on processes."""
    runs = []
    for workers, backend in ALL_ENGINES:
        with fl.Loader(
            split_a, 6, shuffle=shuffle, seed=7, window_chunks=2, workers=workers, backend=backend
        ) as loader:
            runs.append([collect(loader), collect(loader)])  # epochs 0 and 1
    for other in runs[1:]:
        for epoch in (0, 1):
            assert_same_batches(runs[0][epoch], other[epoch])


@PROPERTY
@given(seed=st.integers(0, 2**16), batch_size=st.integers(1, 12), engine=engines)
def test_same_config_same_batches_property(split_a, seed, batch_size, engine):
    """A thread/inline loader and a fresh inline loader with the same config agree batch for batch."""
    workers, backend = engine
    with fl.Loader(split_a, batch_size, seed=seed, workers=workers, backend=backend) as a:
        got = collect(a)
    with fl.Loader(split_a, batch_size, seed=seed, workers=0) as b:
        want = collect(b)
    assert_same_batches(got, want)


def test_epochs_differ_when_shuffling(split_a):
    """Consecutive epochs (and different seeds) give different orders."""
    with fl.Loader(split_a, 10, seed=3, workers=0, fields=("X",)) as loader:
        e0 = np.concatenate([ids_of(b) for b in collect(loader)])
        e1 = np.concatenate([ids_of(b) for b in collect(loader)])
    with fl.Loader(split_a, 10, seed=4, workers=0, fields=("X",)) as other:
        s4 = np.concatenate([ids_of(b) for b in collect(other)])
    for order in (e0, e1, s4):
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, s4)


@pytest.mark.parametrize("engine", [(0, "process"), (2, "thread"), (2, "process")])
def test_no_shuffle_gives_store_order(split_a, engine):
    """shuffle=False delivers samples in store order, every epoch."""
    workers, backend = engine
    with fl.Loader(split_a, 8, shuffle=False, workers=workers, backend=backend) as loader:
        for _ in range(2):
            batches = collect(loader)
            np.testing.assert_array_equal(
                np.concatenate([ids_of(b) for b in batches]), np.arange(50)
            )
            np.testing.assert_array_equal(
                np.concatenate([b["y"] for b in batches]), np.arange(50) % 3
            )


def test_set_epoch_selects_the_epoch(split_a):
    """set_epoch(e) makes the next iteration deliver plan(e)."""
    with fl.Loader(split_a, 9, seed=1, workers=0, fields=("X",)) as loader:
        loader.set_epoch(5)
        ids = np.concatenate([ids_of(b) for b in collect(loader)])
        np.testing.assert_array_equal(ids, loader.plan(5).index)
        assert loader.epoch == 6


# --------------------------------------------------------------------------- mixing
def _mix_loader(split_a, split_b, weights, batch_size, engine=(0, "process"), **kwargs):
    workers, backend = engine
    mix = fl.Mix({"a": split_a, "b": split_b}, weights=weights, label_field="label")
    return fl.Loader(mix, batch_size, workers=workers, backend=backend, **kwargs)


@PROPERTY
@given(
    weights=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    batch_size=st.integers(2, 16),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
    engine=engines,
)
def test_mix_exact_proportions_labels_and_values(
    split_a, split_b, weights, batch_size, shuffle, seed, engine
):
    """Every mixed batch has exactly mix_counts per source, labels = source, values from that source."""
    counts = mix_counts(batch_size, weights)
    if np.any(counts == 0):
        with pytest.raises(ConfigError):
            _mix_loader(split_a, split_b, weights, batch_size)
        return
    with _mix_loader(
        split_a, split_b, weights, batch_size, engine, shuffle=shuffle, seed=seed
    ) as loader:
        plan = loader.plan()
        batches = collect(loader)
    n_batches = min(len(split_a) // counts[0], len(split_b) // counts[1])
    assert len(batches) == n_batches
    seen = [[], []]
    for b, batch in enumerate(batches):
        labels = batch["label"]
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(labels, minlength=2), counts)
        np.testing.assert_array_equal(labels, plan.batch(b)[0])
        ids = ids_of(batch, labels)
        # inside a batch: sorted by (source, index)
        assert np.all(np.diff(labels) >= 0)
        for s in (0, 1):
            assert np.all(np.diff(ids[labels == s]) > 0)
            seen[s].extend(ids[labels == s].tolist())
    for s, split in enumerate((split_a, split_b)):
        assert len(set(seen[s])) == len(seen[s])  # first_exhausted: no repeats
        assert set(seen[s]) <= set(range(len(split)))
    assert_batches_match_plan(
        batches, plan, [split_a, split_b], ("X", "y", "hits"), label_field="label"
    )


@pytest.mark.parametrize("engine", [(2, "thread"), (2, "process")])
def test_mix_of_different_sizes_and_chunks_matches_inline(split_a, split_b, engine):
    """Sources of different sizes and chunk lengths mix identically on workers and inline."""
    with _mix_loader(split_a, split_b, (3, 1), 8, engine, seed=5) as loader:
        got = collect(loader)
        plan = loader.plan(0)
    with _mix_loader(split_a, split_b, (3, 1), 8, seed=5) as inline:
        want = collect(inline)
    assert_same_batches(got, want)
    assert len(got) == min(50 // 6, 23 // 2)
    assert_batches_match_plan(got, plan, [split_a, split_b], ("X", "y", "hits"), "label")


def test_mix_cycle_repeats_small_source(split_a, split_b):
    """policy='cycle' delivers num_samples samples; the small source starts new passes."""
    mix = fl.Mix({"a": split_a, "b": split_b}, (1, 1), policy="cycle", num_samples=120)
    with fl.Loader(mix, 10, workers=2, backend="thread", seed=2) as loader:
        plan = loader.plan()
        batches = collect(loader)
    assert len(batches) == 12
    assert all(np.array_equal(np.bincount(b["label"], minlength=2), [5, 5]) for b in batches)
    b_ids = np.concatenate([ids_of(b, b["label"])[b["label"] == 1] for b in batches])
    assert b_ids.size == 60
    assert np.bincount(b_ids, minlength=23).min() >= 2  # 60 draws of 23 samples: every one twice
    assert_batches_match_plan(batches, plan, [split_a, split_b], ("X", "y", "hits"), "label")


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory, split_a):
    """Stores whose X differs from split_a's in shape, or in dtype."""
    root = tmp_path_factory.mktemp("mismatch")
    arrays = split_a.arrays()
    shape_path = root / "shape.zarr"
    fl.write_arrays(shape_path, {"train": {**arrays, "X": arrays["X"][:, :4]}})
    dtype_path = root / "dtype.zarr"
    fl.write_arrays(dtype_path, {"train": {**arrays, "X": arrays["X"].astype(np.float64)}})
    return fl.open_store(shape_path)["train"], fl.open_store(dtype_path)["train"]


def test_mix_refuses_mismatched_fields_at_construction(split_a, mismatched):
    """A field whose shape or dtype differs between sources is a ConfigError naming it."""
    by_shape, by_dtype = mismatched
    with pytest.raises(ConfigError, match=r"field 'X' differs.*\(4, 4\)"):
        fl.Mix({"a": split_a, "s": by_shape})
    with pytest.raises(ConfigError, match=r"field 'X' differs.*float64"):
        fl.Mix({"a": split_a, "d": by_dtype})
    # restricted to agreeing fields, the same sources mix fine
    mix = fl.Mix({"a": split_a, "d": by_dtype}, fields=("y",))
    with fl.Loader(mix, 4, fields=("y",), workers=0) as loader:
        batch = next(iter(loader))
        assert set(batch) == {"y", "label"}


def test_mix_label_field_collision(split_a, split_b):
    """A label_field equal to a stored field is refused; a free name or None works."""
    with pytest.raises(ConfigError, match="label_field 'y' collides"):
        fl.Mix({"a": split_a, "b": split_b}, label_field="y")
    with fl.Loader(fl.Mix({"a": split_a, "b": split_b}, label_field=None), 4, workers=0) as loader:
        assert set(next(iter(loader))) == {"X", "y", "hits", "hits_len"}


def test_mix_bad_weights(split_a, split_b):
    """Weights must name every source and be positive."""
    with pytest.raises(ConfigError, match="missing"):
        fl.Mix({"a": split_a, "b": split_b}, weights={"a": 1.0})
    with pytest.raises(ConfigError, match="> 0"):
        fl.Mix({"a": split_a, "b": split_b}, weights=(1.0, 0.0))
    with pytest.raises(ConfigError):
        fl.Mix({})


# --------------------------------------------------------------------------- resume
def _run_until(loader: fl.Loader, k: int) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Consume k batches of the current epoch; return them and the state after them."""
    got: list[dict[str, np.ndarray]] = []
    if k == 0:
        return got, loader.state_dict()
    for batch in loader:
        got.append({f: v.copy() for f, v in batch.items()})
        if len(got) == k:
            state = loader.state_dict()
            break
    return got, state


@PROPERTY
@given(
    data=st.data(),
    batch_size=st.integers(2, 16),  # a mix of two sources needs 2 samples per batch
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
    engine=engines,
    mixed=st.booleans(),
)
def test_resume_yields_exactly_the_remaining_batches(
    split_a, split_b, data, batch_size, shuffle, seed, engine, mixed
):
    """state_dict() after k batches, loaded into a NEW loader, continues the uninterrupted run."""
    workers, backend = engine

    def make():
        source = fl.Mix({"a": split_a, "b": split_b}) if mixed else split_a
        return fl.Loader(
            source, batch_size, shuffle=shuffle, seed=seed, workers=workers, backend=backend
        )

    with make() as reference:
        epoch0, epoch1 = collect(reference), collect(reference)
    k = data.draw(st.integers(0, len(epoch0)), label="k")
    with make() as first:
        head, state = _run_until(first, k)
    assert_same_batches(head, epoch0[:k])
    with make() as second:
        second.load_state_dict(state)
        assert_same_batches(collect(second), epoch0[k:] if k < len(epoch0) else epoch1)
        if k < len(epoch0):
            assert_same_batches(collect(second), epoch1)  # and the next epoch follows


@pytest.mark.parametrize("engine", [(0, "process"), (2, "process")])
@pytest.mark.parametrize("k", [0, 3, 8])
def test_resume_across_epochs_and_workers(split_a, engine, k):
    """Resuming mid-epoch 1 (after a full epoch 0) with 0 or 2 process workers is exact."""
    workers, backend = engine
    with fl.Loader(split_a, 6, seed=11, workers=2, backend="thread") as reference:
        collect(reference)
        epoch1 = collect(reference)
    with fl.Loader(split_a, 6, seed=11, workers=workers, backend=backend) as first:
        collect(first)  # epoch 0
        assert first.state_dict()["epoch"] == 1
        head, state = _run_until(first, k)
    assert (state["epoch"], state["batch"]) == (1, k)
    with fl.Loader(split_a, 6, seed=11, workers=workers, backend=backend) as second:
        second.load_state_dict(state)
        assert_same_batches(head + collect(second), epoch1)


def test_state_after_a_finished_epoch_starts_the_next(split_a):
    """A state taken between epochs resumes at the start of the next epoch."""
    with fl.Loader(split_a, 8, workers=0) as loader:
        collect(loader)
        state = loader.state_dict()
        epoch1 = collect(loader)
    assert (state["epoch"], state["batch"]) == (1, 0)
    with fl.Loader(split_a, 8, workers=0) as resumed:
        resumed.load_state_dict(state)
        assert_same_batches(collect(resumed), epoch1)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"batch_size": 9},
        {"shuffle": False},
        {"window_chunks": 2},
        {"drop_last": True},
    ],
)
def test_state_from_another_configuration_is_refused(split_a, change):
    """A state saved under a different order configuration raises ConfigError naming it.

    (A different world_size is an elastic resume: tests/test_elastic_resume.py.)
    """
    base = {"batch_size": 8, "seed": 0, "shuffle": True, "window_chunks": 4, "workers": 0}
    with fl.Loader(split_a, **base) as loader:
        state = loader.state_dict()
    (name,) = change
    other = fl.Loader(split_a, **{**base, **change})
    with other, pytest.raises(ConfigError, match=f"changed .*{name}"):
        other.load_state_dict(state)


def test_worker_count_does_not_change_the_state(split_a):
    """A state saved with threads loads into an inline loader (workers are not part of it)."""
    with fl.Loader(split_a, 8, workers=2, backend="thread") as loader:
        _, state = _run_until(loader, 2)
    with fl.Loader(split_a, 8, workers=0) as other:
        other.load_state_dict(state)
        assert len(collect(other)) == len(other) - 2


def test_state_with_batch_out_of_range_is_refused(split_a):
    with fl.Loader(split_a, 8, workers=0) as loader:
        state = {**loader.state_dict(), "batch": 99}
        with pytest.raises(ConfigError, match="out of range"):
            loader.load_state_dict(state)


# --------------------------------------------------------------------------- slot lifetime
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_held_batch_is_never_overwritten_while_workers_prefetch(split_a, backend):
    """While the consumer holds batch b, workers fill other slots and never touch b's views."""
    with fl.Loader(split_a, 3, prefetch=2, workers=2, backend=backend, seed=9) as loader:
        plan = loader.plan()
        held = []
        for b, batch in enumerate(loader):
            snapshot = {k: v.copy() for k, v in batch.items()}
            # long enough for the workers to fill every free slot of the ring
            time.sleep(0.3 if b < 4 else 0.02)
            for k in batch:
                np.testing.assert_array_equal(batch[k], snapshot[k], err_msg=f"batch {b} {k}")
            held.append(snapshot)
    assert_batches_match_plan(held, plan, [split_a], ("X", "y", "hits"))


def test_views_share_memory_and_copy_true_returns_owned_arrays(split_a):
    """Batches are views into shared memory; with copy=True they stay valid after close()."""
    with fl.Loader(split_a, 8, workers=2, seed=3) as loader:
        batch = next(iter(loader))
        assert not batch["X"].flags.owndata
        assert batch["X"].ctypes.data % 64 == 0  # aligned for DLPack / TensorFlow
    with fl.Loader(split_a, 8, workers=2, seed=3, copy=True) as loader:
        plan = loader.plan()
        kept = list(loader)  # no copies made by the test
        assert all(b["X"].flags.owndata for b in kept)
    assert_batches_match_plan(kept, plan, [split_a], ("X", "y", "hits"))


# --------------------------------------------------------------------------- transforms
class DoubleX(Transform):
    """Adds ``Z = 2 * X[:, :, 0]`` (float64) and the id of the thread and process that ran it."""

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def output_spec(self, inputs):
        out = dict(inputs)
        out["Z"] = FieldSpec((8,), np.float64)
        out["pid"] = FieldSpec((), np.int64)
        out["tid"] = FieldSpec((), np.int64)
        return out

    def __call__(self, batch):
        out = dict(batch)
        n = len(batch["X"])
        out["Z"] = batch["X"][:, :, 0].astype(np.float64) * self.factor
        out["pid"] = np.full(n, os.getpid(), dtype=np.int64)
        out["tid"] = np.full(n, threading.get_ident() % 2**62, dtype=np.int64)
        return out


class Explode(Transform):
    """Raises on the batch that contains sample 13."""

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        if 13 in ids_of(batch):
            raise ValueError("sample 13 is cursed")
        return dict(batch)


class WrongShape(Transform):
    """Declares X as (8, 4) but returns (8, 3)."""

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        return {**batch, "X": batch["X"][:, :, :3]}


class WrongDtype(Transform):
    """Declares y as int64 but returns float values that do not survive the cast."""

    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        return {**batch, "y": batch["y"] + 0.5}


class MissingField(Transform):
    """Declares Z but never returns it."""

    def output_spec(self, inputs):
        return {**inputs, "Z": FieldSpec((), np.float32)}

    def __call__(self, batch):
        return dict(batch)


@pytest.mark.parametrize("engine", [(0, "process"), (2, "thread"), (2, "process")])
def test_transform_runs_in_the_workers(split_a, engine):
    """A custom transform's outputs are delivered, computed in the worker processes/threads."""
    workers, backend = engine
    with fl.Loader(
        split_a, 8, workers=workers, backend=backend, transform=DoubleX(3.0), seed=1
    ) as loader:
        assert loader.output_specs["Z"] == FieldSpec((8,), np.float64)
        plan = loader.plan()
        batches = collect(loader)
        pids = set(loader.worker_pids())
    for b, batch in enumerate(batches):
        want = expected_batch([split_a], *plan.batch(b), ("X", "y", "hits"))
        for k, v in want.items():
            np.testing.assert_array_equal(batch[k], v)
        np.testing.assert_array_equal(batch["Z"], want["X"][:, :, 0].astype(np.float64) * 3.0)
        ran_in = int(batch["pid"][0])
        if backend == "process" and workers:
            assert ran_in in pids
        else:
            assert ran_in == os.getpid()
        if backend == "thread":
            assert int(batch["tid"][0]) != threading.get_ident() % 2**62


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", [(0, "process"), (2, "thread"), (2, "process")])
def test_transform_error_keeps_its_type_and_traceback(split_a, engine):
    """A raising transform's ValueError reaches the consumer as ValueError, naming the worker and
    batch, with the worker's traceback (in a note where the worker is another process)."""
    workers, backend = engine
    with fl.Loader(
        split_a, 5, shuffle=False, workers=workers, backend=backend, transform=Explode()
    ) as loader:
        seen: list[dict[str, np.ndarray]] = []
        with pytest.raises(ValueError, match="sample 13 is cursed") as info:
            seen.extend(loader)
    assert not isinstance(info.value, WorkerError)
    message = "".join(traceback.format_exception(info.value))
    # batches 0 and 1 are fine; batch 2 holds sample 13 (its error may surface while
    # prefetching, before batches 0 and 1 are handed out)
    assert len(seen) <= 2
    for part in ("worker", "batch 2", "Traceback", "sample 13 is cursed", "Explode", "ValueError"):
        assert part in message
    notes = "\n".join(info.value.__notes__)
    assert "worker" in notes
    assert "batch 2" in notes
    if backend == "process" and workers:  # the frames stayed in the worker: its traceback is a note
        assert "worker traceback" in notes
        assert "in __call__" in notes
        assert "cursed" in notes


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [WrongShape(), WrongDtype(), MissingField()], ids=type)
@pytest.mark.parametrize("engine", [(0, "process"), (2, "process")])
def test_transform_output_disagreeing_with_its_spec_is_a_worker_error(split_a, bad, engine):
    """Output fields, shapes or dtypes that differ from output_spec() raise WorkerError."""
    workers, backend = engine
    with (
        fl.Loader(split_a, 8, workers=workers, backend=backend, transform=bad) as loader,
        pytest.raises(WorkerError, match=type(bad).__name__),
    ):
        next(iter(loader))


def test_transform_without_output_spec_is_refused(split_a):
    """Anything lacking output_spec() is a ConfigError when the loader is built."""
    with pytest.raises(ConfigError, match="output_spec"):
        fl.Loader(split_a, 8, workers=0, transform=lambda batch: batch)


def test_two_loaders_interleaved(split_a, split_b):
    """Two process-backed loaders iterated in lockstep each deliver their own plan."""
    with (
        fl.Loader(split_a, 8, workers=2, seed=1) as a,
        fl.Loader(split_b, 5, workers=2, seed=2) as b,
    ):
        got_a, got_b = [], []
        for x, y in zip(a, b, strict=False):
            got_a.append(ids_of(x))
            got_b.append(ids_of(y, np.ones(len(y["X"]), dtype=np.int64)))
        np.testing.assert_array_equal(np.concatenate(got_a), a.plan(0).index[: 8 * len(got_a)])
        np.testing.assert_array_equal(np.concatenate(got_b), b.plan(0).index)


# --------------------------------------------------------------------------- misuse
def test_one_iteration_at_a_time(split_a):
    """A second loop, set_epoch or load_state_dict during an epoch is refused."""
    with fl.Loader(split_a, 8, workers=0) as loader:
        iterator = iter(loader)
        next(iterator)
        with pytest.raises(ConfigError, match="one iteration at a time"):
            iter(loader)
        with pytest.raises(ConfigError, match="during an iteration"):
            loader.set_epoch(3)
        with pytest.raises(ConfigError, match="during an iteration"):
            loader.load_state_dict(loader.state_dict())
        assert len(list(iterator)) == len(loader) - 1
        loader.set_epoch(3)  # fine again once the epoch is over
        assert loader.epoch == 3
