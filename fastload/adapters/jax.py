"""A fastload loader as JAX arrays: zero-copy on the CPU, ``device_put`` to an accelerator.

CPU (JAX's default backend is the CPU, or ``device`` is a CPU device)
    ``jax.device_put`` on the loader's read-only shared-memory views.  XLA's
    CPU client uses a host buffer in place when it starts on a 64-byte
    boundary, which every batch slot does (``fastload/_engine/_arena.py``):
    no copy.  The ``jax.Array`` holds a reference to the numpy view it was
    made from until the array is deleted, so a kept array keeps its batch's
    slot out of the loader's ring, like a kept numpy view or CPU tensor
    (docs/frameworks.md, "Keeping batches").  ``copy=True`` gives arrays that
    own their memory (one copy into a fresh aligned buffer).

Accelerators (a GPU or TPU is JAX's default backend, or ``device`` names one)
    ``jax.device_put`` copies each batch to the device asynchronously; JAX
    keeps the numpy view (and so the slot) alive until the transfer has
    completed, then the slot can go back to the ring.  Device arrays own
    their memory and stay valid.

DLPack is not used: numpy refuses to export a read-only array through the
DLPack version JAX asks for, and a writable alias of a read-only slot would
hide the loader's contract from both libraries.  ``device_put`` gives the
same zero-copy result with the lifetime handled by JAX's reference.

Fields must keep their dtype in JAX: with 64-bit types disabled (JAX's
default), ``device_put`` silently turns ``int64`` into ``int32`` and
``float64`` into ``float32``, which would change values (sample ids past
2**31, for one).  Such fields are refused with a :class:`~fastload.errors.ConfigError`
that says how to cast them or how to enable 64-bit types.

``x=``/``y=``/``sample_weight=`` choose the element's structure as in the
torch, tf.data and Keras adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload.adapters._batches import LoaderBatches
from fastload.adapters._select import Selection, select
from fastload.adapters.tf import aligned_copy  # framework-free; imports no TensorFlow
from fastload.errors import ConfigError
from fastload.store import Ragged

try:
    import jax
    import jax.numpy as jnp
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "loader.jax() needs JAX; install it with `pip install 'fastload[jax]'` "
        "(or `pip install jax`)"
    ) from exc

if TYPE_CHECKING:
    from fastload.loader import Loader

__all__ = ["JaxBatches", "to_jax"]


def _resolve_device(device: Any) -> Any:
    """A ``jax.Device``/``Sharding``, or None for JAX's default device (an accelerator if any)."""
    if device is None or isinstance(device, (jax.Device, jax.sharding.Sharding)):
        return device
    if isinstance(device, str):
        try:
            return jax.devices(device)[0]
        except RuntimeError as exc:
            raise ConfigError(
                f"loader.jax(device={device!r}): JAX has no {device!r} backend "
                f"(available: {sorted({d.platform for d in jax.devices()})}); pass a jax.Device, "
                "a jax.sharding.Sharding, a platform name such as 'cpu' or 'gpu', or None"
            ) from exc
    raise ConfigError(
        f"loader.jax(device=...) takes a jax.Device, a jax.sharding.Sharding, a platform name "
        f"('cpu', 'gpu', 'tpu') or None, got {type(device).__name__}"
    )


def _platforms(device: Any) -> set[str]:
    if device is None:
        return {jax.devices()[0].platform}
    if isinstance(device, jax.sharding.Sharding):
        return {d.platform for d in device.device_set}
    return {device.platform}


def _check_dtype(name: str, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise ConfigError(
            f"field {name!r} has dtype {dtype}, which JAX does not support; convert it with "
            "fastload.transforms.Cast in the loader's transform, or leave it out of x=/y="
        )
    canonical = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if canonical != dtype:
        raise ConfigError(
            f"field {name!r} is {dtype}, which JAX would silently convert to {canonical} because "
            "64-bit types are disabled (jax_enable_x64 is False); cast the field with "
            f"fastload.transforms.Cast({name!r}, '{canonical}') in the loader's transform, "
            "leave it out of x=/y=, or call jax.config.update('jax_enable_x64', True) first"
        )


def _place(
    fields: tuple[str, ...],
    batch: Mapping[str, np.ndarray],
    device: Any,
    own: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, Any]:
    """``{field: jax.Array}`` of one batch (a function: no local outlives the call).

    A ragged field (:class:`fastload.Ragged`) becomes ``(values, offsets)``;
    its offsets are int32 unless 64-bit types are enabled.
    """
    arrays = [_host_value(batch[name], own) for name in fields]
    # one call for the whole element: a pytree costs one dispatch, not one per field
    placed = dict(zip(fields, jax.device_put(arrays, device), strict=True))
    for name, array in zip(fields, arrays, strict=True):
        pairs = (
            zip(placed[name], array, strict=True)
            if isinstance(array, tuple)
            else [(placed[name], array)]
        )
        for got, host in pairs:
            if got.dtype != host.dtype:  # never hand over silently converted values
                _check_dtype(name, host.dtype)
                raise ConfigError(f"field {name!r}: JAX made {got.dtype} of {host.dtype}")
    return placed


def _host_value(
    value: Any, own: Callable[[np.ndarray], np.ndarray] | None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The array (or ragged values + offsets pair) handed to ``jax.device_put``."""
    if isinstance(value, Ragged):
        values, offsets = value.rebased()
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(offsets.dtype))
        if canonical != offsets.dtype:  # no x64: offsets fit int32 (a batch slot does)
            offsets = aligned_copy(offsets.astype(canonical))
        elif own is not None:
            offsets = own(offsets)
        return (values if own is None else own(values)), offsets
    return value if own is None else own(value)


class JaxBatches(LoaderBatches):
    """Iterable of a loader's batches as ``jax.Array`` s; see :func:`to_jax`.

    Each ``iter()`` runs one loader epoch.  ``len()``, ``set_epoch``,
    ``state_dict`` and ``load_state_dict`` are the loader's.  An element is the
    dict of every field, or the structure ``x``/``y``/``sample_weight`` name.
    :meth:`close` (or leaving a ``with`` block) ends an iteration in progress
    and closes the loader.
    """

    def __init__(
        self,
        loader: Loader,
        *,
        device: Any = None,
        copy: bool = False,
        x: Any = None,
        y: Any = None,
        sample_weight: Any = None,
    ) -> None:
        super().__init__(loader)
        self.device = _resolve_device(device)
        specs = loader.output_specs
        self.selection: Selection = select(specs, x, y, sample_weight, where=repr(loader))
        for name in self.selection.fields:
            _check_dtype(name, specs[name].dtype)
        self.copy = bool(copy)
        #: on the CPU without copy=True, arrays alias the loader's shared memory
        self.zero_copy = _platforms(self.device) == {"cpu"} and not self.copy

    def __repr__(self) -> str:
        where = "default" if self.device is None else str(self.device)
        return f"<JaxBatches device={where!r} zero_copy={self.zero_copy} {self.loader!r}>"

    def _iterate(self) -> Iterator[Any]:
        fields = self.selection.fields
        specs = self.loader.output_specs
        for name in fields:  # jax_enable_x64 may have changed since the adapter was made
            _check_dtype(name, specs[name].dtype)
        device = self.device
        own = aligned_copy if self.copy else None
        build = self.selection.build
        return self._stream(lambda batch: build(_place(fields, batch, device, own).__getitem__))


def to_jax(
    loader: Loader,
    *,
    device: Any = None,
    copy: bool = False,
    x: Any = None,
    y: Any = None,
    sample_weight: Any = None,
) -> JaxBatches:
    """Iterate a loader as ``jax.Array`` s (``loader.jax(...)`` calls this).

    Parameters
    ----------
    loader : fastload.Loader
        The loader.
    device : jax.Device | jax.sharding.Sharding | str | None
        Where the arrays go.  ``None``: JAX's default device (an accelerator
        when one exists, else the CPU), uncommitted.  A platform name
        (``"cpu"``, ``"gpu"``, ``"tpu"``) means its first device.  A
        ``Sharding`` splits each batch across devices as ``jax.device_put``
        does (the batch dimension must divide evenly: use ``drop_last=True``).
    copy : bool
        CPU only: arrays that own their memory instead of aliasing the
        loader's shared memory (one copy each).  Accelerator arrays always
        own their memory.
    x, y, sample_weight : str, tuple, list or dict of field names, optional
        Structure of each element, as in :func:`fastload.adapters.torch.to_torch`:
        neither: the dict of every field; ``x`` only: the ``x`` structure;
        ``x`` and ``y``: ``(x, y)`` (plus ``sample_weight``).  Fields not
        named are not transferred.

    Returns
    -------
    JaxBatches
        Iterable (one loader epoch per ``iter()``) with ``len()``, ``close()``
        and context-manager support (closing it closes the loader).

    Raises
    ------
    ConfigError
        A selected field has a dtype JAX lacks, or a 64-bit dtype while
        ``jax_enable_x64`` is off (JAX would change its values); an unknown
        ``device``.

    Notes
    -----
    Zero-copy CPU arrays read the loader's shared memory: a kept array keeps
    its batch's slot out of the ring until it is deleted (past the loader's
    ``max_kept_bytes``, the loader delivers copies instead).  To keep many
    batches, pass ``copy=True`` or keep what you compute from them.
    """
    return JaxBatches(loader, device=device, copy=copy, x=x, y=y, sample_weight=sample_weight)
