"""Element-wise value transforms: fixed scaling, standardisation, log compressions.

Each keeps the field's per-sample shape.  Float inputs keep their dtype;
integer and bool inputs come out as float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_name,
    float_dtype,
    get_array,
    iter_blocks,
    mask_as_bool,
    require_field,
)
from fastload.transforms._sparse import nonzero_rows


def _finite_array(value: ArrayLike, what: str, owner: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{owner}: {what} must be a number or array of numbers, got {value!r}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{owner}: {what} must be finite, got {value!r}")
    return arr


def _check_broadcast(owner: str, field: str, spec: FieldSpec, **params: np.ndarray) -> None:
    for name, arr in params.items():
        try:
            ok = np.broadcast_shapes(arr.shape, spec.shape) == spec.shape
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{owner}: {name} of shape {arr.shape} does not broadcast to field "
                f"{field!r}'s per-sample shape {spec.shape}; give one value per trailing "
                "feature (or a scalar)"
            )


class Scale(Transform):
    """Multiply a field by a fixed factor, e.g. LCD ECAL/HCAL energies by 1/150.

    Parameters
    ----------
    field : str
        Input field ``(B, *S)`` of numbers.
    factor : float or array-like
        Scalar, or per-feature factors broadcasting to ``S``.
    out : str, optional
        Output field name; default: replace ``field``.

    Notes
    -----
    ``out = field * factor``; shape ``(B, *S)``, float dtype (see module doc).
    """

    def __init__(self, field: str, factor: ArrayLike, *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "Scale")
        self.factor = _finite_array(factor, "factor", "Scale")
        self.out = check_name(out, "out", "Scale") if out is not None else self.field

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, kinds="biuf")
        _check_broadcast("Scale", self.field, spec, factor=self.factor)
        return {**inputs, self.out: FieldSpec(spec.shape, float_dtype(spec.dtype))}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        dt = float_dtype(x.dtype)
        return {**batch, self.out: x.astype(dt, copy=False) * self.factor.astype(dt)}


class Standardize(Transform):
    """Standardise a field per feature: ``(x - mean) / std``.

    Parameters
    ----------
    field : str
        Input field ``(B, *S)`` of numbers.
    mean, std : float or array-like
        Broadcast to ``S`` (e.g. shape ``(F,)`` for a ``(L, F)`` particle list).
        ``std`` must be positive.  Fit them once on the training split with
        :func:`fit_standardize` or :meth:`Standardize.fit`.
    out : str, optional
        Output field name; default: replace ``field``.
    mask_field : str, optional
        Boolean (or non-zero = real) field ``(B, *S[:k])``; entries where it is
        False keep their input value, so zero padding stays zero.

    Notes
    -----
    ``out`` has shape ``(B, *S)`` and a float dtype (see module doc).
    """

    def __init__(
        self,
        field: str,
        mean: ArrayLike,
        std: ArrayLike,
        *,
        out: str | None = None,
        mask_field: str | None = None,
    ) -> None:
        self.field = check_name(field, "field", "Standardize")
        self.mean = _finite_array(mean, "mean", "Standardize")
        self.std = _finite_array(std, "std", "Standardize")
        if np.any(self.std <= 0):
            raise ConfigError(
                "Standardize: std must be positive everywhere (fit_standardize replaces zero "
                f"std by 1); got {self.std!r}"
            )
        self.out = check_name(out, "out", "Standardize") if out is not None else self.field
        self.mask_field = (
            check_name(mask_field, "mask_field", "Standardize") if mask_field is not None else None
        )

    @classmethod
    def fit(
        cls,
        field: str,
        data: object,
        axis: int | Sequence[int] = 0,
        *,
        ignore_value: float | None = None,
        out: str | None = None,
        mask_field: str | None = None,
        block_rows: int = 65536,
    ) -> Standardize:
        """Fit mean/std with :func:`fit_standardize` and build the transform.

        Parameters
        ----------
        field : str
            Field the transform will standardise.
        data, axis, ignore_value, block_rows
            As in :func:`fit_standardize`.
        out, mask_field
            As in :class:`Standardize`.

        Returns
        -------
        Standardize
        """
        mean, std = fit_standardize(data, axis, ignore_value=ignore_value, block_rows=block_rows)
        return cls(field, mean, std, out=out, mask_field=mask_field)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, kinds="biuf")
        _check_broadcast("Standardize", self.field, spec, mean=self.mean, std=self.std)
        if self.mask_field is not None:
            mspec = require_field(inputs, self.mask_field, self, kinds="biuf")
            if spec.shape[: len(mspec.shape)] != mspec.shape:
                raise ConfigError(
                    f"Standardize: mask field {self.mask_field!r} per-sample shape "
                    f"{mspec.shape} is not a prefix of {self.field!r}'s {spec.shape}"
                )
        return {**inputs, self.out: FieldSpec(spec.shape, float_dtype(spec.dtype))}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        dt = float_dtype(x.dtype)
        xf = x.astype(dt, copy=False)
        y = (xf - self.mean.astype(dt)) / self.std.astype(dt)
        if self.mask_field is not None:
            mask = mask_as_bool(get_array(batch, self.mask_field, self))
            mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
            y = np.where(mask, y, xf)
        return {**batch, self.out: y}


def fit_standardize(
    data: object,
    axis: int | Sequence[int] = 0,
    *,
    ignore_value: float | None = None,
    block_rows: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute per-feature mean and standard deviation in one streaming pass.

    Blocks are combined with the pairwise update of Chan, Golub & LeVeque in
    float64, so the result equals ``x.mean(axis)`` / ``x.std(axis)`` of the
    concatenated data without holding it in memory.

    Parameters
    ----------
    data : array-like or iterable of array-like
        One array with a leading sample axis (numpy, Zarr, h5py: read
        ``block_rows`` samples at a time), or an iterable of such blocks whose
        shapes agree except along axis 0.
    axis : int or sequence of int, default 0
        Axes reduced over, counted on the full array; must include 0 (the
        sample axis).  For particle lists ``(N, L, F)`` use ``(0, 1)`` to get
        one value per feature.
    ignore_value : float, optional
        Entries equal to it (e.g. ``0`` padding or ``-1`` "missing"; ``nan``
        works too) are left out of the statistics.
    block_rows : int, default 65536
        Samples read at a time from a single array.

    Returns
    -------
    mean, std : numpy.ndarray
        float64 arrays shaped like one sample with the reduced axes kept as
        size 1 (so they broadcast back onto a sample), e.g. ``(1, F)`` for
        ``axis=(0, 1)`` on ``(N, L, F)``.  A std of 0 (constant feature) is
        returned as 1, and a feature with no counted entries gets mean 0 and
        std 1, as scikit-learn's ``StandardScaler`` does, so the result is
        always safe to divide by.

    Raises
    ------
    ConfigError
        If ``axis`` omits 0 or is out of range, block shapes disagree, or
        there are no samples.
    """
    count = mean = m2 = None
    axes: tuple[int, ...] = ()
    sample_shape: tuple[int, ...] = ()
    for block in iter_blocks(data, block_rows):
        if count is None:
            axes = _normalise_axes(axis, block.ndim)
            sample_shape = block.shape[1:]
        elif block.shape[1:] != sample_shape:
            raise ConfigError(
                f"fit_standardize: a block has per-sample shape {block.shape[1:]}, "
                f"the first had {sample_shape}; all blocks must agree"
            )
        if block.shape[0] == 0:
            continue
        n_b, mean_b, m2_b = _block_moments(block.astype(np.float64, copy=False), axes, ignore_value)
        if count is None or mean is None or m2 is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        total = count + n_b
        delta = mean_b - mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(total > 0, n_b / np.maximum(total, 1), 0.0)
        mean = mean + delta * frac
        m2 = m2 + m2_b + delta**2 * count * frac
        count = total
    if count is None or mean is None or m2 is None:
        raise ConfigError("fit_standardize: no samples to fit on (empty data)")
    std = np.sqrt(m2 / np.maximum(count, 1))
    std = np.where((count > 0) & (std > 0), std, 1.0)
    mean = np.where(count > 0, mean, 0.0)
    return mean.reshape(mean.shape[1:]), std.reshape(std.shape[1:])


def _normalise_axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    raw = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if any(not -ndim <= int(a) < ndim for a in raw):
        raise ConfigError(f"fit_standardize: axis {axis!r} is out of range for {ndim}-d data")
    axes = tuple(sorted({int(a) % ndim for a in raw}))
    if 0 not in axes:
        raise ConfigError(
            f"fit_standardize: axis {axis!r} must include 0, the sample axis that blocks are "
            "split along"
        )
    return axes


def _block_moments(
    x: np.ndarray, axes: tuple[int, ...], ignore_value: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sum of squared deviations of one block (reduced axes kept)."""
    if ignore_value is None:
        n = np.full(
            [1 if i in axes else s for i, s in enumerate(x.shape)],
            float(np.prod([x.shape[a] for a in axes])),
        )
        mean = x.mean(axis=axes, keepdims=True)
        m2 = ((x - mean) ** 2).sum(axis=axes, keepdims=True)
        return n, mean, m2
    valid = ~np.isnan(x) if np.isnan(ignore_value) else x != ignore_value
    n = valid.sum(axis=axes, keepdims=True).astype(np.float64)
    total = np.where(valid, x, 0.0).sum(axis=axes, keepdims=True)
    mean = total / np.maximum(n, 1)
    m2 = (np.where(valid, x - mean, 0.0) ** 2).sum(axis=axes, keepdims=True)
    return n, mean, m2


class Log10p(Transform):
    """``log10(x + 1)``, e.g. for air-shower signals, optionally keeping "missing" markers.

    Parameters
    ----------
    field : str
        Input field ``(B, *S)`` of numbers.
    out : str, optional
        Output field name; default: replace ``field``.
    missing : float, optional
        Entries equal to this marker (e.g. ``-1``) are kept as the marker
        instead of being transformed.
    clip_negative : bool, default False
        Set other negative entries to 0 before the log (pd4ml does this for
        air-shower signals); otherwise values <= -1 give -inf/NaN as numpy does.

    Notes
    -----
    ``out`` has shape ``(B, *S)`` and a float dtype (see module doc).
    """

    def __init__(
        self,
        field: str,
        *,
        out: str | None = None,
        missing: float | None = None,
        clip_negative: bool = False,
    ) -> None:
        self.field = check_name(field, "field", "Log10p")
        self.out = check_name(out, "out", "Log10p") if out is not None else self.field
        self.missing = None if missing is None else float(missing)
        self.clip_negative = bool(clip_negative)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, kinds="biuf")
        return {**inputs, self.out: FieldSpec(spec.shape, float_dtype(spec.dtype))}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        dt = float_dtype(x.dtype)
        xf = x.astype(dt, copy=False)
        is_missing = None if self.missing is None else xf == dt.type(self.missing)
        if is_missing is not None:
            xf = np.where(is_missing, dt.type(0), xf)  # log10(1) is harmless
        if self.clip_negative:
            xf = np.maximum(xf, dt.type(0))
        y = np.log10(xf + dt.type(1))
        if is_missing is not None:
            y = np.where(is_missing, dt.type(self.missing), y)
        return {**batch, self.out: y}


class SignedLogTanh(Transform):
    """``tanh(sign(x) * log(|x| + 1) / 2)``: the LCD calorimeter non-linear option.

    Maps any real value into (-1, 1) while keeping small values almost linear
    (``≈ x/2`` near 0).

    Parameters
    ----------
    field : str
        Input field ``(B, *S)`` of numbers.
    out : str, optional
        Output field name; default: replace ``field``.

    Notes
    -----
    ``out`` has shape ``(B, *S)`` and a float dtype (see module doc).
    """

    def __init__(self, field: str, *, out: str | None = None) -> None:
        self.field = check_name(field, "field", "SignedLogTanh")
        self.out = check_name(out, "out", "SignedLogTanh") if out is not None else self.field

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, kinds="biuf")
        return {**inputs, self.out: FieldSpec(spec.shape, float_dtype(spec.dtype))}

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        xf = x.astype(float_dtype(x.dtype), copy=False)
        # +0 maps to +0: where most values are zero (wire images, calorimeter cells below
        # threshold) only the others are computed, bit for bit as the dense arithmetic would
        nonzero = nonzero_rows(xf.reshape(-1, 1)) if xf.flags.c_contiguous else None
        if nonzero is None:
            return {**batch, self.out: _signed_log_tanh(xf)}
        out = np.zeros(xf.shape, dtype=xf.dtype)
        out.reshape(-1)[nonzero] = _signed_log_tanh(xf.reshape(-1)[nonzero])
        return {**batch, self.out: out}


def _signed_log_tanh(xf: np.ndarray) -> np.ndarray:
    # log1p keeps precision for small |x|, where log(|x| + 1) would round.
    return np.tanh(np.sign(xf) * np.log1p(np.abs(xf)) / 2)
