"""A fastload loader as a Keras 3 ``PyDataset``, for users who prefer ``PyDataset`` to tf.data.

Keras addresses a ``PyDataset`` by batch index; a loader delivers the batches
of an epoch in one order (already shuffled by its seed).  Index ``i`` is the
``i``-th batch of the current loader epoch, so indices must come in order —
pass ``shuffle=False`` to ``model.fit`` (fastload shuffles).  Keras reads the
first batches once to infer the element structure and then starts again at 0;
the last few batches are kept (as copies) so that such repeats are served
without restarting the loader.  ``on_epoch_end`` (called by Keras) ends the
loader epoch; the next index 0 starts the next one.

Batches are copies: Keras's adapter prefetches them into a queue, so views of
the loader's reused shared-memory slots would be overwritten while queued.
"""

from __future__ import annotations

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

#: Batches kept for repeated indices (Keras peeks at 2 batches to infer specs).
_KEEP = 4


class FastloadPyDataset(keras.utils.PyDataset):
    """``keras.utils.PyDataset`` over a :class:`fastload.Loader`; use ``model.fit(ds, shuffle=False)``.

    Parameters
    ----------
    loader : fastload.Loader
        The loader; one Keras epoch is one loader epoch.
    x, y, sample_weight : str, tuple, list or dict of field names
        As in :func:`fastload.adapters.tf.to_tf`; ``x`` is required.

    Notes
    -----
    Keras' own ``workers``/``use_multiprocessing`` are fixed to 1/False: the
    loader's worker processes do the parallel work and batches must be taken
    in order.  Items are numpy copies that stay valid.
    """

    def __init__(self, loader: Loader, *, x: Any, y: Any = None, sample_weight: Any = None) -> None:
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=10)
        if x is None:
            raise ConfigError("FastloadPyDataset needs x= (the input field or fields)")
        self.loader = loader
        self.selection = select(loader.output_specs, x, y, sample_weight, where=repr(loader))
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None
        self._next_index = 0
        self._recent: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += len(self)
        cached = self._recent.get(index)
        if cached is not None:
            return cached
        if index == 0 and self._next_index != 0:
            self._end_epoch()  # a new pass without on_epoch_end (e.g. a plain for loop)
        if index != self._next_index:
            raise ConfigError(
                f"FastloadPyDataset got batch index {index}, expected {self._next_index}: the "
                "loader delivers an epoch in its own (seeded, shuffled) order, so Keras must ask "
                "for batches in order; pass shuffle=False to model.fit"
            )
        if index >= len(self):
            raise IndexError(f"batch {index} out of range for an epoch of {len(self)} batches")
        if self._iterator is None:
            self._iterator = iter(self.loader)
        batch = next(self._iterator)
        item = self.selection.build(lambda name: np.array(batch[name], copy=True))
        self._next_index += 1
        self._recent[index] = item
        while len(self._recent) > _KEEP:
            self._recent.popitem(last=False)
        return item

    def on_epoch_end(self) -> None:
        """End the loader epoch (Keras calls this after every epoch)."""
        self._end_epoch()

    def _end_epoch(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._next_index = 0
        self._recent.clear()
