"""Tests of fastload.transforms: each transform against a slow loop reference.

Every reference below is written with plain Python loops and ``math`` so that
it is obviously correct; the transforms under test are vectorised numpy.
"""

from __future__ import annotations

import collections
import itertools
import math
import pickle
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload.transforms as T
from fastload._spec import FieldSpec, specs_of
from fastload.errors import ConfigError, SchemaError
from fastload.transforms import _graphs

BATCH_SIZES = (1, 6)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- batch factories (random, with padding) ----------------------------------


def jets_batch(n: int, seed: int = 0, n_rows: int = 30) -> dict[str, np.ndarray]:
    """(n, n_rows, 4) constituents (E, px, py, pz), zero-padded, varied lengths."""
    rng = _rng(seed)
    x = np.zeros((n, n_rows, 4), dtype=np.float32)
    for b in range(n):
        count = int(rng.integers(0, n_rows + 1)) if b else n_rows  # sample 0 is full
        # Jet axes spread over both eta signs and near the phi = ±pi seam.
        jet_eta = rng.choice([-1.2, 0.0, 0.7]) + rng.normal(0, 0.1)
        jet_phi = rng.choice([math.pi - 0.05, -2.0, 0.5])
        pt = rng.exponential(20.0, count) + 0.5
        eta = jet_eta + rng.normal(0, 0.3, count)
        phi = jet_phi + rng.normal(0, 0.3, count)
        x[b, :count, 0] = pt * np.cosh(eta)
        x[b, :count, 1] = pt * np.cos(phi)
        x[b, :count, 2] = pt * np.sin(phi)
        x[b, :count, 3] = pt * np.sinh(eta)
    return {"X": x, "y": rng.integers(0, 2, n)}


def points_batch(n: int, seed: int = 1, n_nodes: int = 12) -> dict[str, np.ndarray]:
    """Random 2-d points with a mask; some samples have fewer real nodes than k."""
    rng = _rng(seed)
    points = rng.normal(size=(n, n_nodes, 2)).astype(np.float32)
    mask = np.zeros((n, n_nodes), dtype=bool)
    for b in range(n):
        # Real nodes scattered (not only leading), counts from 0 to all.
        count = [n_nodes, 3, 0, 1, 8, 5][b % 6]
        mask[b, rng.choice(n_nodes, count, replace=False)] = True
    points[~mask] = 0.0
    return {"points": points, "mask": mask}


def hits_batch(n: int, seed: int = 2, n_rows: int = 40) -> dict[str, np.ndarray]:
    """Ragged hits (x, y, z, E, t) zero-padded, plus hits_len; some outside the grid."""
    rng = _rng(seed)
    hits = np.zeros((n, n_rows, 5), dtype=np.float32)
    lengths = rng.integers(0, n_rows + 1, n).astype(np.int64)
    lengths[0] = n_rows
    for b in range(n):
        m = lengths[b]
        hits[b, :m, 0] = rng.uniform(-70, 70, m)  # x: grid covers -60..60
        hits[b, :m, 1] = rng.uniform(-70, 70, m)
        hits[b, :m, 2] = rng.uniform(-10, 130, m)  # z: grid covers 0..120
        hits[b, :m, 3] = rng.exponential(1.0, m)
        hits[b, :m, 4] = rng.uniform(0, 50, m)
        hits[b, m:] = rng.uniform(-5, 5, (n_rows - m, 5))  # junk past the length
    return {"hits": hits, "hits_len": lengths}


def belle_batch(n: int, seed: int = 3, n_rows: int = 15) -> dict[str, np.ndarray]:
    """Belle-like features (B, N, 9) with PDG last (0 = padding) and mother indices."""
    rng = _rng(seed)
    x = np.zeros((n, n_rows, 9), dtype=np.float32)
    mothers = np.full((n, n_rows), -1, dtype=np.int64)
    codes = np.array((*T.PD4ML_BELLE_PDG_CODES[:20], 999))  # 999: not in the table
    for b in range(n):
        count = int(rng.integers(1, n_rows + 1)) if b else n_rows
        x[b, :count, :8] = rng.normal(size=(count, 8))
        x[b, :count, 8] = rng.choice(codes, count)
        for i in range(1, count):
            mothers[b, i] = rng.integers(-1, i)  # a tree: mothers come earlier
        if count > 2:
            mothers[b, count - 1] = n_rows + 3  # out of range: no edge
    return {"X": x, "mother_indices": mothers}


def airshower_batch(n: int, seed: int = 4) -> dict[str, np.ndarray]:
    """(n, 9, 9, 8) signal traces and (n, 9, 9, 1) times with -1 for missing stations."""
    rng = _rng(seed)
    signal = rng.exponential(5.0, (n, 9, 9, 8)).astype(np.float32)
    signal[rng.random(signal.shape) < 0.05] = -0.5  # negative noise: clipped to 0
    time = rng.normal(100, 30, (n, 9, 9, 1)).astype(np.float32)
    absent = rng.random((n, 9, 9)) < 0.4
    signal[absent] = -1.0
    time[absent] = -1.0
    time[0] = -1.0  # an event whose times are all missing
    return {"signal": signal, "time": time}


def images_batch(n: int, seed: int = 5) -> dict[str, np.ndarray]:
    return {"X": _rng(seed).normal(size=(n, 5, 4)).astype(np.float32)}


# --- element-wise transforms ---------------------------------------------------


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_scale_matches_loop(n: int) -> None:
    """Scale multiplies every entry by the (per-feature) factor."""
    x = _rng().normal(size=(n, 3, 2)).astype(np.float32)
    got = T.Scale("x", [1 / 150, 2.0])({"x": x})["x"]
    want = [[[float(x[b, i, f]) * (1 / 150, 2.0)[f] for f in range(2)] for i in range(3)]
            for b in range(n)]  # fmt: skip
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_standardize_matches_loop_and_keeps_masked_entries(n: int) -> None:
    """(x - mean) / std per feature; entries outside the mask stay as they were."""
    rng = _rng(7)
    x = rng.normal(3, 2, size=(n, 4, 3))
    mask = rng.random((n, 4)) < 0.6
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 4.0]
    got = T.Standardize("x", mean, std, mask_field="m")({"x": x, "m": mask})["x"]
    for b in range(n):
        for i in range(4):
            for f in range(3):
                want = (x[b, i, f] - mean[f]) / std[f] if mask[b, i] else x[b, i, f]
                assert math.isclose(got[b, i, f], want, rel_tol=1e-12, abs_tol=1e-12)


def test_fit_standardize_streams_blocks_like_numpy() -> None:
    """Fitting over blocks (or a big array in small reads) equals numpy on the whole."""
    x = _rng(8).normal(5, 3, size=(101, 6, 3))
    x[:, :, 2] = 7.0  # a constant feature: std reported as 1
    blocks = [x[:10], x[10:11], x[11:60], x[60:]]
    mean, std = T.fit_standardize(blocks, axis=(0, 1))
    assert mean.shape == std.shape == (1, 3)
    np.testing.assert_allclose(mean[0], x.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(std[0, :2], x.std(axis=(0, 1))[:2], rtol=1e-12)
    assert std[0, 2] == 1.0
    mean2, std2 = T.fit_standardize(x, axis=(0, 1), block_rows=7)
    np.testing.assert_allclose(mean2, mean, rtol=1e-12)
    np.testing.assert_allclose(std2, std, rtol=1e-12)
    # Per-position statistics (axis 0 only) broadcast back onto one sample.
    mean0, _ = T.fit_standardize(x)
    assert mean0.shape == (6, 3)


def test_fit_standardize_ignore_value_matches_loop() -> None:
    """Entries equal to ignore_value (zero padding) are left out of the statistics."""
    x = _rng(9).normal(2, 1, size=(20, 5, 2))
    x[_rng(10).random((20, 5)) < 0.3] = 0.0
    mean, std = T.fit_standardize([x[:8], x[8:]], axis=(0, 1), ignore_value=0.0)
    for f in range(2):
        vals = [x[b, i, f] for b in range(20) for i in range(5) if x[b, i, f] != 0.0]
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        assert math.isclose(mean[0, f], mu, rel_tol=1e-12)
        assert math.isclose(std[0, f], sd, rel_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_fit_standardize_does_not_depend_on_block_boundaries(
    n: int, cuts: list[int], seed: int
) -> None:
    """Any split of the data into blocks gives the same mean and std."""
    x = _rng(seed).normal(size=(n, 3))
    edges = sorted({0, n, *(min(c, n) for c in cuts)})
    blocks = [x[a:b] for a, b in itertools.pairwise(edges)]
    mean, std = T.fit_standardize(blocks)
    ref_std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, ref_std, rtol=1e-9, atol=1e-12)


def test_standardize_fit_classmethod_and_bad_std() -> None:
    """Standardize.fit wires fit_standardize in; non-positive std is rejected."""
    x = _rng(11).normal(4, 2, size=(50, 3)).astype(np.float32)
    t = T.Standardize.fit("x", x)
    out = t({"x": x})["x"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="std must be positive"):
        T.Standardize("x", 0.0, [1.0, 0.0])
    with pytest.raises(ConfigError, match="must include 0"):
        T.fit_standardize(x, axis=1)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_log10p_keeps_missing_markers(n: int) -> None:
    """log10(x+1) everywhere except entries equal to the missing marker."""
    x = _rng(12).exponential(10, size=(n, 7)).astype(np.float32)
    x[:, ::3] = -1.0
    got = T.Log10p("x", missing=-1)({"x": x})["x"]
    for b in range(n):
        for i in range(7):
            want = -1.0 if x[b, i] == -1.0 else math.log10(float(x[b, i]) + 1)
            assert math.isclose(got[b, i], want, rel_tol=1e-6)


def test_log10p_clip_negative() -> None:
    """clip_negative maps negative (non-missing) values to log10(1) = 0."""
    got = T.Log10p("x", clip_negative=True)({"x": np.array([[-0.5, 9.0]])})["x"]
    np.testing.assert_allclose(got, [[0.0, 1.0]])


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_signed_log_tanh_matches_math(n: int) -> None:
    """tanh(sign(x) log(|x|+1) / 2), including x = 0."""
    x = _rng(13).normal(0, 50, size=(n, 9))
    x[0, 0] = 0.0
    got = T.SignedLogTanh("x")({"x": x})["x"]
    for b in range(n):
        for i in range(9):
            v = float(x[b, i])
            want = math.tanh(math.copysign(math.log(abs(v) + 1), v) / 2) if v else 0.0
            assert math.isclose(got[b, i], want, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("zeros", [0.0, 0.9, 0.995])
def test_signed_log_tanh_mostly_zero_inputs_give_the_dense_bits(dtype, zeros: float) -> None:
    """Computing only the non-zero values (the sparse path) changes no bit, -0.0 and NaN included."""
    rng = _rng(14)
    x = (rng.normal(0, 300, size=(3, 7, 64)) * (rng.random((3, 7, 64)) >= zeros)).astype(dtype)
    if x.dtype.kind == "f":
        x[0, 0, :3] = [-0.0, np.nan, -np.inf]
    xf = x.astype(np.result_type(x.dtype, np.float16) if x.dtype.kind == "f" else np.float32)
    dense = np.tanh(np.sign(xf) * np.log1p(np.abs(xf)) / 2)
    got = T.SignedLogTanh("x")({"x": x})["x"]
    assert got.dtype == dense.dtype
    assert got.tobytes() == dense.tobytes()


# --- structural transforms --------------------------------------------------------


def test_field_transforms() -> None:
    """Cast, Drop, Reshape, SelectColumns, DropColumns and Concat do what they say."""
    x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    batch = {"x": x, "y": np.array([0, 1])}
    assert T.Cast("x", "float64")(batch)["x"].dtype == np.float64
    assert set(T.Drop("y")(batch)) == {"x"}
    assert T.Reshape("x", (-1, 2))(batch)["x"].shape == (2, 6, 2)
    np.testing.assert_array_equal(T.SelectColumns("x", [3, 0])(batch)["x"], x[:, :, [3, 0]])
    np.testing.assert_array_equal(T.DropColumns("x", [-1])(batch)["x"], x[:, :, :3])
    joined = T.Concat(["x", "x2"], "z")({**batch, "x2": x[:, :, :1].astype(np.float32)})
    assert set(joined) == {"y", "z"}
    assert joined["z"].shape == (2, 3, 5)
    assert joined["z"].dtype == np.float32
    with pytest.raises(ConfigError, match="cannot be reshaped"):
        T.Reshape("x", (5,)).output_spec(specs_of(batch))


# --- particles -------------------------------------------------------------------


def _pad_truncate_reference(x, lengths, length, pad):
    out, masks = [], []
    for b in range(x.shape[0]):
        if lengths is not None:
            real = [i < lengths[b] for i in range(x.shape[1])]
        else:
            real = [bool(np.any(x[b, i] != 0)) for i in range(x.shape[1])]
        rows, mask = [], []
        for i in range(length):
            if i < x.shape[1] and real[i]:
                rows.append(x[b, i].tolist())
                mask.append(True)
            else:
                rows.append([pad] * x.shape[2])
                mask.append(False)
        out.append(rows)
        masks.append(mask)
    return np.array(out), np.array(masks)


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("length", [5, 40, 55])
def test_pad_truncate_ragged_convention(n: int, length: int) -> None:
    """hits + hits_len: rows past the length become padding; the length is clipped."""
    batch = hits_batch(n)
    t = T.PadTruncate("hits", length, pad_value=-9, mask_out="hits_mask")
    out = T.check_transform(t, batch)
    want, mask = _pad_truncate_reference(batch["hits"], batch["hits_len"], length, -9)
    np.testing.assert_array_equal(out["hits"], want)
    np.testing.assert_array_equal(out["hits_mask"], mask)
    np.testing.assert_array_equal(out["hits_len"], np.minimum(batch["hits_len"], length))


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_pad_truncate_zero_padded_lists(n: int) -> None:
    """Without a length field, all-zero rows are padding (pd4ml particle lists)."""
    x = jets_batch(n)["X"]
    t = T.PadTruncate("X", 20, pad_value=-1, mask_out="mask")
    out = T.check_transform(t, {"X": x})
    want, mask = _pad_truncate_reference(x, None, 20, -1)
    np.testing.assert_array_equal(out["X"], want)
    np.testing.assert_array_equal(out["mask"], mask)


def test_pad_truncate_two_dim_field_and_bad_pad_value() -> None:
    """(B, L) fields work; a pad value the dtype cannot hold is a ConfigError."""
    m = np.array([[3, 1, 0, 0], [2, 0, 0, 0]], dtype=np.uint8)
    out = T.PadTruncate("m", 6, len_field=None)({"m": m})["m"]
    np.testing.assert_array_equal(out, np.pad(m, ((0, 0), (0, 2))))
    with pytest.raises(ConfigError, match="not representable"):
        T.PadTruncate("m", 6, pad_value=-1).output_spec(specs_of({"m": m}))


def _wrap(dphi: float) -> float:
    while dphi >= math.pi:
        dphi -= 2 * math.pi
    while dphi < -math.pi:
        dphi += 2 * math.pi
    return dphi


def _four_vector_reference(x: np.ndarray, max_particles: int) -> tuple[list, list]:
    """Per-particle ParticleNet features with math, for the first max_particles rows."""
    feats, masks = [], []
    for b in range(x.shape[0]):
        parts = [tuple(float(v) for v in x[b, i]) for i in range(x.shape[1])]
        real = [p[0] > 0 and math.hypot(p[1], p[2]) > 0 for p in parts]
        je = sum(p[0] for p, r in zip(parts, real, strict=True) if r)
        jx = sum(p[1] for p, r in zip(parts, real, strict=True) if r)
        jy = sum(p[2] for p, r in zip(parts, real, strict=True) if r)
        jz = sum(p[3] for p, r in zip(parts, real, strict=True) if r)
        jpt = math.hypot(jx, jy)
        jeta = math.asinh(jz / jpt) if jpt > 0 else 0.0
        jphi = math.atan2(jy, jx)
        rows, mask = [], []
        for i in range(max_particles):
            if i >= len(parts) or not real[i]:
                rows.append([0.0] * 7)
                mask.append(False)
                continue
            e, px, py, pz = parts[i]
            pt = math.hypot(px, py)
            deta = (math.asinh(pz / pt) - jeta) * (1.0 if jeta >= 0 else -1.0)
            dphi = _wrap(math.atan2(py, px) - jphi)
            rows.append(
                [
                    deta,
                    dphi,
                    math.log(pt),
                    math.log(e),
                    math.log(pt / jpt),
                    math.log(e / je),
                    math.sqrt(deta**2 + dphi**2),
                ]
            )
            mask.append(True)
        feats.append(rows)
        masks.append(mask)
    return feats, masks


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("max_particles", [10, 40])
def test_four_vector_features_match_math(n: int, max_particles: int) -> None:
    """The seven ParticleNet features, mask and points agree with per-particle math."""
    batch = jets_batch(n)
    t = T.FourVectorFeatures(max_particles=max_particles, points_out="points")
    out = T.check_transform(t, batch)
    want, mask = _four_vector_reference(batch["X"], max_particles)
    np.testing.assert_array_equal(out["mask"], mask)
    # float32 inputs, float64 arithmetic, float32 output.
    np.testing.assert_allclose(out["features"], want, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(out["points"], out["features"][:, :, :2])
    assert np.all(out["features"][~out["mask"]] == 0)
    phirel = out["features"][:, :, 1]
    assert np.all((phirel >= -math.pi) & (phirel < math.pi))
    np.testing.assert_array_equal(out["X"], batch["X"])  # input kept, untouched


def test_four_vector_feature_selection_and_wrap_angle() -> None:
    """A chosen feature subset comes out in the chosen order; wrap_angle is half-open."""
    batch = jets_batch(3)
    full = T.FourVectorFeatures()(batch)["features"]
    sub = T.FourVectorFeatures(features=T.PD4ML_TOP_FEATURES)(batch)["features"]
    np.testing.assert_array_equal(sub, full[:, :, [2, 3, 0, 1]])
    wrapped = T.wrap_angle(np.array([math.pi, -math.pi, 3 * math.pi, -1e-300, 0.5]))
    np.testing.assert_allclose(wrapped, [-math.pi, -math.pi, -math.pi, 0.0, 0.5], atol=1e-12)
    assert np.all(wrapped < math.pi)


# --- graphs ------------------------------------------------------------------------


def _knn_reference(points: np.ndarray, mask: np.ndarray, k: int) -> list:
    result = []
    for b in range(points.shape[0]):
        rows = []
        for i in range(points.shape[1]):
            if not mask[b, i]:
                rows.append([-1] * k)
                continue
            cands = sorted(
                (sum((float(points[b, i, d]) - float(points[b, j, d])) ** 2 for d in range(2)), j)
                for j in range(points.shape[1])
                if j != i and mask[b, j]
            )
            idx = [j for _, j in cands[:k]]
            rows.append(idx + [-1] * (k - len(idx)))
        result.append(rows)
    return result


def _dense_reference(neighbours: list, mask: np.ndarray, normalise: bool) -> np.ndarray:
    n_batch, n = mask.shape
    a = np.zeros((n_batch, n, n))
    for b in range(n_batch):
        for i in range(n):
            for j in neighbours[b][i]:
                if j >= 0:
                    a[b, i, j] = a[b, j, i] = 1.0  # undirected
            if mask[b, i]:
                a[b, i, i] = 1.0
        if normalise:
            deg = [sum(a[b, i]) for i in range(n)]
            for i in range(n):
                for j in range(n):
                    if a[b, i, j]:
                        a[b, i, j] /= math.sqrt(deg[i] * deg[j])
    return a


@pytest.mark.parametrize("n", BATCH_SIZES)
@pytest.mark.parametrize("k", [1, 4, 7, 15])
def test_knn_matches_brute_force(n: int, k: int) -> None:
    """Indices equal sorted brute-force distances; padding is nobody's neighbour."""
    batch = points_batch(n)
    t = T.KNNAdjacency("points", k, mask_field="mask", out_dense="adj")
    out = T.check_transform(t, batch)
    want = _knn_reference(batch["points"], batch["mask"], k)
    np.testing.assert_array_equal(out["knn_indices"], want)
    np.testing.assert_allclose(out["adj"], _dense_reference(want, batch["mask"], True), rtol=1e-6)
    assert not np.any(out["adj"][~batch["mask"]])  # padded rows empty
    assert not np.any(out["adj"].transpose(0, 2, 1)[~batch["mask"]])  # and columns


def test_knn_fill_self_raw_dense_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    """fill='self' puts the node's own index; raw dense is 0/1; chunking is invisible."""
    batch = points_batch(6)
    ref = T.KNNAdjacency(k=7, out_dense="adj", normalise=False)(batch)
    want = _knn_reference(batch["points"], batch["mask"], 7)
    np.testing.assert_array_equal(ref["adj"], _dense_reference(want, batch["mask"], False))
    own = T.KNNAdjacency(k=7, fill="self")(batch)["knn_indices"]
    expect = np.where(np.array(want) < 0, np.arange(12)[None, :, None], want)
    np.testing.assert_array_equal(own, expect)
    monkeypatch.setattr(_graphs, "_KNN_CHUNK_ENTRIES", 150)  # one sample per chunk
    chunked = T.KNNAdjacency(k=7, out_dense="adj", normalise=False)(batch)
    np.testing.assert_array_equal(chunked["knn_indices"], ref["knn_indices"])
    np.testing.assert_array_equal(chunked["adj"], ref["adj"])


def test_knn_directed_dense() -> None:
    """symmetric=False keeps A[i, j] = 1 only for j among i's neighbours (plus self)."""
    batch = points_batch(2)
    out = T.KNNAdjacency(k=2, out_dense="adj", symmetric=False, normalise=False)(batch)
    idx = out["knn_indices"]
    for b in range(2):
        for i in range(12):
            want = {int(j) for j in idx[b, i] if j >= 0} | ({i} if batch["mask"][b, i] else set())
            assert set(np.nonzero(out["adj"][b, i])[0].tolist()) == want
    with pytest.raises(ConfigError, match="symmetric"):
        T.KNNAdjacency(symmetric=False, out_dense="adj")


def _grid_reference(h: int, w: int) -> np.ndarray:
    a = np.zeros((h * w, h * w))
    for r in range(h):
        for c in range(w):
            for r2 in range(h):
                for c2 in range(w):
                    if (r, c) != (r2, c2) and abs(r - r2) <= 1 and abs(c - c2) <= 1:
                        a[r * w + c, r2 * w + c2] = 1
    return a


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 5), (3, 4), (9, 9)])
def test_grid_adjacency_matches_loops(h: int, w: int) -> None:
    """8-neighbour grid; degrees 3/5/8; normalised form is D^-1/2 (A+I) D^-1/2."""
    raw = T.grid_adjacency(h, w, normalise=False, self_loops=False)
    want = _grid_reference(h, w)
    np.testing.assert_array_equal(raw, want)
    if h >= 3 and w >= 3:
        deg = raw.sum(axis=1).reshape(h, w)
        assert (deg[0, 0], deg[0, 1], deg[1, 1]) == (3, 5, 8)
    a = want + np.eye(h * w)
    d = a.sum(axis=1)
    np.testing.assert_allclose(T.grid_adjacency(h, w), a / np.sqrt(np.outer(d, d)), rtol=1e-6)
    np.testing.assert_allclose(T.normalise_adjacency(want), T.grid_adjacency(h, w), rtol=1e-6)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_grid_adjacency_transform_broadcasts(n: int) -> None:
    """The per-batch field is the same matrix for every sample."""
    batch = images_batch(n)
    out = T.check_transform(T.GridAdjacency(5, 4, out="adj"), batch)
    for b in range(n):
        np.testing.assert_array_equal(out["adj"][b], T.grid_adjacency(5, 4))
    got = T.grid_adjacency(5, 4)
    got[0, 0] = 99.0  # callers get their own copy, the cache is untouched
    assert T.grid_adjacency(5, 4)[0, 0] != 99.0


def _mother_reference(mothers: np.ndarray, real: np.ndarray) -> np.ndarray:
    n_batch, n = mothers.shape
    a = np.zeros((n_batch, n, n), dtype=np.float32)
    for b in range(n_batch):
        for i in range(n):
            if not real[b, i]:
                continue
            a[b, i, i] = 1
            m = int(mothers[b, i])
            if 0 <= m < n and real[b, m]:
                a[b, i, m] = a[b, m, i] = 1
    return a


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_mother_daughter_adjacency_matches_loop(n: int) -> None:
    """Symmetric decay-tree edges, diagonal 1 for real (non-zero PDG) particles."""
    batch = belle_batch(n)
    t = T.MotherDaughterAdjacency("mother_indices", features_field="X", out="adj")
    out = T.check_transform(t, batch)
    real = batch["X"][:, :, -1] != 0
    np.testing.assert_array_equal(out["adj"], _mother_reference(batch["mother_indices"], real))
    # The same graph from a mask field, with float mother indices as pd4ml stores them.
    t2 = T.MotherDaughterAdjacency("m", mask_field="real", out="adj", normalise=True)
    out2 = t2({"m": batch["mother_indices"].astype(np.float32), "real": real})
    np.testing.assert_allclose(out2["adj"], T.normalise_adjacency(out["adj"] - np.eye(15) * real[:, :, None], real), rtol=1e-6)  # fmt: skip
    with pytest.raises(ConfigError, match="exactly one"):
        T.MotherDaughterAdjacency("m")


# --- hits ----------------------------------------------------------------------------


def _voxel_reference(hits, lengths, grid, origin, pitch):
    energy = np.zeros((hits.shape[0], *grid))
    tsum = np.zeros_like(energy)
    dropped = []
    for b in range(hits.shape[0]):
        lost = 0
        for j in range(int(lengths[b])):
            x, y, z, e, t = (float(v) for v in hits[b, j])
            cell = [
                math.floor((c - o) / p) for c, o, p in zip((z, x, y), origin, pitch, strict=True)
            ]
            if all(0 <= c < g for c, g in zip(cell, grid, strict=True)):
                energy[(b, *cell)] += e
                tsum[(b, *cell)] += e * t
            else:
                lost += 1
        dropped.append(lost)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_t = np.where(energy != 0, tsum / energy, 0.0)
    return energy, mean_t, dropped


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_voxelize_matches_loop(n: int) -> None:
    """Energies summed per cell; hits outside the grid or past the length are dropped."""
    batch = hits_batch(n)
    grid, origin, pitch = (6, 8, 8), (0.0, -60.0, -60.0), (20.0, 15.0, 15.0)
    t = T.Voxelize(
        grid=grid,
        origin_mm=origin,
        pitch_mm=pitch,
        dropped_out="dropped",
        time_column=4,
        time_out="time",
    )
    out = T.check_transform(t, batch)
    energy, mean_t, dropped = _voxel_reference(
        batch["hits"], batch["hits_len"], grid, origin, pitch
    )
    np.testing.assert_allclose(out["voxels"], energy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["time"], mean_t, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["dropped"], dropped)
    assert sum(dropped) > 0  # the test data do exercise dropping


# --- labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_remap_pdg_and_one_hot_match_dict_lookup(n: int) -> None:
    """Codes map to their table position, unknown ones to len(codes) → zero one-hot row."""
    batch = belle_batch(n)
    codes = T.PD4ML_BELLE_PDG_CODES
    lookup = {c: i for i, c in enumerate(codes)}
    t = T.Compose(
        [
            T.RemapPDG("X", codes, column=-1, out="pdg"),
            T.OneHot("pdg", len(codes), out="onehot"),
        ]
    )
    out = T.check_transform(t, batch)
    for b in range(n):
        for i in range(batch["X"].shape[1]):
            idx = lookup.get(int(batch["X"][b, i, -1]), len(codes))
            assert out["pdg"][b, i] == idx
            row = [0.0] * len(codes)
            if idx < len(codes):
                row[idx] = 1.0
            assert out["onehot"][b, i].tolist() == row


def test_pdg_codes_by_frequency_matches_counter() -> None:
    """Most frequent first, ties by code; 0 (padding) excluded; streaming over blocks."""
    x = belle_batch(30)["X"]
    got = T.pdg_codes_by_frequency(x, column=-1, block_rows=7)
    counts = collections.Counter(int(v) for v in x[:, :, -1].ravel() if v != 0)
    want = sorted(counts, key=lambda c: (-counts[c], c))
    assert got.tolist() == want
    np.testing.assert_array_equal(T.remap_codes([want[0], 0, -5], want), [0, len(want), len(want)])


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_one_hot_labels(n: int) -> None:
    """Labels → rows of the identity; an out-of-range label is a ConfigError."""
    y = _rng(14).integers(0, 5, n)
    out = T.OneHotLabels("y", 5)({"y": y})["y"]
    assert out.tolist() == [[1.0 if c == y[b] else 0.0 for c in range(5)] for b in range(n)]
    with pytest.raises(ConfigError, match=r"outside 0\.\.4"):
        T.OneHotLabels("y", 5)({"y": np.array([0, 5])})


# --- pd4ml ----------------------------------------------------------------------------


def _pd4ml_airshower_reference(signal, time, std=None):
    """pd4ml's norm_signal / norm_time, written with nan arithmetic as pd4ml does."""
    s = signal.astype(np.float64).copy()
    t = time.astype(np.float64).copy()
    s[s == -1] = np.nan
    t[t == -1] = np.nan
    with np.errstate(invalid="ignore"):
        s[s < 0] = 0
    s = np.log10(s + 1)
    s[np.isnan(s)] = 0
    present = ~np.isnan(t)
    for b in range(t.shape[0]):
        if present[b].any():
            t[b] -= np.nanmean(t[b])
    if std is None:
        std = np.nanstd(t)
    t /= std
    t[~present] = 0
    return s, t, std


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_airshower_preprocess_matches_pd4ml(n: int) -> None:
    """log10 signals, per-event centred times / global std, missing → 0."""
    batch = airshower_batch(max(n, 2))
    batch = {k: v[:n] for k, v in batch.items()}
    train = airshower_batch(40, seed=21)
    std = T.fit_airshower_time_std(train["time"], block_rows=9)
    _, _, ref_std = _pd4ml_airshower_reference(train["signal"], train["time"])
    assert math.isclose(std, ref_std, rel_tol=1e-9)
    out = T.check_transform(T.AirshowerPreprocess(std), batch)
    s, t, _ = _pd4ml_airshower_reference(batch["signal"], batch["time"], std)
    np.testing.assert_allclose(out["signal"], s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["time"], t, rtol=1e-5, atol=1e-6)
    stacked = T.check_transform(T.pd4ml_airshower(std, graph=True), batch)
    want = np.concatenate([s, t], axis=3).reshape(n, 81, 9)
    np.testing.assert_allclose(stacked["features"], want, rtol=1e-5, atol=1e-6)
    assert set(stacked) == {"features", "adj_matrix"}


def test_airshower_fit_classmethod() -> None:
    """AirshowerPreprocess.fit uses the fitted std."""
    train = airshower_batch(10, seed=22)
    t = T.AirshowerPreprocess.fit([train["time"][:4], train["time"][4:]])
    assert math.isclose(t.time_std, T.fit_airshower_time_std(train["time"]), rel_tol=1e-12)


def test_pd4ml_top_tagging_pipeline() -> None:
    """features (B, 100, 4) in pd4ml's order, mask and a 7-NN adjacency."""
    batch = jets_batch(3, n_rows=120)
    out = T.check_transform(T.pd4ml_top_tagging(graph=True, normalise=False), batch)
    assert set(out) == {"features", "mask", "adj_matrix", "y"}
    assert out["features"].shape == (3, 100, 4)
    full = T.FourVectorFeatures()(batch)["features"]
    np.testing.assert_allclose(out["features"], full[:, :, [2, 3, 0, 1]])
    rows = out["adj_matrix"][0][out["mask"][0]]
    assert np.all(rows.sum(axis=1) >= 8)  # 7 neighbours + self, more where symmetrised


def test_pd4ml_belle_pipeline() -> None:
    """features = 8 kinematic columns + 182 one-hot PDG; adjacency from mothers."""
    batch = belle_batch(4)
    out = T.check_transform(T.pd4ml_belle(), batch)
    assert set(out) == {"features", "adj_matrix"}
    assert out["features"].shape == (4, 15, 190)
    np.testing.assert_array_equal(out["features"][:, :, :8], batch["X"][:, :, :8])
    flat = T.check_transform(T.pd4ml_belle(graph=False), batch)
    assert flat["features"].shape == (4, 15, 191)
    np.testing.assert_array_equal(flat["features"][:, :, -1], batch["mother_indices"])


def test_pd4ml_image_graph_pipeline() -> None:
    """Pixels become nodes with one feature plus the 8-neighbour adjacency."""
    batch = images_batch(2)
    out = T.check_transform(T.pd4ml_image_graph("X", 5, 4), batch)
    assert set(out) == {"features", "adj_matrix"}
    np.testing.assert_array_equal(out["features"][:, :, 0], batch["X"].reshape(2, 20))


# --- protocol: specs, Compose, pickling, errors ---------------------------------------

GRID = {"grid": (6, 8, 8), "origin_mm": (0.0, -60.0, -60.0), "pitch_mm": (20.0, 15.0, 15.0)}

# (name, factory, batch factory, fields the transform requires)
CASES: list[tuple[str, Callable[[], T.Transform], Callable[[int], dict], tuple[str, ...]]] = [
    ("scale", lambda: T.Scale("X", 1 / 150), jets_batch, ("X",)),
    ("standardize", lambda: T.Standardize("X", [1, 2, 3, 4], 2.0), jets_batch, ("X",)),
    ("log10p", lambda: T.Log10p("signal", missing=-1), airshower_batch, ("signal",)),
    ("signedlogtanh", lambda: T.SignedLogTanh("X", out="Z"), jets_batch, ("X",)),
    ("cast", lambda: T.Cast("y", "float32"), jets_batch, ("y",)),
    (
        "pad",
        lambda: T.PadTruncate("hits", 16, mask_out="m", len_field="hits_len"),
        hits_batch,
        ("hits", "hits_len"),
    ),
    ("fourvec", lambda: T.FourVectorFeatures(points_out="p"), jets_batch, ("X",)),
    ("knn", lambda: T.KNNAdjacency(out_dense="a"), points_batch, ("points", "mask")),
    ("grid", lambda: T.GridAdjacency(9, 9), airshower_batch, ()),
    (
        "mothers",
        lambda: T.MotherDaughterAdjacency("mother_indices", features_field="X"),
        belle_batch,
        ("mother_indices", "X"),
    ),
    ("remap", lambda: T.RemapPDG("X", [506, 423], column=-1, out="p"), belle_batch, ("X",)),
    ("onehotlabels", lambda: T.OneHotLabels("y", 2), jets_batch, ("y",)),
    ("airshower", lambda: T.AirshowerPreprocess(2.5), airshower_batch, ("signal", "time")),
    ("voxelize", lambda: T.Voxelize(dropped_out="d", **GRID), hits_batch, ("hits", "hits_len")),
    ("top", lambda: T.pd4ml_top_tagging(graph=True), jets_batch, ("X",)),
    ("belle", lambda: T.pd4ml_belle(), belle_batch, ("X", "mother_indices")),
]
CASE_IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "make", "data", "needs"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", [1, 5])
def test_output_spec_matches_call(name, make, data, needs, n: int) -> None:
    """output_spec agrees with what __call__ returns, for any batch size."""
    batch = data(n)
    t = make()
    declared = t.output_spec(specs_of(batch))
    out = t(batch)
    assert specs_of(out) == declared
    assert all(v.shape[0] == n for v in out.values())


@pytest.mark.parametrize(("name", "make", "data", "needs"), CASES, ids=CASE_IDS)
def test_pickle_round_trip_gives_equal_outputs(name, make, data, needs) -> None:
    """Transforms survive pickling (they are sent to spawned workers) unchanged."""
    batch = data(4)
    t = make()
    clone = pickle.loads(pickle.dumps(t))  # our own object, not untrusted data
    a, b = t(batch), clone(batch)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(("name", "make", "data", "needs"), CASES, ids=CASE_IDS)
def test_missing_field_is_config_error_naming_it(name, make, data, needs) -> None:
    """Each required input, when absent, gives a ConfigError that names it."""
    specs = specs_of(data(2))
    for field in needs:
        partial = {k: v for k, v in specs.items() if k != field}
        with pytest.raises(ConfigError, match=repr(field)):
            make().output_spec(partial)


def test_transforms_do_not_modify_inputs() -> None:
    """Inputs may be read-only views of shared buffers: transforms never write them."""
    for _, make, data, _ in CASES:
        batch = data(3)
        for arr in batch.values():
            arr.flags.writeable = False
        make()(batch)  # would raise "assignment destination is read-only"


def test_compose_threads_specs() -> None:
    """Compose's spec equals threading each step's spec; its output matches it."""
    steps = [
        T.FourVectorFeatures(points_out="points"),
        T.KNNAdjacency(k=3, out_dense="adj"),
        T.Standardize("features", 0.0, 2.0, mask_field="mask"),
        T.Drop("X"),
    ]
    chain = T.Compose(steps)
    batch = jets_batch(3)
    specs = specs_of(batch)
    for s in steps:
        specs = s.output_spec(specs)
    assert chain.output_spec(specs_of(batch)) == specs
    assert specs["adj"] == FieldSpec((100, 100), np.float32)
    assert "X" not in specs
    T.check_transform(chain, batch)
    assert T.Compose([])(batch).keys() == batch.keys()
    with pytest.raises(ConfigError, match="not a transform"):
        T.Compose([T.Drop("X"), len])


def test_check_transform_catches_a_lying_transform() -> None:
    """A transform whose output disagrees with its spec is reported as SchemaError."""

    class Lying(T.Transform):
        def output_spec(self, inputs):
            return {**inputs, "z": FieldSpec((3,), np.float32)}

        def __call__(self, batch):
            return {**batch, "z": np.zeros((len(batch["y"]), 3), dtype=np.float64)}

    with pytest.raises(SchemaError, match="'z'"):
        T.check_transform(Lying(), jets_batch(2))


def test_bad_construction_arguments_are_config_errors() -> None:
    """Invalid parameters fail when the transform is built, with a clear message."""
    with pytest.raises(ConfigError, match="k must be"):
        T.KNNAdjacency(k=0)
    with pytest.raises(ConfigError, match="unknown"):
        T.FourVectorFeatures(features=["pt", "rapidity"])
    with pytest.raises(ConfigError, match="pitch_mm"):
        T.Voxelize(origin_mm=(0, 0, 0), pitch_mm=(1, 0, 1))
    with pytest.raises(ConfigError, match="duplicates"):
        T.RemapPDG("X", [1, 1], out="p")
    with pytest.raises(ConfigError, match="time_std"):
        T.AirshowerPreprocess(0.0)


def test_public_api_sorted_and_light() -> None:
    """__all__ is isort-sorted (as ruff RUF022) and importing pulls in no framework."""
    names = T.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    assert all(hasattr(T, n) for n in names)
    code = (
        "import sys, fastload.transforms; "
        "print(any(m in sys.modules for m in ('torch', 'tensorflow')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
