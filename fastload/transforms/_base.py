"""The transform protocol, :class:`Compose`, and helpers shared by all transforms.

A transform maps one batch (``dict[str, np.ndarray]``, every array with the
batch as its leading axis; a field the loader delivers as values + offsets is a
``fl.Ragged``, its spec ``ragged=True``) to another.  It runs inside a prefetch worker, whose
output goes into a fixed-size shared-memory slot, so it must say *before any
data is seen* which fields it returns and their per-sample shapes and dtypes
(:meth:`Transform.output_spec`).

Invariants every transform here keeps:

- fields it does not touch pass through unchanged (same array object);
- it never writes into its input arrays (they may be read-only views);
- it works for any batch size, including 1 and a short last batch;
- it holds only plain, picklable attributes (it is sent to spawned workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from fastload import _validate
from fastload._messages import closest
from fastload._spec import FieldSpec, is_ragged, output_problem, specs_of
from fastload.errors import ConfigError, RaggedBoundError, SchemaError

Batch = Mapping[str, np.ndarray]
Specs = Mapping[str, FieldSpec]


class Transform:
    """Base class of per-batch transforms that declare their output spec.

    Subclasses implement :meth:`output_spec` and :meth:`__call__`.  Instances
    must be picklable: keep plain attributes (numbers, strings, tuples, numpy
    arrays), never lambdas or open handles.
    """

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        """Per-sample shapes and dtypes of the fields this transform returns.

        Parameters
        ----------
        inputs : Mapping[str, FieldSpec]
            Per-sample specs of the fields the transform receives.

        Returns
        -------
        dict[str, FieldSpec]
            Specs of every field :meth:`__call__` returns, including the
            fields it passes through unchanged.

        Raises
        ------
        ConfigError
            If a field the transform needs is missing or has a bad shape/dtype.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement output_spec()")

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        """Transform one batch; returns exactly the fields of :meth:`output_spec`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__()")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_short_repr(v)}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Compose(Transform):
    """Apply transforms one after the other; specs thread through the chain.

    Parameters
    ----------
    transforms : Iterable[Transform]
        Applied in order; each sees the output of the previous one.  An empty
        chain is the identity.

    Raises
    ------
    ConfigError
        If an element lacks ``output_spec`` or is not callable.
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        chain = tuple(transforms)
        for i, t in enumerate(chain):
            if not (callable(t) and callable(getattr(t, "output_spec", None))):
                raise ConfigError(
                    f"Compose: element {i} ({t!r}) is not a transform; each element needs "
                    "an output_spec(inputs) method and __call__(batch)"
                )
        self.transforms = chain

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        specs = dict(inputs)
        for t in self.transforms:
            specs = dict(t.output_spec(specs))
        return specs

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        out = dict(batch)
        for t in self.transforms:
            out = dict(t(out))
        return out

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"


def check_transform(transform: Transform, batch: Batch) -> dict[str, np.ndarray]:
    """Apply ``transform`` to ``batch`` and verify the result against its spec.

    Use it in the tests of your own transforms (and when debugging a pipeline):
    the shared-memory slots are sized from :meth:`Transform.output_spec`, so a
    transform whose output disagrees with it cannot run in the prefetcher.

    Parameters
    ----------
    transform : Transform
        The transform to check.
    batch : Mapping[str, np.ndarray]
        An input batch; every array has the same leading (batch) length.

    Returns
    -------
    dict[str, np.ndarray]
        The transform's output.

    Raises
    ------
    SchemaError
        If the returned fields, per-sample shapes, dtypes or batch length
        differ from what ``output_spec`` declared.
    """
    n = batch_size(batch)
    declared = transform.output_spec(specs_of(batch))
    out = transform(batch)
    name = type(transform).__name__
    if set(out) != set(declared):
        raise SchemaError(
            f"{name}: returned fields {sorted(out)} but declared {sorted(declared)}; "
            "output_spec() and __call__() must agree"
        )
    for key, spec in declared.items():
        problem = output_problem(spec, out[key], n)
        if problem is None:
            continue
        what, over_bound = problem
        error = RaggedBoundError if over_bound else SchemaError
        raise error(
            f"{name}: field {key!r} {what}; output_spec() and __call__() must agree (a loader "
            "sizes its shared-memory slots from output_spec())"
        )
    return out


# --- helpers for implementations --------------------------------------------


def require_field(
    inputs: Specs,
    field: str,
    owner: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    kinds: str | None = None,
    ragged: bool | None = False,
) -> FieldSpec:
    """Return ``inputs[field]``, or raise :class:`ConfigError` naming the problem.

    Parameters
    ----------
    inputs : Mapping[str, FieldSpec]
        Specs the transform receives.
    field : str
        The field the transform needs.
    owner : object
        The transform (its class name goes into the message).
    ndim : int or tuple of int, optional
        Accepted per-sample numbers of dimensions.
    kinds : str, optional
        Accepted dtype kinds (``"b"`` bool, ``"i"``/``"u"`` integer, ``"f"``
        float), e.g. ``"iuf"`` for any real number.
    ragged : bool | None
        ``False`` (default): the field must have a fixed shape; ``True``: it must
        be ragged (a :class:`fastload.Ragged`, ``ndim`` then counts the axes of
        one row); ``None``: either.

    Returns
    -------
    FieldSpec
        The field's per-sample spec.
    """
    who = type(owner).__name__
    if field not in inputs:
        raise ConfigError(
            f"{who}: input field {field!r} is missing; available fields: "
            f"{sorted(inputs)}{closest(field, list(inputs))}. Fix the field name or put the "
            "transform that produces it earlier in the Compose"
        )
    spec = inputs[field]
    if ragged is not None and spec.ragged != ragged:
        if spec.ragged:
            raise ConfigError(
                f"{who}: field {field!r} is ragged (a fl.Ragged of values + offsets) and "
                f"{who} works on fixed-shape fields; use a ragged transform (TruncateRows, "
                "KnnEdges, MapRows, EventSum, Voxelize) or let the field arrive padded "
                f"(drop it from the loader's ragged=)"
            )
        raise ConfigError(
            f"{who}: field {field!r} has a fixed shape but {who} needs a ragged field; build "
            f'the loader with ragged={{{field!r}: "offsets"}}'
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if len(spec.shape) not in allowed:
            raise ConfigError(
                f"{who}: field {field!r} has per-sample shape {spec.shape} "
                f"({len(spec.shape)} dims) but needs {' or '.join(map(str, allowed))} dims "
                "per sample (the batch axis not counted)"
            )
    if kinds is not None and spec.dtype.kind not in kinds:
        raise ConfigError(
            f"{who}: field {field!r} has dtype {spec.dtype}, which is not of kind "
            f"{kinds!r} (b=bool, i/u=integer, f=float); add a Cast first"
        )
    return spec


def get_ragged(batch: Batch, field: str, owner: object) -> Any:
    """Return ``batch[field]``, a :class:`fastload.Ragged`, or raise :class:`ConfigError`."""
    value = batch.get(field)
    if value is None:
        get_array(batch, field, owner)  # the standard message for a missing field
    if not is_ragged(value):
        raise ConfigError(
            f"{type(owner).__name__}: field {field!r} is not ragged (got "
            f'{type(value).__name__}); build the loader with ragged={{{field!r}: "offsets"}}'
        )
    return value


def get_array(batch: Batch, field: str, owner: object) -> np.ndarray:
    """Return ``batch[field]`` as an array, or raise :class:`ConfigError`."""
    try:
        value = batch[field]
    except KeyError:
        raise ConfigError(
            f"{type(owner).__name__}: batch has no field {field!r}; it has {sorted(batch)}"
            f"{closest(field, list(batch))}"
        ) from None
    if is_ragged(value):
        raise ConfigError(
            f"{type(owner).__name__}: field {field!r} is a fl.Ragged (values + offsets) and "
            f"{type(owner).__name__} works on fixed-shape arrays; use a ragged transform or "
            "let the field arrive padded"
        )
    return np.asarray(value)


def batch_size(batch: Batch) -> int:
    """Leading length shared by the batch's arrays (0 for an empty mapping)."""
    for arr in batch.values():
        return len(arr) if is_ragged(arr) else int(np.shape(arr)[0])
    return 0


def float_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a float-valued transform returns: floats keep theirs, others float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float32)


def check_name(value: object, what: str, owner_name: str) -> str:
    """Validate a field-name argument at construction time."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{owner_name}: {what} must be a non-empty field name, got {value!r}")
    return value


def check_fields_differ(owner_name: str, **names: str | None) -> None:
    """Raise :class:`ConfigError` if two output/input names given to a transform clash."""
    seen: dict[str, str] = {}
    for arg, name in names.items():
        if name is None:
            continue
        if name in seen:
            raise ConfigError(
                f"{owner_name}: {arg}={name!r} is the same field as {seen[name]}={name!r}; "
                "give them different names"
            )
        seen[name] = arg


def mask_as_bool(mask: np.ndarray) -> np.ndarray:
    """Interpret a mask array (bool, or numeric with non-zero = real) as bool."""
    return mask if mask.dtype == np.bool_ else mask != 0


def _short_repr(value: object) -> str:
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"<array shape={value.shape} dtype={value.dtype}>"
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value)


def iter_blocks(data: object, block_rows: int = 65536) -> Iterator[np.ndarray]:
    """Yield numpy blocks of ``data`` along its first axis, for streaming fits.

    ``data`` is either one array-like with ``shape`` and slicing (a numpy
    array, a Zarr array, an h5py dataset: read ``block_rows`` samples at a
    time so memory stays bounded) or an iterable of such blocks.
    """
    block_rows = _validate.integer(block_rows, name="block_rows", minimum=1)
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        shape = tuple(data.shape)  # type: ignore[attr-defined]
        if not shape:
            raise ConfigError("cannot fit on a 0-d array; give an array with a sample axis")
        for start in range(0, int(shape[0]), block_rows):
            yield np.asarray(data[start : start + block_rows])  # type: ignore[index]
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ConfigError(
            f"expected an array or an iterable of arrays to fit on, got {type(data).__name__}"
        )
    for block in data:
        yield np.asarray(block)
