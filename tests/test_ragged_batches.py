"""Ragged batches: ``fl.Loader(..., ragged={"hits": "offsets"})`` delivers values + offsets.

Every batch must hold exactly the plan's samples' rows back to back, whatever the
ragged lengths, batch size, chunking, workers and backend; kept batches stay
correct while their slots are out of the ring; the framework views (torch nested,
PyG-style, tf.RaggedTensor, JAX pairs) equal the source rows.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload as fl
from fastload.errors import ConfigError

PROPERTY = settings(max_examples=25, deadline=None)
#: (workers, backend): 0 runs inline; threads are cheap enough for property tests
FAST_ENGINES = [(0, "thread"), (1, "thread"), (2, "thread")]


def ragged_source(
    counts: list[int], chunk_len: int, row_shape: tuple[int, ...] = (3,), seed: int = 0
) -> tuple[fl.MemorySplit, fl.Ragged]:
    """An in-memory source whose ``id`` field is the sample index, and its ``hits``."""
    rng = np.random.default_rng(seed)
    total = int(np.sum(counts))
    values = rng.normal(size=(total, *row_shape)).astype(np.float32)
    hits = fl.Ragged.from_counts(values, np.asarray(counts, dtype=np.int64))
    n = len(counts)
    source = fl.from_arrays({"hits": hits, "id": np.arange(n, dtype=np.int64)}, chunk_len=chunk_len)
    return source, hits


def expected_rows(hits: fl.Ragged, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loop reference: the samples' rows back to back, and their offsets from 0."""
    rows = [hits[int(i)] for i in index]
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.concatenate(rows) if rows else hits.values[:0]
    return values, offsets


def check_batch(batch: dict, hits: fl.Ragged, index: np.ndarray) -> None:
    got = batch["hits"]
    assert isinstance(got, fl.Ragged)
    values, offsets = expected_rows(hits, index)
    np.testing.assert_array_equal(got.offsets, offsets)
    np.testing.assert_array_equal(got.values, values)
    assert got.values.shape == (int(offsets[-1]), *hits.values.shape[1:])
    np.testing.assert_array_equal(batch["id"], index)
    assert "hits_len" not in batch


# ------------------------------------------------------------------ exactness
@PROPERTY
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=120),
    batch_size=st.integers(1, 40),
    chunk_len=st.integers(1, 24),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 3),
    engine=st.sampled_from(FAST_ENGINES),
)
def test_ragged_batches_equal_the_plan_rows(
    counts, batch_size, chunk_len, shuffle, drop_last, seed, engine
):
    workers, backend = engine
    source, hits = ragged_source(counts, chunk_len, seed=seed)
    if drop_last and batch_size > len(counts):
        drop_last = False
    with fl.Loader(
        source,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        workers=workers,
        backend=backend,
        ragged={"hits": "offsets"},
    ) as loader:
        for epoch in range(2):  # the second epoch reuses the slots
            plan = loader.plan()
            n = 0
            for b, batch in enumerate(loader):
                check_batch(batch, hits, plan.batch(b)[1])
                n += 1
            assert n == plan.n_batches, epoch


@pytest.mark.parametrize("workers", [1, 2])
def test_process_workers_read_a_store_into_ragged_batches(tmp_path: Path, workers, no_leaks):
    """A real store (values in chunks that straddle event chunks), process workers."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 30, 150)
    hits = fl.Ragged.from_counts(rng.normal(size=(int(counts.sum()), 2)).astype(np.float32), counts)
    arrays = {"hits": hits, "id": np.arange(counts.size, dtype=np.int64)}
    fl.write_arrays(tmp_path / "s.zarr", {"train": arrays}, chunk_len=16, chunk_bytes=256)
    split = fl.open_store(tmp_path / "s.zarr")["train"]
    assert split.reader("hits", "values").chunk_len < 16 * 15  # several value chunks per chunk
    with fl.Loader(
        split, 24, workers=workers, backend="process", seed=3, ragged={"hits": "offsets"}
    ) as loader:
        plan = loader.plan()
        for b, batch in enumerate(loader):
            check_batch(batch, hits, plan.batch(b)[1])


def test_padded_and_ragged_fields_side_by_side():
    """ragged= picks per field: one field as offsets, the other padded as before."""
    counts = [3, 0, 5, 1, 2, 7, 4]
    source, hits = ragged_source(counts, chunk_len=3)
    other = fl.Ragged.from_counts(hits.values[:, 0].copy(), np.asarray(counts))
    source = fl.from_arrays(
        {"hits": hits, "tracks": other, "id": np.arange(len(counts))}, chunk_len=3
    )
    with fl.Loader(
        source, 4, workers=0, ragged={"hits": "offsets", "tracks": "pad"}, seed=2
    ) as loader:
        specs = loader.output_specs
        assert specs["hits"].ragged
        assert not specs["tracks"].ragged
        assert specs["tracks"].shape == (7,)
        plan = loader.plan()
        for b, batch in enumerate(loader):
            index = plan.batch(b)[1]
            check_batch(batch, hits, index)
            np.testing.assert_array_equal(batch["tracks_len"], np.asarray(counts)[index])


def test_mix_of_two_sources():
    """Batches drawing from two sources: each sample's rows come from its own source."""
    a, hits_a = ragged_source([2, 5, 0, 1, 9, 3, 3, 4], chunk_len=3, seed=1)
    b, hits_b = ragged_source([1, 1, 6, 2, 0, 8], chunk_len=2, seed=2)
    mix = fl.Mix({"a": a, "b": b}, weights={"a": 0.5, "b": 0.5})
    with fl.Loader(mix, 5, workers=2, backend="thread", ragged={"hits": "offsets"}) as loader:
        plan = loader.plan()
        for k, batch in enumerate(loader):
            source, index = plan.batch(k)
            rows = [(hits_a, hits_b)[s][int(i)] for s, i in zip(source, index, strict=True)]
            np.testing.assert_array_equal(batch["hits"].values, np.concatenate(rows))
            np.testing.assert_array_equal(batch["hits"].counts, [len(r) for r in rows])


def test_resume_mid_epoch_gives_the_same_batches():
    source, hits = ragged_source(list(range(30)), chunk_len=4)
    with fl.Loader(source, 6, workers=1, backend="thread", ragged={"hits": "offsets"}) as loader:
        plan = loader.plan()
        for b, _batch in enumerate(loader):
            if b == 2:
                state = loader.state_dict()
                break
    with fl.Loader(source, 6, workers=1, backend="thread", ragged={"hits": "offsets"}) as loader:
        loader.load_state_dict(state)
        for b, batch in enumerate(loader, start=3):
            check_batch(batch, hits, plan.batch(b)[1])


# --------------------------------------------------------------- kept batches
@pytest.mark.parametrize("engine", [(1, "thread"), (2, "process")])
def test_kept_ragged_batches_stay_correct(engine, no_leaks):
    """Batches kept across epochs keep their slots; the ring never overwrites them."""
    workers, backend = engine
    source, hits = ragged_source([int(k % 13) for k in range(200)], chunk_len=8)
    kept = []
    with fl.Loader(
        source, 16, workers=workers, backend=backend, ragged={"hits": "offsets"}
    ) as loader:
        for _ in range(3):
            plan = loader.plan()
            kept += [(plan.batch(b)[1], batch) for b, batch in enumerate(loader)]
        for index, batch in kept:
            check_batch(batch, hits, index)
            assert not batch["hits"].values.flags.writeable
        # views of a kept batch outlive the dict
        view = kept[0][1]["hits"].values[:5]
        index0 = kept[0][0]
        del kept
        np.testing.assert_array_equal(view, expected_rows(hits, index0)[0][:5])


def test_copies_past_the_kept_bound_are_correct():
    """Past max_kept_bytes, batches arrive as owned copies, values + offsets alike."""
    source, hits = ragged_source([int(k % 9) for k in range(120)], chunk_len=8)
    with fl.Loader(
        source, 8, workers=1, backend="thread", ragged={"hits": "offsets"}, max_kept_bytes=0
    ) as loader:
        plan = loader.plan()
        with pytest.warns(UserWarning, match="max_kept_bytes"):
            batches = list(loader)
        kept = [(plan.batch(b)[1], batch) for b, batch in enumerate(batches)]
    copies = [batch for _, batch in kept if batch["hits"].values.flags.writeable]
    assert copies, "some batches must have been copied"
    for index, batch in kept:
        check_batch(batch, hits, index)


def test_copy_true_gives_owned_ragged():
    source, hits = ragged_source([4, 0, 2, 6, 1], chunk_len=2)
    with fl.Loader(source, 2, workers=0, copy=True, ragged={"hits": "offsets"}) as loader:
        plan = loader.plan()
        for b, batch in enumerate(loader):
            assert batch["hits"].values.flags.writeable
            check_batch(batch, hits, plan.batch(b)[1])


# ------------------------------------------------------------- slot bounds
def test_default_slot_holds_the_longest_samples():
    """The default bound is the rows of the batch_size longest samples: never exceeded."""
    counts = [1] * 50 + [100, 90, 80]
    source, hits = ragged_source(counts, chunk_len=4)
    with fl.Loader(source, 3, workers=0, shuffle=False, ragged={"hits": "offsets"}) as loader:
        assert loader._spec.packed_rows == {"hits": 270}
        plan = loader.plan()
        for b, batch in enumerate(loader):
            check_batch(batch, hits, plan.batch(b)[1])


def test_bounded_slot_raises_naming_the_field_and_the_option(no_leaks):
    counts = [1] * 20 + [50, 50]
    source, _ = ragged_source(counts, chunk_len=4)
    loader = fl.Loader(
        source,
        4,
        workers=1,
        backend="thread",
        shuffle=False,
        ragged={"hits": "offsets"},
        ragged_rows={"hits": 10},
    )
    with loader, pytest.raises(ConfigError, match=r"'hits'.*ragged_rows\['hits'\] to at least 100"):
        list(loader)


def test_bounded_slot_that_fits():
    counts = [2, 3, 1, 4, 0, 2, 3, 1]
    source, hits = ragged_source(counts, chunk_len=3)
    with fl.Loader(
        source, 3, workers=0, ragged={"hits": "offsets"}, ragged_rows={"hits": 9}
    ) as loader:
        plan = loader.plan()
        for b, batch in enumerate(loader):
            check_batch(batch, hits, plan.batch(b)[1])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ragged": {"id": "offsets"}}, "not a selected ragged field"),
        ({"ragged": {"hits": "sparse"}}, "one of"),
        ({"ragged_rows": {"hits": 5}}, 'ragged=.*"offsets"'),
        ({"ragged": {"hits": "offsets"}, "ragged_rows": {"hits": 0}}, "ragged_rows"),
        ({"ragged": {"hits": "offsets"}, "pad": {"hits": 3}}, "either padded"),
    ],
)
def test_configuration_errors(options, match):
    source, _ = ragged_source([1, 2, 3], chunk_len=2)
    with pytest.raises(ConfigError, match=match):
        fl.Loader(source, 2, workers=0, **options)


def test_worker_transform_passes_ragged_fields_through():
    """A transform on the dense fields: the ragged one arrives as without it
    (tests/test_ragged_transforms.py has the transforms of ragged fields)."""
    from fastload.transforms import Cast

    source, hits = ragged_source([1, 2, 3, 0, 5], chunk_len=2)
    with fl.Loader(
        source,
        2,
        workers=1,
        backend="thread",
        ragged={"hits": "offsets"},
        transform=Cast("id", "int32"),
    ) as loader:
        plan = loader.plan()
        for b, batch in enumerate(loader):
            assert batch["id"].dtype == np.int32
            check_batch(batch, hits, plan.batch(b)[1])


def test_a_source_without_offsets_is_refused():
    source, _ = ragged_source([1, 2, 3], chunk_len=2)

    class NoOffsets:
        name = "plain"

        def __len__(self):
            return len(source)

        chunk_len = source.chunk_len
        n_chunks = source.n_chunks
        fields = source.fields
        max_len = source.max_len
        decoder = source.decoder

    with pytest.raises(ConfigError, match=r"offsets\(field\)"):
        fl.Loader(NoOffsets(), 2, workers=0, ragged={"hits": "offsets"})


# ------------------------------------------------------------------ adapters
def small_loader(**options) -> tuple[fl.Loader, fl.Ragged]:
    counts = [int(k * 7 % 11) for k in range(60)]
    source, hits = ragged_source(counts, chunk_len=8)
    loader = fl.Loader(
        source, 10, workers=1, backend="thread", seed=4, ragged={"hits": "offsets"}, **options
    )
    return loader, hits


def test_torch_nested_jagged_tensors_equal_the_source_rows():
    torch = pytest.importorskip("torch")
    loader, hits = small_loader()
    with loader.torch() as batches:
        n = 0
        for batch in batches:
            nested = batch["hits"]
            assert nested.is_nested
            assert nested.shape[0] == batch["id"].shape[0]
            for i, rows in zip(batch["id"].tolist(), nested.unbind(), strict=True):
                assert torch.equal(rows, torch.from_numpy(hits[i]))
            n += 1
        assert n == len(loader)


def test_torch_copy_gives_owned_nested_tensors():
    torch = pytest.importorskip("torch")
    loader, hits = small_loader()
    with loader.torch(copy=True) as batches:
        kept = list(batches)
    for batch in kept:
        for i, rows in zip(batch["id"].tolist(), batch["hits"].unbind(), strict=True):
            assert torch.equal(rows, torch.from_numpy(hits[i]))


def test_pyg_view_of_numpy_and_torch_batches():
    torch = pytest.importorskip("torch")
    from fastload.adapters.torch import GraphBatch, pyg_batch

    loader, hits = small_loader()
    with loader:
        for batch in loader:
            graph = pyg_batch(batch, "hits", use_pyg=False)
            assert isinstance(graph, GraphBatch)
            ids = batch["id"]
            assert graph.num_graphs == ids.size
            assert graph.ptr.dtype == torch.int64
            assert graph.batch.dtype == torch.int64
            np.testing.assert_array_equal(graph.ptr.numpy(), batch["hits"].offsets)
            for g, i in enumerate(ids):
                assert torch.equal(graph.x[graph.batch == g], torch.from_numpy(hits[int(i)]))
                lo, hi = int(graph.ptr[g]), int(graph.ptr[g + 1])
                assert torch.equal(graph.x[lo:hi], torch.from_numpy(hits[int(i)]))
            assert torch.equal(graph.id, torch.from_numpy(ids))
        for batch in loader.torch():
            graph = pyg_batch(batch, "hits", edge_index=np.zeros((2, 0), np.int64), use_pyg=False)
            assert graph.edge_index.shape == (2, 0)
            parts = batch["hits"].unbind()
            assert torch.equal(graph.x, torch.cat(parts))
            assert graph.batch.tolist() == [g for g, p in enumerate(parts) for _ in range(len(p))]


def test_pyg_view_refuses_a_padded_field():
    pytest.importorskip("torch")
    from fastload.adapters.torch import pyg_batch

    with pytest.raises(ConfigError, match="not ragged"):
        pyg_batch({"hits": np.zeros((2, 3))}, "hits")


def test_tf_ragged_tensors_equal_the_source_rows():
    tf = pytest.importorskip("tensorflow")
    loader, hits = small_loader()
    with loader:
        dataset = loader.tf()
        spec = dataset.element_spec["hits"]
        assert isinstance(spec, tf.RaggedTensorSpec)
        n = 0
        for element in dataset:
            ragged = element["hits"]
            assert isinstance(ragged, tf.RaggedTensor)
            for i, rows in zip(element["id"].numpy(), ragged, strict=True):
                np.testing.assert_array_equal(rows.numpy(), hits[int(i)])
            n += 1
        assert n == len(loader)


def test_jax_values_and_offsets():
    pytest.importorskip("jax")
    loader, hits = small_loader()
    with (
        loader.jax(x="hits") as batches,
        fl.Loader(loader._spec.sources[0], 10, workers=0, seed=4, fields=["id"]) as ids,
    ):
        for (values, offsets), id_batch in zip(batches, ids, strict=True):
            want_values, want_offsets = expected_rows(hits, id_batch["id"])
            np.testing.assert_array_equal(np.asarray(values), want_values)
            np.testing.assert_array_equal(np.asarray(offsets), want_offsets)


# ---------------------------------------------------------------- transforms
def _events(draw_counts: list[int], seed: int, features: int = 3) -> fl.Ragged:
    rng = np.random.default_rng(seed)
    total = int(np.sum(draw_counts))
    values = np.stack(
        [
            rng.normal(size=total),  # eta
            rng.uniform(-np.pi, np.pi, size=total),  # phi
            rng.integers(0, 5, size=total).astype(np.float64),  # pT, with ties
        ][:features],
        axis=1,
    ).astype(np.float32)
    return fl.Ragged.from_counts(values, np.asarray(draw_counts, dtype=np.int64))


@PROPERTY
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    n=st.integers(0, 6),
    descending=st.booleans(),
    seed=st.integers(0, 5),
)
def test_truncate_rows_equals_a_loop(counts, n, descending, seed):
    from fastload.transforms import truncate_rows

    ragged = _events(counts, seed)
    got = truncate_rows(ragged, n, key=2, descending=descending)
    assert len(got) == len(counts)
    for i in range(len(counts)):
        rows = list(ragged[i])
        # stable sort by pT: ties keep their stored order
        ranked = sorted(
            range(len(rows)), key=lambda j: (-rows[j][2] if descending else rows[j][2], j)
        )
        want = np.array([rows[j] for j in ranked[:n]], dtype=np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(got[i], want)


def test_truncate_rows_without_key_keeps_the_first_rows():
    from fastload.transforms import truncate_rows

    ragged = fl.Ragged.from_counts(np.arange(10.0), np.array([4, 0, 6]))
    got = truncate_rows(ragged, 2)
    assert [got[i].tolist() for i in range(3)] == [[0.0, 1.0], [], [4.0, 5.0]]


def _knn_loop(ragged: fl.Ragged, k: int, self_loops: bool) -> list[tuple[int, int]]:
    import math

    edges = []
    values, offsets = ragged.rebased()
    for lo, hi in itertools.pairwise(offsets.tolist()):
        for i in range(lo, hi):
            dists = []
            for j in range(lo, hi):
                if j == i:
                    continue
                de = float(values[i, 0]) - float(values[j, 0])
                dp = float(values[i, 1]) - float(values[j, 1])
                dp = (dp + math.pi) % (2 * math.pi) - math.pi
                dists.append((de * de + dp * dp, j))
            dists.sort()
            if self_loops:
                edges.append((i, i))
            edges += [(j, i) for _, j in dists[:k]]
    return edges


@PROPERTY
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    k=st.integers(1, 8),
    self_loops=st.booleans(),
    seed=st.integers(0, 5),
)
def test_knn_edges_equal_a_loop(counts, k, self_loops, seed):
    from fastload.transforms import knn_edges

    ragged = _events(counts, seed, features=2)
    got = knn_edges(ragged, eta=0, phi=1, k=k, self_loops=self_loops)
    assert got.dtype == np.int64
    assert got.shape[0] == 2
    assert list(zip(got[0].tolist(), got[1].tolist(), strict=True)) == _knn_loop(
        ragged, k, self_loops
    )


def _knn_per_event(ragged: fl.Ragged, k: int, self_loops: bool) -> np.ndarray:
    """knn_edges as it was before the blocks: one stable numpy sort per event (the reference)."""
    from fastload.transforms import wrap_angle

    values, offsets = ragged.rebased()
    e, p = values[:, 0].astype(np.float64), values[:, 1].astype(np.float64)
    sources, targets = [], []
    for lo, hi in itertools.pairwise(offsets.tolist()):
        m = hi - lo
        if m == 0:
            continue
        rows = np.arange(lo, hi, dtype=np.int64)
        neighbours = np.zeros((m, 0), dtype=np.int64)
        if min(k, m - 1) > 0:
            de = e[lo:hi, None] - e[None, lo:hi]
            dp = wrap_angle(p[lo:hi, None] - p[None, lo:hi])
            dist = de * de + dp * dp
            np.fill_diagonal(dist, np.inf)
            cols = np.broadcast_to(np.arange(m), (m, m))
            neighbours = lo + np.lexsort((cols, dist), axis=-1)[:, : min(k, m - 1)]
        if self_loops:
            neighbours = np.concatenate([rows[:, None], neighbours], axis=1)
        sources.append(neighbours.reshape(-1))
        targets.append(np.repeat(rows, neighbours.shape[1]))
    if not sources:
        return np.zeros((2, 0), dtype=np.int64)
    return np.stack([np.concatenate(sources), np.concatenate(targets)]).astype(np.int64)


_COORDS = st.sampled_from(["normal", "grid", "wide", "nonfinite"])


def _coords(counts: list[int], kind: str, seed: int) -> fl.Ragged:
    rng = np.random.default_rng(seed)
    total = int(np.sum(counts))
    if kind == "grid":  # many equal distances: ties decided by the lower row
        values = rng.integers(-3, 4, (total, 2)) * np.array([0.5, np.pi / 4])
    elif kind == "wide":  # phi far outside [-pi, pi): np.mod's general path
        values = rng.normal(size=(total, 2)) * np.array([1.0, 40.0])
    else:
        values = np.stack([rng.normal(size=total), rng.uniform(-np.pi, np.pi, total)], axis=1)
    if kind == "nonfinite" and total:
        bad = rng.integers(0, total, max(1, total // 20))
        values[bad, rng.integers(0, 2, bad.size)] = rng.choice(
            [np.nan, np.inf, -np.inf, 1e200], bad.size
        )
    return fl.Ragged.from_counts(values, np.asarray(counts, dtype=np.int64))


@PROPERTY
@given(
    counts=st.lists(st.one_of(st.integers(0, 10), st.integers(11, 130)), min_size=1, max_size=12),
    k=st.integers(1, 20),
    self_loops=st.booleans(),
    kind=_COORDS,
    block=st.sampled_from([1, 64, 1 << 16]),
    seed=st.integers(0, 5),
)
def test_knn_edges_blocks_equal_the_per_event_sort(counts, k, self_loops, kind, block, seed):
    """The blocked knn_edges gives the per-event stable sort's edges exactly (ties, nan, inf)."""
    from unittest import mock

    from fastload.transforms import _ragged, knn_edges

    ragged = _coords(counts, kind, seed)
    with np.errstate(all="ignore"), mock.patch.object(_ragged, "_BLOCK_DISTANCES", block):
        got = knn_edges(ragged, 0, 1, k, self_loops=self_loops)
        want = _knn_per_event(ragged, k, self_loops)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(
    x=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(-4 * np.pi, 4 * np.pi),
            # np.nextafter(-pi, -4): x + pi = -4.4e-16, np.mod rounds it up to 2 pi
            st.sampled_from(
                [np.pi, -np.pi, np.nextafter(-np.pi, -4), 2 * np.pi, -2 * np.pi, 3 * np.pi, -0.0]
            ),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_fast_wrap_equals_wrap_angle_bit_for_bit(x):
    from fastload.transforms import _ragged, wrap_angle

    a = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        want, got = wrap_angle(a), _ragged._wrapped(a)
    nan = np.isnan(want)
    assert np.isnan(got).tolist() == nan.tolist()
    assert got[~nan].view(np.int64).tolist() == want[~nan].view(np.int64).tolist()  # -0.0 too


def test_knn_edges_wrap_phi_around():
    """Two rows at phi = +-(pi - 0.01) are nearer than one at phi = 0 with the same eta."""
    from fastload.transforms import knn_edges

    values = np.array([[0.0, np.pi - 0.01], [0.0, -np.pi + 0.01], [0.0, 0.5]], dtype=np.float32)
    ragged = fl.Ragged.from_counts(values, np.array([3]))
    edges = knn_edges(ragged, k=1)
    assert edges[:, 0].tolist() == [1, 0]  # row 0's nearest is row 1, across the wrap
    assert edges[:, 1].tolist() == [0, 1]


def test_row_features_and_event_sums():
    from fastload.transforms import event_sum, map_rows, row_event

    ragged = _events([3, 0, 2], seed=1)
    log_pt = map_rows(ragged, lambda v: np.log1p(v[:, 2:3]))
    np.testing.assert_array_equal(log_pt.offsets, ragged.offsets)
    np.testing.assert_allclose(log_pt.values, np.log1p(ragged.values[:, 2:3]))
    assert row_event(ragged).tolist() == [0, 0, 0, 2, 2]
    sums = event_sum(ragged, column=2)
    for i in range(3):
        assert sums[i] == pytest.approx(float(ragged[i][:, 2].sum()))
    with pytest.raises(ConfigError, match="one row per input row"):
        map_rows(ragged, lambda v: v[:1])


def test_graph_pipeline_on_loader_batches():
    """Loader ragged batches -> truncation -> kNN edges -> PyG view, node numbers consistent."""
    pytest.importorskip("torch")
    from fastload.adapters.torch import pyg_batch
    from fastload.transforms import knn_edges, truncate_rows

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 20, 40)
    hits = _events(list(counts), seed=5)
    source = fl.from_arrays({"hits": hits, "id": np.arange(counts.size)}, chunk_len=8)
    with fl.Loader(source, 8, workers=0, ragged={"hits": "offsets"}) as loader:
        for batch in loader:
            leading = truncate_rows(batch["hits"], 10, key=2)
            edges = knn_edges(leading, k=7)
            graph = pyg_batch({**batch, "hits": leading}, "hits", edge_index=edges, use_pyg=False)
            assert graph.num_nodes == int(np.minimum(counts[batch["id"]], 10).sum())
            # every edge joins two nodes of the same graph
            assert bool(
                (graph.batch[graph.edge_index[0]] == graph.batch[graph.edge_index[1]]).all()
            )
