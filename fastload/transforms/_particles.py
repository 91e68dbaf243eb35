"""Particle-list transforms: padding/truncation and jet-constituent four-vector features.

A particle list is a field ``(B, L, *F)``: ``L`` rows (particles, hits,
constituents) per sample, zero-padded at the end.  fastload's ragged fields
arrive in that layout plus a length field ``{name}_len`` ``(B,)`` int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastload import _validate
from fastload._spec import FieldSpec
from fastload.errors import ConfigError
from fastload.transforms._base import (
    Batch,
    Specs,
    Transform,
    check_fields_differ,
    check_name,
    get_array,
    require_field,
)

#: The seven per-constituent features of ParticleNet's top-tagging input
#: (Qu & Gouskos, arXiv:1902.08570, Table 1), in that table's order.  pd4ml's
#: preprocessing (erum-data-idt/pd4ml, ``preprocessing_utils._transform``)
#: computes the same seven quantities with the same definitions.
PARTICLENET_FEATURES: tuple[str, ...] = (
    "etarel",
    "phirel",
    "log_pt",
    "log_e",
    "log_ptrel",
    "log_erel",
    "delta_r",
)

#: The four features pd4ml's TopTagging loader actually stacks into its graph
#: and ParticleNet inputs (``part_pt_log, part_e_log, part_etarel, part_phirel``).
PD4ML_TOP_FEATURES: tuple[str, ...] = ("log_pt", "log_e", "etarel", "phirel")

#: Every feature name :class:`FourVectorFeatures` can emit.
FOUR_VECTOR_FEATURES: tuple[str, ...] = (
    *PARTICLENET_FEATURES,
    "pt",
    "eta",
    "phi",
    "e",
    "ptrel",
    "erel",
)


class PadTruncate(Transform):
    """Pad or truncate a particle list to a fixed number of rows, with a mask.

    Parameters
    ----------
    field : str
        Input field ``(B, L, *F)`` (``*F`` may be empty, e.g. mother indices
        ``(B, L)``).  Replaced by ``(B, length, *F)`` of the same dtype.
    length : int
        Rows kept per sample: the first ``length`` rows if ``L > length``,
        padding rows appended if ``L < length``.
    pad_value : scalar, default 0
        Value written into padding rows (and into input rows that are padding).
        Must be exactly representable in the field's dtype.
    mask_out : str, optional
        If given, also emit ``(B, length)`` bool: True for real rows.
    len_field : str or None, default "auto"
        Length field ``(B,)`` of integers saying how many leading rows are
        real.  ``"auto"`` uses ``f"{field}_len"`` when that field is present
        (fastload's ragged convention); ``None`` never uses one.  When used,
        it is passed on clipped to ``length`` (same dtype).  Without a length
        field, a row is real if any of its entries is non-zero (the
        zero-padding convention of pd4ml's particle lists).
    """

    def __init__(
        self,
        field: str,
        length: int,
        *,
        pad_value: float = 0,
        mask_out: str | None = None,
        len_field: str | None = "auto",
    ) -> None:
        self.field = check_name(field, "field", "PadTruncate")
        self.length = _validate.integer(length, name="length", minimum=1, owner="PadTruncate")
        if not np.isscalar(pad_value):
            raise ConfigError(f"PadTruncate: pad_value must be a scalar, got {pad_value!r}")
        self.pad_value = pad_value
        self.mask_out = check_name(mask_out, "mask_out", "PadTruncate") if mask_out else None
        self.len_field = check_name(len_field, "len_field", "PadTruncate") if len_field else None
        check_fields_differ(
            "PadTruncate",
            field=self.field,
            mask_out=self.mask_out,
            len_field=None if self.len_field == "auto" else self.len_field,
        )

    def _length_field(self, names: Sequence[str] | Specs | Batch) -> str | None:
        if self.len_field == "auto":
            auto = f"{self.field}_len"
            return auto if auto in names else None
        return self.len_field

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self)
        if not spec.shape:
            raise ConfigError(
                f"PadTruncate: field {self.field!r} is scalar per sample; it needs a row axis"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            pad = np.asarray(self.pad_value).astype(spec.dtype)
        both_nan = bool(pad != pad) and self.pad_value != self.pad_value
        if not (pad == self.pad_value or both_nan):
            raise ConfigError(
                f"PadTruncate: pad_value {self.pad_value!r} is not representable in field "
                f"{self.field!r}'s dtype {spec.dtype}"
            )
        out = {**inputs, self.field: FieldSpec((self.length, *spec.shape[1:]), spec.dtype)}
        len_name = self._length_field(inputs)
        if len_name is not None:
            lspec = require_field(inputs, len_name, self, ndim=(0, 1), kinds="iu")
            if lspec.shape not in ((), (1,)):
                raise ConfigError(
                    f"PadTruncate: length field {len_name!r} must hold one integer per "
                    f"sample, has per-sample shape {lspec.shape}"
                )
        if self.mask_out is not None:
            out[self.mask_out] = FieldSpec((self.length,), np.bool_)
        return out

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        n_batch, n_rows = x.shape[:2]
        rows = np.arange(n_rows)
        len_name = self._length_field(batch)
        out = dict(batch)
        if len_name is not None:
            lengths = get_array(batch, len_name, self)
            valid = rows < lengths.reshape(n_batch, 1)
            out[len_name] = np.minimum(lengths, self.length).astype(lengths.dtype, copy=False)
        elif x.ndim > 2:
            valid = np.any(x != 0, axis=tuple(range(2, x.ndim)))
        else:
            valid = x != 0
        keep = min(n_rows, self.length)
        padded = np.full((n_batch, self.length, *x.shape[2:]), self.pad_value, dtype=x.dtype)
        kept_valid = valid[:, :keep]
        row_mask = kept_valid.reshape(kept_valid.shape + (1,) * (x.ndim - 2))
        padded[:, :keep] = np.where(row_mask, x[:, :keep], padded[:, :keep])
        out[self.field] = padded
        if self.mask_out is not None:
            mask = np.zeros((n_batch, self.length), dtype=np.bool_)
            mask[:, :keep] = kept_valid
            out[self.mask_out] = mask
        return out


class FourVectorFeatures(Transform):
    """Jet-constituent features from four-momenta, relative to the jet axis.

    The jet is the sum of all real constituents of the sample.  Definitions
    (natural logs, as pd4ml and ParticleNet use):

    ============  ===========================================================
    ``pt``        :math:`\\sqrt{p_x^2 + p_y^2}`
    ``eta``       :math:`\\operatorname{arcsinh}(p_z / p_T)`
    ``phi``       :math:`\\operatorname{atan2}(p_y, p_x)`
    ``e``         energy
    ``etarel``    :math:`(\\eta - \\eta_{jet}) \\cdot \\operatorname{sign}(\\eta_{jet})`
                  (sign taken as +1 when :math:`\\eta_{jet} = 0`; plain difference
                  with ``flip_eta=False``)
    ``phirel``    :math:`\\phi - \\phi_{jet}` wrapped to :math:`[-\\pi, \\pi)`
    ``log_pt``    :math:`\\log p_T`
    ``log_e``     :math:`\\log E`
    ``ptrel``     :math:`p_T / p_{T,jet}`; ``log_ptrel`` its log
    ``erel``      :math:`E / E_{jet}`; ``log_erel`` its log
    ``delta_r``   :math:`\\sqrt{\\Delta\\eta^2 + \\Delta\\phi^2}`
    ============  ===========================================================

    Parameters
    ----------
    field : str, default "X"
        Input field ``(B, L, 4+)`` of constituent four-momenta, zero-padded.
    out : str, default "features"
        Output field ``(B, max_particles, len(features))`` float32.
    features : sequence of str, default :data:`PARTICLENET_FEATURES`
        Which features, in output order; any of :data:`FOUR_VECTOR_FEATURES`.
        The default is ParticleNet's top-tagging set of seven:
        ``etarel, phirel, log_pt, log_e, log_ptrel, log_erel, delta_r``.
        :data:`PD4ML_TOP_FEATURES` gives pd4ml's four-feature graph input.
    max_particles : int, default 100
        Constituents kept (the first rows of the input: pd4ml's TopTagging
        lists are sorted by decreasing pT) and padded to; pd4ml uses 100.
        The jet axis is still computed from *all* input constituents.
    mask_out : str or None, default "mask"
        Output ``(B, max_particles)`` bool, True for real constituents.
    points_out : str or None, default None
        Output ``(B, max_particles, 2)`` float32 ``(etarel, phirel)``: the
        coordinates for :class:`KNNAdjacency` / ParticleNet's ``points``.
    momentum_columns : tuple of 4 int, default (0, 1, 2, 3)
        Columns of ``field`` holding ``(E, px, py, pz)`` (pd4ml's order).
    flip_eta : bool, default True
        Multiply ``etarel`` by the sign of the jet's eta (ParticleNet, pd4ml).

    Notes
    -----
    A constituent is real if ``E > 0`` (pd4ml's rule) and ``pT > 0`` (without
    which eta is undefined).  Padding rows of every output are 0 (mask False).
    All arithmetic is in float64.  The input field is kept; add
    :class:`Drop` to discard it.
    """

    def __init__(
        self,
        field: str = "X",
        *,
        out: str = "features",
        features: Sequence[str] = PARTICLENET_FEATURES,
        max_particles: int = 100,
        mask_out: str | None = "mask",
        points_out: str | None = None,
        momentum_columns: Sequence[int] = (0, 1, 2, 3),
        flip_eta: bool = True,
    ) -> None:
        name = "FourVectorFeatures"
        self.field = check_name(field, "field", name)
        self.out = check_name(out, "out", name)
        self.features = tuple(features)
        unknown = [f for f in self.features if f not in FOUR_VECTOR_FEATURES]
        if unknown or not self.features:
            raise ConfigError(
                f"{name}: unknown or no features {unknown or list(self.features)}; "
                f"choose from {list(FOUR_VECTOR_FEATURES)}"
            )
        self.max_particles = _validate.integer(
            max_particles, name="max_particles", minimum=1, owner=name
        )
        self.mask_out = check_name(mask_out, "mask_out", name) if mask_out else None
        self.points_out = check_name(points_out, "points_out", name) if points_out else None
        self.momentum_columns = tuple(int(c) for c in momentum_columns)
        if len(self.momentum_columns) != 4 or len(set(self.momentum_columns)) != 4:
            raise ConfigError(
                f"{name}: momentum_columns must be 4 distinct column indices for "
                f"(E, px, py, pz), got {momentum_columns!r}"
            )
        self.flip_eta = bool(flip_eta)
        check_fields_differ(name, out=self.out, mask_out=self.mask_out, points_out=self.points_out)

    def output_spec(self, inputs: Specs) -> dict[str, FieldSpec]:
        spec = require_field(inputs, self.field, self, ndim=2, kinds="iuf")
        n_cols = spec.shape[1]
        if any(not -n_cols <= c < n_cols for c in self.momentum_columns):
            raise ConfigError(
                f"FourVectorFeatures: momentum_columns {self.momentum_columns} out of range "
                f"for field {self.field!r} with {n_cols} columns (per-sample shape {spec.shape})"
            )
        n = self.max_particles
        out = {**inputs, self.out: FieldSpec((n, len(self.features)), np.float32)}
        if self.mask_out is not None:
            out[self.mask_out] = FieldSpec((n,), np.bool_)
        if self.points_out is not None:
            out[self.points_out] = FieldSpec((n, 2), np.float32)
        return out

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        x = get_array(batch, self.field, self)
        e, px, py, pz = (x[:, :, c].astype(np.float64) for c in self.momentum_columns)
        pt = np.hypot(px, py)
        real = (e > 0) & (pt > 0)
        # Jet four-momentum from all real constituents, before truncation.
        jet_e, jet_px, jet_py, jet_pz = (
            np.where(real, v, 0.0).sum(axis=1) for v in (e, px, py, pz)
        )
        jet_pt = np.hypot(jet_px, jet_py)
        jet_eta = np.arcsinh(jet_pz / np.where(jet_pt > 0, jet_pt, 1.0))
        jet_phi = np.arctan2(jet_py, jet_px)

        keep = min(x.shape[1], self.max_particles)
        real = real[:, :keep]
        e, px, py, pz, pt = (v[:, :keep] for v in (e, px, py, pz, pt))
        # Padding rows get harmless placeholders so no log(0) or 0/0 is evaluated.
        safe_pt = np.where(real, pt, 1.0)
        safe_e = np.where(real, e, 1.0)
        computed = _ConstituentFeatures(
            pt=safe_pt,
            e=safe_e,
            eta=np.arcsinh(pz / safe_pt),
            phi=np.arctan2(py, px),
            jet_pt=np.where(jet_pt > 0, jet_pt, 1.0)[:, None],
            jet_e=np.where(jet_e > 0, jet_e, 1.0)[:, None],
            jet_eta=jet_eta[:, None],
            jet_phi=jet_phi[:, None],
            flip_eta=self.flip_eta,
        )
        n_batch = x.shape[0]
        out = dict(batch)
        values = np.zeros((n_batch, self.max_particles, len(self.features)), dtype=np.float32)
        for i, name in enumerate(self.features):
            values[:, :keep, i] = np.where(real, computed.get(name), 0.0)
        out[self.out] = values
        if self.mask_out is not None:
            mask = np.zeros((n_batch, self.max_particles), dtype=np.bool_)
            mask[:, :keep] = real
            out[self.mask_out] = mask
        if self.points_out is not None:
            points = np.zeros((n_batch, self.max_particles, 2), dtype=np.float32)
            points[:, :keep, 0] = np.where(real, computed.get("etarel"), 0.0)
            points[:, :keep, 1] = np.where(real, computed.get("phirel"), 0.0)
            out[self.points_out] = points
        return out


def wrap_angle(phi: np.ndarray) -> np.ndarray:
    """Wrap angles to ``[-pi, pi)``."""
    wrapped = np.mod(phi + np.pi, 2 * np.pi) - np.pi
    # np.mod can round up to exactly 2*pi for tiny negative inputs.
    return np.where(wrapped >= np.pi, wrapped - 2 * np.pi, wrapped)


class _ConstituentFeatures:
    """Lazily computed, cached per-constituent features (float64, (B, L))."""

    def __init__(self, **base: np.ndarray | bool) -> None:
        self._base = base
        self._cache: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    def _compute(self, name: str) -> np.ndarray:
        b = self._base
        if name in ("pt", "e", "eta", "phi"):
            return b[name]  # type: ignore[return-value]
        if name == "etarel":
            rel = self.get("eta") - b["jet_eta"]
            if b["flip_eta"]:
                rel = rel * np.where(b["jet_eta"] < 0, -1.0, 1.0)
            return rel
        if name == "phirel":
            return wrap_angle(self.get("phi") - b["jet_phi"])
        if name == "delta_r":
            return np.hypot(self.get("etarel"), self.get("phirel"))
        if name == "ptrel":
            return self.get("pt") / b["jet_pt"]
        if name == "erel":
            return self.get("e") / b["jet_e"]
        if name.startswith("log_"):
            return np.log(self.get(name[4:]))
        raise KeyError(name)  # unreachable: names are validated in __init__
