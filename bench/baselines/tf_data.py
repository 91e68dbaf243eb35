"""Baseline: ``tf.data`` from Python generators over h5py, interleaved and prefetched.

As a tf.data user writes it: ``Dataset.range(N).interleave(from_generator(...),
num_parallel_calls=AUTOTUNE)`` with one generator per shard of the shuffled
batch list, then ``prefetch(AUTOTUNE)``.  The generators run Python under the
GIL inside TensorFlow's threads, so parallelism is limited to what h5py and
numpy do without the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .._contender import Batch, Contender, RunConfig, Session, epoch_seed
from .._data import BenchData
from ._common import H5Reader, shuffled_ranges


class _TfSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        self.data, self.cfg = data, cfg
        self.signature = {
            k: tf.TensorSpec((None, *s.shape), tf.as_dtype(s.dtype))
            for k, s in data.batch_spec().items()
        }

    def epoch(self, epoch: int) -> Iterator[Batch]:
        tf = self.tf
        shards = max(1, self.cfg.workers)
        ranges = shuffled_ranges(self.data.n, self.cfg.batch_size, epoch_seed(self.cfg, epoch))
        data = self.data

        def generate(shard: Any) -> Iterator[Batch]:
            reader = H5Reader(data)
            try:
                for start, stop in ranges[int(shard) :: shards]:
                    yield reader.read(int(start), int(stop))
            finally:
                reader.close()

        ds = tf.data.Dataset.range(shards).interleave(
            lambda shard: tf.data.Dataset.from_generator(
                generate, args=(shard,), output_signature=self.signature
            ),
            cycle_length=shards,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        it = iter(ds.prefetch(tf.data.AUTOTUNE))
        try:
            for element in it:
                yield {k: v.numpy() for k, v in element.items()}
        finally:
            del it


class TfData(Contender):
    key = "tf-data"
    label = "tf.data (h5py generator)"
    requires = ("tensorflow",)
    install = "pip install tensorflow-cpu"
    parallel = True
    how = "Dataset.range(N).interleave(from_generator(h5py), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _TfSession(data, cfg)
