"""ROOT through the generic converter: real files no one here wrote, RNTuple, synthetic AHCAL.

Every converted value is compared with what uproot reads directly.  The real
files (scikit-hep-testdata, BSD-3-Clause) live in tests/data/root/.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import fastload as fl
from fastload.converters import ahcal
from fastload.converters._spec import load_spec
from fastload.converters.generic import convert, main, plan_conversion, split_assignment
from fastload.errors import ConfigError, SourceFileError
from fastload.synthetic import make_ahcal

DATA = Path(__file__).resolve().parent / "data" / "root"


def spec_file(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def assert_ragged_equal(got: fl.Ragged | np.ndarray, branches: list[ak.Array], dtype: str) -> None:
    """A stored ragged field equals the jagged branches joined row-wise (one column per branch)."""
    assert isinstance(got, fl.Ragged)
    np.testing.assert_array_equal(got.counts, ak.to_numpy(ak.num(branches[0], axis=1)))
    columns = [ak.to_numpy(ak.flatten(b, axis=1)).astype(dtype) for b in branches]
    expected = columns[0] if len(columns) == 1 else np.stack(columns, axis=-1)
    np.testing.assert_array_equal(got.values, expected)


def single_split(files: str, tree: str, fields: str, block_events: int) -> str:
    return f"""
        [source]
        files = ["{files}"]
        tree = "{tree}"
        block_events = {block_events}

        {textwrap.dedent(fields)}

        [label]
        from = "none"

        [split]
        by = "fraction"
        fractions = {{ all = 1.0 }}
    """


# ----------------------------------------------------------------- real files
def test_hzz_jagged_muons_and_padded_jets_equal_uproot(tmp_path: Path) -> None:
    """uproot-HZZ: jagged Muon_* as one ragged field, Jet_* padded with a mask, flat MET and counts."""
    fields = """
        [fields.muons]
        columns = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E"]
        ragged = true

        [fields.muon_charge]
        source = "Muon_Charge"
        ragged = true

        [fields.jets]
        columns = ["Jet_Px", "Jet_Py", "Jet_Pz", "Jet_E"]
        pad = 3

        [fields.jet_id]
        source = "Jet_ID"
        pad = 3
        mask = false

        [fields.njet]
        source = "NJet"

        [fields.met]
        columns = ["MET_px", "MET_py"]

        [fields.trigger]
        source = "triggerIsoMu24"
    """
    spec = spec_file(tmp_path, single_split("uproot-HZZ.root", "events", fields, 500))
    store = fl.open_store(convert(load_spec(spec), tmp_path / "hzz.zarr", source_dir=DATA))
    sp = store["all"]
    t = uproot.open(DATA / "uproot-HZZ.root")["events"]
    assert len(sp) == t.num_entries == 2421
    a = t.arrays(library="ak")
    assert_ragged_equal(
        sp.read("muons"), [a[k] for k in ("Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E")], "f4"
    )
    assert_ragged_equal(sp.read("muon_charge"), [a["Muon_Charge"]], "i4")
    got_jets, mask = sp.read("jets"), sp.read("jets_mask")
    assert got_jets.shape == (2421, 3, 4)
    njet = ak.to_numpy(a["NJet"])
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(njet, 3))
    # padded by hand: the first three jets of each event, zeros after
    padded = [
        ak.to_numpy(ak.fill_none(ak.pad_none(a[b], 3, clip=True), 0))
        for b in ("Jet_Px", "Jet_Py", "Jet_Pz", "Jet_E")
    ]
    np.testing.assert_array_equal(got_jets, np.stack(padded, axis=-1))
    np.testing.assert_array_equal(
        sp.read("jet_id"), ak.to_numpy(ak.fill_none(ak.pad_none(a["Jet_ID"], 3, clip=True), False))
    )
    assert sp.read("jet_id").dtype == np.bool_
    assert "jet_id_mask" not in store.fields
    np.testing.assert_array_equal(sp.read("njet"), njet)
    np.testing.assert_array_equal(
        sp.read("met"), np.stack([ak.to_numpy(a["MET_px"]), ak.to_numpy(a["MET_py"])], -1)
    )
    np.testing.assert_array_equal(sp.read("trigger"), ak.to_numpy(a["triggerIsoMu24"]))


def test_nanoaod_jets_and_genparts_equal_uproot(tmp_path: Path) -> None:
    """CMS NanoAOD ttbar: Jet_pt/eta/phi/mass and GenPart_* ragged, unsigned event ids kept exact."""
    fields = """
        [fields.jets]
        columns = ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass"]
        ragged = true

        [fields.genpart]
        columns = ["GenPart_pt", "GenPart_eta", "GenPart_phi", "GenPart_mass"]
        ragged = true

        [fields.genpart_pdgid]
        source = "GenPart_pdgId"
        ragged = true

        [fields.njet]
        source = "nJet"

        [fields.event]
        source = "event"
        role = "aux"

        [fields.run]
        source = "run"
        role = "aux"
    """
    spec = spec_file(tmp_path, single_split("nanoAOD_*.root", "Events", fields, 64))
    store = fl.open_store(convert(load_spec(spec), tmp_path / "nano.zarr", source_dir=DATA))
    sp = store["all"]
    t = uproot.open(DATA / "nanoAOD_2015_CMS_Open_Data_ttbar.root")["Events"]
    names = [
        "Jet_pt",
        "Jet_eta",
        "Jet_phi",
        "Jet_mass",
        "GenPart_pt",
        "GenPart_eta",
        "GenPart_phi",
        "GenPart_mass",
    ]
    a = t.arrays([*names, "GenPart_pdgId", "nJet", "event", "run"], library="ak")
    assert len(sp) == 200
    assert_ragged_equal(sp.read("jets"), [a[k] for k in names[:4]], "f4")
    assert_ragged_equal(sp.read("genpart"), [a[k] for k in names[4:]], "f4")
    assert_ragged_equal(sp.read("genpart_pdgid"), [a["GenPart_pdgId"]], "i4")
    assert sp.max_len("jets") == int(ak.max(ak.num(a["Jet_pt"])))
    assert sp.read("event").dtype == np.uint64
    np.testing.assert_array_equal(sp.read("event"), ak.to_numpy(a["event"]))
    np.testing.assert_array_equal(sp.read("run"), ak.to_numpy(a["run"]))
    np.testing.assert_array_equal(sp.read("njet"), ak.to_numpy(a["nJet"]))


def test_zmumu_flat_branches_and_string_branch_refused(tmp_path: Path) -> None:
    """uproot-Zmumu: flat float64/int32 branches round-trip; its string branch is refused by name."""
    fields = """
        [fields.mu1]
        columns = ["E1", "px1", "py1", "pz1"]

        [fields.mu2]
        columns = ["E2", "px2", "py2", "pz2"]

        [fields.charges]
        columns = ["Q1", "Q2"]
        dtype = "int8"

        [fields.mass]
        source = "M"
    """
    spec = spec_file(tmp_path, single_split("uproot-Zmumu.root", "events", fields, 1000))
    store = fl.open_store(convert(load_spec(spec), tmp_path / "z.zarr", source_dir=DATA))
    a = uproot.open(DATA / "uproot-Zmumu.root")["events"].arrays(library="np")
    sp = store["all"]
    np.testing.assert_array_equal(
        sp.read("mu1"), np.stack([a[k] for k in ("E1", "px1", "py1", "pz1")], -1)
    )
    np.testing.assert_array_equal(
        sp.read("mu2"), np.stack([a[k] for k in ("E2", "px2", "py2", "pz2")], -1)
    )
    np.testing.assert_array_equal(
        sp.read("charges"), np.stack([a["Q1"], a["Q2"]], -1).astype(np.int8)
    )
    np.testing.assert_array_equal(sp.read("mass"), a["M"])
    assert sp.read("mass").dtype == np.float64

    bad = spec_file(
        tmp_path,
        single_split("uproot-Zmumu.root", "events", '[fields.t]\nsource = "Type"\n', 1000),
        "bad.toml",
    )
    with pytest.raises(
        ConfigError, match=r"bad\.toml:\d+ \[fields\.t\.source\].*'Type'.*cannot be stored"
    ):
        convert(load_spec(bad), tmp_path / "bad.zarr", source_dir=DATA)


# ----------------------------------------------------------------- written here
def test_synthetic_ttree_and_rntuple_written_by_uproot(tmp_path: Path) -> None:
    """A TTree with a counter branch and fixed-size arrays, and an RNTuple, both read back exactly."""
    rng = np.random.default_rng(5)
    n = 300
    counts = rng.integers(0, 7, n)
    energy = ak.unflatten(rng.normal(size=counts.sum()).astype(np.float32), counts)
    pos = rng.normal(size=(n, 3))
    with uproot.recreate(tmp_path / "tree.root") as f:
        f.mktree("t", {"hit_e": energy.type, "pos": np.dtype(("f8", (3,))), "id": "i8"})
        f["t"].extend({"hit_e": energy, "pos": pos, "id": np.arange(n)})
    with uproot.recreate(tmp_path / "ntuple.root") as f:
        f.mkrntuple("nt", ak.Array({"hit_e": energy, "id": np.arange(n)}))
    for name, obj in (("tree.root", "t"), ("ntuple.root", "nt")):
        fields = '[fields.hits]\nsource = "hit_e"\nragged = true\n\n[fields.id]\nsource = "id"\n'
        if obj == "t":
            fields += '\n[fields.pos]\nsource = "pos"\nshape = [3]\n'
        spec = spec_file(tmp_path, single_split(name, obj, fields, 64), f"{obj}.toml")
        sp = fl.open_store(convert(load_spec(spec), tmp_path / f"{obj}.zarr", source_dir=tmp_path))[
            "all"
        ]
        assert_ragged_equal(sp.read("hits"), [energy], "f4")
        np.testing.assert_array_equal(sp.read("id"), np.arange(n))
        if obj == "t":
            np.testing.assert_array_equal(sp.read("pos"), pos)
    assert "RNTuple" in uproot.open(tmp_path / "ntuple.root").classnames()["nt;1"]


# ----------------------------------------------------------------- AHCAL end to end
@pytest.fixture(scope="module")
def ahcal_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ahcal")
    make_ahcal(src, n_events=600, n_files=2, seed=3)
    return src


def test_ahcal_root_to_store_equals_uproot(ahcal_src: Path, tmp_path: Path) -> None:
    """The shipped AHCAL spec: hits (x, y, z, energy, time) per event, n_hits and beam_energy as uproot reads them."""
    assert ahcal.main([str(ahcal_src), str(tmp_path / "ahcal.zarr"), "--serial", "-q"]) == 0
    store = fl.open_store(tmp_path / "ahcal.zarr")
    assert store.task == "regression"
    assert store.fields["beam_energy"].role == "label"
    assert store.fields["hits"].ragged
    assert store.fields["hits"].shape == (5,)
    plan = plan_conversion(load_spec(ahcal.spec_path("root")), ahcal_src)
    trees = [uproot.open(f.path)["bigtree"].arrays(library="ak") for f in plan.files]
    hit_branches = ["ahc_hitX", "ahc_hitY", "ahc_hitZ", "ahc_hitEnergy", "ahc_hitTime"]
    total = 0
    for i, split in enumerate(plan.splits):
        rows = [
            trees[b.file][np.arange(b.start, b.stop)[split_assignment(plan, b) == i]]
            for b in plan.blocks
        ]
        expected = ak.concatenate(rows)
        sp = store[split]
        total += len(sp)
        assert_ragged_equal(sp.read("hits"), [expected[k] for k in hit_branches], "f4")
        np.testing.assert_array_equal(sp.read("n_hits"), ak.to_numpy(expected["ahc_nHits"]))
        np.testing.assert_array_equal(sp.read("beam_energy"), ak.to_numpy(expected["beamEnergy"]))
    assert total == 600
    assert set(store.splits) == {"train", "val", "test"}
    assert [f["name"] for f in store.provenance["files"]] == ["ahcal_001.root", "ahcal_002.root"]


def test_ahcal_npz_release_gives_the_same_chunks(ahcal_src: Path, tmp_path: Path) -> None:
    """The .npz twin, through ahcal-npz.toml, stores byte-identical chunks to the ROOT files."""
    assert (
        ahcal.main(
            [str(ahcal_src), str(tmp_path / "root.zarr"), "--serial", "-q", "--format", "root"]
        )
        == 0
    )
    assert (
        ahcal.main(
            [str(ahcal_src), str(tmp_path / "npz.zarr"), "--serial", "-q", "--format", "npz"]
        )
        == 0
    )
    root = tmp_path / "root.zarr"
    chunks = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and "c" in p.relative_to(root).parts
    )
    assert chunks
    for rel in chunks:
        assert (tmp_path / "root.zarr" / rel).read_bytes() == (
            tmp_path / "npz.zarr" / rel
        ).read_bytes(), rel


# ----------------------------------------------------------------- bad input
def test_corrupt_basket_mid_run_names_the_file_and_leaves_no_store(tmp_path: Path) -> None:
    """A damaged basket read after earlier blocks were written fails the run; no store appears."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DATA / "uproot-HZZ.root", src / "hzz.root")
    branch = uproot.open(src / "hzz.root")["events"]["Muon_Px"]
    seek = int(branch.member("fBasketSeek")[1])  # the basket of entries 2231..2421
    with open(src / "hzz.root", "r+b") as fh:
        fh.seek(seek + 120)
        fh.write(bytes(range(200, 256)) * 2)
    spec = spec_file(
        tmp_path,
        single_split(
            "hzz.root", "events", '[fields.mu]\nsource = "Muon_Px"\nragged = true\n', 1000
        ),
    )
    with pytest.raises(SourceFileError, match=r"hzz\.root") as info:
        convert(load_spec(spec), tmp_path / "out.zarr", source_dir=src)
    assert "Muon_Px" in str(info.value)
    assert not any(".zarr" in p.name for p in tmp_path.iterdir())
    assert (
        main([str(spec), str(tmp_path / "out.zarr"), "--source-dir", str(src), "--serial", "-q"])
        == 1
    )
    assert not any(".zarr" in p.name for p in tmp_path.iterdir())


def test_columns_with_different_counters_are_refused_before_writing(tmp_path: Path) -> None:
    """Jet_* and Muon_* have different counters, so they cannot share the rows of one field."""
    fields = '[fields.mixed]\ncolumns = ["Jet_Px", "Muon_Px"]\nragged = true\n'
    spec = spec_file(tmp_path, single_split("uproot-HZZ.root", "events", fields, 500))
    with pytest.raises(
        ConfigError,
        match=r"spec\.toml:\d+ \[fields\.mixed\.columns\].*different counters \['NJet', 'NMuon'\]",
    ):
        convert(load_spec(spec), tmp_path / "x.zarr", source_dir=DATA)
    assert not (tmp_path / "x.zarr").exists()


def test_command_line_dispatches_ahcal_and_generic(ahcal_src: Path, tmp_path: Path) -> None:
    """`python -m converters ahcal|generic ...` reach this converter (through the CLI registry)."""
    from fastload.converters._cli import main as cli

    assert cli(["ahcal", str(ahcal_src), str(tmp_path / "a.zarr"), "--serial", "-q"]) == 0
    spec = str(ahcal.spec_path("root"))
    args = [
        "generic",
        spec,
        str(tmp_path / "g.zarr"),
        "--source-dir",
        str(ahcal_src),
        "--serial",
        "-q",
    ]
    assert cli(args) == 0
    assert cli(args) == 2  # the store exists now: refused without --overwrite
    a, g = fl.open_store(tmp_path / "a.zarr"), fl.open_store(tmp_path / "g.zarr")
    np.testing.assert_array_equal(a["val"].read("hits").values, g["val"].read("hits").values)
