"""LArIAT end to end: synthetic originals, conversion, transforms, selections, the mix, the model.

Test data are tiny: 12 classes x 2 events of 512 ticks (0.5 MB an event), and one
event of the real 4096 ticks for the layout.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import fastload as fl
from fastload import synthetic
from fastload.converters import convert
from fastload.converters.lariat import CLASSES as CONVERTER_CLASSES
from fastload.errors import SourceFileError
from fastload.synthetic import _lariat as lar

tables = pytest.importorskip("tables")

TICKS = 512
QUIET = {"quiet": True}
ONE_SPLIT = {"train": 1.0, "val": 0.0, "test": 0.0}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lariat") / "LArIAT"
    synthetic.make_lariat(root, events_per_file=2, ticks=TICKS, seed=3)
    return root


def _read_2d(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}


def _read_3d(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with tables.open_file(str(path), "r") as t:
        return list(t.root.images3D.C.read()), list(t.root.images3D.V.read())


# ------------------------------------------------------------------ synthetic
def test_synthetic_layout_is_the_documented_one(tmp_path):
    paths = synthetic.generate("lariat", tmp_path, n=1, classes="muon")
    assert [p.name for p in paths] == ["muon_0.2d.h5", "muon_0.3d.h5"]
    with h5py.File(paths[0], "r") as f:
        assert sorted(f) == sorted(["features", *lar.EVENT_KEYS])
        ds = f["features"]
        assert (ds.shape, ds.dtype) == ((1, 2, 240, 4096), np.float16)
        assert (ds.compression, ds.compression_opts, ds.chunks) == ("gzip", 4, (1, 2, 240, 4096))
        for k in lar.EVENT_KEYS:
            assert (f[k].shape, f[k].dtype) == ((1,), np.float32)
        for k in lar.NEUTRINO_KEYS:
            assert f[k][0] == -9999.0
        assert f["pdg"][0] == 13
        image = ds[0].astype(np.float32)
        assert image.min() >= -200
        assert image.max() <= 1700
        assert image.max() > 20
        assert (image == 0).mean() > 0.9  # mostly pedestal-subtracted zeros
    with tables.open_file(str(paths[1]), "r") as t:
        group = t.root.images3D
        assert isinstance(group.C, tables.VLArray)
        assert isinstance(group.V, tables.VLArray)
        assert group.C.filters.complib == "zlib"
        assert group.C.filters.complevel == 5
        assert list(group.shape.read()) == [240, 240, 4096]
        assert list(group.unbinned.read()) == [1]
        C, V = group.C[0], group.V[0]
        assert C.dtype == np.float32
        assert C.shape[1] == 3
        assert V.shape == (len(C),)


def test_synthetic_3d_deposits_make_the_2d_images(originals):
    """The 2D file holds exactly the projection of its 3D twin's deposits."""
    for cls in ("electron", "proton", "pion0"):
        images = _read_2d(originals / f"{cls}_0.2d.h5")["features"]
        cs, vs = _read_3d(originals / f"{cls}_0.3d.h5")
        for i in range(len(images)):
            np.testing.assert_array_equal(lar.project(cs[i], vs[i], TICKS), images[i])


def test_synthetic_is_deterministic_and_classes_differ(tmp_path, originals):
    again = synthetic.make_lariat(
        tmp_path, events_per_file=2, ticks=TICKS, seed=3, classes=["muon"]
    )
    np.testing.assert_array_equal(
        _read_2d(again[0])["features"], _read_2d(originals / "muon_0.2d.h5")["features"]
    )
    # tracks vs showers: a muon has far fewer lit pixels than an electron of similar energy
    lit = {
        cls: (_read_2d(originals / f"{cls}_0.2d.h5")["features"] != 0).sum(axis=(1, 2, 3)).mean()
        for cls in ("muon", "electron")
    }
    assert lit["electron"] > 2 * lit["muon"]
    assert CONVERTER_CLASSES == lar.CLASSES


def test_synthetic_later_variant_names(tmp_path):
    (path,) = synthetic.make_lariat(
        tmp_path, events_per_file=1, ticks=64, classes="photon", names="later", with_3d=False
    )
    with h5py.File(path, "r") as f:
        assert "images" in f
        assert "Energy" in f
        assert "features" not in f
        assert "Eng" not in f


# ------------------------------------------------------------------ converter
def _check_exact(store: fl.Store, src: Path) -> list[tuple[str, int]]:
    """Every stored event equals its h5py/PyTables source row; returns (file, row) seen."""
    files = [Path(f["path"]) for f in store.provenance["files"]]
    seen = []
    cache: dict[Path, tuple[dict, tuple]] = {}
    for split in store.splits:
        part = store[split].arrays()
        assert store[split].chunk_len == 1
        for i, (fi, row) in enumerate(part["origin"]):
            path2 = files[fi]
            assert path2.name.endswith(".2d.h5")
            if path2 not in cache:
                cache[path2] = (
                    _read_2d(path2),
                    _read_3d(path2.with_name(path2.name.replace(".2d", ".3d"))),
                )
            two, (cs, vs) = cache[path2]
            np.testing.assert_array_equal(part["features"][i], two["features"][row])
            assert part["features"].dtype == np.float16
            assert part["energy"][i] == two["Eng"][row]
            assert part["track_length"][i] == two["Track_length"][row]
            assert part["pdg"][i] == two["pdg"][row]
            dep = part["deposits"]
            rows = dep.values[dep.offsets[i] : dep.offsets[i + 1]]
            np.testing.assert_array_equal(rows[:, :3], cs[row])
            np.testing.assert_array_equal(rows[:, 3], vs[row])
            assert store.labels[part["y"][i]] == path2.name.split("_")[0]
            seen.append((path2.name, int(row)))
    return seen


def test_premixed_conversion_is_exact(originals, tmp_path):
    report = convert(
        "lariat",
        originals,
        tmp_path / "LArIAT.zarr",
        split={"train": 0.5, "val": 0.25, "test": 0.25},
        **QUIET,
    )
    store = fl.open_store(tmp_path / "LArIAT.zarr")
    assert report.counts == {"train": 12, "val": 6, "test": 6}
    assert report.verified
    assert store.labels == list(CONVERTER_CLASSES)
    assert store.fields["deposits"].ragged
    assert store.fields["deposits"].shape == (4,)
    seen = _check_exact(store, originals)
    assert sorted(seen) == sorted((f"{c}_0.2d.h5", r) for c in CONVERTER_CLASSES for r in range(2))
    assert len(set(store["train"].read("y"))) > 6  # premixed: classes interleaved


def test_per_class_stores_and_parallel_reads_are_identical(originals, tmp_path):
    serial = convert(
        "lariat", originals, tmp_path / "serial", per_class=True, split=ONE_SPLIT, **QUIET
    )
    assert sorted(serial) == sorted(CONVERTER_CLASSES)
    for cls in ("muon", "pion0"):
        store = fl.open_store(tmp_path / "serial" / f"{cls}.zarr")
        assert set(store["train"].read("y")) == {CONVERTER_CLASSES.index(cls)}
        assert len(_check_exact(store, originals)) == 2
    parallel = convert(
        "lariat", originals, tmp_path / "parallel.zarr", workers=2, split=ONE_SPLIT, **QUIET
    )
    one = convert("lariat", originals, tmp_path / "one.zarr", workers=0, split=ONE_SPLIT, **QUIET)
    assert parallel.counts == one.counts
    a, b = (
        fl.open_store(tmp_path / "parallel.zarr")["train"],
        fl.open_store(tmp_path / "one.zarr")["train"],
    )
    for name in a.fields:
        x, y = a.read(name), b.read(name)
        if isinstance(x, fl.Ragged):
            np.testing.assert_array_equal(x.values, y.values)
            np.testing.assert_array_equal(x.offsets, y.offsets)
        else:
            np.testing.assert_array_equal(x, y)


def test_later_variant_and_missing_3d(tmp_path):
    src = tmp_path / "src"
    synthetic.make_lariat(
        src, events_per_file=2, ticks=64, classes=("muon", "photon"), names="later", with_3d=False
    )
    report = convert("lariat", src, tmp_path / "s.zarr", split=ONE_SPLIT, **QUIET)
    store = fl.open_store(tmp_path / "s.zarr")
    assert "deposits" not in store.fields
    assert report.counts == {"train": 4}
    with h5py.File(src / "muon_0.2d.h5", "r") as f:
        energy = f["Energy"][:]
    y, e = store["train"].read("y"), store["train"].read("energy")
    np.testing.assert_array_equal(np.sort(e[y == CONVERTER_CLASSES.index("muon")]), np.sort(energy))
    synthetic.make_lariat(
        src, events_per_file=2, ticks=64, classes="muon", seed=1
    )  # adds a 3D twin
    with pytest.raises(SourceFileError, match="only some"):
        convert("lariat", src, tmp_path / "t.zarr", **QUIET)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gluon_0.2d.h5").write_bytes(b"")
    with pytest.raises(SourceFileError, match="unknown class 'gluon'"):
        convert("lariat", tmp_path / "bad", tmp_path / "u.zarr", **QUIET)


def test_one_liner_converts_once(originals, tmp_path):
    from fastload.datasets import LArIAT

    root = tmp_path / "data"
    root.mkdir()
    (root / "LArIAT").symlink_to(originals)
    X, y = LArIAT.load("train", path=root, verbose=False)
    assert [x.dtype for x in X[:1]] == [np.float16]
    assert X[0].shape[1:] == (2, 240, TICKS)
    assert isinstance(X[1], fl.Ragged)
    assert len(y) == len(X[0])
    assert (root / "LArIAT.zarr").is_dir()


# ----------------------------------------------------------------- transforms
def _reference_preprocess(event: np.ndarray, factor: int, window: int) -> np.ndarray:
    """LArTPCDNN's steps for one (2, W, T) event, as plain loops."""
    planes, wires, ticks = event.shape
    down = np.zeros((planes, wires, ticks // factor))
    for p in range(planes):
        for w in range(wires):
            for t in range(ticks // factor):
                down[p, w, t] = event[p, w, t * factor : (t + 1) * factor].astype(np.float64).sum()
    best, best_charge = 0, -np.inf
    for s in range(ticks // factor - window + 1):
        charge = down[:, :, s : s + window].sum()
        if charge > best_charge:
            best, best_charge = s, charge
    crop = down[:, :, best : best + window]
    return np.tanh(np.sign(crop) * np.log(np.abs(crop) + 1) / 2)


def test_preprocessing_matches_a_loop_reference(originals):
    from fastload.transforms import check_transform, lariat_preprocess

    events = np.concatenate(
        [_read_2d(originals / f"{c}_0.2d.h5")["features"] for c in ("muon", "photon", "proton")]
    )
    events[1, :, :5, :] = 0  # an event with some dead wires
    transform = lariat_preprocess(window=24)
    out = check_transform(transform, {"features": events, "y": np.arange(6)})
    assert sorted(out) == ["collection", "induction", "y"]
    for i, event in enumerate(events):
        want = _reference_preprocess(event, 8, 24)
        np.testing.assert_allclose(out["induction"][i], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["collection"][i], want[1], rtol=1e-5, atol=1e-6)
    assert out["induction"].shape == (6, 240, 24)
    assert out["induction"].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int16, np.int64])
@pytest.mark.parametrize("factor", [1, 3, 8])
@pytest.mark.parametrize("charged", [0.01, 0.3, 1.0])
def test_tick_downsample_is_a_left_to_right_float32_sum(dtype, factor, charged):
    """Sparse or dense input, the sums are the same bits as adding each group's ticks in order."""
    from fastload.transforms import TickDownsample

    rng = np.random.default_rng(7)
    x = rng.normal(0, 400, size=(2, 2, 5, 6 * factor))
    x *= rng.random(x.shape) < charged
    x = x.astype(dtype)
    if x.dtype.kind == "f":
        x[0, 0, 0, :2] = [-0.0, np.nan]
    got = TickDownsample(factor=factor)({"features": x})["features"]
    want = np.empty(got.shape, dtype=np.float32)
    for index in np.ndindex(*want.shape):
        total = np.float32(x[index[:-1]][index[-1] * factor])
        for k in range(1, factor):
            total = np.float32(total + x[index[:-1]][index[-1] * factor + k])
        want[index] = total
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("charged", [0.002, 0.9])
def test_tick_downsample_of_whole_events_sparse_or_noisy(charged):
    """Full-size events take the probe's way (sparse or dense); the bits are those of in-order sums."""
    from fastload.transforms import TickDownsample

    rng = np.random.default_rng(8)
    x = rng.normal(0, 300, size=(2, 2, 240, 4096)).astype(np.float16)
    x[rng.random(x.shape) >= charged] = 0
    got = TickDownsample()({"features": x})["features"]
    want = x[..., 0::8].astype(np.float32)
    for k in range(1, 8):
        want += x[..., k::8]
    assert got.tobytes() == want.tobytes()


def test_crop_chooses_the_window_with_most_charge():
    from fastload.transforms import MaxChargeCrop

    x = np.zeros((2, 2, 3, 20), dtype=np.float32)
    x[0, 1, 2, 12:15] = 5.0
    x[0, 0, 0, 2] = 4.0  # less charge elsewhere
    x[1, 0, 1, 0] = 1.0
    out = MaxChargeCrop(window=4, start_out="start")({"features": x})
    assert list(out["start"]) == [11, 0]  # earliest of the equal windows covering 12..14
    np.testing.assert_array_equal(out["features"][0], x[0, :, :, 11:15])


def test_voxelize_deposits_against_a_loop(originals, tmp_path):
    from fastload.transforms import Voxelize

    cs, vs = _read_3d(originals / "electron_0.3d.h5")
    length = max(len(c) for c in cs)
    hits = np.zeros((len(cs), length, 4), dtype=np.float32)
    for i, (c, v) in enumerate(zip(cs, vs, strict=True)):
        hits[i, : len(c), :3], hits[i, : len(c), 3] = c, v
    grid, origin, pitch = (12, 10, 18), (0.0, -20.0, 0.0), (4.0, 4.0, 5.0)
    vox = Voxelize(
        "deposits",
        "deposits_len",
        grid=grid,
        origin_mm=origin,
        pitch_mm=pitch,
        coord_columns=(0, 1, 2),
        energy_column=3,
    )
    out = vox({"deposits": hits, "deposits_len": np.array([len(c) for c in cs])})["voxels"]
    for i, (c, v) in enumerate(zip(cs, vs, strict=True)):
        want = np.zeros(grid)
        for (x, y, z), q in zip(c.astype(np.float64), v, strict=True):
            cell = [
                int(np.floor((a - o) / p)) for a, o, p in zip((x, y, z), origin, pitch, strict=True)
            ]
            if all(0 <= k < g for k, g in zip(cell, grid, strict=True)):
                want[tuple(cell)] += q
        np.testing.assert_allclose(out[i], want, rtol=1e-5)
        assert want.sum() > 0


# ----------------------------------------------------------- filtered views
@pytest.fixture(scope="module")
def premixed(originals, tmp_path_factory) -> fl.Store:
    dst = tmp_path_factory.mktemp("premixed") / "LArIAT.zarr"
    convert("lariat", originals, dst, split=ONE_SPLIT, **QUIET)
    return fl.open_store(dst)


@pytest.mark.parametrize("shuffle", [False, True])
def test_one_event_chunks_decode_straight_into_the_slot(premixed, monkeypatch, shuffle):
    """Bytes written per event = bytes of the event: each decode lands in the batch slot itself.

    ``workers=0`` runs the workers' code in this process, so every decode of a
    ``features`` chunk is seen: into a view of the shared arena (the slot), never
    into the worker's own scratch buffer (which a copy into the slot would follow).
    """
    from fastload.store._decoder import ChunkDecoder

    log: list[tuple[int, bool]] = []
    original = ChunkDecoder.decode_into

    def counting(self, chunk, out):
        rows = original(self, chunk, out)
        if self.key.rsplit("/", 1)[-1] == "features":
            log.append((out[: self.chunk_len].nbytes, out.base is not None))
        return rows

    monkeypatch.setattr(ChunkDecoder, "decode_into", counting)
    split = premixed["train"]
    event = int(np.prod(split.fields["features"].shape)) * 2
    want = split.read("features")
    got = {}
    with fl.Loader(
        split, 5, workers=0, shuffle=shuffle, fields=("features", "origin"), copy=True
    ) as loader:
        for batch in loader:
            for f, o in zip(batch["features"], batch["origin"], strict=True):
                got[tuple(o)] = f
    assert len(got) == len(split)
    origin = split.read("origin")
    for i, o in enumerate(origin):
        np.testing.assert_array_equal(got[tuple(o)], want[i])
    assert len(log) == len(split)
    assert all(into_slot for _, into_slot in log)
    assert sum(nbytes for nbytes, _ in log) == len(split) * event


@pytest.mark.parametrize("workers", [0, 2])
def test_energy_cut_view_delivers_each_selected_event_once(premixed, workers):
    split = premixed["train"]
    energy = split.read("energy")
    view = split.select(energy > 0.61)
    keep = np.flatnonzero(energy > 0.61)
    assert len(view) == keep.size
    assert 0 < keep.size < len(split)
    origin = split.read("origin")
    for epoch in range(2):
        seen, sizes = [], []
        with fl.Loader(
            view,
            4,
            workers=workers,
            seed=epoch,
            fields=("origin", "energy", "features", "deposits"),
        ) as loader:
            loader.set_epoch(epoch)
            for batch in loader:
                sizes.append(len(batch["origin"]))
                assert (np.asarray(batch["energy"]) > 0.61).all()
                seen += [tuple(o) for o in np.asarray(batch["origin"])]
        assert sorted(seen) == sorted(tuple(o) for o in origin[keep])  # exactly once
        assert sizes[:-1] == [4] * (len(sizes) - 1)  # batches full: nothing dropped inside one
    # the view decodes what the split holds
    np.testing.assert_array_equal(view.read("features"), split.read("features")[keep])
    dep = view.read("deposits")
    full = split.read("deposits")
    for j, i in enumerate(keep):
        np.testing.assert_array_equal(
            dep.values[dep.offsets[j] : dep.offsets[j + 1]],
            full.values[full.offsets[i] : full.offsets[i + 1]],
        )


def test_energy_cut_view_gives_ragged_deposits_and_caches_its_chunks(premixed):
    """A view has its base's row counts: its ragged deposits arrive as values + offsets, and
    memory_cache keeps its chunks (batches equal the padded, uncached loader's)."""
    split = premixed["train"]
    view = split.select(split.read("energy") > 0.61)
    fields = ("origin", "deposits")
    with fl.Loader(view, 4, workers=0, seed=1, fields=fields) as padded:
        padded.set_epoch(1)
        want = [
            (
                b["origin"].copy(),
                [b["deposits"][i, :n].copy() for i, n in enumerate(b["deposits_len"])],
            )
            for b in padded
        ]
    ragged = {"deposits": "offsets"}
    with fl.Loader(
        view, 4, workers=2, seed=1, fields=fields, ragged=ragged, memory_cache=True
    ) as loader:
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            got = [
                (b["origin"].copy(), [b["deposits"][i].copy() for i in range(len(b["origin"]))])
                for b in loader
            ]
        assert loader._engine.cache.chunks == (view.n_chunks,)
    assert len(got) == len(want)
    for (go, gr), (wo, wr) in zip(got, want, strict=True):
        np.testing.assert_array_equal(go, wo)
        assert len(gr) == len(wr)
        for a, b in zip(gr, wr, strict=True):
            np.testing.assert_array_equal(a, b)


def test_select_refuses_bad_rows(premixed):
    from fastload.errors import ConfigError

    split = premixed["train"]
    with pytest.raises(ConfigError, match="shape"):
        split.select(np.ones(3, dtype=bool))
    with pytest.raises(ConfigError, match="distinct"):
        split.select([1, 1])
    with pytest.raises(ConfigError, match=r"\[0, 24\)"):
        split.select([30])


from fastload.testing import SourceTests  # noqa: E402


class TestSelectionConformance(SourceTests):
    """A selection of a memory split holding the suite's arrays between junk rows."""

    def make_source(self, arrays, chunk_len):
        n = len(next(iter(arrays.values())))
        full = {}
        for name, value in arrays.items():
            if isinstance(value, fl.Ragged):
                rows = [value.values[value.offsets[i] : value.offsets[i + 1]] for i in range(n)]
                junk = np.full((1, *value.values.shape[1:]), -7, value.values.dtype)
                full[name] = fl.Ragged.from_list([r for row in rows for r in (junk, row)])
            else:
                junk = np.full_like(value, -7)
                full[name] = np.stack([junk, value], axis=1).reshape(2 * n, *value.shape[1:])
        return fl.from_arrays(full, chunk_len=chunk_len).select(np.arange(1, 2 * n, 2))


# ---------------------------------------------------------------- the mix
def test_twelve_class_mix_is_exact_per_batch(originals, tmp_path):
    from fastload._order import mix_counts

    convert("lariat", originals, tmp_path / "pc", per_class=True, split=ONE_SPLIT, **QUIET)
    sources = {c: fl.open_store(tmp_path / "pc" / f"{c}.zarr")["train"] for c in CONVERTER_CLASSES}
    mix = fl.Mix(sources, {c: 1 for c in CONVERTER_CLASSES}, label_field="label")
    batch_size = 14  # 14 // 12 = 1 each, 2 left over
    want = mix_counts(batch_size, [1.0] * 12)
    assert sorted(want) == [1] * 10 + [2] * 2
    with fl.Loader(mix, batch_size, workers=0, fields=("y", "pdg")) as loader:
        batches = list(loader)
    assert batches
    for batch in batches:
        label = np.asarray(batch["label"])
        np.testing.assert_array_equal(np.bincount(label, minlength=12), want)
        np.testing.assert_array_equal(label, np.asarray(batch["y"]))  # label == file-name class
        pdg = {c: lar.PDG[c] for c in CONVERTER_CLASSES}
        assert [pdg[CONVERTER_CLASSES[k]] for k in label] == list(np.asarray(batch["pdg"]))
    # premixed from the same per-class stores: one store with every event once
    from fastload.converters.premix import premix

    out = premix(
        tmp_path / "mixed.zarr",
        {c: fl.open_store(tmp_path / "pc" / f"{c}.zarr") for c in CONVERTER_CLASSES},
        progress=False,
    )
    mixed = fl.open_store(out)["train"]
    assert len(mixed) == 24
    np.testing.assert_array_equal(mixed.read("label"), mixed.read("y"))
    assert mixed.chunk_len >= 1
