"""A fastload loader as a ``tf.data.Dataset`` with a complete ``element_spec``.

Correctness of the hand-over
----------------------------
A loader's batches are read-only views of shared-memory slots; a slot goes
back to the loader's ring once no array over its batch is alive.  The
adapter's generator yields those views themselves, and drops its own
reference to the batch before yielding.  ``from_generator`` is made for
generators that yield temporaries (``yield np.random.rand(...)``), so what it
does with an array is safe by construction: it either copies the array into
TF memory (TensorFlow 2.21, measured: also for aligned arrays) or wraps it and
holds a reference for as long as the tensor lives (older releases wrapped
64-byte-aligned writable arrays), which keeps the slot out of the ring until
TF lets go — bounded by the loader's ``max_kept_bytes`` like any kept batch.
TF's own copy, into buffers its allocator reuses, runs in tf.data's prefetch
thread and costs about a third of copying into a fresh numpy buffer first
(which the adapter did before; a fresh buffer page-faults on every batch).

A ragged field delivered as values + offsets (``fl.Loader(...,
ragged={"hits": "offsets"})``) becomes a ``tf.RaggedTensor``
(``tf.RaggedTensor.from_row_splits`` of its values and offsets), with
a ``tf.RaggedTensorSpec`` in ``element_spec``.

``tests/test_tf.py`` checks every value of every batch against the epoch plan
and the store, with prefetching, with every element held while the loader
reuses its slots, and that the installed TF copies or holds what a
generator yields.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload import _validate
from fastload.adapters._select import Selection, select
from fastload.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

    from fastload.loader import Loader

__all__ = ["aligned_copy", "element_spec", "to_tf"]

#: Alignment TensorFlow needs to use a buffer in place (Eigen's requirement).
TF_ALIGN = 64


def _import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF's first import, quiets C++ logs
    try:
        import tensorflow as tf
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "loader.tf() needs TensorFlow; install it with `pip install 'fastload[tf]'` "
            "(or `pip install tensorflow-cpu`)"
        ) from exc
    return tf


def aligned_copy(array: np.ndarray, align: int = TF_ALIGN) -> np.ndarray:
    """A C-contiguous copy of ``array`` whose data start on an ``align``-byte boundary.

    ``numpy`` only guarantees 16-byte alignment, with which TensorFlow would copy
    the array a second time.

    Parameters
    ----------
    array : numpy.ndarray
        Any array.
    align : int
        Byte alignment of the copy's first element.

    Returns
    -------
    numpy.ndarray
        Same shape, dtype and values; owns (through its base) a fresh buffer.
    """
    nbytes = array.nbytes
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start : start + nbytes].view(array.dtype).reshape(array.shape)
    np.copyto(out, array, casting="no")
    return out


def _tf_value(tf: Any, value: Any) -> Any:
    """What TF gets for one batch field: the array itself, or a ``tf.RaggedTensor`` over it.

    ``RaggedTensor.from_row_splits`` converts its numpy inputs as any eager
    tensor conversion does: a copy, or a wrap that holds the array.
    """
    from fastload.store import Ragged

    if isinstance(value, Ragged):
        values, offsets = value.rebased()
        return tf.RaggedTensor.from_row_splits(values, offsets, validate=False)
    return value


def _static_batch_dim(loader: Loader) -> int | None:
    """``batch_size`` when every batch of every epoch is full, else None (unknown)."""
    if not hasattr(loader, "plan"):  # a feed consumer: only drop_last guarantees full batches
        return loader.batch_size if loader.drop_last else None
    plan = loader.plan()
    # batches_per_epoch and the per-rank sample count do not change between
    # epochs (docs/order.md), so one epoch's plan answers for all of them
    full = plan.n_samples == plan.n_batches * loader.batch_size
    return loader.batch_size if full else None


def element_spec(loader: Loader, selection: Selection) -> Any:
    """``tf.TensorSpec`` structure of the elements that :func:`to_tf` yields."""
    tf = _import_tf()
    specs = loader.output_specs
    batch_dim = _static_batch_dim(loader)

    def spec_of(name: str) -> Any:
        fspec = specs[name]
        try:
            dtype = tf.as_dtype(fspec.dtype)
        except TypeError as exc:
            raise ConfigError(
                f"field {name!r} has dtype {fspec.dtype}, which TensorFlow does not support; "
                "convert it with fastload.transforms.Cast in the loader's transform"
            ) from exc
        if fspec.ragged:
            return tf.RaggedTensorSpec(
                shape=(batch_dim, None, *fspec.shape),
                dtype=dtype,
                ragged_rank=1,
                row_splits_dtype=tf.int64,
            )
        return tf.TensorSpec(shape=(batch_dim, *fspec.shape), dtype=dtype, name=name)

    return selection.build(spec_of)


def _resumed(loader: Loader) -> bool:
    """Whether the loader's next iteration is the rest of an epoch (not a whole one)."""
    state = loader.state_dict()
    return state["batch"] != 0 or bool(state.get("elastic"))


def to_tf(
    loader: Loader,
    *,
    x: Any = None,
    y: Any = None,
    sample_weight: Any = None,
    prefetch: int = 2,
    cardinality: bool = True,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of the loader's batches; each iteration is one loader epoch.

    Parameters
    ----------
    loader : fastload.Loader
        The loader (``loader.tf(...)`` calls this).
    x, y, sample_weight : str, tuple, list or dict of field names, optional
        Structure of each element.  Neither ``x`` nor ``y``: a dict of every
        field.  ``x`` only: the ``x`` structure.  ``x`` and ``y``: ``(x, y)``
        (plus ``sample_weight``), what ``model.fit`` expects.  A tuple gives a
        tuple of tensors, a dict a dict (Keras inputs by name), e.g.
        ``x={"features": "features", "adj": "adj_matrix"}, y="y"``.
    prefetch : int
        Elements tf.data prepares ahead in a background thread (0: none).  The
        loader's workers already prefetch; this moves the hand-over into TF
        memory out of the training step.
    cardinality : bool
        Declare ``len(loader)`` elements per iteration (Keras then knows the
        epoch length).  Not declared for a loader resumed mid-epoch (also
        elastically, under another world size), whose first iteration is shorter.
    repeat : bool
        Run epoch after epoch in one endless iteration.  The prefetch thread
        then starts the next loader epoch while the model still trains on the
        last batches of the previous one, instead of the pipeline draining at
        every epoch end.  Use ``model.fit(ds, steps_per_epoch=len(loader))``.

    Returns
    -------
    tf.data.Dataset
        ``element_spec`` has one ``tf.TensorSpec`` per field: per-sample shape
        and dtype from ``loader.output_specs`` and batch dimension
        ``batch_size`` when every batch is full (``drop_last=True``, or sizes
        that divide evenly), else ``None``.

    Notes
    -----
    Every element stays valid however long TensorFlow buffers it (TF copies
    the loader's slot views, or holds them, which keeps the slot from reuse).  Iterating the dataset runs one
    epoch of the loader; only one iteration may be active at a time, like the
    loader itself.  The loader must outlive the dataset's iterators; close it
    when training is done.
    """
    tf = _import_tf()
    prefetch = _validate.integer(prefetch, name="prefetch", minimum=0, owner="to_tf")
    selection = select(loader.output_specs, x, y, sample_weight, where=repr(loader))
    signature = element_spec(loader, selection)
    n_batches = len(loader)
    declare = bool(cardinality) and not _resumed(loader)

    def generate() -> Iterator[Any]:
        if declare and _resumed(loader):
            raise ConfigError(
                "the loader was resumed mid-epoch after loader.tf() declared the epoch length; "
                "call loader.tf(cardinality=False), or load the state before loader.tf()"
            )
        batches = iter(loader)
        try:
            for batch in batches:
                # TF may read a yielded array after this generator resumes (its prefetch,
                # Keras' queue): it copies or holds the array (module docstring).  Drop
                # the batch before yielding: the suspended generator must not pin its slot.
                element = selection.build(lambda name, b=batch: _tf_value(tf, b[name]))
                del batch
                yield element
        finally:
            batches.close()

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if declare:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    if repeat:
        dataset = dataset.repeat()  # before prefetch: one prefetch thread spans the epochs
    if prefetch:
        dataset = dataset.prefetch(int(prefetch))
    return dataset
