"""What the torch and JAX iterables share: a loader seen through a per-batch conversion.

:class:`LoaderBatches` owns the lifecycle — ``len()``, ``set_epoch`` and the
resume state are the loader's; :meth:`~LoaderBatches.close` (or leaving a
``with`` block) ends every iteration in progress and closes the loader — and
:meth:`~LoaderBatches._stream` is the one loop that converts batches without
holding any of them while the caller has the element.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fastload.errors import ConfigError

if TYPE_CHECKING:
    from fastload.loader import Loader

__all__: list[str] = []


class LoaderBatches:
    """Base of ``TorchBatches`` and ``JaxBatches``; subclasses implement ``_iterate()``."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._active: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed = False

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loader.load_state_dict(state)

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """End an iteration in progress and close the loader (idempotent)."""
        self._closed = True
        for iterator in list(self._active):
            iterator.close()
        self._active.clear()
        self._release()
        self.loader.close()

    def _release(self) -> None:
        """What a subclass frees on close, besides iterations and the loader."""

    def __enter__(self) -> LoaderBatches:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Any]:
        if self._closed:
            name = type(self).__name__
            raise ConfigError(f"this {name} is closed (closing it closed its loader)")
        iterator = self._iterate()
        self._active.add(iterator)
        return iterator

    def _iterate(self) -> Iterator[Any]:
        raise NotImplementedError

    def _stream(self, element: Callable[[Mapping[str, Any]], Any]) -> Iterator[Any]:
        """``element(batch)`` per loader batch, holding nothing of it while the caller has it.

        The element passes through a one-item list and is yielded by ``pop()``:
        while the generator waits at ``yield``, neither the batch nor the
        element is bound to a name here, so the batch's slot can return to the
        loader's ring as soon as the caller drops the element.
        """
        ready: list[Any] = []
        batches = iter(self.loader)
        try:
            for batch in batches:
                ready.append(element(batch))
                del batch
                yield ready.pop()
        finally:
            batches.close()
