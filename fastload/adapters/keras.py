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

Keras reads the first batches once to infer the element structure and then
asks for them again in the epoch: on the TensorFlow backend two batches
before ``on_epoch_begin``; on the torch and JAX backends one batch inside an
``on_epoch_begin``/``on_epoch_end`` pair of its own (``_symbolic_build`` runs
one step of an epoch iterator, then resets it).  The last few batches served
in a pass are kept (as copies) and served again when their index comes back
in the same pass, and an "epoch" all of whose batches are still kept consumed
nothing, so its ``on_epoch_end`` does not end the pass: those peeks do not
consume the loader's epoch on any backend (given more batches per epoch than
Keras peeks at).  A pass ends when it has served every index (the loader
epoch is then closed) or at the ``on_epoch_end`` of an epoch that served
batches no longer kept; the next request starts the next loader epoch.  So
Keras epoch ``e`` of a fresh dataset is loader epoch ``e`` on every backend.
An index asked twice in a pass is served from the kept copies if it was
kept, and starts a new pass otherwise (a second plain ``for`` loop over the
dataset is the next loader epoch).

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

#: Batches kept for indices asked again in a pass (Keras peeks at 1-2 batches to infer specs).
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
        # items of this pass Keras may ask for again (served outside an epoch, or in a peek
        # epoch), by index; and the last items of the current epoch, which become kept if
        # the epoch turns out to be a peek
        self._kept: OrderedDict[int, Any] = OrderedDict()
        self._recent: OrderedDict[int, Any] = OrderedDict()
        self._in_epoch = False  # between Keras' on_epoch_begin and on_epoch_end
        self._pass = 0  # passes over the indices so far (one loader epoch each)
        self._epoch_pass = 0  # the pass the current Keras epoch began in
        self._epoch_served: set[int] = set()  # indices the current Keras epoch was served

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
            # a kept index asked again is served again while its pass goes on (Keras'
            # peek, then the epoch); a pass that served every index is over: asked
            # again, a kept index starts the next pass (a second plain for loop)
            if kept is not None and not complete:
                self._epoch_served.add(index)
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
            self._epoch_served.add(index)
            if len(self._served) >= n:
                self._close_iterator()  # the loader epoch is complete: end it now
            # copies, so keeping a few pins no shared memory; a peek at the start of a
            # pass is then served again when the real epoch asks for its index
            kept_items = self._recent if self._in_epoch else self._kept
            kept_items[index] = item
            while len(kept_items) > _KEEP:
                kept_items.popitem(last=False)
            return item

    def on_epoch_begin(self) -> None:
        """Keras calls this before every epoch; a pass that served every index ends here."""
        with self._lock:
            if len(self._served) >= len(self):
                self._end_pass()
            self._in_epoch = True
            self._epoch_pass = self._pass
            self._epoch_served = set()
            self._recent.clear()

    def on_epoch_end(self) -> None:
        """End the loader epoch (Keras calls this after every epoch).

        The pass goes on in three cases.  Outside an epoch (no
        ``on_epoch_begin`` since the last end): the TensorFlow backend calls
        this after reading the first batches to infer the element structure,
        and those batches are served again in the first epoch.  After an
        incomplete epoch every batch of which is still kept, which consumed
        nothing that could not be served again: the torch and JAX backends
        peek at the first batch inside an epoch of their own, and it is served
        again in the first real epoch.  If the epoch's pass already ended
        (every index served, and a prefetch already asked for the next epoch's
        first batches), the new pass goes on into the next epoch.
        """
        with self._lock:
            held = self._kept.keys() | self._recent.keys()
            peek = len(self._served) < len(self) and self._epoch_served <= held
            if self._in_epoch and self._pass == self._epoch_pass:
                if peek:  # every batch of it can be served again: keep them for the epoch
                    self._kept.update(self._recent)
                else:
                    self._end_pass()
            self._in_epoch = False
            self._epoch_served = set()
            self._recent.clear()

    def _end_pass(self) -> None:
        self._close_iterator()
        self._served.clear()
        self._kept.clear()
        self._recent.clear()
        self._epoch_served.clear()
        self._pass += 1

    def _close_iterator(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
