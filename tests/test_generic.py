"""Generic spec-driven conversion: HDF5, pandas tables, npy/npz; spec and source errors.

Every round trip compares each stored value with what h5py/pandas/numpy read
from the originals directly.  Bad specs must fail before anything is written,
naming the spec line and the source.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import fastload as fl
from fastload.converters._spec import load_spec
from fastload.converters.generic import convert, main, plan_conversion, split_assignment
from fastload.errors import ConfigError, SourceFileError, SourceKeyError


def write_spec(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def leftovers(directory: Path) -> list[str]:
    """Anything a failed conversion left beside the target (stores or temporaries)."""
    return sorted(p.name for p in directory.iterdir() if ".zarr" in p.name)


def expected_by_split(spec_path: Path, source_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Per split, (file index, event indices) in store order, from the plan's split rule."""
    plan = plan_conversion(load_spec(spec_path), source_dir)
    out: dict[str, list[tuple[int, np.ndarray]]] = {s: [] for s in plan.splits}
    for block in plan.blocks:
        which = split_assignment(plan, block)
        for i, split in enumerate(plan.splits):
            events = np.arange(block.start, block.stop)[which == i]
            if events.size:
                out[split].append((block.file, events))
    return out


# ----------------------------------------------------------------- HDF5, per-class directories
def make_class_dirs(root: Path, n: int = 37) -> dict[str, list[Path]]:
    """gamma/ and pi0/ with two HDF5 files each: fixed images, energies and variable-length hits."""
    rng = np.random.default_rng(1)
    files: dict[str, list[Path]] = {}
    vlen = h5py.vlen_dtype(np.float32)
    for cls in ("gamma", "pi0"):
        (root / cls).mkdir(parents=True)
        files[cls] = []
        for part in (0, 1):
            path = root / cls / f"{cls}_{part}.h5"
            with h5py.File(path, "w") as f:
                g = f.create_group("showers")
                g["layers"] = rng.normal(size=(n, 4, 4)).astype(np.float32)
                g["energy"] = rng.uniform(1, 100, n)
                hits = g.create_dataset("hits", (n,), dtype=vlen)
                for i in range(n):
                    hits[i] = rng.normal(size=rng.integers(0, 6)).astype(np.float32)
            files[cls].append(path)
    return files


HDF5_SPEC = """
    [dataset]
    name = "Showers"
    task = "classification"

    [source]
    files = ["*/*.h5"]
    group = "showers"
    block_events = 8

    [fields.layers]
    source = "layers"
    shape = [4, 4]

    [fields.energy]
    source = "energy"
    dtype = "float32"

    [fields.hits]
    source = "hits"
    ragged = true

    [fields.hits_padded]
    source = "hits"
    pad = 3
    pad_value = -1.0

    [label]
    from = "directory"
    classes = ["gamma", "pi0"]

    [split]
    by = "files"
    files = { train = ["*/*_0.h5"], test = ["*/*_1.h5"] }

    [store]
    chunk_len = 16
"""


def test_hdf5_directory_labels_file_split_ragged_and_padding(tmp_path: Path) -> None:
    """Per-class directories give labels, files give splits; every value equals h5py's."""
    files = make_class_dirs(tmp_path / "src")
    spec = write_spec(tmp_path / "showers.toml", HDF5_SPEC)
    assert (
        main(
            [
                str(spec),
                str(tmp_path / "out.zarr"),
                "--source-dir",
                str(tmp_path / "src"),
                "--serial",
                "-q",
            ]
        )
        == 0
    )
    store = fl.open_store(tmp_path / "out.zarr")
    assert store.labels == ["gamma", "pi0"]
    assert store.fields["y"].role == "label"
    assert store.fields["hits_padded_mask"].dtype == np.bool_
    for split, part in (("train", 0), ("test", 1)):
        sp = store[split]
        with h5py.File(files["gamma"][part]) as g, h5py.File(files["pi0"][part]) as p:
            srcs = [g["showers"], p["showers"]]
            np.testing.assert_array_equal(
                sp.read("layers"), np.concatenate([s["layers"][:] for s in srcs])
            )
            np.testing.assert_array_equal(
                sp.read("energy"), np.concatenate([s["energy"][:] for s in srcs]).astype(np.float32)
            )
            lists = [np.asarray(h, np.float32) for s in srcs for h in s["hits"][:]]
        np.testing.assert_array_equal(sp.read("y"), np.repeat([0, 1], len(lists) // 2))
        hits = sp.read("hits")
        assert isinstance(hits, fl.Ragged)
        assert len(hits) == len(lists)
        for i, expected in enumerate(lists):
            np.testing.assert_array_equal(hits[i], expected)
        padded, mask = sp.read("hits_padded"), sp.read("hits_padded_mask")
        for i, expected in enumerate(lists):
            k = min(3, len(expected))
            np.testing.assert_array_equal(padded[i, :k], expected[:k])
            assert (padded[i, k:] == -1).all()
            assert mask[i].sum() == k
        assert sp.max_len("hits") == max(len(x) for x in lists)


# ----------------------------------------------------------------- pandas tables
def test_pandas_table_columns_stacked_and_seeded_fraction(tmp_path: Path) -> None:
    """Columns of a pandas HDF5 table stack into one field; the seeded split keeps source order."""
    rng = np.random.default_rng(2)
    n = 500
    frame = pd.DataFrame(
        {
            "px": rng.normal(size=n),
            "py": rng.normal(size=n),
            "pz": rng.normal(size=n),
            "E": rng.uniform(1, 5, n),
            "is_signal": rng.integers(0, 2, n),
            "event": np.arange(n, dtype=np.int64),
        }
    )
    frame.to_hdf(tmp_path / "jets.h5", key="jets", format="table")
    spec = write_spec(
        tmp_path / "jets.toml",
        """
        [source]
        files = ["jets.h5"]
        format = "pandas"
        key = "jets"
        block_events = 64

        [fields.p4]
        columns = ["E", "px", "py", "pz"]
        dtype = "float32"

        [fields.event]
        source = "event"
        role = "aux"

        [fields.y]
        source = "is_signal"
        dtype = "int8"

        [label]
        from = "field"
        field = "y"
        classes = ["background", "signal"]

        [split]
        by = "fraction"
        fractions = { train = 0.6, val = 0.2, test = 0.2 }
        seed = 7
        """,
    )
    path = convert(load_spec(spec), tmp_path / "jets.zarr")
    store = fl.open_store(path)
    assert store.labels == ["background", "signal"]
    assert store.fields["y"].role == "label"
    seen = []
    for split in ("train", "val", "test"):
        events = store[split].read("event")
        assert np.all(np.diff(events) > 0)  # source order kept inside a split
        seen.append(events)
        expected = frame.iloc[events]
        np.testing.assert_array_equal(
            store[split].read("p4"), expected[["E", "px", "py", "pz"]].to_numpy().astype(np.float32)
        )
        np.testing.assert_array_equal(
            store[split].read("y"), expected["is_signal"].to_numpy().astype(np.int8)
        )
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    assert 0.5 < len(store["train"]) / n < 0.7


def test_fraction_split_does_not_depend_on_block_size(tmp_path: Path) -> None:
    """The seeded assignment hashes global event indices, so block_events changes nothing."""
    np.save(tmp_path / "x.npy", np.arange(1000, dtype=np.int32))
    base = [
        "--set",
        'source.files=["x.npy"]',
        "--set",
        'fields.x.source="x"',
        "--set",
        'label.from="none"',
    ]
    split = [
        "--set",
        "split.by=fraction",
        "--set",
        "split.fractions={a = 0.5, b = 0.5}",
        "-q",
        "--serial",
    ]
    for blocks in (7, 1000):
        dst = tmp_path / f"b{blocks}.zarr"
        assert (
            main(
                [
                    str(dst),
                    "--source-dir",
                    str(tmp_path),
                    *base,
                    *split,
                    "--block-events",
                    str(blocks),
                ]
            )
            == 0
        )
    small, large = fl.open_store(tmp_path / "b7.zarr"), fl.open_store(tmp_path / "b1000.zarr")
    for s in ("a", "b"):
        np.testing.assert_array_equal(small[s].read("x"), large[s].read("x"))
    assert len(small["a"]) + len(small["b"]) == 1000


# ----------------------------------------------------------------- numpy
def test_npz_flat_values_with_counts_and_npy_directories(tmp_path: Path) -> None:
    """.npz flat hits + counts become a ragged field; .npy directories are one source each."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, 40)
    hits = rng.normal(size=(counts.sum(), 2)).astype(np.float32)
    np.savez(tmp_path / "run.npz", hits=hits, n=counts, e=rng.normal(size=40))
    spec = write_spec(
        tmp_path / "npz.toml",
        """
        [source]
        files = ["run.npz"]
        block_events = 6

        [fields.hits]
        source = "hits"
        counts = "n"
        ragged = true

        [fields.e]
        source = "e"

        [label]
        from = "none"

        [split]
        by = "fraction"
        fractions = { train = 1.0 }
        """,
    )
    store = fl.open_store(convert(load_spec(spec), tmp_path / "npz.zarr"))
    got = store["train"].read("hits")
    np.testing.assert_array_equal(got.values, hits)
    np.testing.assert_array_equal(got.counts, counts)
    assert store.fields["hits"].shape == (2,)
    np.testing.assert_array_equal(store["train"].read("e"), np.load(tmp_path / "run.npz")["e"])

    for split, n in (("train", 30), ("test", 12)):
        (tmp_path / "pd4ml" / split).mkdir(parents=True)
        np.save(tmp_path / "pd4ml" / split / "X.npy", rng.normal(size=(n, 3, 2)).astype(np.float32))
        np.save(tmp_path / "pd4ml" / split / "y.npy", rng.integers(0, 2, n))
    spec = write_spec(
        tmp_path / "npy.toml",
        """
        [source]
        files = ["pd4ml/*"]

        [fields.X]
        source = "X"

        [fields.y]
        source = "y"

        [label]
        from = "field"
        field = "y"

        [split]
        by = "files"
        files = { train = ["pd4ml/train"], test = ["pd4ml/test"] }
        """,
    )
    store = fl.open_store(convert(load_spec(spec), tmp_path / "npy.zarr"))
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            store[split].read("X"), np.load(tmp_path / "pd4ml" / split / "X.npy")
        )
        np.testing.assert_array_equal(
            store[split].read("y"), np.load(tmp_path / "pd4ml" / split / "y.npy")
        )
    assert len(store.provenance["files"]) == 4  # every .npy checksummed


def test_spec_built_from_flags_only(tmp_path: Path) -> None:
    """Without a TOML file, --set flags give the whole spec."""
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float64).reshape(6, 2))
    flags = [
        "--set", 'source.files=["a.npy"]',
        "--set", "fields.a.source=a",
        "--set", "fields.a.dtype=float32",
        "--set", "label.from=none",
        "--set", "split.by=fraction",
        "--set", "split.fractions={train = 1.0}",
    ]  # fmt: skip
    assert (
        main([str(tmp_path / "a.zarr"), "--source-dir", str(tmp_path), "--serial", "-q", *flags])
        == 0
    )
    store = fl.open_store(tmp_path / "a.zarr")
    np.testing.assert_array_equal(
        store["train"].read("a"), np.arange(12, dtype=np.float32).reshape(6, 2)
    )


# ----------------------------------------------------------------- bad specs
GOOD = dict(
    fields='[fields.layers]\nsource = "layers"\n',
    label='[label]\nfrom = "directory"\n',
)


@pytest.mark.parametrize(
    ("fields", "label", "error", "line", "words"),
    [
        (
            '[fields.layers]\nsorce = "layers"\n',
            GOOD["label"],
            ConfigError,
            9,
            ["unknown key 'sorce'", "closest: 'source'"],
        ),
        (
            '[fields.layers]\nsource = "layres"\n',
            GOOD["label"],
            SourceKeyError,
            9,
            ["'layres' not found", "closest: 'layers'", "gamma_0.h5"],
        ),
        (
            '[fields.layers]\nsource = "layers"\nshape = [16]\n',
            GOOD["label"],
            ConfigError,
            10,
            ["declared shape [16]", "[4, 4]", "gamma_0.h5"],
        ),
        (
            '[fields.hits]\nsource = "hits"\n',
            GOOD["label"],
            ConfigError,
            9,
            ["is jagged", "pad = N", "gamma_0.h5"],
        ),
        (
            '[fields.energy]\nsource = "energy"\npad = 4\n',
            GOOD["label"],
            ConfigError,
            10,
            ["needs a jagged key"],
        ),
        (GOOD["fields"], "", ConfigError, None, ["missing [label] rule"]),
        (
            GOOD["fields"],
            '[label]\nfrom = "field"\nfield = "y"\n',
            ConfigError,
            13,
            ["'y' is not declared"],
        ),
        (GOOD["fields"], '[label]\nfrom = "filename"\n', ConfigError, 12, ["from must be one of"]),
        (
            '[fields.layers]\nsource = "layers"\ndtype = "int16"\n',
            GOOD["label"],
            ConfigError,
            10,
            ["would truncate"],
        ),
    ],
)
def test_bad_spec_fails_before_writing(
    tmp_path: Path,
    fields: str,
    label: str,
    error: type,
    line: int | None,
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each spec mistake raises the right error naming the spec line (and the source), writing nothing."""
    make_class_dirs(tmp_path / "src", n=4)
    text = (
        '[source]\nfiles = ["*/*.h5"]\ngroup = "showers"\n\n'
        '[split]\nby = "files"\nfiles = { train = ["gamma/*", "pi0/*"] }\n'
        f"{fields}\n{label}"
    )
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    with pytest.raises(error) as info:
        convert(load_spec(spec), tmp_path / "out.zarr", source_dir=tmp_path / "src")
    message = str(info.value)
    assert f"bad.toml:{line}" in message if line else "bad.toml" in message
    for word in words:
        assert word in message
    assert leftovers(tmp_path) == []
    # the command line refuses the same spec with exit status 2 and one error line
    args = [
        str(spec),
        str(tmp_path / "out.zarr"),
        "--source-dir",
        str(tmp_path / "src"),
        "--serial",
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert leftovers(tmp_path) == []


def test_spec_locator_names_lines_of_inline_tables_and_flags(tmp_path: Path) -> None:
    """Keys inside inline tables and keys set by --set are located for messages."""
    spec = write_spec(
        tmp_path / "s.toml",
        """
        [source]
        files = ["x.npy"]
        [fields.x]
        source = "x"
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { train = 0.5, test = 0.6 }
        """,
    )
    with pytest.raises(ConfigError, match=r"s\.toml:9 \[split\.fractions\].*sum to 1\.1"):
        load_spec(spec)
    with pytest.raises(ConfigError, match=r"--set store\.codec=snappy \[store\.codec\]"):
        load_spec(spec, overrides=["split.fractions={train = 1.0}", "store.codec=snappy"])


def test_unreadable_file_mid_run_names_it_and_leaves_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt data chunk in the second file fails the run after the first was written; no store remains."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        with h5py.File(src / f"part{i}.h5", "w") as f:
            f.create_dataset(
                "x", data=np.arange(4000, dtype=np.float64) + i, chunks=(500,), compression="gzip"
            )
    with h5py.File(src / "part1.h5", "r") as f:
        offset = f["x"].id.get_chunk_info(3).byte_offset
    with open(src / "part1.h5", "r+b") as fh:  # garbage in the middle of a compressed chunk
        fh.seek(offset + 10)
        fh.write(b"\xff" * 64)
    spec = write_spec(
        tmp_path / "s.toml",
        """
        [source]
        files = ["*.h5"]
        block_events = 500
        [fields.x]
        source = "x"
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { train = 1.0 }
        """,
    )
    with pytest.raises(SourceFileError, match=r"part1\.h5"):
        convert(load_spec(spec), tmp_path / "out.zarr", source_dir=src)
    assert leftovers(tmp_path) == []
    assert (
        main([str(spec), str(tmp_path / "out.zarr"), "--source-dir", str(src), "--serial", "-q"])
        == 1
    )
    assert "part1.h5" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_labels_from_file_globs_and_from_a_file_name_pattern(tmp_path: Path) -> None:
    """One label per source: class globs for classification, a regex-captured number for regression."""
    sizes = {"gamma_a": 5, "gamma_b": 3, "pion_a": 4}
    for name, n in sizes.items():  # .npy directories: one source each, key x
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", np.arange(n, dtype=np.int32))
        (tmp_path / f"run_{10 * n}GeV").mkdir()
        np.save(tmp_path / f"run_{10 * n}GeV" / "x.npy", np.arange(n, dtype=np.int32))
    common = [
        "fields.x.source=x",
        "label.from=file",
        "split.by=fraction",
        "split.fractions={train = 1.0}",
    ]
    classes = ['source.files=["*_a", "*_b"]', 'label.classes={pion = "pion_*", gamma = "gamma_*"}']
    store = fl.open_store(
        convert(
            load_spec(None, overrides=[*common, *classes]),
            tmp_path / "cls.zarr",
            source_dir=tmp_path,
        )
    )
    assert store.labels == ["pion", "gamma"]
    np.testing.assert_array_equal(store["train"].read("y"), [1] * 5 + [1] * 3 + [0] * 4)

    pattern = [
        'source.files=["run_*"]',
        "dataset.task=regression",
        "label.pattern=run_(?P<label>[0-9]+)GeV",
    ]
    store = fl.open_store(
        convert(
            load_spec(None, overrides=[*common, *pattern]),
            tmp_path / "reg.zarr",
            source_dir=tmp_path,
        )
    )
    got = store["train"].read("y")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(
        got, [30] * 3 + [40] * 4 + [50] * 5
    )  # sources in sorted path order


def test_counts_that_disagree_with_the_values_are_refused(tmp_path: Path) -> None:
    """Flat values whose count key sums to another length fail naming both keys."""
    np.savez(tmp_path / "bad.npz", v=np.arange(10.0), n=np.array([3, 3, 3]))
    spec = load_spec(
        None,
        overrides=[
            'source.files=["bad.npz"]',
            "fields.v.source=v",
            "fields.v.counts=n",
            "fields.v.ragged=true",
            "label.from=none",
            "split.by=fraction",
            "split.fractions={train = 1.0}",
        ],
    )
    with pytest.raises(SourceFileError, match=r"'n' account for 9 rows but 'v' holds 10"):
        convert(spec, tmp_path / "bad.zarr", source_dir=tmp_path)
    assert leftovers(tmp_path) == []
