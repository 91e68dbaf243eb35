"""fastload itself: ``fl.Loader`` over the premixed store, or over ``fl.Mix`` of the class stores.

Four variants: premixed (one store, label stored) or mixed on the fly (two
per-class stores, ``fl.Mix(..., weights 0.5/0.5, label_field="y")``), each with
the process and the thread backend.  Batches are views into the loader's
shared-memory ring, valid until the next batch — the consumer is done with a
batch before it asks for the next one, as a training step is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from .._contender import Batch, Contender, RunConfig, Session
from .._data import LABEL_FIELD, BenchData


class _FastloadSession(Session):
    def __init__(self, data: BenchData, cfg: RunConfig, *, mixed: bool, backend: str) -> None:
        import fastload as fl

        self.mixed = mixed
        if mixed:
            source: Any = fl.Mix(
                {
                    label: fl.open_store(path)["train"]
                    for label, path in zip(data.labels, data.class_stores, strict=True)
                },
                weights={label: 0.5 for label in data.labels},
                label_field=LABEL_FIELD,
            )
        else:
            source = fl.open_store(data.store)["train"]
        self.loader: Any = fl.Loader(
            source,
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            workers=cfg.workers,
            prefetch=max(2, cfg.prefetch),
            drop_last=False,
            backend=backend,
        )

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.loader.set_epoch(epoch)
        return iter(self.loader)

    def samples_by_design(self, epoch: int) -> int | None:
        # a mix ends its epoch before the first batch a class cannot fill (docs/order.md):
        # with a batch size that does not divide the classes, a few samples wait for the next
        return int(self.loader.plan(epoch).n_samples) if self.mixed else None

    def close(self) -> None:
        loader, self.loader = self.loader, None
        if loader is not None:
            loader.close()


class FastloadPremixed(Contender):
    key = "fastload"
    label = "fastload (process)"
    family = "fastload"
    requires = ("fastload:Loader",)
    parallel = True
    sweep = True
    quick = True
    how = "fl.Loader(store['train'], workers=N): Blosc chunks decoded into shared memory, window shuffle"
    mixed: ClassVar[bool] = False
    backend: ClassVar[str] = "process"

    def open(self, data: BenchData, cfg: RunConfig) -> Session:
        return _FastloadSession(data, cfg, mixed=self.mixed, backend=self.backend)


class FastloadPremixedThread(FastloadPremixed):
    key = "fastload-thread"
    label = "fastload (thread)"
    how = "fl.Loader(..., backend='thread'): the same engine with worker threads"
    backend = "thread"


class FastloadMix(FastloadPremixed):
    key = "fastload-mix"
    label = "fastload Mix (process)"
    requires = ("fastload:Loader", "fastload:Mix")
    sweep = False
    how = "fl.Loader(fl.Mix({class0, class1}, 0.5/0.5, label_field='y')): mixed on the fly"
    mixed = True


class FastloadMixThread(FastloadMix):
    key = "fastload-mix-thread"
    label = "fastload Mix (thread)"
    quick = False
    how = "fl.Mix of the class stores, backend='thread'"
    backend = "thread"
