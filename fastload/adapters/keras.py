"""A fastload loader as a Keras 3 ``PyDataset``, for users who prefer ``PyDataset`` to tf.data.

Keras addresses a ``PyDataset`` by batch index and, with ``model.fit``'s
default ``shuffle=True``, asks for the indices of an epoch in a random order.
A loader delivers the batches of an epoch in one order (already shuffled by
its seed, see docs/order.md).  The dataset therefore serves the loader's
batches in the order Keras *asks*, whatever the index: the first index asked
in a pass gets the loader's first batch, the next new index the next batch,
and so on.  Each index is served once per pass, so a Keras epoch (which asks
every index once) sees every batch of one loader epoch exactly once, whether
Keras shuffles or not; Keras' shuffle only changes which index names which
batch.

Keras reads the first batches once to infer the element structure (before
``on_epoch_begin``) and then asks for them again in the epoch; batches served
outside an epoch are kept (as copies, at most a few) and served again when
their index comes back, so those peeks do not consume the loader's epoch.
A pass ends when it has served every index (the loader epoch is then closed)
or at ``on_epoch_end`` (called by Keras after every epoch); the next request
starts the next loader epoch.  So Keras epoch ``e`` of a fresh dataset is
loader epoch ``e``.  An index asked twice in a pass is served from the kept
copies if it was kept, and starts a new pass otherwise (a second plain ``for``
loop over the dataset is the next loader epoch).

Batches are copies: Keras's adapter prefetches them into a queue, and copies
do not keep the loader's shared-memory slots out of its ring.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload.adapters._select import select
from fastload.errors import ConfigError

try:
    import keras
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "fastload.adapters.keras needs Keras 3; install it with `pip install 'fastload[tf]'` "
        "(or `pip install keras`)"
    ) from exc

if TYPE_CHECKING:
    from fastload.loader import Loader

__all__ = ["FastloadPyDataset"]

#: Batches kept for repeated indices outside an epoch (Keras peeks at 2 batches to infer specs).
_KEEP = 4


class FastloadPyDataset(keras.utils.PyDataset):
    """``keras.utils.PyDataset`` over a :class:`fastload.Loader`; use ``model.fit(ds)``.

    Parameters
    ----------
    loader : fastload.Loader
        The loader; one Keras epoch is one loader epoch.
    x, y, sample_weight : str, tuple, list or dict of field names
        As in :func:`fastload.adapters.tf.to_tf`; ``x`` is required.

    Notes
    -----
    ``model.fit(ds)`` works with ``shuffle=True`` (Keras' default) and
    ``shuffle=False`` alike: batches come in the loader's (seeded, shuffled)
    order and each epoch holds every batch once (see the module docstring).
    Keras' own ``workers``/``use_multiprocessing`` are fixed to 1/False: the
    loader's worker processes do the parallel work.  Items are numpy copies
    that stay valid.
    """

    def __init__(self, loader: Loader, *, x: Any, y: Any = None, sample_weight: Any = None) -> None:
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=10)
        if x is None:
            raise ConfigError("FastloadPyDataset needs x= (the input field or fields)")
        self.loader = loader
        self.selection = select(loader.output_specs, x, y, sample_weight, where=repr(loader))
        self._lock = threading.Lock()  # Keras calls __getitem__ from tf.data's threads
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None
        self._served: set[int] = set()  # indices served in this pass
        self._kept: OrderedDict[int, Any] = OrderedDict()  # served outside an epoch, by index
        self._in_epoch = False  # between Keras' on_epoch_begin and on_epoch_end
        self._pass = 0  # passes over the indices so far (one loader epoch each)
        self._epoch_pass = 0  # the pass the current Keras epoch began in

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"batch {index} out of range for an epoch of {n} batches")
        with self._lock:
            complete = len(self._served) >= n
            kept = self._kept.get(index)
            # outside an epoch, a pass that served every index is over: a kept index
            # asked again then starts the next pass (a second plain for loop)
            if kept is not None and (self._in_epoch or not complete):
                return kept
            if complete or index in self._served:
                self._end_pass()  # a new pass: every index was served, or one comes back
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
            except StopIteration:  # pragma: no cover - len(self) batches per pass
                self._end_pass()
                raise IndexError(f"the loader epoch ended before batch {index}") from None
            item = self.selection.build(lambda name, b=batch: np.array(b[name], copy=True))
            del batch
            self._served.add(index)
            if len(self._served) >= n:
                self._close_iterator()  # the loader epoch is complete: end it now
            if not self._in_epoch:
                self._kept[index] = item
                while len(self._kept) > _KEEP:
                    self._kept.popitem(last=False)
            return item

    def on_epoch_begin(self) -> None:
        """Keras calls this before every epoch; batches served in an epoch are not kept."""
        with self._lock:
            if len(self._served) >= len(self):
                self._end_pass()
            self._in_epoch = True
            self._epoch_pass = self._pass

    def on_epoch_end(self) -> None:
        """End the loader epoch (Keras calls this after every epoch).

        Outside an epoch (no ``on_epoch_begin`` since the last end), the pass
        goes on: Keras calls this after reading the first batches to infer the
        element structure, and those batches are served again in the first
        epoch.  If the epoch's pass already ended (every index served, and a
        prefetch already asked for the next epoch's first batches), the new
        pass goes on into the next epoch.
        """
        with self._lock:
            if self._in_epoch and self._pass == self._epoch_pass:
                self._end_pass()
            self._in_epoch = False

    def _end_pass(self) -> None:
        self._close_iterator()
        self._served.clear()
        self._kept.clear()
        self._pass += 1

    def _close_iterator(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
