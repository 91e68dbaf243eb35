"""A ``LightningDataModule`` of fastload loaders, one shard per rank, resumable from checkpoints.

``FastloadDataModule(train=..., val=..., batch_size=..., **loader_options)``
holds *what* to load — store splits (or mixes) and the loader options — and
builds the loaders only in :meth:`~FastloadDataModule.setup`, in each training
process, with :func:`fastload.adapters.torch.distributed_loader`: the rank and
world size come from the process group Lightning has set up, so ranks read
disjoint shards of every epoch.  The module pickles by store path and
configuration (a :class:`fastload.Split` pickles as its path and name; an
in-memory ``fl.from_arrays`` source by value), never by live workers, so
``strategy="ddp_spawn"`` can send it to its processes.

The ``*_dataloader`` hooks return ``loader.torch(...)`` iterables
(:class:`LightningBatches`).  Lightning re-instantiates only
``torch.utils.data.DataLoader`` objects to inject a ``DistributedSampler``,
so it leaves these alone whatever ``use_distributed_sampler`` says: the
shards come from the loaders.

Epochs and resuming
    Each ``iter()`` of a hook's iterable is one loader epoch, and the loader's
    epoch follows ``trainer.current_epoch``: an iterable whose loader is at
    another epoch is set to the trainer's (a resumed position inside the
    trainer's epoch is kept).  The training loader's position is saved in
    checkpoints twice, with the same value: by Lightning, which saves the state
    of every training iterable with ``state_dict``/``load_state_dict``, and by
    this module's :meth:`~FastloadDataModule.state_dict`.  A checkpoint taken
    mid-epoch resumes at the next unseen batch.

    Lightning writes checkpoints from rank 0 only, and every rank loads that
    state.  Under DDP every rank is at the same batch (``drop_last=True``, the
    default of ``distributed_loader``, gives every rank the same number of
    steps), so a rank loading another rank's state takes its position
    (epoch, batch) for its own shard; each rank checks the configuration against
    the saved fingerprint.  A different world size is refused: Lightning
    restores its own step count within the epoch, which an elastic resume
    (``fl.Loader.load_state_dict`` under another world size) changes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fastload import _validate
from fastload._source import Source, missing_members
from fastload.adapters.torch import TorchBatches, distributed_loader, distributed_rank
from fastload.errors import ConfigError
from fastload.loader import Loader
from fastload.mix import Mix
from fastload.store import Store, open_store

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "fastload.adapters.lightning needs Lightning; install it with "
        "`pip install 'fastload[lightning]'` (or `pip install lightning`)"
    ) from exc

__all__ = ["FastloadDataModule", "LightningBatches"]

#: the data sources a module can hold, and the Lightning stages that use each
_SPLITS = ("train", "val", "test", "predict")
_STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}
#: evaluation loaders read in order unless eval_options say otherwise
_EVAL_DEFAULTS = {"shuffle": False}
#: what Loader's own signature takes besides the source and batch size
_LOADER_OPTIONS = frozenset(inspect.signature(Loader).parameters) - {"source", "batch_size"}


def _position_state(
    loader: Loader, state: Mapping[str, Any], rank: int, world_size: int
) -> Mapping[str, Any]:
    """The state this rank loads from ``state``, which may have been saved by another rank."""
    saved_rank = state.get("rank", rank)
    saved_world = state.get("world_size", world_size)
    if saved_world != world_size:
        raise ConfigError(
            f"the checkpoint's loader state was saved by a job of {saved_world} ranks, this job has "
            f"{world_size}: each rank's shard would differ, so it cannot resume the same batches; "
            "resume with the same number of devices"
        )
    if saved_rank == rank or "elastic" in state:
        # the loader checks the fingerprint; a state of another rank of the same world
        # gives this rank the same position on its own shard (Lightning saves rank 0's
        # state for every rank; under DDP all ranks stand at the same batch)
        return state
    # a state saved before elastic resume (its fingerprint held the rank): take the
    # position over, as rank 0 checks the configuration
    own = loader.state_dict()["fingerprint"]
    return {
        "epoch": state["epoch"],
        "batch": state["batch"],
        "fingerprint": own,
        "world_size": world_size,
        "elastic": [],
    }


class LightningBatches(TorchBatches):
    """``loader.torch(...)`` for a Lightning hook: follows the trainer's epoch, resumes by rank.

    What the ``*_dataloader`` hooks of :class:`FastloadDataModule` return.
    Each ``iter()`` is one loader epoch; an iteration Lightning leaves
    unfinished (it stops at ``len()``, or at ``limit_*_batches``) is closed
    by the next ``iter()``.  ``state_dict()`` adds the rank and world size to
    the loader's state so another rank can take the position over (see the
    module docstring).
    """

    def __init__(
        self,
        loader: Loader,
        *,
        trainer: Any = None,
        resume: bool = True,
        rank: int = 0,
        world_size: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(loader, **options)
        self.trainer = trainer
        self.resume = bool(resume)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def state_dict(self) -> dict[str, Any]:
        # super(): on CUDA the batch held ahead of the caller is not counted as seen
        return {**super().state_dict(), "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loader.load_state_dict(_position_state(self.loader, state, self.rank, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        for iterator in list(self._active):
            iterator.close()  # Lightning stops at len() without finishing the generator
        self._follow_trainer()
        return super().__iter__()

    def _follow_trainer(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        epoch = int(trainer.current_epoch)
        # the training loader keeps a resumed position inside the trainer's epoch
        if not self.resume or self.loader.state_dict()["epoch"] != epoch:
            self.loader.set_epoch(epoch)


def _resolve(name: str, source: Any, store: Store | None) -> Source | Mix | None:
    """A source or mix from what the caller gave (a split name needs ``store``)."""
    if source is None or isinstance(source, Mix):
        return source
    if not isinstance(source, (str, tuple)) and not missing_members(source):
        return source  # a store split, fl.from_arrays(...), any other Source
    if isinstance(source, str):
        if store is None:
            raise ConfigError(
                f"FastloadDataModule: {name}={source!r} names a split, but no store= was given; "
                f"pass store='path/to/store.zarr', a (store_path, split) pair, or store[{source!r}]"
            )
        return store[source]
    if isinstance(source, tuple) and len(source) == 2:
        path, split = source
        if isinstance(path, (str, Path)) and isinstance(split, str):
            return open_store(path)[split]
    raise ConfigError(
        f"FastloadDataModule: {name}= must be a source (a store split such as store['train'], "
        f"fl.from_arrays({{...}})), a fl.Mix, a split name with store=, or a (store_path, "
        f"split_name) pair, got {source!r}"
    )


def _check_options(options: Mapping[str, Any], name: str) -> None:
    for key in options:
        if key in ("rank", "world_size"):
            raise ConfigError(
                f"FastloadDataModule: {name} sets {key!r}, which comes from the process group "
                "Lightning sets up (each rank builds its own shard)"
            )
        if key not in _LOADER_OPTIONS:
            raise ConfigError(
                f"FastloadDataModule: {name} has {key!r}, which is not a fl.Loader option "
                f"(options: {sorted(_LOADER_OPTIONS - {'rank', 'world_size'})})"
            )


class FastloadDataModule(pl.LightningDataModule):
    """A ``LightningDataModule`` whose loaders are fastload loaders, one shard per rank.

    Parameters
    ----------
    train, val, test, predict : Source | Mix | str | tuple[str, str] | None
        The data of each stage: a store split (``store["train"]``) or any
        other :class:`fastload.Source` (``fl.from_arrays({...})``), a
        :class:`fastload.Mix`, a split name of ``store``, or a
        ``(store_path, split_name)`` pair.  Each is opened when the module is
        made (so a wrong name fails here); a store split pickles by store path
        and name, an in-memory source by value.
    batch_size : int
        Samples per batch per rank.
    store : str | os.PathLike | Store | None
        The store that split names refer to.
    eval_batch_size : int | None
        Batch size of the val/test/predict loaders (default: ``batch_size``).
    eval_options : Mapping | None
        Loader options for val/test/predict that override ``loader_options``
        (default ``{"shuffle": False}``, always merged in).
    x, y, sample_weight : str, tuple, list or dict of field names, optional
        Structure of each batch, as in :func:`fastload.adapters.torch.to_torch`
        (``x="X", y="y"`` gives ``(X, y)`` tuples to ``training_step``).
    device : "auto" | str | torch.device | None
        ``"auto"`` (default): on a CUDA trainer, batches go straight to the
        rank's GPU through the pinned, asynchronous path of
        ``loader.torch(device=...)`` (Lightning then has nothing to move);
        otherwise CPU tensors sharing the loader's memory.  ``None``: always
        CPU tensors.  Anything else is passed to ``loader.torch(device=...)``.
    **loader_options
        Options of :class:`fastload.Loader` for every loader (``seed``,
        ``workers``, ``transform``, ``drop_last``, ...); ``rank`` and
        ``world_size`` come from the process group.  ``seed`` must be the same
        on every rank (the default 0 is).

    Notes
    -----
    Use it as any data module: ``trainer.fit(model, datamodule=dm)``.
    ``teardown`` closes the loaders of its stage (workers and shared memory).
    A transform in ``loader_options`` is pickled with the module under
    ``ddp_spawn``: define it in an importable module, not in ``__main__``.
    """

    def __init__(
        self,
        train: Any = None,
        val: Any = None,
        test: Any = None,
        predict: Any = None,
        *,
        batch_size: int,
        store: Any = None,
        eval_batch_size: int | None = None,
        eval_options: Mapping[str, Any] | None = None,
        x: Any = None,
        y: Any = None,
        sample_weight: Any = None,
        device: Any = "auto",
        **loader_options: Any,
    ) -> None:
        super().__init__()
        if store is not None and not isinstance(store, Store):
            store = open_store(store)
        given = dict(zip(_SPLITS, (train, val, test, predict), strict=True))
        self.sources: dict[str, Source | Mix] = {}
        for name, source in given.items():
            resolved = _resolve(name, source, store)
            if resolved is not None:
                self.sources[name] = resolved
        if not self.sources:
            raise ConfigError(
                "FastloadDataModule needs at least one of train=, val=, test=, predict="
            )
        _check_options(loader_options, "loader_options")
        _check_options(eval_options or {}, "eval_options")
        owner = "FastloadDataModule"
        self.batch_size = _validate.integer(batch_size, name="batch_size", minimum=1, owner=owner)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else _validate.integer(eval_batch_size, name="eval_batch_size", minimum=1, owner=owner)
        )
        self.loader_options = dict(loader_options)
        self.eval_options = {**_EVAL_DEFAULTS, **(eval_options or {})}
        self.torch_options = {"x": x, "y": y, "sample_weight": sample_weight}
        self.device = device
        self._loaders: dict[str, Loader] = {}
        self._batches: dict[str, LightningBatches] = {}
        self._pending: dict[str, Mapping[str, Any]] = {}  # states loaded before setup

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the module into every process: configuration only, no
        # live loaders (workers, shared memory), which each process builds in setup()
        state = dict(self.__dict__)
        state["_loaders"] = {}
        state["_batches"] = {}
        state["trainer"] = None  # Lightning attaches the module to the trainer of each process
        return state

    # ----------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        """Build this rank's loaders for ``stage`` ("fit", "validate", "test", "predict")."""
        for name in _STAGE_SPLITS.get(stage, ()):
            if name in self.sources and name not in self._loaders:
                self._loaders[name] = self._build(name)
                pending = self._pending.pop(name, None)
                if pending is not None:
                    self._batches_of(name).load_state_dict(pending)

    def teardown(self, stage: str) -> None:
        """Close the loaders of ``stage`` (their workers and shared memory)."""
        for name in _STAGE_SPLITS.get(stage, ()):
            batches = self._batches.pop(name, None)
            loader = self._loaders.pop(name, None)
            if batches is not None:
                batches.close()  # closes the loader too
            elif loader is not None:
                loader.close()

    # The hooks are properties: Lightning decides whether a data module has, say, a
    # validation set by looking the hook up (``is_overridden``), and a lookup that gives
    # None means "not defined".  So a module without val= has no val loop (and no
    # "val_dataloader but no validation_step" warning), as if the hook were not written.
    @property
    def train_dataloader(self) -> Callable[[], LightningBatches] | None:  # type: ignore[override]
        """The ``train_dataloader`` hook, or None without ``train=``."""
        return self._hook("train")

    @property
    def val_dataloader(self) -> Callable[[], LightningBatches] | None:  # type: ignore[override]
        """The ``val_dataloader`` hook, or None without ``val=``."""
        return self._hook("val")

    @property
    def test_dataloader(self) -> Callable[[], LightningBatches] | None:  # type: ignore[override]
        """The ``test_dataloader`` hook, or None without ``test=``."""
        return self._hook("test")

    @property
    def predict_dataloader(self) -> Callable[[], LightningBatches] | None:  # type: ignore[override]
        """The ``predict_dataloader`` hook, or None without ``predict=``."""
        return self._hook("predict")

    def _hook(self, name: str) -> Callable[[], LightningBatches] | None:
        return functools.partial(self._batches_of, name) if name in self.sources else None

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (its state, with this rank and the world size)."""
        batches = self._batches.get("train")
        if batches is not None:
            return {"train": batches.state_dict()}
        if "train" in self._loaders:
            rank, world = distributed_rank()
            return {
                "train": {**self._loaders["train"].state_dict(), "rank": rank, "world_size": world}
            }
        if "train" in self._pending:
            return {"train": dict(self._pending["train"])}
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume the training loader at the saved position (now, or when ``setup`` builds it)."""
        state = state_dict.get("train")
        if state is None:
            return
        if "train" in self._loaders:
            self._batches_of("train").load_state_dict(state)
        else:
            self._pending["train"] = state

    # ------------------------------------------------------------- internals
    def _build(self, name: str) -> Loader:
        if name not in self.sources:
            raise ConfigError(f"FastloadDataModule has no {name}= data")
        evaluating = name != "train"
        options = {**self.loader_options, **(self.eval_options if evaluating else {})}
        batch_size = self.eval_batch_size if evaluating else self.batch_size
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        return distributed_loader(
            self.sources[name], batch_size, require_initialized=distributed, **options
        )

    def _batches_of(self, name: str) -> LightningBatches:
        batches = self._batches.get(name)
        if batches is not None:
            return batches
        loader = self._loaders.get(name)
        if loader is None:
            if name not in self.sources:
                raise ConfigError(
                    f"FastloadDataModule: {name}_dataloader() was asked for, but no {name}= was given"
                )
            # outside a trainer, or a hook called before setup(): build it now
            loader = self._loaders[name] = self._build(name)
        rank, world = distributed_rank()
        batches = LightningBatches(
            loader,
            trainer=self.trainer,
            resume=name == "train",
            rank=rank,
            world_size=world,
            device=self._device(),
            **self.torch_options,
        )
        self._batches[name] = batches
        return batches

    def _device(self) -> Any:
        if self.device != "auto":
            return self.device
        trainer = self.trainer
        root = getattr(getattr(trainer, "strategy", None), "root_device", None)
        return root if root is not None and root.type == "cuda" else None
