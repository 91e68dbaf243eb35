"""TensorFlow/Keras adapters: ``loader.tf()`` and ``FastloadPyDataset``.

The central check: every value of every element equals what the loader's
plan and the store say, also when TensorFlow buffers elements while the
loader reuses its shared-memory slots (the adapter yields slot views; TF
copies them into its own memory, or holds them, which keeps the slot from reuse).
"""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError, FieldNotFoundError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from fastload.adapters.keras import FastloadPyDataset  # noqa: E402  (after importorskip)
from fastload.adapters.tf import aligned_copy, to_tf  # noqa: E402

pytestmark = [pytest.mark.tf, pytest.mark.usefixtures("no_leaks")]

N_TRAIN = 203
CHUNK = 16


def sample_arrays(n: int) -> dict[str, np.ndarray]:
    """Fields whose values identify the sample: idx, X (6, 4) float32, y, w (sample weight).

    ``f`` (4,) float32 is a noisy function of the label, so a small model can learn ``y``.
    """
    idx = np.arange(n, dtype=np.int64)
    X = (idx[:, None, None] * 10.0 + np.arange(24).reshape(6, 4)).astype(np.float32)
    y = (idx % 2).astype(np.int64)
    noise = 0.5 * np.sin(idx[:, None] * np.array([1.3, 2.9, 4.1, 7.7]))
    f = ((2 * y - 1)[:, None] * np.array([1.0, 0.5, -0.5, 0.2]) + noise).astype(np.float32)
    return {"idx": idx, "X": X, "y": y, "w": (1.0 + idx % 3).astype(np.float32), "f": f}


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> fl.Split:
    path = tmp_path_factory.mktemp("tf") / "ids.zarr"
    fl.write_arrays(path, {"train": sample_arrays(N_TRAIN)}, chunk_len=CHUNK)
    return fl.open_store(path)["train"]


def expected_batches(loader: fl.Loader, split: fl.Split, epoch: int) -> list[dict[str, np.ndarray]]:
    """What batch b of ``epoch`` must hold, from the loader's plan and the store."""
    plan = loader.plan(epoch)
    arrays = {f: np.asarray(split.read(f)) for f in loader.fields}
    return [
        {
            f: a[plan.index[plan.batch_bounds[b] : plan.batch_bounds[b + 1]]]
            for f, a in arrays.items()
        }
        for b in range(plan.n_batches)
    ]


def test_element_spec_is_complete(split: fl.Split) -> None:
    """One TensorSpec per field: per-sample shape, dtype, name; batch dim known only if always full."""
    with fl.Loader(split, 20, workers=0) as loader:  # 203 = 10 * 20 + 3: last batch short
        spec = loader.tf().element_spec
        assert set(spec) == {"idx", "X", "y", "w", "f"}
        assert spec["X"] == tf.TensorSpec((None, 6, 4), tf.float32, name="X")
        assert spec["idx"] == tf.TensorSpec((None,), tf.int64, name="idx")
    with fl.Loader(split, 20, workers=0, drop_last=True) as loader:
        x, y = loader.tf(x=("X", "idx"), y="y").element_spec
        assert x[0].shape == (20, 6, 4)
        assert x[1].shape == (20,)
        assert y.shape == (20,)
        assert loader.tf(x="X").cardinality().numpy() == 10


def test_elastic_resume_declares_no_cardinality(split: fl.Split) -> None:
    """After an elastic resume the first iteration is the rest of an epoch: no length declared."""
    with fl.Loader(split, 20, workers=0, world_size=2) as old:
        state = old.state_dict()
    with fl.Loader(split, 20, workers=0) as loader:
        loader.load_state_dict({**state, "batch": 3})  # 2 ranks took 3 batches each
        ds = loader.tf(x="idx")
        assert ds.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
        ids = np.concatenate([x.numpy() for x in ds])
        assert len(ids) == N_TRAIN - 2 * 3 * 20
        assert len(set(ids.tolist())) == len(ids)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_value_matches_plan_and_store(split: fl.Split, workers: int) -> None:
    """All elements of two epochs, kept alive while the loader reuses slots, equal plan + store."""
    with fl.Loader(split, 16, seed=11, workers=workers, prefetch=2) as loader:
        ds = loader.tf(x={"X": "X", "idx": "idx"}, y="y", sample_weight="w", prefetch=4)
        for epoch in range(2):
            want = expected_batches(loader, split, epoch)
            elements = list(ds)  # every element held at once, each pinning its slot
            assert len(elements) == len(want) == len(loader)
            for (x, y, w), expect in zip(elements, want, strict=True):
                np.testing.assert_array_equal(x["X"].numpy(), expect["X"])
                np.testing.assert_array_equal(x["idx"].numpy(), expect["idx"])
                np.testing.assert_array_equal(y.numpy(), expect["y"])
                np.testing.assert_array_equal(w.numpy(), expect["w"])
        assert loader.epoch == 2


def test_slot_views_handed_to_tf_stay_correct(split: fl.Split) -> None:
    """Raw slot views through from_generator stay correct while TF holds them.

    from_generator wraps an aligned array without copying, keeping a reference to
    it; the loader reuses a slot only once no array over it is alive.
    """
    with fl.Loader(split, 16, seed=11, workers=0, prefetch=2) as loader:
        want = expected_batches(loader, split, 0)
        # two epochs: the second reuses every slot of the ring, whatever its size
        raw = tf.data.Dataset.from_generator(
            lambda: (batch["idx"] for _ in range(2) for batch in loader),
            output_signature=tf.TensorSpec((None,), tf.int64),
        )
        held = list(raw)[: len(want)]
        wrong = [not np.array_equal(t.numpy(), w["idx"]) for t, w in zip(held, want, strict=True)]
    assert not any(wrong)


def _through_from_generator(handed: list[np.ndarray]) -> Any:
    def generate():  # keeps no reference of its own once TF has the array
        yield handed.pop()

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec((256,), tf.float32)
    )
    iterator = iter(dataset)
    return next(iterator)


def _through_ragged_tensor(handed: list[np.ndarray]) -> Any:
    # what the adapter does for a ragged="offsets" field, in the generator
    ragged = tf.RaggedTensor.from_row_splits(handed.pop(), np.array([0, 100, 256]))
    return ragged.flat_values


@pytest.mark.parametrize("writeable", [False, True])
@pytest.mark.parametrize("hand_over", [_through_from_generator, _through_ragged_tensor])
def test_tensorflow_copies_or_holds_what_it_is_handed(writeable: bool, hand_over: Any) -> None:
    """The property the zero-copy hand-over rests on, for the TF installed here.

    An aligned array like a slot view: the tensor TF makes of it either
    lives in TF's own memory, or wraps the array and keeps it alive until
    the tensor is gone.  A TF release that wraps without holding fails here
    (and would break every generator that yields temporaries).
    """
    array = aligned_copy(np.arange(256, dtype=np.float32))
    array.flags.writeable = writeable
    address, alive = array.ctypes.data, weakref.ref(array)
    handed = [array]
    del array
    tensor = hand_over(handed)
    gc.collect()
    if tensor.numpy().ctypes.data == address:  # wrapped: must be held, then freed with the tensor
        assert alive() is not None
        del tensor
        gc.collect()
        assert alive() is None
    else:
        np.testing.assert_array_equal(tensor.numpy(), np.arange(256, dtype=np.float32))


def test_held_elements_stay_correct_while_the_ring_turns(split: fl.Split) -> None:
    """Elements of an epoch, all held while two more epochs reuse every slot, keep their values.

    Whether TF copied the slot views or holds them, no element may change.
    """
    with fl.Loader(split, 16, seed=11, workers=1, prefetch=2) as loader:
        ds = loader.tf(x="X", y="idx", prefetch=3)
        want = expected_batches(loader, split, 0)
        held = list(ds)
        for _ in range(2):
            for _element in ds:
                pass
        for (x, idx), expect in zip(held, want, strict=True):
            np.testing.assert_array_equal(x.numpy(), expect["X"])
            np.testing.assert_array_equal(idx.numpy(), expect["idx"])


def test_aligned_copy_is_a_private_aligned_copy() -> None:
    """The copy starts on a 64-byte boundary, equals the input and shares no memory with it."""
    base = np.arange(1001, dtype=np.float32)
    source = base[1:].reshape(25, 40)  # a misaligned view
    out = aligned_copy(source)
    assert out.ctypes.data % 64 == 0
    np.testing.assert_array_equal(out, source)
    assert not np.shares_memory(out, source)


def test_structures_and_selection_errors(split: fl.Split) -> None:
    """x/y templates map to tuples and dicts; bad selections fail with the field named."""
    with fl.Loader(split, 50, workers=0) as loader:
        x, y = next(iter(loader.tf(x=("X", {"i": "idx"}), y=["y"])))
        assert isinstance(x, tuple)
        assert isinstance(x[1], dict)
        assert isinstance(y, tuple)
        assert x[0].shape == (50, 6, 4)
        assert x[1]["i"].dtype == tf.int64
        only_x = next(iter(loader.tf(x="idx")))
        assert isinstance(only_x, tf.Tensor)
        assert only_x.shape == (50,)
        with pytest.raises(FieldNotFoundError, match=r"'Y'.*closest: 'y'"):
            loader.tf(x="X", y="Y")
        with pytest.raises(ConfigError, match="without x"):
            loader.tf(y="y")
        with pytest.raises(ConfigError, match="without y"):
            loader.tf(x="X", sample_weight="w")
        with pytest.raises(ConfigError, match="prefetch"):
            loader.tf(prefetch=-1)


def test_break_mid_epoch_then_iterate_again(split: fl.Split) -> None:
    """Abandoning an iteration (take) ends that loader epoch; the next iteration runs the next one."""
    with fl.Loader(split, 16, seed=2, workers=1) as loader:
        ds = loader.tf(x="idx")
        first_two = [t.numpy() for t in ds.take(2)]
        want0 = expected_batches(loader, split, 0)
        np.testing.assert_array_equal(first_two[1], want0[1]["idx"])
        assert loader.epoch == 1
        want1 = expected_batches(loader, split, 1)
        again = [t.numpy() for t in ds]
        assert len(again) == len(want1)
        np.testing.assert_array_equal(again[-1], want1[-1]["idx"])


def _toy_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="f")
    h = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


def test_model_fit_on_loader_tf(split: fl.Split) -> None:
    """model.fit(loader.tf(x=..., y=...)) trains: one Keras epoch per loader epoch, loss falls."""
    model = _toy_model()
    with fl.Loader(split, 32, seed=0, workers=2, drop_last=True) as loader:
        history = model.fit(loader.tf(x="f", y="y"), epochs=8, shuffle=False, verbose=0)
        assert loader.epoch == 8
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]


def test_model_fit_trains_on_exactly_the_plans_batches(split: fl.Split) -> None:
    """Inside model.fit, step k of Keras epoch e gets batch k of loader epoch e, every value.

    The model records what its compiled train step receives (``tf.py_function``
    inside ``train_step``), so this checks the graph-mode path Keras runs, not
    an eager iteration of the dataset.
    """
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def record(f: Any, idx: Any) -> Any:
        seen.append((f.numpy().copy(), idx.numpy().copy()))
        return tf.constant(0.0)

    class Recording(keras.Sequential):
        def train_step(self, data: Any) -> Any:
            (x, idx), y = data
            tf.py_function(record, [x, idx], tf.float32)
            return super().train_step((x, y))

    model = Recording([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    with fl.Loader(split, 32, seed=3, workers=2, drop_last=True) as loader:
        model.fit(loader.tf(x=("f", "idx"), y="y"), epochs=2, shuffle=False, verbose=0)
        want = [b for e in range(2) for b in expected_batches(loader, split, e)]
    assert len(seen) == len(want) == 2 * len(loader)
    for (f, idx), expect in zip(seen, want, strict=True):
        np.testing.assert_array_equal(idx, expect["idx"])
        np.testing.assert_array_equal(f, expect["f"])


def test_custom_loop_in_a_tf_function_gets_the_plans_batches(split: fl.Split) -> None:
    """A custom training loop that iterates the dataset inside ``tf.function`` sees the plan."""
    with fl.Loader(split, 16, seed=5, workers=1) as loader:  # 203 samples: a short last batch
        ds = loader.tf(x="X", y="idx")

        @tf.function
        def collect(dataset: Any) -> Any:
            ids = tf.TensorArray(tf.int64, size=0, dynamic_size=True, infer_shape=False)
            sums = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
            for x, idx in dataset:
                ids = ids.write(ids.size(), idx)
                sums = sums.write(sums.size(), tf.reduce_sum(x))
            return ids.concat(), sums.stack()

        for epoch in range(2):
            ids, sums = collect(ds)
            want = expected_batches(loader, split, epoch)
            np.testing.assert_array_equal(ids.numpy(), np.concatenate([w["idx"] for w in want]))
            np.testing.assert_allclose(sums.numpy(), [w["X"].sum() for w in want], rtol=1e-5)
        assert loader.epoch == 2


def test_model_fit_with_repeat_and_steps_per_epoch(split: fl.Split) -> None:
    """repeat=True: one endless dataset, Keras epochs of len(loader) steps, loader epochs advance."""
    model = _toy_model()
    with fl.Loader(split, 32, seed=0, workers=1, drop_last=True) as loader:
        ds = loader.tf(x="f", y="y", repeat=True)
        history = model.fit(ds, epochs=3, steps_per_epoch=len(loader), shuffle=False, verbose=0)
        del ds
        assert loader.epoch >= 3
    assert len(history.history["loss"]) == 3


def test_pydataset_serves_batches_in_request_order(split: fl.Split) -> None:
    """Items are the plan's batches in the order asked, whatever the index; repeats are kept copies."""
    with fl.Loader(split, 32, seed=6, workers=1, drop_last=True) as loader:
        ds = FastloadPyDataset(loader, x="f", y="y", sample_weight="idx")
        n = len(ds)
        assert n == len(loader)
        want = expected_batches(loader, split, 0)
        x0, y0, _ = ds[0]
        np.testing.assert_array_equal(y0, want[0]["y"])
        assert ds[0][0] is x0  # a repeated index is served from the kept copies
        order = [5, 1, 3, 2, 4]  # a shuffled order: the loader's batches 1, 2, ... in turn
        for k, index in enumerate(order, start=1):
            x, _, idx = ds[index]
            np.testing.assert_array_equal(idx, want[k]["idx"])
            np.testing.assert_array_equal(x, want[k]["f"])
        assert loader.epoch == 1  # every index served: the loader epoch is closed
        # a second plain pass is the next loader epoch, in plan order
        want = expected_batches(loader, split, 1)
        second = [ds[i][2] for i in range(n)]
        for got, expect in zip(second, want, strict=True):
            np.testing.assert_array_equal(got, expect["idx"])
        with pytest.raises(IndexError):
            ds[n]


@pytest.mark.parametrize("shuffle", [True, False])
def test_pydataset_model_fit_sees_every_sample_once_per_epoch(
    split: fl.Split, shuffle: bool
) -> None:
    """model.fit(ds) with Keras' default shuffle=True (and False): Keras epoch e is loader epoch e."""
    served: list[np.ndarray | None] = []  # ids of each item served; None: an epoch starts

    class Recording(FastloadPyDataset):
        def __getitem__(self, index: int):
            item = super().__getitem__(index)
            served.append(item[2].copy())
            return item

        def on_epoch_begin(self) -> None:
            served.append(None)
            super().on_epoch_begin()

    epochs = 3
    with fl.Loader(split, 32, seed=6, workers=1) as loader:  # 203 samples: a short last batch
        # the sample weights are the sample ids: each item says which samples it holds
        ds = Recording(loader, x="f", y="y", sample_weight="idx")
        model = _toy_model()
        kwargs = {} if shuffle else {"shuffle": False}
        history = model.fit(ds, epochs=epochs, verbose=0, **kwargs)
        plans = [loader.plan(e).index for e in range(epochs)]
        assert loader.epoch == epochs
    assert len(history.history["loss"]) == epochs
    starts = [k for k, ids in enumerate(served) if ids is None]
    assert len(starts) == epochs
    for e, start in enumerate(starts):
        end = starts[e + 1] if e + 1 < epochs else len(served)
        ids = np.concatenate(served[start + 1 : end])
        # every sample exactly once, and they are loader epoch e's
        np.testing.assert_array_equal(np.sort(ids), np.arange(N_TRAIN))
        assert set(ids.tolist()) == set(plans[e].tolist())


@pytest.mark.torch
def test_tf_and_torch_deliver_identical_batches(split: fl.Split) -> None:
    """Same seed and settings: loader.tf() and loader.torch() give the same values in the same order."""
    pytest.importorskip("torch")
    with (
        fl.Loader(split, 24, seed=13, workers=2) as a,
        fl.Loader(split, 24, seed=13, workers=1, backend="thread") as b,
    ):
        ds = a.tf()
        batches = b.torch()
        for _ in range(2):
            n = 0
            for from_tf, from_torch in zip(ds, batches, strict=True):
                assert set(from_tf) == set(from_torch)
                for name in from_tf:
                    np.testing.assert_array_equal(from_tf[name].numpy(), from_torch[name].numpy())
                n += 1
            assert n == len(a)
        assert a.epoch == b.epoch == 2


def test_to_tf_is_what_loader_tf_calls(split: fl.Split) -> None:
    """loader.tf(**options) and to_tf(loader, **options) build the same element structure."""
    with fl.Loader(split, 50, workers=0) as loader:
        assert loader.tf(x="X", y="y").element_spec == to_tf(loader, x="X", y="y").element_spec
