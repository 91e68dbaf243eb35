"""A fastload loader as PyTorch tensors: zero-copy on the CPU, pinned and asynchronous to a GPU.

CPU (``device=None`` or ``"cpu"``)
    ``torch.from_numpy`` on the loader's read-only shared-memory views: no copy.
    A kept tensor keeps its batch's slot out of the loader's ring, like a kept
    view (see docs/frameworks.md, "Keeping batches"); ``copy=True`` (or
    ``.clone()``) gives tensors that own their memory.

CUDA (``device="cuda"``, ``"cuda:1"``, ...)
    Each batch is copied once into one of a small ring of pinned host buffers
    and sent to the GPU with ``non_blocking`` copies on a side CUDA stream.  The
    iterator stays one batch ahead: when it hands out batch ``i`` (after making
    the caller's stream wait for that copy's event), the copy of batch ``i + 1``
    is already queued, so it overlaps the training step of batch ``i``.  A
    pinned buffer is refilled only after the event of the copy that last read
    it has completed.  GPU tensors own their memory and stay valid.

Other devices (``"mps"``, ...) get a plain synchronous ``.to(device)``.

A ragged field the loader delivers as values + offsets (``fl.Loader(...,
ragged={"hits": "offsets"})``, a :class:`fastload.Ragged`) becomes a nested
jagged tensor, ``torch.nested.nested_tensor_from_jagged(values, offsets)``
(sharing the loader's memory on the CPU); :func:`pyg_batch` gives a
PyTorch Geometric-style view of such a batch (``x``, ``batch``, ``ptr``).

``x=``/``y=``/``sample_weight=`` choose the element's structure as in the
tf.data and Keras adapters (``for x, y in loader.torch(x="X", y="y")``).

The adapter holds no reference to a batch (numpy views or tensors) while the
caller has it: what the caller drops can go back to the loader's ring.

With ``torch.utils.data.DataLoader``, wrap the loader in
:class:`FastloadIterableDataset` and use ``DataLoader(ds, batch_size=None,
num_workers=0)``: fastload batches and parallelises itself (other settings
raise :class:`~fastload.errors.ConfigError` at the first ``iter()``).
"""

from __future__ import annotations

import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload import _validate
from fastload.adapters._batches import LoaderBatches
from fastload.adapters._select import Selection, select
from fastload.errors import ConfigError, FieldNotFoundError
from fastload.store import Ragged

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "loader.torch() needs PyTorch; install it with `pip install 'fastload[torch]'`"
    ) from exc

if TYPE_CHECKING:
    from fastload._source import Source
    from fastload._spec import FieldSpec
    from fastload.loader import Loader
    from fastload.mix import Mix

__all__ = [
    "FastloadIterableDataset",
    "GraphBatch",
    "TorchBatches",
    "distributed_loader",
    "distributed_rank",
    "nested",
    "pyg_batch",
    "to_torch",
]

TensorBatch = dict[str, "torch.Tensor"]


def torch_dtype(dtype: np.dtype | str) -> torch.dtype:
    """The torch dtype ``torch.from_numpy`` gives an array of numpy ``dtype``."""
    try:
        return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
    except TypeError as exc:
        raise ConfigError(
            f"numpy dtype {np.dtype(dtype)} has no torch equivalent; convert the field with "
            "fastload.transforms.Cast in the loader's transform"
        ) from exc


def _view_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    # torch warns that writing through the tensor would be undefined; the batch
    # contract already forbids writing into a loader's batch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _owned_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def nested(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The jagged nested tensor of ``values`` (rows back to back) and ``offsets`` (``B + 1``, from 0)."""
    return torch.nested.nested_tensor_from_jagged(values, offsets)


def _ragged_converter(
    convert: Callable[[np.ndarray], torch.Tensor],
) -> Callable[[Any], torch.Tensor]:
    """``convert`` for arrays; a :class:`~fastload.Ragged` becomes a nested jagged tensor."""

    def convert_any(value: Any) -> torch.Tensor:
        if isinstance(value, Ragged):
            values, offsets = value.rebased()
            return nested(convert(values), convert(offsets))
        return convert(value)

    return convert_any


def _resolve_device(device: Any) -> torch.device:
    try:
        return torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"unknown torch device {device!r} (examples: 'cpu', 'cuda', 'cuda:1')"
        ) from exc


class _PinnedStager:
    """Ring of pinned host buffers and a side stream for host-to-GPU copies.

    ``stage(batch)`` waits until the buffer it will overwrite is no longer read
    by an in-flight copy, copies the batch into it, queues the copies to the GPU
    on the side stream and records an event after them.
    """

    def __init__(
        self, specs: Mapping[str, FieldSpec], batch_size: int, device: torch.device, n_buffers: int
    ) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.buffers = [
            {
                name: torch.empty(
                    (batch_size, *spec.shape), dtype=torch_dtype(spec.dtype), pin_memory=True
                )
                for name, spec in specs.items()
                if not spec.ragged
            }
            for _ in range(n_buffers)
        ]
        self.events: list[torch.cuda.Event | None] = [None] * n_buffers
        self._next = 0

    def stage(self, batch: Mapping[str, np.ndarray]) -> tuple[TensorBatch, torch.cuda.Event]:
        slot = self._next
        self._next = (slot + 1) % len(self.buffers)
        previous = self.events[slot]
        if previous is not None:
            previous.synchronize()  # the copy that last read this buffer has finished
        host = self.buffers[slot]
        out: dict[str, Any] = {}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name, array in batch.items():
                if isinstance(array, Ragged):
                    # rows vary per batch: a pinned copy of this batch's (the host
                    # allocator keeps it until the copy that reads it has run)
                    parts = array.rebased()
                    out[name] = tuple(
                        _view_tensor(part).pin_memory().to(self.device, non_blocking=True)
                        for part in parts
                    )
                    continue
                pinned = host[name][: array.shape[0]]
                pinned.copy_(_view_tensor(array))  # the one CPU copy, out of shared memory
                out[name] = pinned.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.events[slot] = event
        return out, event

    def hand_over(self, tensors: TensorBatch, event: torch.cuda.Event) -> TensorBatch:
        """Make the caller's current stream wait for the copies, then give the tensors to it."""
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(event)
        out: TensorBatch = {}
        for name, tensor in tensors.items():
            # allocated on the side stream: without this the caching allocator could
            # reuse their memory for the next copy while the consumer still reads it
            parts = tensor if isinstance(tensor, tuple) else (tensor,)
            for part in parts:
                part.record_stream(consumer)
            out[name] = nested(*parts) if isinstance(tensor, tuple) else tensor
        return out


class TorchBatches(LoaderBatches):
    """Iterable of a loader's batches as torch tensors; see :func:`to_torch`.

    Each ``iter()`` runs one loader epoch.  ``len()``, ``set_epoch``,
    ``state_dict`` and ``load_state_dict`` are the loader's.  An element is the
    dict of every field, or the structure ``x``/``y``/``sample_weight`` name.

    ``TorchBatches`` is the loader seen as tensors: :meth:`close` (or leaving a
    ``with`` block) ends an iteration in progress and closes the loader too.
    """

    def __init__(
        self,
        loader: Loader,
        *,
        device: Any = None,
        pin_memory: bool | None = None,
        copy: bool = False,
        staging_buffers: int = 3,
        x: Any = None,
        y: Any = None,
        sample_weight: Any = None,
    ) -> None:
        super().__init__(loader)
        self.device = _resolve_device(device)
        is_cuda = self.device.type == "cuda"
        if pin_memory is None:
            pin_memory = is_cuda
        if (pin_memory or is_cuda) and not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r} / pin_memory={pin_memory!r} need CUDA, but torch.cuda.is_available() "
                f"is False (torch {torch.__version__}); use device=None for CPU tensors"
            )
        if is_cuda and not pin_memory:
            warnings.warn(
                "to_torch(device='cuda', pin_memory=False) copies synchronously from pageable memory; "
                "pin_memory=True overlaps the copy with training",
                stacklevel=3,
            )
        staging_buffers = _validate.integer(
            staging_buffers, name="staging_buffers", minimum=2, owner="to_torch"
        )
        specs = loader.output_specs
        self.selection: Selection = select(specs, x, y, sample_weight, where=repr(loader))
        for name in self.selection.fields:
            try:
                torch_dtype(specs[name].dtype)
            except ConfigError as exc:
                raise ConfigError(f"field {name!r}: {exc}") from None
        self.pin_memory = bool(pin_memory)
        self.copy = bool(copy)
        self.staging_buffers = staging_buffers
        self._stager: _PinnedStager | None = None
        #: batches the CUDA path took from the loader but has not handed out yet
        self._ahead = 0

    def __repr__(self) -> str:
        return f"<TorchBatches device={str(self.device)!r} pin_memory={self.pin_memory} copy={self.copy} {self.loader!r}>"

    def state_dict(self) -> dict[str, Any]:
        """The loader's state at the next batch *this iterable* hands out.

        The CUDA path stays one batch ahead of the caller, so the loader has
        delivered one more batch than the caller has seen; that one is not
        counted as seen (resuming would skip it).
        """
        state = self.loader.state_dict()
        if self._ahead:
            state = {**state, "batch": state["batch"] - self._ahead}
        return state

    def _release(self) -> None:
        self._stager = None  # the pinned buffers

    # -------------------------------------------------------------- iteration
    def _iterate(self) -> Iterator[Any]:
        if self.device.type == "cuda" and self.pin_memory:
            return self._iter_cuda()
        if self.device.type == "cpu":
            return self._converted(_ragged_converter(self._converter()))
        device = self.device
        return self._converted(_ragged_converter(lambda array: _view_tensor(array).to(device)))

    def _converter(self) -> Callable[[np.ndarray], torch.Tensor]:
        if self.pin_memory:
            return lambda array: _view_tensor(array).pin_memory()
        return _owned_tensor if self.copy else _view_tensor

    def _element(self, batch: Mapping[str, Any]) -> Any:
        return self.selection.build(batch.__getitem__)

    def _converted(self, convert: Callable[[Any], torch.Tensor]) -> Iterator[Any]:
        fields = self.selection.fields
        return self._stream(lambda batch: self._element({f: convert(batch[f]) for f in fields}))

    def _iter_cuda(self) -> Iterator[Any]:
        fields = self.selection.fields
        if self._stager is None:
            specs = self.loader.output_specs
            self._stager = _PinnedStager(
                {name: specs[name] for name in fields},
                self.loader.batch_size,
                self.device,
                self.staging_buffers,
            )
        stager = self._stager
        # (tensors, event) of batches copied but not yet handed over: at most one
        # ahead, so batch i+1's copy overlaps the caller's step on batch i
        staged: deque[tuple[TensorBatch, torch.cuda.Event]] = deque()
        batches = iter(self.loader)
        try:
            for batch in batches:
                # stage() copies into pinned memory: the slot is not needed after it
                staged.append(stager.stage({name: batch[name] for name in fields}))
                del batch
                if len(staged) > 1:
                    # delivered by the loader, not yet seen, once this one is handed out
                    self._ahead = len(staged) - 1
                    yield self._element(stager.hand_over(*staged.popleft()))
            while staged:  # the loader's epoch is over: nothing is ahead of the caller
                self._ahead = 0
                yield self._element(stager.hand_over(*staged.popleft()))
        finally:
            self._ahead = 0
            batches.close()


def to_torch(
    loader: Loader,
    device: Any = None,
    pin_memory: bool | None = None,
    *,
    copy: bool = False,
    staging_buffers: int = 3,
    x: Any = None,
    y: Any = None,
    sample_weight: Any = None,
) -> TorchBatches:
    """Iterate a loader as torch tensors (``loader.torch(...)`` calls this).

    Parameters
    ----------
    loader : fastload.Loader
        The loader.
    device : str | torch.device | None
        ``None``/``"cpu"``: CPU tensors sharing the loader's shared memory (no copy).
        ``"cuda[:n]"``: GPU tensors, copied through pinned buffers on a side stream.
    pin_memory : bool | None
        Default: True for CUDA devices.  With a CPU device, True returns pinned
        copies (for your own ``.to("cuda", non_blocking=True)``).
    copy : bool
        CPU only: tensors that own their memory instead of shared-memory views.
    staging_buffers : int
        CUDA only: pinned host buffers in the ring (>= 2).
    x, y, sample_weight : str, tuple, list or dict of field names, optional
        Structure of each element, as in :func:`fastload.adapters.tf.to_tf`:
        neither: the dict of every field; ``x`` only: the ``x`` structure;
        ``x`` and ``y``: ``(x, y)`` (plus ``sample_weight``), so
        ``for x, y in loader.torch(x="X", y="y")`` works.  Fields not named
        are not converted (nor copied to the GPU).

    Returns
    -------
    TorchBatches
        Iterable (one loader epoch per ``iter()``) with ``len()``, ``close()``
        and context-manager support (closing it closes the loader).

    Notes
    -----
    Zero-copy CPU tensors are read-only views of the loader's shared memory:
    do not write to them.  A tensor you keep keeps its batch's slot out of the
    loader's ring until it is freed; to keep many batches, keep ``.clone()``
    copies or pass ``copy=True``.  GPU tensors and copies own their memory.
    """
    return TorchBatches(
        loader,
        device=device,
        pin_memory=pin_memory,
        copy=copy,
        staging_buffers=staging_buffers,
        x=x,
        y=y,
        sample_weight=sample_weight,
    )


class GraphBatch:
    """A PyTorch Geometric-style batch of graphs, for when PyG is not installed.

    ``x`` holds every node of the batch back to back (one row per node),
    ``batch`` the graph of each node, ``ptr`` the ``B + 1`` node offsets (graph
    ``i`` is ``x[ptr[i]:ptr[i + 1]]``), ``edge_index`` the ``(2, E)`` edges in
    batch-wide node numbers (or None).  Every other field is an attribute too
    (``g.y``): per graph (leading axis ``B``) for a dense field, per node for a
    ragged field with the same offsets.  The names and meanings are PyG's
    (``torch_geometric.data.Batch``), so ``model(g.x, g.edge_index, g.batch)``
    runs unchanged with either.
    """

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    @property
    def num_graphs(self) -> int:
        """Graphs in the batch (``B``)."""
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        """Nodes in the batch (rows of ``x``)."""
        return int(self.x.shape[0])

    def keys(self) -> list[str]:
        """Attribute names (as PyG's ``Batch.keys()``)."""
        return list(self.__dict__)

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def to(self, device: Any, non_blocking: bool = False) -> GraphBatch:
        """A copy with every tensor on ``device``."""
        return GraphBatch(
            **{
                k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                for k, v in self.__dict__.items()
            }
        )

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{k}={list(v.shape)}" if isinstance(v, torch.Tensor) else f"{k}={v!r}"
            for k, v in self.__dict__.items()
        )
        return f"GraphBatch({parts})"


def _values_offsets(value: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(values, offsets from 0) of a ragged batch field (``Ragged`` or nested tensor), else None."""
    if isinstance(value, Ragged):
        values, offsets = value.rebased()
        return _view_tensor(values), _view_tensor(offsets)
    if isinstance(value, torch.Tensor) and value.is_nested:
        offsets = value.offsets()
        return value.values(), offsets - offsets[0]
    return None


def _as_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _view_tensor(value)
    return value


def pyg_batch(
    batch: Mapping[str, Any],
    x: str,
    *,
    edge_index: Any = None,
    use_pyg: bool | None = None,
) -> Any:
    """A PyTorch Geometric-style view of one ragged batch: nodes ``x``, ``batch``, ``ptr``.

    Parameters
    ----------
    batch : Mapping[str, Any]
        A loader batch (numpy, with ``x`` a :class:`fastload.Ragged`, from
        ``fl.Loader(..., ragged={x: "offsets"})``) or a ``loader.torch()`` batch
        (``x`` a nested jagged tensor).
    x : str
        The ragged field whose rows are the nodes.
    edge_index : array or tensor (2, E), str, or ragged, optional
        Edges in batch-wide node numbers, e.g. from
        :func:`fastload.transforms.knn_edges`; or the name of a ragged field of
        ``batch`` of ``(source, target)`` rows (the worker transform
        :class:`fastload.transforms.KnnEdges`'s output), or such a field itself:
        its rows, transposed, are the ``edge_index`` (and the field is not
        repeated under its own name).
    use_pyg : bool | None
        ``None``: a ``torch_geometric.data.Batch`` when PyG is installed, else a
        :class:`GraphBatch`; ``False``: always a :class:`GraphBatch`; ``True``:
        PyG or ``ModuleNotFoundError``.

    Returns
    -------
    torch_geometric.data.Batch | GraphBatch
        ``x`` (nodes, features) sharing the batch's memory on the CPU, ``batch``
        (nodes,) int64, ``ptr`` (B + 1,) int64, ``edge_index`` when given, and
        every other field of ``batch`` under its own name.

    Raises
    ------
    FieldNotFoundError
        ``x`` (or an ``edge_index`` name) is not a field of ``batch``.
    ConfigError
        ``x`` is not ragged (values + offsets), or ``edge_index`` is not ``(2, E)``
        (nor ragged rows of 2).
    """
    if x not in batch:
        raise FieldNotFoundError(f"pyg_batch: field {x!r} not in the batch (fields: {list(batch)})")
    parts = _values_offsets(batch[x], x)
    if parts is None:
        raise ConfigError(
            f'pyg_batch: field {x!r} is not ragged; build the loader with ragged={{{x!r}: "offsets"}}'
        )
    values, ptr = parts
    counts = ptr[1:] - ptr[:-1]
    attributes: dict[str, Any] = {
        "x": values,
        "batch": torch.repeat_interleave(
            torch.arange(counts.numel(), dtype=torch.int64, device=ptr.device), counts
        ),
        "ptr": ptr.to(torch.int64),
    }
    edge_field = edge_index if isinstance(edge_index, str) else None
    if edge_field is not None:
        if edge_field not in batch:
            raise FieldNotFoundError(
                f"pyg_batch: edge_index field {edge_field!r} not in the batch (fields: {list(batch)})"
            )
        edge_index = batch[edge_field]
    if edge_index is not None:
        ragged_edges = _values_offsets(edge_index, "edge_index")
        if ragged_edges is not None:  # KnnEdges' output: (source, target) rows per graph
            if tuple(ragged_edges[0].shape[1:]) != (2,):
                raise ConfigError(
                    "pyg_batch: a ragged edge_index needs rows of (source, target), got rows of "
                    f"shape {tuple(ragged_edges[0].shape[1:])}"
                )
            edge_index = ragged_edges[0].t()
        edges = torch.as_tensor(_as_tensor(edge_index))
        if edges.ndim != 2 or edges.shape[0] != 2:
            raise ConfigError(f"pyg_batch: edge_index must be (2, E), got {tuple(edges.shape)}")
        attributes["edge_index"] = edges.to(torch.int64)
    for name, value in batch.items():
        if name in (x, edge_field, *attributes):
            continue
        other = _values_offsets(value, name)
        attributes[name] = other[0] if other is not None else _as_tensor(value)
    if use_pyg is False:
        return GraphBatch(**attributes)
    try:
        from torch_geometric.data import Batch as PygBatch
    except ModuleNotFoundError:
        if use_pyg:
            raise ModuleNotFoundError(
                "pyg_batch(use_pyg=True) needs PyTorch Geometric: `pip install torch_geometric`"
            ) from None
        return GraphBatch(**attributes)
    return PygBatch(**attributes)


#: what to tell a user whose DataLoader would re-batch or copy fastload's batches
_DATALOADER_FIX = (
    "use DataLoader(FastloadIterableDataset(loader), batch_size=None, num_workers=0) and set the "
    "batch size on fl.Loader: fastload batches and reads in parallel itself"
)


def _collating_fetcher(frame: FrameType | None) -> bool:
    """Whether ``iter(dataset)`` was called by a DataLoader that collates items into batches.

    A ``DataLoader`` whose ``batch_size`` (or ``batch_sampler``) is not None
    builds a ``torch.utils.data._utils.fetch._IterableDatasetFetcher`` with
    ``auto_collation=True``; its ``__init__`` calls ``iter(dataset)`` after
    setting that attribute, so the caller's frame says how the items will be
    used.  Without that (internal) class, nothing is detected.
    """
    fetch = sys.modules.get("torch.utils.data._utils.fetch")
    fetcher_type = getattr(fetch, "_IterableDatasetFetcher", None)
    if fetcher_type is None:
        return False
    for _ in range(3):  # the fetcher's __init__, or a subclass's that calls it
        if frame is None:
            return False
        owner = frame.f_locals.get("self")
        if isinstance(owner, fetcher_type):
            return bool(getattr(owner, "auto_collation", False))
        frame = frame.f_back
    return False


class FastloadIterableDataset(IterableDataset):
    """A loader as a ``torch.utils.data.IterableDataset``, for code built around ``DataLoader``.

    Use ``DataLoader(FastloadIterableDataset(loader), batch_size=None, num_workers=0)``:
    items are already batches (``batch_size=None`` turns off the DataLoader's
    batching), and fastload's own workers do the parallel reading, so
    DataLoader workers would only add copies.  Both are refused at the first
    ``iter()`` with a :class:`~fastload.errors.ConfigError` saying so: a
    ``batch_size`` (including the default 1) would stack whole batches into
    one, and workers would each run the loader.
    ``DataLoader(..., pin_memory=True)`` works and copies into pinned memory.

    Parameters
    ----------
    loader : fastload.Loader
        The loader; each ``iter()`` is one loader epoch.
    copy : bool
        Tensors that own their memory (default: read-only views of shared memory).
    x, y, sample_weight : str, tuple, list or dict of field names, optional
        Structure of each item, as in :func:`to_torch`.
    """

    def __init__(
        self,
        loader: Loader,
        *,
        copy: bool = False,
        x: Any = None,
        y: Any = None,
        sample_weight: Any = None,
    ) -> None:
        super().__init__()
        self.loader = loader
        self.batches = TorchBatches(
            loader, copy=copy, pin_memory=False, x=x, y=y, sample_weight=sample_weight
        )

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is not None:
            raise ConfigError(
                f"FastloadIterableDataset is being iterated in DataLoader worker {info.id}; "
                + _DATALOADER_FIX
            )
        if _collating_fetcher(sys._getframe(1)):
            raise ConfigError(
                "the DataLoader has a batch_size (its default is 1), so it would stack fastload's "
                "batches into batches of batches (an extra axis, or 'stack expects each tensor to "
                "be equal size'); " + _DATALOADER_FIX
            )
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Close the adapter and its loader (idempotent); see :meth:`TorchBatches.close`."""
        self.batches.close()

    def __enter__(self) -> FastloadIterableDataset:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> Any:
        # DataLoader workers with spawn/forkserver pickle the dataset; say why that cannot work
        raise ConfigError(
            "FastloadIterableDataset cannot be sent to DataLoader worker processes; "
            + _DATALOADER_FIX
        )


def distributed_rank(group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in ``torch.distributed``, or ``(0, 1)`` when not initialised.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup | None
        Process group (default: the world).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def distributed_loader(
    source: Source | Mix,
    batch_size: int,
    *,
    group: Any = None,
    drop_last: bool = True,
    require_initialized: bool = True,
    **options: Any,
) -> Loader:
    """A :class:`fastload.Loader` whose ``rank``/``world_size`` come from ``torch.distributed``.

    Parameters
    ----------
    source : Source | Mix
        As for :class:`fastload.Loader`.
    batch_size : int
        Samples per batch *per rank*.
    group : torch.distributed.ProcessGroup | None
        Process group whose ranks share the data (default: the world).
    drop_last : bool
        Default True: every rank gets the same number of full batches, which
        DDP's collective operations need (unequal counts hang).
    require_initialized : bool
        Raise if ``torch.distributed`` is not initialised (default), instead of
        quietly loading the whole dataset on a single rank.
    **options
        Other :class:`fastload.Loader` options.  ``seed`` must be the same on
        every rank (the default 0 is); ranks then read disjoint shards.

    Returns
    -------
    fastload.Loader
    """
    from fastload.loader import Loader

    for name in ("rank", "world_size"):
        if name in options:
            raise ConfigError(
                f"distributed_loader takes {name} from torch.distributed; build fl.Loader(..., "
                f"{name}=...) directly to choose it yourself"
            )
    import torch.distributed as dist

    if require_initialized and not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(
            "distributed_loader: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(...) first, or pass require_initialized=False "
            "to load on a single rank"
        )
    rank, world_size = distributed_rank(group)
    return Loader(
        source, batch_size, drop_last=drop_last, rank=rank, world_size=world_size, **options
    )
