"""Converters: exact round trips from hand-made originals, every bad input, and the CLI.

The originals here are written in the exact on-disk layouts (pd4ml ``.npz``,
pandas HDFStore tables, LCD per-particle HDF5 files, photon shower HDF5) with
tiny sizes and values chosen so that every cast is exact; the round trips
through the synthetic generators live in tests/test_datasets.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastload as fl
from fastload.converters import ConvertOptions, convert, names
from fastload.converters._cli import main, parse_bytes
from fastload.converters._npz import NpzArchive
from fastload.converters.pd4ml import LAYOUTS, convert_pd4ml
from fastload.errors import (
    ConfigError,
    EmptyDatasetError,
    NonFiniteError,
    SchemaError,
    SourceFileError,
    SourceKeyError,
    StoreExistsError,
    StoreWriteError,
    VerificationError,
)

REPO = Path(__file__).resolve().parents[1]
QUIET = {"quiet": True}


# ----------------------------------------------------------------- originals
def pd4ml_arrays(name: str, n: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of a pd4ml archive (key -> array) for a layout, with exact-cast values."""
    rng = np.random.default_rng(seed)
    layout = LAYOUTS[name]
    out: dict[str, np.ndarray] = {}
    for split, count in n.items():
        for m in layout.members:
            dtype = np.dtype(m.dtype)
            shape = m.shape if m.constant else (count, *m.shape)
            if dtype.kind == "f":
                values = rng.normal(size=shape).astype(dtype)
            else:
                values = rng.integers(-1, 3, size=shape).astype(dtype)
            if m.constant:
                values = np.arange(np.prod(shape), dtype=dtype).reshape(
                    shape
                )  # same in every split
            out[m.key(split)] = values
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def pd4ml_file(tmp_path: Path, name: str, n=None, **kw) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = pd4ml_arrays(name, n or {"train": 37, "test": 11})
    return write_npz(tmp_path / "orig" / LAYOUTS[name].filename, arrays, **kw), arrays


def landscape_frame(n: int, seed: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols = [f"{q}_{i}" for i in range(200) for q in ("E", "PX", "PY", "PZ")]
    x = rng.normal(size=(n, 800)).astype(np.float32)
    frame = pd.DataFrame(
        x.astype(np.float64), columns=cols
    )  # float64 holding float32 values: exact
    for i, c in enumerate(("truthE", "truthPX", "truthPY", "truthPZ")):
        frame[c] = float(i)
    frame["ttv"] = seed % 3
    frame["is_signal_new"] = rng.integers(0, 2, n)
    return frame


def write_landscape(folder: Path, counts=None, fmt: str = "fixed") -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    frames = {}
    for i, (split, n) in enumerate((counts or {"train": 30, "val": 9, "test": 12}).items()):
        frames[split] = landscape_frame(n, i)
        frames[split].to_hdf(folder / f"{split}.h5", key="table", mode="w", format=fmt)
    return frames


def write_lcd_file(path: Path, n: int, seed: int, *, ecal=(25, 25, 25), hcal=(5, 5, 60)) -> dict:
    rng = np.random.default_rng(seed)
    data = {
        "ECAL": rng.random((n, *ecal), dtype=np.float32),
        "HCAL": rng.random((n, *hcal), dtype=np.float32),
        "target": rng.random((n, 1, 5), dtype=np.float32) * 100,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f[k] = v
    return data


def write_lcd(folder: Path, sizes=None) -> dict[str, dict]:
    sizes = sizes or {
        "EleEscan_1_1.h5": 9,
        "GammaEscan_1_1.h5": 7,
        "Pi0Escan_1_2.h5": 5,
        "ChPiEscan_2_1.h5": 11,
    }
    out = {}
    for i, (fname, n) in enumerate(sizes.items()):
        sub = folder / fname.split("_")[0]  # e.g. EleEscan/, as in the original release
        out[fname] = write_lcd_file(sub / fname, n, seed=i)
    return out


def write_photons(path: Path, n: int = 23, group: str = "30x30") -> dict:
    rng = np.random.default_rng(5)
    data = {
        "energy": rng.random((n, 1), dtype=np.float32),
        "layers": rng.random((n, 30, 30, 30), dtype=np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        for k, v in data.items():
            g[k] = v
    return data


def no_leftovers(folder: Path) -> bool:
    """No store and no temporary of one in ``folder``."""
    return not any(p.name.endswith(".zarr") or ".fastload-tmp-" in p.name for p in folder.iterdir())


# --------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_pd4ml_round_trip_is_exact(tmp_path, name):
    """Every field of every split reads back equal to its npz member; constants too."""
    src, arrays = pd4ml_file(tmp_path, name)
    report = convert_pd4ml(name, src, tmp_path / f"{name}.zarr", block_events=8, **QUIET)
    assert report.verified
    assert report.counts == {"train": 37, "test": 11}
    store = fl.open_store(tmp_path / f"{name}.zarr")
    layout = LAYOUTS[name]
    assert store.splits == ("train", "test")
    assert store.task == layout.task
    assert store.labels == list(layout.labels)
    for split in ("train", "test"):
        for m in layout.members:
            if m.constant:
                np.testing.assert_array_equal(store.constants[m.field], arrays[m.key(split)])
            else:
                got = store[split].read(m.field)
                assert got.dtype == np.dtype(m.dtype)
                np.testing.assert_array_equal(got, arrays[m.key(split)])
    source = store.provenance
    assert source["converter"].startswith("converters.pd4ml")
    assert source["converter_version"]
    assert source["files"][0]["sha256"] == fl.store.file_checksum(src)


def test_pd4ml_streams_deflated_members_and_finds_pd4ml_folder(tmp_path):
    """savez_compressed archives stream too, and src may be pd4ml's <path>/<Name>/ layout."""
    arrays = pd4ml_arrays("TopTagging", {"train": 50, "test": 20})
    write_npz(tmp_path / "data" / "TopTagging" / "1_top_tagging_2M.npz", arrays, compressed=True)
    convert("toptagging", tmp_path / "data", tmp_path / "t.zarr", block_events=7, **QUIET)
    split = fl.open_store(tmp_path / "t.zarr")["train"]
    np.testing.assert_array_equal(split.read("X"), arrays["X_train_0"])


def test_npz_member_reads_blocks_backwards_and_fortran_fallback(tmp_path):
    """Row blocks are exact in any order; a Fortran-order member falls back to a whole load."""
    a = np.arange(60, dtype=">f8").reshape(20, 3)  # big-endian on purpose
    f = np.asfortranarray(np.arange(40, dtype=np.int32).reshape(20, 2))
    path = write_npz(tmp_path / "a.npz", {"a": a, "f": f}, compressed=True)
    archive = NpzArchive(path)
    member = archive.member("a")
    np.testing.assert_array_equal(member.read(10, 15), a[10:15])
    np.testing.assert_array_equal(member.read(2, 4), a[2:4])
    fort = archive.member("f")
    assert fort.fortran
    np.testing.assert_array_equal(fort.read(5, 9), f[5:9])
    member.close()
    archive.close()


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_landscape_round_trip_matches_pd4ml_schema(tmp_path, fmt):
    """Both pandas layouts convert exactly; the schema equals the pd4ml TopTagging one."""
    frames = write_landscape(tmp_path / "land", fmt=fmt)
    convert(
        "toptagging-landscape",
        tmp_path / "land",
        tmp_path / "L.zarr",
        block_events=8,
        with_truth=True,
        **QUIET,
    )
    store = fl.open_store(tmp_path / "L.zarr")
    assert store.splits == ("train", "val", "test")
    for split, frame in frames.items():
        part = store[split]
        np.testing.assert_array_equal(
            part.read("X").reshape(len(frame), 800), frame.iloc[:, :800].to_numpy()
        )
        np.testing.assert_array_equal(part.read("y"), frame["is_signal_new"].to_numpy())
        np.testing.assert_array_equal(part.read("ttv"), frame["ttv"].to_numpy())
        np.testing.assert_array_equal(
            part.read("truth"), frame[["truthE", "truthPX", "truthPY", "truthPZ"]]
        )
    src, _ = pd4ml_file(tmp_path, "TopTagging")
    convert("toptagging", src, tmp_path / "P.zarr", **QUIET)
    pd4ml_fields = fl.open_store(tmp_path / "P.zarr").fields
    landscape_fields = {k: v for k, v in store.fields.items() if k != "truth"}
    assert landscape_fields == pd4ml_fields


def test_lcd_labels_from_file_names_and_exact_rows(tmp_path):
    """Every event appears once, equal to its source row, labelled by its file name."""
    originals = write_lcd(tmp_path / "lcd")
    report = convert("lcd", tmp_path / "lcd", tmp_path / "LCD.zarr", block_events=6, **QUIET)
    store = fl.open_store(tmp_path / "LCD.zarr")
    assert store.labels == ["Ele", "Gamma", "Pi0", "ChPi"]
    assert report.counts == {"train": 26, "val": 3, "test": 3}
    files = [Path(f["path"]).name for f in store.provenance["files"]]
    seen = []
    for split in store.splits:
        part = store[split].arrays()
        for i, (fi, row) in enumerate(part["origin"]):
            src = originals[files[fi]]
            for k in ("ECAL", "HCAL", "target"):
                np.testing.assert_array_equal(part[k][i], src[k][row])
            assert part["energy"][i] == src["target"][row, 0, 1]
            particle = files[fi].split("Escan")[0]
            assert store.labels[part["y"][i]] == particle
            seen.append((files[fi], int(row)))
    assert sorted(seen) == sorted(
        (f, r) for f, d in originals.items() for r in range(len(d["ECAL"]))
    )
    # a block mixes the classes (files are read in proportional rounds)
    assert len(set(fl.open_store(tmp_path / "LCD.zarr")["train"].read("y")[:10])) > 1


def test_lcd_split_is_seeded(tmp_path):
    """Same seed, same split; another seed, another split; fraction 0 drops a split."""
    write_lcd(tmp_path / "lcd")

    def origins(dst, **kw):
        convert("lcd", tmp_path / "lcd", tmp_path / dst, **QUIET, **kw)
        return fl.open_store(tmp_path / dst)["train"].read("origin")

    a, b, c = origins("a.zarr"), origins("b.zarr"), origins("c.zarr", split_seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    convert(
        "lcd",
        tmp_path / "lcd",
        tmp_path / "d.zarr",
        split={"train": 0.9, "val": 0.1, "test": 0},
        **QUIET,
    )
    assert fl.open_store(tmp_path / "d.zarr").splits == ("train", "val")


def test_photons_round_trip(tmp_path):
    """Photon showers: every event once, equal to its source row, in file order per split."""
    data = write_photons(tmp_path / "ph" / "showers.h5")
    convert("photons", tmp_path / "ph", tmp_path / "P.zarr", block_events=5, **QUIET)
    store = fl.open_store(tmp_path / "P.zarr")
    rows = []
    for split in store.splits:
        part = store[split].arrays()
        idx = part["origin"][:, 1]
        assert np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(part["layers"], data["layers"][idx])
        np.testing.assert_array_equal(part["energy"], data["energy"][idx])
        rows.extend(idx)
    assert sorted(rows) == list(range(23))


def test_codec_chunk_bytes_and_converter_options(tmp_path):
    """--codec/--chunk-bytes reach the store; unknown options are refused."""
    src, _ = pd4ml_file(tmp_path, "Spinodal")
    convert("spinodal", src, tmp_path / "s.zarr", codec="zstd", chunk_bytes=16 * 1600, **QUIET)
    store = fl.open_store(tmp_path / "s.zarr")
    assert store.schema.codec["cname"] == "zstd"
    assert store["train"].chunk_len == 16
    with pytest.raises(ConfigError, match="unknown conversion option"):
        convert("spinodal", src, tmp_path / "t.zarr", codecs="zstd")
    with pytest.raises(ConfigError, match="block_events"):
        ConvertOptions(block_events=0)


def test_library_draws_the_bar_and_leaves_the_summary_to_the_cli(tmp_path, capsys, caplog):
    """progress=True draws a tqdm bar on stderr; the library prints no summary (it logs it at
    DEBUG, the command line prints it); quiet shows nothing at all."""
    src, _ = pd4ml_file(tmp_path, "Spinodal")
    with caplog.at_level(logging.DEBUG, logger="fastload.converters"):
        convert("spinodal", src, tmp_path / "a.zarr", progress=True, block_events=10)
    captured = capsys.readouterr()
    assert "Spinodal" in captured.err
    assert "/48" in captured.err  # tqdm counts the 48 events
    assert "wrote" not in captured.err
    assert captured.out == ""
    assert [r.levelno for r in caplog.records if "wrote" in r.getMessage()] == [logging.DEBUG]
    convert("spinodal", src, tmp_path / "b.zarr", progress=True, quiet=True)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------- bad input
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SourceFileError, match="does not exist"):
        convert("eosl", tmp_path / "nope.npz", tmp_path / "e.zarr")
    with pytest.raises(SourceFileError, match=r"3_EOSL_or_EOSQ_180k\.npz"):
        convert("eosl", tmp_path, tmp_path / "e.zarr")
    write_landscape(tmp_path / "land", counts={"train": 3, "test": 3})
    with pytest.raises(SourceFileError, match=r"val\.h5"):
        convert("toptagging-landscape", tmp_path / "land", tmp_path / "l.zarr")
    with pytest.raises(SourceFileError, match="no LCD files"):
        convert("lcd", tmp_path / "land", tmp_path / "x.zarr")
    assert no_leftovers(tmp_path)


def test_truncated_and_foreign_files(tmp_path):
    """Truncated npz/HDF5 and non-HDF5 files raise SourceFileError naming the file."""
    src, _ = pd4ml_file(tmp_path, "Spinodal")
    data = src.read_bytes()
    cut = tmp_path / "cut" / src.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFileError, match=r"cut.*not a readable \.npz"):
        convert("spinodal", cut, tmp_path / "s.zarr")
    lcd = tmp_path / "lcd"
    write_lcd(lcd)
    victim = lcd / "GammaEscan" / "GammaEscan_1_1.h5"
    victim.write_bytes(victim.read_bytes()[:3000])
    with pytest.raises(SourceFileError, match=r"GammaEscan_1_1\.h5.*HDF5"):
        convert("lcd", lcd, tmp_path / "l.zarr")
    (tmp_path / "land").mkdir()
    for f in ("train.h5", "val.h5", "test.h5"):
        (tmp_path / "land" / f).write_text("not hdf5")
    with pytest.raises(SourceFileError, match=r"train\.h5"):
        convert("toptagging-landscape", tmp_path / "land", tmp_path / "t.zarr")
    assert no_leftovers(tmp_path)


def test_member_truncated_inside_the_archive(tmp_path):
    """An npz whose member data stops early fails while streaming, and nothing is written."""
    arrays = pd4ml_arrays("Spinodal", {"train": 40, "test": 5})
    src = tmp_path / "2_spinodal_29k.npz"
    with zipfile.ZipFile(src, "w") as z:
        for key, arr in arrays.items():
            with z.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array_header_1_0(
                    fh, np.lib.format.header_data_from_array_1_0(arr)
                )
                raw = arr.tobytes()
                fh.write(raw[: len(raw) // 2] if key == "X_train_0" else raw)
    with pytest.raises(SourceFileError, match=r"X_train_0.*truncated"):
        convert("spinodal", src, tmp_path / "s.zarr", block_events=4)
    assert no_leftovers(tmp_path)


def test_missing_key_gives_closest_name(tmp_path):
    arrays = pd4ml_arrays("Belle", {"train": 5, "test": 5})
    arrays["X_train_l"] = arrays.pop("X_train_1")
    src = write_npz(tmp_path / "6_belle_selective_400k.npz", arrays)
    with pytest.raises(SourceKeyError, match=r"'X_train_1' not found.*closest: 'X_train_l'"):
        convert("belle", src, tmp_path / "b.zarr")
    frames = write_landscape(tmp_path / "land")
    frames["val"].rename(columns={"is_signal_new": "is_signal"}).to_hdf(
        tmp_path / "land" / "val.h5", key="table"
    )
    with pytest.raises(SourceKeyError, match=r"'is_signal_new'.*val.h5.*closest: 'is_signal'"):
        convert("toptagging-landscape", tmp_path / "land", tmp_path / "t.zarr")
    write_photons(tmp_path / "p.h5", group="30x31")
    with pytest.raises(SourceKeyError, match=r"'30x30/layers'.*closest: '30x31/layers'"):
        convert("photons", tmp_path / "p.h5", tmp_path / "p.zarr")
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            lambda a: a.update(y_test=a["y_test"][:-1]),
            SchemaError,
            r"unequal.*X_test_0: 11.*y_test: 10",
        ),
        (
            lambda a: a.update(X_train_0=a["X_train_0"][:, :10]),
            SchemaError,
            r"X_train_0.*\(37, 10, 20\).*expects",
        ),
        (lambda a: a.update(y_train=np.full(37, "a")), SchemaError, r"y_train.*not a number"),
        (
            lambda a: a.update(y_train=np.full(37, 0.5)),
            SchemaError,
            r"y_train.*0.5 at event 0.*int64",
        ),
        (
            lambda a: a.update(X_test_0=a["X_test_0"][:0], y_test=a["y_test"][:0]),
            EmptyDatasetError,
            "no events",
        ),
    ],
    ids=["unequal-lengths", "wrong-shape", "strings", "lossy-label", "empty"],
)
def test_inconsistent_members_are_refused(tmp_path, change, error, match):
    arrays = pd4ml_arrays("Spinodal", {"train": 37, "test": 11})
    change(arrays)
    src = write_npz(tmp_path / "2_spinodal_29k.npz", arrays)
    with pytest.raises(error, match=match):
        convert("spinodal", src, tmp_path / "s.zarr")
    assert no_leftovers(tmp_path)


def test_object_arrays_are_never_unpickled(tmp_path):
    arrays = pd4ml_arrays("Spinodal", {"train": 3, "test": 3})
    arrays["y_test"] = np.array([1, "x", None], dtype=object)
    src = tmp_path / "2_spinodal_29k.npz"
    np.savez(src, **arrays)  # savez pickles object arrays
    with pytest.raises(SchemaError, match="unpickle"):
        convert("spinodal", src, tmp_path / "s.zarr")


def test_lcd_files_must_agree(tmp_path):
    """Unequal field lengths, a different shape, an unknown particle: each names the file."""
    write_lcd(tmp_path / "a")
    write_lcd_file(tmp_path / "a" / "ChPiEscan_3_3.h5", 4, 9, hcal=(5, 5, 61))
    with pytest.raises(SchemaError, match=r"'HCAL' in .*ChPiEscan_3_3.h5.*\(5, 5, 61\)"):
        convert("lcd", tmp_path / "a", tmp_path / "x.zarr")
    write_lcd(tmp_path / "b")
    with h5py.File(tmp_path / "b" / "EleEscan" / "EleEscan_1_1.h5", "a") as f:
        del f["target"]
        f["target"] = np.zeros((8, 1, 5), np.float32)
    with pytest.raises(SchemaError, match=r"EleEscan_1_1.h5.*unequal.*target: 8"):
        convert("lcd", tmp_path / "b", tmp_path / "x.zarr")
    write_lcd_file(tmp_path / "c" / "MuonEscan_1_1.h5", 3, 0)
    with pytest.raises(SourceFileError, match="unknown particle 'Muon'"):
        convert("lcd", tmp_path / "c", tmp_path / "x.zarr")
    assert no_leftovers(tmp_path)


def test_nonfinite_refused_unless_allowed(tmp_path):
    arrays = pd4ml_arrays("Airshower", {"train": 20, "test": 6})
    arrays["X_train_1"][13, 4, 4, 0] = np.nan
    src = write_npz(tmp_path / "4_airshower_100k_regression.npz", arrays)
    with pytest.raises(
        NonFiniteError, match=r"'X_train_1' in .*airshower.*event 13.*--allow-nonfinite"
    ):
        convert("airshower", src, tmp_path / "a.zarr", block_events=5)
    assert no_leftovers(tmp_path)
    convert("airshower", src, tmp_path / "a.zarr", allow_nonfinite=True, **QUIET)
    got = fl.open_store(tmp_path / "a.zarr")["train"].read("time")
    np.testing.assert_array_equal(got, arrays["X_train_1"])  # NaN compares equal here
    assert np.isnan(got[13, 4, 4, 0])


def test_existing_store_and_unwritable_output(tmp_path):
    src, _ = pd4ml_file(tmp_path, "EOSL")
    convert("eosl", src, tmp_path / "e.zarr", **QUIET)
    with pytest.raises(StoreExistsError, match="overwrite"):
        convert("eosl", src, tmp_path / "e.zarr", **QUIET)
    convert("eosl", src, tmp_path / "e.zarr", overwrite=True, **QUIET)
    assert len(fl.open_store(tmp_path / "e.zarr")["test"]) == 11
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(StoreWriteError, match="cannot create the directory"):
        convert("eosl", src, tmp_path / "file" / "e.zarr", **QUIET)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch, exc):
    """An interrupt half-way leaves no store, no temporary, and an old store untouched."""
    import fastload.converters._common as common

    write_lcd(tmp_path / "lcd")
    convert("lcd", tmp_path / "lcd", tmp_path / "old.zarr", **QUIET)
    calls = {"n": 0}
    real = common.conform

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise exc("stop")
        return real(*args, **kwargs)

    monkeypatch.setattr("fastload.converters.lcd.conform", flaky)
    with pytest.raises(exc):
        convert("lcd", tmp_path / "lcd", tmp_path / "new.zarr", block_events=4, **QUIET)
    assert calls["n"] == 8
    calls["n"] = 0
    with pytest.raises(exc):
        convert(
            "lcd", tmp_path / "lcd", tmp_path / "old.zarr", block_events=4, overwrite=True, **QUIET
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcd", "old.zarr"]
    assert sum(len(fl.open_store(tmp_path / "old.zarr")[s]) for s in ("train", "val", "test")) == 32


def test_verification_catches_a_corrupted_write(tmp_path, monkeypatch):
    """If what lands in the store differs from the source, VerificationError and no store."""
    from fastload.store._writer import StoreWriter

    src, _ = pd4ml_file(tmp_path, "Belle")
    real_append = StoreWriter.append

    def corrupting(self, split, block):
        block = dict(block)
        block["y"] = 1 - block["y"]
        real_append(self, split, block)

    monkeypatch.setattr(StoreWriter, "append", corrupting)
    with pytest.raises(VerificationError, match="field 'y' of split 'train'"):
        convert("belle", src, tmp_path / "b.zarr", **QUIET)
    assert not (tmp_path / "b.zarr").exists()
    report = convert("belle", src, tmp_path / "b.zarr", verify=False, **QUIET)
    assert not report.verified
    assert (tmp_path / "b.zarr").exists()


# ----------------------------------------------------------------------- CLI
def test_cli_converts_and_refuses_existing_store(tmp_path, capsys):
    src, arrays = pd4ml_file(tmp_path, "Spinodal")
    dst = tmp_path / "s.zarr"
    assert main(["spinodal", str(src), str(dst), "--codec", "zstd", "--block-events", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("wrote ")  # the summary is on stdout, like every converter's
    assert "wrote" not in captured.err
    np.testing.assert_array_equal(fl.open_store(dst)["test"].read("histogram"), arrays["X_test_0"])
    assert main(["spinodal", str(src), str(dst), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a complete store already exists")
    assert "Traceback" not in err
    assert main(["spinodal", str(src), str(dst), "--overwrite", "-q", "--no-verify"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_failures_exit_codes(tmp_path, capsys):
    assert main(["belle", str(tmp_path / "missing.npz"), str(tmp_path / "b.zarr")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    assert main(["nonsense", "a", "b"]) == 2
    assert main(["lcd", str(tmp_path), str(tmp_path / "l.zarr"), "--split", "0.5,0.5"]) == 2
    assert "TRAIN,VAL,TEST" in capsys.readouterr().err
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in [*names(), "generic", "ahcal", "premix"])


def test_cli_split_and_photon_options(tmp_path):
    write_photons(tmp_path / "g.h5", n=20, group="grp")
    rc = main(
        [
            "photons",
            str(tmp_path / "g.h5"),
            str(tmp_path / "p.zarr"),
            "--group",
            "grp",
            "--split",
            "0.5,0.25,0.25",
            "--split-seed",
            "3",
            "-q",
        ]
    )
    assert rc == 0
    store = fl.open_store(tmp_path / "p.zarr")
    assert [len(store[s]) for s in store.splits] == [10, 5, 5]


def test_cli_dispatches_external_converters(monkeypatch, capsys):
    """generic/ahcal/premix go to <module>.main(argv); a missing module is a clean error."""
    import fastload.converters._cli as cli

    seen = {}
    fake = types.ModuleType("fastload.converters._fake_for_test")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 7
    monkeypatch.setitem(sys.modules, "fastload.converters._fake_for_test", fake)
    monkeypatch.setitem(cli.EXTERNAL, "premix", ("fastload.converters._fake_for_test", "test"))
    assert main(["premix", "a", "--b"]) == 7
    assert seen["argv"] == ["a", "--b"]
    monkeypatch.setitem(cli.EXTERNAL, "ahcal", ("converters._absent_module_xyz", "AHCAL hits"))
    assert main(["ahcal", "x", "y"]) == 2
    assert "not available" in capsys.readouterr().err


def test_python_dash_m_converters(tmp_path):
    """The module entry point runs in a fresh interpreter; errors carry no traceback."""
    src, _ = pd4ml_file(tmp_path, "EOSL")
    cmd = [sys.executable, "-m", "converters", "eosl", str(src), str(tmp_path / "e.zarr")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_parse_bytes():
    assert parse_bytes("4MiB") == 4 * 2**20
    assert parse_bytes("8MB") == 8_000_000
    assert parse_bytes("1234") == 1234
    with pytest.raises(Exception, match="size"):
        parse_bytes("four")
