"""Dask scale-out of the generic converter: identical bytes, retries, failures, resume after a kill.

One two-worker LocalCluster (processes, loopback only) is shared by the module.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import psutil
import pytest
import zarr

import fastload as fl
from fastload.converters import ahcal
from fastload.converters._dask import Starts, convert_dask, write_task
from fastload.converters._spec import load_spec
from fastload.converters.generic import Block, ConversionPlan, convert, plan_conversion
from fastload.errors import IncompleteStoreError, SourceFileError, StoreNotFoundError
from fastload.store import ParallelStore, probe_store
from fastload.synthetic import make_ahcal

distributed = pytest.importorskip("distributed")

# small chunks and blocks so that blocks share chunks of every kind (dense, values, offsets)
AHCAL_SMALL = ["store.chunk_len=16", "store.chunk_bytes=16384", "source.block_events=32"]


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def ahcal_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ahcal")
    make_ahcal(src, n_events=400, n_files=2, seed=11, formats=("root",))
    return src


@pytest.fixture(scope="module")
def ahcal_serial(ahcal_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The AHCAL store written serially: the reference for every Dask run."""
    return serial(
        ahcal.spec_path("root"),
        ahcal_src,
        tmp_path_factory.mktemp("serial") / "serial.zarr",
        AHCAL_SMALL,
    )


def store_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_same_bytes(a: Path, b: Path) -> None:
    """Every chunk and array/group metadata file is byte-identical; the root schema differs only in its time."""
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    assert sum(1 for k in fa if "/c/" in k) > 10
    for key in fa:
        if key == "zarr.json":
            ja, jb = json.loads(fa[key]), json.loads(fb[key])
            for j in (ja, jb):
                del j["attributes"]["fastload"]["source"]["created"]
                del j["attributes"]["fastload"]["store_id"]  # random per store
            assert ja == jb
        else:
            assert fa[key] == fb[key], key


def serial(spec: Path, src: Path, dst: Path, overrides: list[str]) -> Path:
    convert(load_spec(spec, overrides=overrides), dst, source_dir=src)
    return dst


# ----------------------------------------------------------------- identical bytes
def test_ahcal_two_workers_byte_identical_to_serial(
    client: distributed.Client, ahcal_src: Path, ahcal_serial: Path, tmp_path: Path
) -> None:
    """Ragged hits + seeded split, blocks sharing chunks: the Dask store equals the serial one byte for byte."""
    spec = load_spec(ahcal.spec_path("root"), overrides=AHCAL_SMALL)
    assert len(plan_conversion(spec, ahcal_src).blocks) >= 10
    convert(spec, tmp_path / "dask.zarr", source_dir=ahcal_src, client=client)
    assert_same_bytes(ahcal_serial, tmp_path / "dask.zarr")
    dask_split = fl.open_store(tmp_path / "dask.zarr")["train"]
    assert dask_split.max_len("hits") == fl.open_store(ahcal_serial)["train"].max_len("hits") > 0
    assert not [p for p in tmp_path.iterdir() if "fastload-tmp" in p.name]  # work files removed


def test_value_chunks_from_the_plan_byte_identical(
    client: distributed.Client,
    ahcal_src: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Value chunks sized by the statistics rule: the plan fixes them, so both writers agree.

    The serial writer alone would size them from sample chunk 0 and ParallelStore from the
    split's mean; the plan's ``value_chunk_len`` (from the same survey of the first events
    that sizes ``chunk_len``) is what both get.
    """
    from fastload.store import _schema

    monkeypatch.setattr(_schema, "MIN_VALUE_CHUNK_BYTES", 64)  # the plan is made here
    spec = load_spec(ahcal.spec_path("root"), overrides=AHCAL_SMALL)
    plan = plan_conversion(spec, ahcal_src)
    vlen = plan.value_chunk_len["hits"]
    assert vlen < 16384 // 16  # the rule, not chunk_bytes alone
    serial(ahcal.spec_path("root"), ahcal_src, tmp_path / "serial.zarr", AHCAL_SMALL)
    convert(spec, tmp_path / "dask.zarr", source_dir=ahcal_src, client=client)
    assert_same_bytes(tmp_path / "serial.zarr", tmp_path / "dask.zarr")
    for split in fl.open_store(tmp_path / "dask.zarr"):
        values = zarr.open_group(str(tmp_path / "dask.zarr"), mode="r")[f"{split}/hits/values"]
        assert values.chunks[0] == vlen


def test_hdf5_padding_and_directory_labels_byte_identical(
    client: distributed.Client, tmp_path: Path
) -> None:
    """Split by files, labels from directories, padded lists with masks: same bytes with Dask."""
    rng = np.random.default_rng(4)
    vlen = h5py.vlen_dtype(np.float32)
    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for part, n in ((0, 45), (1, 22)):
            with h5py.File(tmp_path / "src" / cls / f"{part}.h5", "w") as f:
                f["img"] = rng.normal(size=(n, 3, 3)).astype(np.float32)
                hits = f.create_dataset("hits", (n,), dtype=vlen)
                for i in range(n):
                    hits[i] = rng.normal(size=rng.integers(0, 5)).astype(np.float32)
    spec = tmp_path / "s.toml"
    spec.write_text(
        textwrap.dedent(
            """
            [dataset]
            name = "padded"
            [source]
            files = ["*/*.h5"]
            block_events = 10
            [fields.img]
            source = "img"
            [fields.hits]
            source = "hits"
            pad = 3
            [label]
            from = "directory"
            [split]
            by = "files"
            files = { train = ["*/0.h5"], test = ["*/1.h5"] }
            [store]
            chunk_len = 4
            """
        )
    )
    serial(spec, tmp_path / "src", tmp_path / "serial.zarr", [])
    convert(load_spec(spec), tmp_path / "dask.zarr", source_dir=tmp_path / "src", client=client)
    assert_same_bytes(tmp_path / "serial.zarr", tmp_path / "dask.zarr")


# ----------------------------------------------------------------- retries and failures
def flaky_task(
    marks: str, plan: ConversionPlan, store: ParallelStore, block: Block, starts: Starts
) -> dict[str, Any]:
    """Fails the first attempt at every block, then writes it."""
    first = Path(marks) / f"{block.id}.failed"
    if not first.exists():
        first.touch()
        raise OSError(f"injected failure of block {block.id}")
    return write_task(plan, store, block, starts)


def test_failed_tasks_are_retried(
    client: distributed.Client, ahcal_src: Path, ahcal_serial: Path, tmp_path: Path
) -> None:
    """Each block fails once and is retried by Dask; the store still equals the serial one."""
    import functools

    marks = tmp_path / "marks"
    marks.mkdir()
    plan = plan_conversion(load_spec(ahcal.spec_path("root"), overrides=AHCAL_SMALL), ahcal_src)
    task = functools.partial(flaky_task, str(marks))
    convert_dask(plan, tmp_path / "dask.zarr", client=client, retries=1, task=task)
    assert len(list(marks.iterdir())) == len(plan.blocks)  # every block failed once
    assert_same_bytes(ahcal_serial, tmp_path / "dask.zarr")


def test_unreadable_file_fails_the_run_and_leaves_no_complete_store(
    client: distributed.Client, ahcal_src: Path, tmp_path: Path
) -> None:
    """A source that breaks mid-run fails with its name after retries; only an incomplete temporary remains."""
    src = tmp_path / "src"
    src.mkdir()
    for p in ahcal_src.glob("*.root"):
        (src / p.name).write_bytes(p.read_bytes())
    import uproot

    # damage a hit basket, not the counter branch: counting succeeds, writing fails mid-run
    branch = uproot.open(src / "ahcal_002.root")["bigtree"]["ahc_hitX"]
    seek = int(branch.member("fBasketSeek")[0])
    with open(src / "ahcal_002.root", "r+b") as fh:
        fh.seek(seek + 120)
        fh.write(bytes(range(200, 256)) * 2)
    plan = plan_conversion(load_spec(ahcal.spec_path("root"), overrides=AHCAL_SMALL), src)
    with pytest.raises(SourceFileError, match=r"ahcal_002\.root"):
        convert_dask(plan, tmp_path / "out.zarr", client=client, retries=1)
    with pytest.raises(StoreNotFoundError, match="interrupted write"):
        fl.open_store(tmp_path / "out.zarr")
    temporaries = [
        p for p in tmp_path.iterdir() if "fastload-tmp" in p.name and not p.name.endswith(".work")
    ]
    assert len(temporaries) == 1
    assert probe_store(temporaries[0]) == "incomplete"
    with pytest.raises(IncompleteStoreError):
        fl.open_store(temporaries[0])


# ----------------------------------------------------------------- resume after a kill
SLOW_RUN = """
import sys, time

from distributed import Client, LocalCluster

from fastload.converters._dask import convert_dask, write_task
from fastload.converters._spec import load_spec
from fastload.converters.generic import plan_conversion


def slow_task(plan, store, block, starts):
    time.sleep(0.25)
    return write_task(plan, store, block, starts)


if __name__ == "__main__":
    spec, src, dst, *overrides = sys.argv[1:]
    plan = plan_conversion(load_spec(spec, overrides=overrides), src)
    # threads, not processes: a SIGKILL then leaves no multiprocessing semaphores behind
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            convert_dask(plan, dst, client=client, task=slow_task)
"""


def recording_task(
    log: str, plan: ConversionPlan, store: ParallelStore, block: Block, starts: Starts
) -> dict[str, Any]:
    """Writes the block and records that it ran."""
    (Path(log) / block.id).touch()
    return write_task(plan, store, block, starts)


def test_killed_run_resumes_from_finished_blocks(
    client: distributed.Client, ahcal_src: Path, ahcal_serial: Path, tmp_path: Path
) -> None:
    """SIGKILL a Dask conversion midway; --resume redoes only unfinished blocks and gives the serial bytes."""
    import functools

    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    dst = tmp_path / "out.zarr"
    spec = str(ahcal.spec_path("root"))
    done_dir = tmp_path / ".out.zarr.fastload-tmp-parallel.work" / "done"
    proc = subprocess.Popen(
        [sys.executable, str(script), spec, str(ahcal_src), str(dst), *AHCAL_SMALL],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(done_dir.glob("*.json"))) < 3:
            assert proc.poll() is None, "the conversion ended before it could be killed"
            time.sleep(0.05)
        assert psutil.Process(proc.pid).children(recursive=True) == []  # one process to kill
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind runs in the conversion
        proc.wait(timeout=30)

    finished = {p.stem for p in done_dir.glob("*.json")}
    plan = plan_conversion(load_spec(spec, overrides=AHCAL_SMALL), ahcal_src)
    assert 3 <= len(finished) < len(plan.blocks)
    assert probe_store(dst) == "missing"
    log = tmp_path / "ran"
    log.mkdir()
    convert_dask(
        plan, dst, client=client, resume=True, task=functools.partial(recording_task, str(log))
    )
    ran = {p.name for p in log.iterdir()}
    assert ran.isdisjoint(finished)
    assert ran | finished == {b.id for b in plan.blocks}
    assert_same_bytes(ahcal_serial, dst)


def test_resume_refuses_a_different_plan(
    client: distributed.Client, ahcal_src: Path, tmp_path: Path
) -> None:
    """Work left by a run with another layout is not mixed into a resumed run."""
    from fastload.errors import ConfigError

    spec = ahcal.spec_path("root")
    plan = plan_conversion(load_spec(spec, overrides=AHCAL_SMALL), ahcal_src)
    with pytest.raises(OSError, match="injected"):
        convert_dask(plan, tmp_path / "out.zarr", client=client, retries=0, task=_always_fail)
    other = plan_conversion(
        load_spec(spec, overrides=[*AHCAL_SMALL, "store.codec=zstd"]), ahcal_src
    )
    with pytest.raises(ConfigError, match="cannot resume"):
        convert_dask(other, tmp_path / "out.zarr", client=client, resume=True)


def _always_fail(
    plan: ConversionPlan, store: ParallelStore, block: Block, starts: Starts
) -> dict[str, Any]:
    raise OSError("injected failure")


def test_auto_shuffle_sees_the_same_chunk_zero_as_the_serial_writer(
    client: distributed.Client, ahcal_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver gathers each array's chunk 0 from the blocks that hold it (the val/test splits are
    spread over many blocks): exactly the rows the serial writer decides on."""
    from fastload.store import _codecs

    seen: dict[str, list[np.ndarray]] = {"serial": [], "dask": []}
    run = ["serial"]
    choose = _codecs.choose_shuffle

    def spy(first_chunk: np.ndarray, cname: str, clevel: int) -> str:
        seen[run[0]].append(np.array(first_chunk, copy=True))
        return choose(first_chunk, cname, clevel)

    monkeypatch.setattr(_codecs, "choose_shuffle", spy)
    spec = load_spec(ahcal.spec_path("root"), overrides=AHCAL_SMALL)
    convert(spec, tmp_path / "serial.zarr", source_dir=ahcal_src)
    run[0] = "dask"
    convert(spec, tmp_path / "dask.zarr", source_dir=ahcal_src, client=client)
    # one decision per non-offsets array: 3 splits x (n_hits, beam_energy, hits values)
    assert len(seen["serial"]) == len(seen["dask"]) == 9

    def key(a: np.ndarray) -> tuple[Any, ...]:
        return (a.dtype.str, a.shape, a.tobytes())

    assert sorted(map(key, seen["serial"])) == sorted(map(key, seen["dask"]))
    assert all(len(a) > 0 for a in seen["dask"])


def test_root_collections_and_counters_by_path_byte_identical(
    client: distributed.Client, tmp_path: Path
) -> None:
    """A counter found by its full key (``Coll`` of ``Coll/Coll.pt``) and a ``collection`` field:
    the Dask counting pass reads the same lengths as the serial writer, so the bytes agree."""
    import awkward as ak
    import uproot

    rng = np.random.default_rng(8)
    counts = rng.integers(0, 5, 300)
    total = int(counts.sum())
    members = {
        "Coll/Coll.pt": ak.unflatten(rng.exponential(5, total).astype(np.float32), counts),
        "Coll/Coll.q": ak.unflatten(rng.choice([-1, 1], total).astype(np.int32), counts),
    }
    (tmp_path / "src").mkdir()
    with uproot.recreate(tmp_path / "src" / "coll.root") as f:
        f.mktree("t", {k: v.type for k, v in members.items()}, counter_name=lambda _: "Coll")
        f["t"].extend(members)
    text = """
        [dataset]
        name = "coll"
        [source]
        files = ["coll.root"]
        [fields.coll]
        collection = "Coll"
        ragged = true
        [fields.pt]
        source = "Coll/Coll.pt"
        ragged = true
        [label]
        from = "none"
        [split]
        by = "fraction"
        fractions = { train = 0.7, test = 0.3 }
    """
    small = ["store.chunk_len=16", "store.chunk_bytes=1024", "source.block_events=32"]
    spec = load_spec(text=textwrap.dedent(text), overrides=small)
    plan = plan_conversion(spec, tmp_path / "src")
    assert plan.plans["coll"].map.keys == ("Coll/Coll.pt", "Coll/Coll.q")
    assert len(plan.blocks) >= 5
    convert(spec, tmp_path / "serial.zarr", source_dir=tmp_path / "src")
    convert(spec, tmp_path / "dask.zarr", source_dir=tmp_path / "src", client=client)
    assert_same_bytes(tmp_path / "serial.zarr", tmp_path / "dask.zarr")
    total_rows = sum(
        int(fl.open_store(tmp_path / "dask.zarr")[s].read("coll").counts.sum()) for s in plan.splits
    )
    assert total_rows == total
