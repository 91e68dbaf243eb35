"""Worker transforms on ragged batches: ``fl.Loader(..., ragged=..., transform=...)``.

The batch the consumer gets must equal the same transform applied to the
consumer-side ragged batch of a loader without one, exactly, whatever the ragged
lengths, batch sizes, workers and backend; ragged outputs are sized from their
declared row bounds and one beyond its bound is an error naming it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
import fastload.transforms as T
from fastload._spec import FieldSpec
from fastload.errors import ConfigError, RaggedBoundError, SchemaError, WorkerError

PROPERTY = settings(max_examples=20, deadline=None)
FAST_ENGINES = [(0, "thread"), (1, "thread"), (2, "thread")]


def particles_source(counts: list[int], chunk_len: int, seed: int = 0):
    """Rows (eta, phi, pT) with phi in [-pi, pi), and an ``id`` field."""
    rng = np.random.default_rng(seed)
    total = int(np.sum(counts))
    rows = np.stack(
        [rng.normal(size=total), rng.uniform(-np.pi, np.pi, total), rng.exponential(10, total)],
        axis=1,
    ).astype(np.float32)
    rows[:, 2] = np.round(rows[:, 2])  # ties in the key: stored order must decide
    parts = fl.Ragged.from_counts(rows, np.asarray(counts, dtype=np.int64))
    n = len(counts)
    return fl.from_arrays({"p": parts, "id": np.arange(n, dtype=np.int64)}, chunk_len=chunk_len)


def pipeline(n: int, k: int, key: int | None = 2, descending: bool = True) -> T.Compose:
    return T.Compose(
        [
            T.TruncateRows("p", n, key=key, descending=descending, out="lead"),
            T.KnnEdges("lead", k, eta=0, phi=1),
            T.EventSum("p", 2, out="pt_sum"),
            T.MapRows("lead", np.abs, row_shape=(3,), dtype=np.float32, out="abs"),
        ]
    )


def assert_batches_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if isinstance(value, fl.Ragged):
            assert isinstance(got[name], fl.Ragged), name
            values, offsets = value.rebased()
            np.testing.assert_array_equal(got[name].offsets, offsets, err_msg=name)
            np.testing.assert_array_equal(got[name].values, values, err_msg=name)
            assert got[name].values.dtype == values.dtype
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=name)
            assert got[name].dtype == value.dtype, name


def run_against_consumer(source, batch_size, transform, **options) -> int:
    """Every worker-transformed batch equals the transform of the consumer's batch; returns batches."""
    common = {"ragged": {"p": "offsets"}, "seed": 1, "shuffle": True}
    n = 0
    with (
        fl.Loader(source, batch_size, transform=transform, **common, **options) as loader,
        fl.Loader(source, batch_size, workers=0, **common) as plain,
    ):
        for _epoch in range(2):  # the second epoch reuses the slots
            for got, raw in zip(loader, plain, strict=True):
                assert_batches_equal(got, transform(raw))
                n += 1
    return n


# ------------------------------------------------------------------ exactness
@PROPERTY
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    batch_size=st.integers(1, 24),
    chunk_len=st.integers(1, 16),
    n=st.integers(0, 12),
    k=st.integers(1, 8),
    key=st.sampled_from([None, 2, -1]),
    descending=st.booleans(),
    engine=st.sampled_from(FAST_ENGINES),
)
def test_worker_transform_equals_the_consumer_side_functions(
    counts, batch_size, chunk_len, n, k, key, descending, engine
):
    workers, backend = engine
    source = particles_source(counts, chunk_len)
    batches = run_against_consumer(
        source, batch_size, pipeline(n, k, key, descending), workers=workers, backend=backend
    )
    assert batches > 0


@settings(max_examples=6, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=60),
    batch_size=st.integers(1, 16),
    chunk_len=st.integers(1, 12),
    workers=st.sampled_from([1, 2]),
)
def test_process_workers_equal_the_consumer_side_functions(counts, batch_size, chunk_len, workers):
    source = particles_source(counts, chunk_len, seed=5)
    assert run_against_consumer(
        source, batch_size, pipeline(4, 7), workers=workers, backend="process"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_process_workers_run_ragged_transforms(workers, no_leaks):
    rng = np.random.default_rng(4)
    source = particles_source(rng.integers(0, 40, 120).tolist(), chunk_len=10)
    assert run_against_consumer(source, 16, pipeline(8, 7), workers=workers, backend="process")


def test_voxelize_ragged_hits_equals_padded_hits():
    """Voxelize on the ragged field gives the grid it gives on the padded one."""
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 25, 40)
    hits = np.stack(
        [rng.uniform(0, 40, counts.sum()) for _ in range(3)] + [rng.exponential(1, counts.sum())],
        axis=1,
    ).astype(np.float32)
    source = fl.from_arrays({"hits": fl.Ragged.from_counts(hits, counts)}, chunk_len=6)
    vox = T.Voxelize(grid=(4, 4, 4), origin_mm=(0, 0, 0), pitch_mm=(10, 10, 10), dropped_out="d")
    keep = T.Compose([vox, T.Drop(["hits", "hits_len"])])
    with (
        fl.Loader(source, 8, workers=1, backend="thread", transform=keep, seed=0) as padded,
        fl.Loader(
            source,
            8,
            workers=1,
            backend="thread",
            seed=0,
            ragged={"hits": "offsets"},
            transform=T.Compose([vox, T.Drop(["hits"])]),
        ) as ragged,
    ):
        assert padded.output_specs == ragged.output_specs
        for a, b in zip(padded, ragged, strict=True):
            assert_batches_equal(b, a)
            assert a["voxels"].sum() > 0


# ------------------------------------------------------------------ bounds
def test_output_bounds_size_the_slots():
    source = particles_source([3, 40, 5, 0, 12, 7], chunk_len=2)
    with fl.Loader(
        source, 4, workers=0, ragged={"p": "offsets"}, transform=pipeline(n=6, k=7)
    ) as loader:
        specs = loader.output_specs
        assert specs["p"].max_len == 40
        assert specs["p"].max_rows == 40 + 12 + 7 + 5  # the 4 longest samples
        assert specs["lead"] == FieldSpec((3,), np.float32, ragged=True)
        assert specs["lead"].max_len == 6
        assert specs["lead"].batch_rows(4) == 24
        assert specs["edge_index"].max_len == 42  # k edges per node of "lead"
        assert specs["edge_index"].max_rows == 7 * specs["lead"].max_rows
        assert specs["pt_sum"] == FieldSpec((), np.float32)
        list(loader)


class Overflowing(T.Transform):
    """Declares at most one row per sample, returns every row."""

    def output_spec(self, inputs):
        spec = inputs["p"]
        return {**inputs, "q": FieldSpec(spec.shape, spec.dtype, ragged=True, max_len=1)}

    def __call__(self, batch):
        return {**batch, "q": batch["p"]}


@pytest.mark.parametrize("engine", [(0, "thread"), (1, "process")])
def test_output_beyond_its_bound_raises_naming_transform_and_field(engine, no_leaks):
    workers, backend = engine
    source = particles_source([1, 1, 3, 1], chunk_len=2)
    with (
        fl.Loader(
            source,
            2,
            shuffle=False,
            workers=workers,
            backend=backend,
            ragged={"p": "offsets"},
            transform=Overflowing(),
        ) as loader,
        pytest.raises(RaggedBoundError, match=r"Overflowing.*'q'.*max_len=1"),
    ):
        list(loader)
    with pytest.raises(RaggedBoundError, match="'q'"):
        T.check_transform(Overflowing(), {"p": fl.Ragged.from_counts(np.zeros((4, 3)), [1, 3])})


class Unbounded(T.Transform):
    def output_spec(self, inputs):
        return {**inputs, "q": FieldSpec((3,), np.float32, ragged=True)}

    def __call__(self, batch):
        return {**batch, "q": batch["p"]}


def test_ragged_output_without_a_bound_is_refused_before_reading():
    source = particles_source([1, 2], chunk_len=2)
    with (
        fl.Loader(source, 2, workers=0, ragged={"p": "offsets"}, transform=Unbounded()) as loader,
        pytest.raises(ConfigError, match=r"'q' without a row bound.*max_len="),
    ):
        next(iter(loader))


class DenseForRagged(T.Transform):
    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        return {**batch, "p": batch["p"].values}


def test_an_array_where_a_ragged_field_was_declared_is_refused():
    source = particles_source([1, 2], chunk_len=2)
    with (
        fl.Loader(
            source, 2, workers=0, ragged={"p": "offsets"}, transform=DenseForRagged()
        ) as loader,
        pytest.raises(WorkerError, match=r"'p'.*declared a ragged"),
    ):
        list(loader)


# ------------------------------------------------------------------ configuration
def test_fixed_shape_transform_on_a_ragged_field_is_refused():
    source = particles_source([1, 2, 3], chunk_len=2)
    with pytest.raises(ConfigError, match=r"Cast: field 'p' is ragged"):
        fl.Loader(source, 2, workers=0, ragged={"p": "offsets"}, transform=T.Cast("p", "int32"))


def test_ragged_transform_on_a_padded_field_is_refused():
    source = particles_source([1, 2, 3], chunk_len=2)
    with pytest.raises(ConfigError, match=r"ragged=\{'p': \"offsets\"\}"):
        fl.Loader(source, 2, workers=0, transform=T.TruncateRows("p", 2))


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (T.TruncateRows("p", 2, key=3), "key=3 is out of range"),
        (T.KnnEdges("p", eta=0, phi=5), "phi=5 is out of range"),
        (T.EventSum("p", -4, out="s"), "column=-4 is out of range"),
        (T.TruncateRows("nope", 2), "'nope' is missing"),
    ],
)
def test_bad_columns_and_fields_are_refused_before_reading(transform, match):
    source = particles_source([1, 2, 3], chunk_len=2)
    with pytest.raises(ConfigError, match=match):
        fl.Loader(source, 2, workers=0, ragged={"p": "offsets"}, transform=transform)


def test_constructor_arguments_are_checked():
    with pytest.raises(ConfigError, match="n"):
        T.TruncateRows("p", -1)
    with pytest.raises(ConfigError, match="k"):
        T.KnnEdges("p", 0)
    with pytest.raises(ConfigError, match="same field"):
        T.KnnEdges("p", out="p")
    with pytest.raises(ConfigError, match="callable"):
        T.MapRows("p", 3, row_shape=(1,), dtype="f4")


def test_transforms_pickle_and_pass_check_transform():
    rng = np.random.default_rng(0)
    counts = np.array([0, 5, 1, 9])
    batch = {
        "p": fl.Ragged.from_counts(rng.normal(size=(15, 3)).astype(np.float32), counts),
        "id": np.arange(4),
    }
    t = T.Compose([T.TruncateRows("p", 4, key=2), T.KnnEdges("p", 2, self_loops=True)])
    out = T.check_transform(t, batch)
    again = pickle.loads(pickle.dumps(t))(batch)
    assert_batches_equal(again, out)
    np.testing.assert_array_equal(out["p"].counts, [0, 4, 1, 4])
    np.testing.assert_array_equal(out["edge_index"].counts, [0, 12, 1, 12])  # (k + 1) per node
    edges = T.knn_edges(out["p"], 0, 1, 2, self_loops=True)
    np.testing.assert_array_equal(out["edge_index"].values.T, edges)
    with pytest.raises(SchemaError, match="came out as"):
        T.check_transform(DenseForRagged(), batch)


# ------------------------------------------------------------------ adapters
def small_loader(**options) -> fl.Loader:
    source = particles_source([int(k * 7 % 11) for k in range(40)], chunk_len=8)
    return fl.Loader(
        source,
        8,
        workers=1,
        backend="thread",
        ragged={"p": "offsets"},
        transform=T.Compose([T.TruncateRows("p", 5, key=2), T.KnnEdges("p", 3)]),
        **options,
    )


def test_torch_nested_and_pyg_views_of_ragged_outputs():
    torch = pytest.importorskip("torch")
    from fastload.adapters.torch import pyg_batch

    with small_loader() as loader, small_loader() as numpy_side:
        for tb, nb in zip(loader.torch(), numpy_side, strict=True):
            assert tb["edge_index"].is_nested
            np.testing.assert_array_equal(
                tb["edge_index"].values().numpy(), nb["edge_index"].values
            )
            for batch in (tb, nb):
                g = pyg_batch(batch, "p", edge_index="edge_index", use_pyg=False)
                assert tuple(g.edge_index.shape) == (2, int(nb["edge_index"].offsets[-1]))
                np.testing.assert_array_equal(g.edge_index.numpy(), T.knn_edges(nb["p"], k=3))
                assert "edge_index" in g.keys()  # noqa: SIM118 (GraphBatch is no Mapping)
                assert g.x.shape[0] == nb["p"].values.shape[0]
                assert g.edge_index.dtype == torch.int64


def test_tf_ragged_tensors_of_ragged_outputs():
    tf = pytest.importorskip("tensorflow")
    with small_loader() as loader, small_loader() as numpy_side:
        ds = loader.tf()
        assert isinstance(ds.element_spec["edge_index"], tf.RaggedTensorSpec)
        for tb, nb in zip(ds, numpy_side, strict=True):
            np.testing.assert_array_equal(
                tb["edge_index"].flat_values.numpy(), nb["edge_index"].values
            )
            np.testing.assert_array_equal(
                tb["edge_index"].row_splits.numpy(), nb["edge_index"].offsets
            )


class WritesItsInput(T.Transform):
    def output_spec(self, inputs):
        return dict(inputs)

    def __call__(self, batch):
        batch["p"].values[...] = 0
        return dict(batch)


def test_a_transform_cannot_write_into_the_staged_ragged_field():
    source = particles_source([2, 3], chunk_len=2)
    with (
        fl.Loader(
            source,
            2,
            workers=1,
            backend="thread",
            ragged={"p": "offsets"},
            transform=WritesItsInput(),
        ) as loader,
        pytest.raises(ValueError, match="read-only"),
    ):
        list(loader)
