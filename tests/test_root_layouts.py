"""Real ROOT layouts: every real file converts with the spec ``inspect`` writes; collections.

The done-criterion of the ROOT path: each ROOT file in the shared data folder
(``shared/data/root`` beside the checkout: CMS NanoAOD, an RNTuple written by ROOT's
RNTupleImporter, a fully split object tree, uproot's HZZ and Z->mumu samples) is inspected,
converted with the starter spec as printed, and every numeric branch -- as uproot's own
reading types it -- is a field equal to uproot's array.  TClonesArray-style trees (a
counter named like the collection, members ``Coll.member`` / ``Coll/Coll.member``) are
written here with uproot.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import fastload as fl
from fastload._cli import main as fastload_main
from fastload.converters._cli import main as converters_main
from fastload.converters._sources import open_reader
from fastload.converters._spec import load_spec
from fastload.converters.generic import convert, plan_conversion, split_assignment
from fastload.converters.inspection import inspect_source, starter_spec
from fastload.errors import ConfigError
from fastload.store import field_name, field_names

ROOT = Path(__file__).resolve().parents[1]
IN_REPO = ROOT / "tests" / "data" / "root"


def shared_root_data() -> Path | None:
    """``shared/data/root`` in the nearest ancestor of the checkout that has one."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "data" / "root"
        if candidate.is_dir():
            return candidate
    return None


RNTUPLE = "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"
FULLSPLIT = "uproot-small-evnt-tree-fullsplit.root"
#: the shared folder when it is beside the checkout, else the copies kept in tests/data/root
#: (which include the RNTuple and the fully split tree, so a clean clone tests them too)
SHARED = shared_root_data() or IN_REPO
#: every real file: the copies kept in the repository, and the shared folder's
REAL_PATHS = {p.name: p for p in IN_REPO.glob("*.root")} | {
    p.name: p for p in SHARED.glob("*.root")
}
REAL = sorted(REAL_PATHS)
needs_shared = pytest.mark.skipif(
    not (SHARED / RNTUPLE).is_file() or not (SHARED / FULLSPLIT).is_file(),
    reason="the real RNTuple and split-object files are missing from tests/data/root",
)


# ----------------------------------------------------------------- helpers
def uproot_kind(array: ak.Array) -> str | None:
    """What uproot's own reading makes of a branch: flat/fixed/jagged numbers, or None."""
    t = array.type.content
    while isinstance(t, ak.types.OptionType):
        t = t.content
    if isinstance(t, ak.types.NumpyType):
        return "flat"
    inner = t
    while isinstance(inner, ak.types.RegularType):
        inner = inner.content
    if isinstance(inner, ak.types.NumpyType):
        return "fixed"
    if isinstance(t, ak.types.ListType) and t.parameter("__array__") is None:
        inner = t.content
        while isinstance(inner, ak.types.RegularType):
            inner = inner.content
        if isinstance(inner, ak.types.NumpyType) and inner.parameter("__array__") is None:
            return "jagged"
    return None


def events_by_split(spec: object, source_dir: Path) -> dict[str, np.ndarray]:
    """Per split, the events of a one-file source in store order (the plan's split rule)."""
    plan = plan_conversion(spec, source_dir)  # type: ignore[arg-type]
    out: dict[str, list[np.ndarray]] = {s: [] for s in plan.splits}
    for block in plan.blocks:
        which = split_assignment(plan, block)
        for i, split in enumerate(plan.splits):
            out[split].append(np.arange(block.start, block.stop)[which == i])
    return {s: np.concatenate(v) for s, v in out.items()}


def assert_field_equals(got: np.ndarray | fl.Ragged, expected: ak.Array, kind: str) -> None:
    if kind == "jagged":
        assert isinstance(got, fl.Ragged)
        np.testing.assert_array_equal(got.counts, ak.to_numpy(ak.num(expected, axis=1)))
        values = ak.to_numpy(ak.flatten(expected, axis=1))
        assert got.values.dtype == values.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got.values, values)
    else:
        assert isinstance(got, np.ndarray)
        values = ak.to_numpy(expected)
        assert got.dtype == values.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, values)


#: one split instead of the starter spec's three: a field is then one array, not three (NanoAOD's
#: 947 branches convert in a third of the time); the split rule itself is tested in test_generic
ONE_SPLIT = ["split.fractions={ all = 1.0 }"]


def convert_with_inspect(path: Path, tmp_path: Path) -> list[tuple[str, str, Path, object]]:
    """Inspect ``path``, write each starter spec, convert it serially: (tree, spec text, store, spec)."""
    out = []
    for i, report in enumerate(inspect_source(path)):
        text = starter_spec(report)
        spec_path = tmp_path / f"spec{i}.toml"
        spec_path.write_text(text)
        assert set(plan_conversion(load_spec(spec_path), path.parent).splits) == {
            "train",
            "val",
            "test",
        }
        spec = load_spec(spec_path, overrides=ONE_SPLIT)
        store = Path(convert(spec, tmp_path / f"out{i}.zarr", source_dir=path.parent, workers=0))
        out.append((report.select["tree"], text, store, spec))
    return out


# ----------------------------------------------------------------- the done criterion
@pytest.mark.parametrize("name", REAL)
def test_every_real_file_converts_with_the_inspect_spec(name: str, tmp_path: Path) -> None:
    """inspect's spec converts every numeric branch of the file, each equal to uproot's."""
    path = REAL_PATHS[name]
    (tree_name, text, store_path, spec), *_ = convert_with_inspect(path, tmp_path)
    tree = uproot.open(path)[tree_name]
    declared = tomllib.loads(text)["fields"]
    by_key = {decl["source"]: fname for fname, decl in declared.items()}
    store = fl.open_store(store_path)
    order = events_by_split(spec, path.parent)
    numeric = 0
    for key in tree.keys():  # noqa: SIM118 (an uproot tree's keys are its full branch paths)
        if len(getattr(tree[key], "branches", ())):
            # a split object: uproot reads it as a record (when it can), its leaves are keys
            assert key not in by_key
            continue
        array = tree[key].array(library="ak")
        kind = uproot_kind(array)
        if kind is None:
            assert key not in by_key, f"{key!r} ({array.type}) should not be a field"
            continue
        numeric += 1
        assert key in by_key, f"numeric branch {key!r} ({array.type}) is missing from the spec"
        fname = by_key[key]
        assert fname == field_name(key)
        assert store.fields[fname].ragged == (kind == "jagged")
        for split, events in order.items():
            assert_field_equals(store[split].read(fname), array[events], kind)
    assert numeric == len(declared) > 0
    assert sum(len(store[s]) for s in store.splits) == tree.num_entries


@needs_shared
def test_the_shared_folder_holds_the_rntuple_and_the_split_tree() -> None:
    """The done-criterion test above really covers the two layouts of issue 13."""
    assert {RNTUPLE, FULLSPLIT} <= set(REAL)


# ----------------------------------------------------------------- RNTuple collections
@needs_shared
def test_rntuple_collection_members_one_by_one_and_as_one_field(tmp_path: Path) -> None:
    """RNTupleImporter's ``_collection0.Muon_pt`` converts alone and as ``collection = ...``."""
    assert SHARED is not None
    spec = load_spec(
        text=f"""
        [source]
        files = ["{RNTUPLE}"]
        [fields.muons]
        collection = "_collection0"
        ragged = true
        [fields.muons32]
        collection = "_collection0"
        ragged = true
        dtype = "float32"
        [fields.pt]
        source = "_collection0.Muon_pt"
        pad = 4
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = {{ all = 1.0 }}
        """
    )
    store = fl.open_store(convert(spec, tmp_path / "mu.zarr", source_dir=SHARED))
    sp = store["all"]
    coll = uproot.open(SHARED / RNTUPLE)["Events"]["_collection0"].array()
    members = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]
    assert store.fields["muons"].shape == (5,)
    assert store.fields["muons"].dtype == np.float64  # float32 and int32 members
    assert all(f"_collection0.{m}" in store.fields["muons"].doc for m in members)
    flat = ak.flatten(coll, axis=1)
    expected = np.stack([ak.to_numpy(flat[m]).astype(np.float64) for m in members], axis=-1)
    muons = sp.read("muons")
    np.testing.assert_array_equal(muons.counts, ak.to_numpy(ak.num(coll, axis=1)))
    np.testing.assert_array_equal(muons.values, expected)
    np.testing.assert_array_equal(sp.read("muons32").values, expected.astype(np.float32))
    assert ak.to_list(muons.to_awkward(columns=members)) == ak.to_list(coll[members])
    padded = ak.to_numpy(ak.fill_none(ak.pad_none(coll.Muon_pt, 4, clip=True), 0))
    np.testing.assert_array_equal(sp.read("pt"), padded)
    np.testing.assert_array_equal(sp.read("pt_mask").sum(axis=1), np.minimum(ak.num(coll), 4))


@needs_shared
def test_a_record_key_is_refused_with_its_members_and_the_collection_option(
    tmp_path: Path,
) -> None:
    assert SHARED is not None
    spec = load_spec(
        text=f"""
        [source]
        files = ["{RNTUPLE}"]
        [fields.muons]
        source = "_collection0"
        ragged = true
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = {{ all = 1.0 }}
        """
    )
    with pytest.raises(
        ConfigError,
        match=r"\[fields\.muons\.source\].*'_collection0'.*is a record.*'_collection0\.Muon_pt'"
        r".*collection = \"_collection0\"",
    ):
        convert(spec, tmp_path / "x.zarr", source_dir=SHARED)
    assert not (tmp_path / "x.zarr").exists()


@needs_shared
def test_split_object_struct_as_one_field_and_mixed_record_refused(tmp_path: Path) -> None:
    """``evt/P3`` (three scalars) joins into one field; ``evt`` mixes scalars and lists."""
    assert SHARED is not None
    base = f"""
        [source]
        files = ["{FULLSPLIT}"]
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = {{ all = 1.0 }}
    """
    spec = load_spec(text=base + '[fields.p3]\ncollection = "evt/P3"\n')
    sp = fl.open_store(convert(spec, tmp_path / "p3.zarr", source_dir=SHARED))["all"]
    p3 = uproot.open(SHARED / FULLSPLIT)["tree"]["evt/P3"].array()
    expected = np.stack([ak.to_numpy(p3[m]).astype(np.float64) for m in p3.fields], axis=-1)
    np.testing.assert_array_equal(sp.read("p3"), expected)
    bad = load_spec(text=base + '[fields.evt]\ncollection = "evt"\n')
    with pytest.raises(ConfigError, match=r"\[fields\.evt\.collection\].*mix jagged and fixed"):
        convert(bad, tmp_path / "evt.zarr", source_dir=SHARED)


# ----------------------------------------------------------------- TClonesArray-style trees
def write_collection_trees(path: Path, n: int = 200) -> dict[str, ak.Array]:
    """A collection of (pt, eta, q) per event, in the layouts uproot can write.

    ``dotted``: counter ``Coll`` plus ``Coll.pt``... (a TClonesArray split one level);
    ``slashed``: counter ``Coll`` plus ``Coll/Coll.pt``... (Delphes' key names, written as flat
    branch names: uproot cannot write a TBranchElement with sub-branches);
    ``default``: uproot's own ``nColl`` plus ``Coll_pt``...;
    ``ntuple``: ``f[name] = {"Coll": records}``, which uproot 5.7 writes as an RNTuple.
    """
    rng = np.random.default_rng(13)
    counts = rng.integers(0, 6, n)
    total = int(counts.sum())
    coll = ak.unflatten(
        ak.zip(
            {
                "pt": rng.exponential(20, total).astype(np.float32),
                "eta": rng.normal(0, 2, total).astype(np.float32),
                "q": rng.choice([-1, 1], total).astype(np.int32),
            }
        ),
        counts,
    )
    with uproot.recreate(path) as f:
        for tree, sep in (("dotted", "Coll."), ("slashed", "Coll/Coll.")):
            members = {f"{sep}{m}": coll[m] for m in coll.fields}
            f.mktree(tree, {k: v.type for k, v in members.items()}, counter_name=lambda _: "Coll")
            f[tree].extend(members)
        f.mktree("default", {"Coll": coll.type, "run": "i8"})  # uproot's nColl, Coll_pt, ...
        f["default"].extend({"Coll": coll, "run": np.arange(n, dtype=np.int64)})
        f["ntuple"] = {"Coll": coll}  # uproot >= 5.6 writes a dict of arrays as an RNTuple
    return {"Coll": coll}


@pytest.mark.parametrize(
    ("tree", "counter", "members"),
    [
        ("dotted", "Coll", ["Coll.pt", "Coll.eta", "Coll.q"]),
        ("slashed", "Coll", ["Coll/Coll.pt", "Coll/Coll.eta", "Coll/Coll.q"]),
        ("default", "nColl", ["Coll_pt", "Coll_eta", "Coll_q"]),
        ("ntuple", "Coll", ["Coll.pt", "Coll.eta", "Coll.q"]),
    ],
)
def test_tclonesarray_style_collections_convert(
    tree: str, counter: str, members: list[str], tmp_path: Path
) -> None:
    """Counter named like the collection, members ``Coll.x`` / ``Coll/Coll.x``: each member and
    ``collection = COUNTER`` (all members as one field) equal the written values."""
    coll = write_collection_trees(tmp_path / "coll.root")["Coll"]
    with open_reader(tmp_path / "coll.root", tree=tree) as reader:
        assert [reader.counter(m) for m in members] == [counter] * 3
        assert reader.info(counter).members == tuple(members)
    (report,) = inspect_source(tmp_path / "coll.root", tree=tree)
    fields = {k.key: k.field for k in report.convertible}
    assert all(fields[m] == field_name(m) for m in members)
    jagged = {k.key: k.detail for k in report.keys if k.kind == "jagged"}
    assert jagged == {m: f"counter {counter}" for m in members}
    text = starter_spec(report) + (
        f'\n[fields.coll_all]\ncollection = "{counter}"\nragged = true\ndtype = "float32"\n'
    )
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(text)
    spec = load_spec(spec_path)
    store = fl.open_store(convert(spec, tmp_path / "c.zarr", source_dir=tmp_path, workers=0))
    order = events_by_split(spec, tmp_path)
    for split, events in order.items():
        sp = store[split]
        for member, m in zip(members, coll.fields, strict=True):
            assert_field_equals(sp.read(field_name(member)), coll[events][m], "jagged")
        joined = sp.read("coll_all")
        flat = ak.flatten(coll[events], axis=1)
        expected = np.stack([ak.to_numpy(flat[m]).astype(np.float32) for m in coll.fields], -1)
        np.testing.assert_array_equal(joined.values, expected)
        np.testing.assert_array_equal(joined.counts, ak.to_numpy(ak.num(coll[events])))
        if tree != "ntuple":  # the RNTuple has no counter field of its own
            np.testing.assert_array_equal(
                sp.read(field_name(counter)), ak.to_numpy(ak.num(coll[events]))
            )


def test_members_of_different_collections_cannot_share_a_field(tmp_path: Path) -> None:
    write_collection_trees(tmp_path / "coll.root")
    spec = load_spec(
        text="""
        [source]
        files = ["coll.root"]
        tree = "default"
        [fields.mixed]
        columns = ["Coll_pt", "run"]
        ragged = true
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { all = 1.0 }
        """
    )
    with pytest.raises(ConfigError, match=r"\[fields\.mixed\.columns\].*mix jagged and fixed"):
        convert(spec, tmp_path / "x.zarr", source_dir=tmp_path)


# ----------------------------------------------------------------- the name rule
def test_field_name_rule() -> None:
    assert field_name("evt/ArrayF32[10]") == "evt_ArrayF32_10"
    assert field_name("Jet.PT") == "Jet_PT"
    assert field_name("Jet/Jet.PT") == "Jet_Jet_PT"
    assert field_name("_collection0.Muon_pt") == "_collection0_Muon_pt"
    assert field_name("[weird]..name//") == "weird_name"
    assert field_name("already_fine_1") == "already_fine_1"
    assert field_name(field_name("a.b[3]/c")) == field_name("a.b[3]/c")  # idempotent
    with pytest.raises(ConfigError, match="no letter, digit or '_'"):
        field_name("[]/")
    with pytest.raises(ConfigError, match=r"'a\.b' and 'a/b' both give the field name 'a_b'"):
        field_names(["a.b", "a/b"], what="tree t")
    assert field_names(["a.b", "c[2]"]) == {"a.b": "a_b", "c[2]": "c_2"}


def test_invalid_field_names_in_a_spec_show_the_rule(tmp_path: Path) -> None:
    base = """
        [source]
        files = ["x.root"]
        %s
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { all = 1.0 }
    """
    with pytest.raises(
        ConfigError, match=r"invalid field name 'evt/ArrayF32\[10\]'.*gives 'evt_ArrayF32_10'"
    ):
        load_spec(text=base % '[fields."evt/ArrayF32[10]"]\nsource = "evt/ArrayF32[10]"')
    with pytest.raises(
        ConfigError, match=r"\[fields\.Coll\.pt\] is a table inside \[fields\.Coll\].*'Coll_pt'"
    ):
        load_spec(text=base % '[fields.Coll.pt]\nsource = "Coll.pt"')


def test_inspect_leaves_out_a_key_whose_name_collides(tmp_path: Path) -> None:
    with uproot.recreate(tmp_path / "c.root") as f:
        f.mktree("t", {"a.b": "i4", "a_b": "f8"})
        f["t"].extend({"a.b": np.arange(5, dtype=np.int32), "a_b": np.arange(5.0)})
    (report,) = inspect_source(tmp_path / "c.root")
    assert [k.key for k in report.convertible] == ["a.b"]
    assert report.collisions == [("a_b", "a.b", "a_b")]
    text = starter_spec(report)
    assert "'a_b' would be field 'a_b' too" in text
    assert list(tomllib.loads(text)["fields"]) == ["a_b"]


# ----------------------------------------------------------------- the command lines
@needs_shared
def test_inspect_command_lines_print_a_spec_that_is_the_whole_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m converters inspect FILE` and `fastload inspect FILE`: listing + spec, valid TOML."""
    assert SHARED is not None
    assert converters_main(["inspect", str(SHARED / FULLSPLIT)]) == 0
    out = capsys.readouterr().out
    assert "evt/ArrayF32[10]  float32[10]" in out
    assert "-> field evt_ArrayF32_10" in out
    assert "evt/SliceF32      float32[]       counter evt/N" in out
    assert "evt/StdStr        std::string     strings are not stored" in out
    spec = tomllib.loads(out)  # the listing is comments: the whole output is a spec
    assert spec["fields"]["evt_ArrayF32_10"] == {"source": "evt/ArrayF32[10]"}
    assert spec["fields"]["evt_SliceF32"] == {"source": "evt/SliceF32", "ragged": True}
    assert spec["source"] == {"files": [FULLSPLIT], "format": "root", "tree": "tree"}

    assert (
        fastload_main(["inspect", str(SHARED / RNTUPLE), "--spec", str(tmp_path / "s.toml")]) == 0
    )
    out = capsys.readouterr().out
    assert "RNTuple 'Events', 1000 entries" in out
    assert "_collection0.Muon_pt      float32[]       counter _collection0" in out
    written = tomllib.loads((tmp_path / "s.toml").read_text())
    assert written["fields"]["_collection0_Muon_pt"]["source"] == "_collection0.Muon_pt"
    assert '# collection = "_collection0"' in (tmp_path / "s.toml").read_text()


def test_inspect_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert converters_main(["inspect", str(tmp_path / "missing.root")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert fastload_main(["inspect", str(tmp_path / "missing.root")]) == 2  # a source, by name
    assert "source" in capsys.readouterr().err
    assert fastload_main(["inspect", str(tmp_path / "missing.zarr")]) == 2  # a store
    assert "no store" in capsys.readouterr().err
    assert fastload_main(["inspect", str(IN_REPO / "uproot-HZZ.root"), "--tree", "nope"]) == 2
    assert "tree 'nope' not found" in capsys.readouterr().err
    (tmp_path / "bad.root").write_bytes(b"not a root file")
    assert converters_main(["inspect", str(tmp_path / "bad.root")]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_nanoaod_nonfinite_branch_sets_allow_nonfinite_in_the_spec() -> None:
    """NanoAOD's HTXS_Higgs_y holds NaN: the starter spec stores it rather than failing."""
    (report,) = inspect_source(IN_REPO / "nanoAOD_2015_CMS_Open_Data_ttbar.root")
    assert "HTXS_Higgs_y" in report.nonfinite
    assert tomllib.loads(starter_spec(report))["store"] == {"allow_nonfinite": True}
