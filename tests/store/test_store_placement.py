"""Putting a store in place: racing writers, temporaries of other hosts, the commit lock."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from store_helpers import siblings

import fastload as fl
from fastload.errors import ConfigError, StoreExistsError, StoreWriteError
from fastload.store import FieldInfo, ParallelStore, SplitSize, StoreLayout, _placement

REPO = Path(__file__).resolve().parents[2]

_RACE = """
import json, multiprocessing as mp, sys
from pathlib import Path

def racer(path, start, end, rounds, who, queue):
    import numpy as np
    import fastload as fl
    from fastload.errors import StoreExistsError
    outcomes = []
    for _ in range(rounds):
        start.wait()
        try:
            fl.write_arrays(path, {"train": {"x": np.full(3, float(who))}}, overwrite=True)
            outcomes.append("won")
        except StoreExistsError as exc:
            outcomes.append("lost" if "another writer" in str(exc) else "exists: " + str(exc))
        except BaseException as exc:
            outcomes.append(f"error: {type(exc).__name__}: {exc}")
        end.wait()
        if who == 0:  # both are done with this round: look at what is there
            names = sorted(p.name for p in Path(path).parent.iterdir())
            value = float(fl.open_store(path)["train"].read("x")[0])
            outcomes[-1] = [outcomes[-1], value, names]
        end.wait()
    queue.put((who, outcomes))

if __name__ == "__main__":
    path, rounds = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("spawn")
    start, end, queue = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=racer, args=(path, start, end, rounds, w, queue)) for w in (0, 1)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join()
    print(json.dumps(results))
"""


def test_racing_overwrites_end_with_one_winner_and_a_clear_error(tmp_path: Path) -> None:
    """Two processes overwrite the same store at the same moment, 60 times: every round ends
    with a complete store written by a winner, the other writer (if it overlapped) gets
    StoreExistsError, and no temporary or lock is left."""
    target = tmp_path / "race.zarr"
    fl.write_arrays(target, {"train": {"x": np.full(3, -1.0)}})
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script), str(target), "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    lost = 0
    for (first, value, names), second in zip(results["0"], results["1"], strict=True):
        outcomes = (first, second)
        assert all(o in ("won", "lost") for o in outcomes), outcomes
        assert "won" in outcomes
        winners = [float(w) for w, o in enumerate(outcomes) if o == "won"]
        assert value in winners
        assert names == ["race.py", "race.zarr"]
        lost += outcomes.count("lost")
    assert fl.open_store(target)["train"].read("x")[0] in (0.0, 1.0)
    # both start together, so most rounds overlap; before the commit lock nobody ever lost
    # cleanly (both "won", one sometimes with a raw OSError, or leaving the other's temporary)
    assert lost > 0


def _temporary(target: Path, tail: str, *, age_s: float = 0.0) -> Path:
    tmp = target.parent / f".{target.name}.fastload-tmp-{tail}"
    (tmp / "train").mkdir(parents=True)
    (tmp / "train" / "zarr.json").write_text("{}")
    if age_s:
        old = time.time() - age_s
        for p in (tmp / "train" / "zarr.json", tmp / "train", tmp):
            os.utime(p, (old, old))
    return tmp


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(proc.stdout)


def test_writer_names_its_temporary_with_pid_and_host(tmp_path: Path) -> None:
    target = tmp_path / "s.zarr"
    with fl.create_store(target) as w:
        w.append("train", {"x": np.zeros(2)})
        (tmp,) = [n for n in siblings(target) if "fastload-tmp" in n]
        assert tmp.startswith(f".s.zarr.fastload-tmp-{os.getpid()}@{_placement.host_tag()}-")
    assert siblings(target) == ["s.zarr"]


def test_temporaries_of_other_hosts_are_kept_until_a_week_idle(tmp_path: Path) -> None:
    """A pid means nothing on another host: only this host's dead writers are swept at once;
    another host's (or a hostless, older-format) temporary only after a week without writes."""
    target = tmp_path / "s.zarr"
    dead = _dead_pid()
    host = _placement.host_tag()
    week = _placement.FOREIGN_TEMPORARY_IDLE_S
    mine_dead = _temporary(target, f"{dead}@{host}-0123abcd")
    mine_alive = _temporary(target, f"{os.getpid()}@{host}-0123abcd")
    other_recent = _temporary(target, f"{dead}@othernode.cluster-0123abcd", age_s=week - 3600)
    other_idle = _temporary(target, f"{dead}@othernode.cluster-old0123abcd", age_s=week + 3600)
    legacy_recent = _temporary(target, f"{dead}-4567cdef")
    legacy_idle = _temporary(target, f"{dead}-89abcdef", age_s=week + 3600)
    parallel = _temporary(target, "parallel", age_s=10 * week)
    # a recent file deep inside an old temporary: its writer is still at work
    busy = _temporary(target, f"{dead}@othernode-aaaabbbb", age_s=week + 3600)
    (busy / "train" / "c").mkdir()
    (busy / "train" / "c" / "0").write_bytes(b"chunk")

    fl.write_arrays(target, {"train": {"x": np.zeros(2)}})

    left = set(siblings(target))
    for gone in (mine_dead, other_idle, legacy_idle):
        assert gone.name not in left
    for kept in (mine_alive, other_recent, legacy_recent, parallel, busy):
        assert kept.name in left
    assert "s.zarr" in left


def _lock(target: Path, owner: dict[str, object], *, age_s: float = 0.0) -> Path:
    lock = target.parent / f".{target.name}.fastload-lock"
    lock.write_text(json.dumps(owner))
    if age_s:
        os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def test_commit_lock_of_a_dead_writer_or_an_old_one_is_broken(tmp_path: Path) -> None:
    host = _placement.host_tag()
    for i, (owner, age) in enumerate(
        [
            ({"pid": _dead_pid(), "host": host}, 0.0),
            ({"pid": 1, "host": "othernode"}, _placement.LOCK_STALE_S + 5),
        ]
    ):
        target = tmp_path / f"s{i}.zarr"
        _lock(target, owner, age_s=age)
        fl.write_arrays(target, {"train": {"x": np.zeros(2)}})
        assert siblings(target) == sorted(
            {*(f"s{j}.zarr" for j in range(i + 1))}
        )  # lock released, nothing left


def test_live_commit_lock_of_another_host_makes_the_writer_wait_then_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_placement, "LOCK_WAIT_S", 0.3)
    target = tmp_path / "s.zarr"
    lock = _lock(target, {"pid": os.getpid(), "host": "othernode"})
    with pytest.raises(StoreWriteError, match=r"commit lock .*fastload-lock.*remove that file"):
        fl.write_arrays(target, {"train": {"x": np.zeros(2)}})
    assert siblings(target) == [lock.name]  # the writer's temporary is gone, the lock is not


def test_remote_url_without_fsspec_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now fails
    with pytest.raises(ModuleNotFoundError, match=r"'fsspec'.*fastload\[s3\]"):
        fl.write_arrays("s3://bucket/x.zarr", {"train": {"x": np.zeros(2)}})
    with pytest.raises(ModuleNotFoundError, match=r"fastload\[s3\]"):
        fl.create_store("s3://bucket/x.zarr")
    layout = StoreLayout({"x": FieldInfo("x", (), np.dtype("<f8"))}, shuffle="none")
    with pytest.raises(ModuleNotFoundError, match=r"fastload\[s3\]"):
        ParallelStore.create(
            "s3://bucket/x.zarr", layout=layout, sizes={"train": SplitSize(2)}, plan_id="p"
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codec": "snappy"}, r"codec must be one of"),
        ({"clevel": "5"}, r"clevel must be an integer"),
        ({"clevel": -1}, r"clevel must be an integer between 0 and 9, got -1"),
        ({"shuffle": "yes"}, r"shuffle must be one of"),
        ({"chunk_bytes": 0}, r"chunk_bytes must be an integer >= 1, got 0"),
        ({"chunk_len": True}, r"chunk_len must be an integer >= 1, got True"),
        ({"chunk_len": {"train": 0}}, r"chunk_len\['train'\] must be an integer >= 1"),
    ],
)
def test_layout_options_are_config_errors_naming_the_parameter(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        StoreLayout(**options)  # type: ignore[arg-type]


def test_parallel_writer_checks_task_and_never_overwrites_foreign_data(tmp_path: Path) -> None:
    layout = StoreLayout({"x": FieldInfo("x", (), np.dtype("<f8"))}, shuffle="none")
    sizes = {"train": SplitSize(2)}
    with pytest.raises(ConfigError, match="task must be one of"):
        ParallelStore.create(tmp_path / "a.zarr", layout=layout, sizes=sizes, plan_id="p", task="x")
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(StoreExistsError, match="not a fastload store"):
        ParallelStore.create(mine, layout=layout, sizes=sizes, plan_id="p", overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_layout_describes_every_array_of_a_split() -> None:
    fields = {
        "X": FieldInfo("X", (20, 3), np.dtype("<f4")),
        "hits": FieldInfo("hits", (4,), np.dtype("<f4"), ragged=True),
        "e": FieldInfo("e", (0,), np.dtype("<f4")),
    }
    layout = StoreLayout(fields, chunk_bytes=2**14)
    assert layout.split_chunk_len("train") == 64  # 240-byte samples in 16 KiB
    assert layout.split_chunk_len("train", {"hits": 30.0}) == 32  # 30 rows x 16 bytes
    arrays = {a.key: a for a in layout.arrays("train", 64)}
    assert list(arrays) == ["train/X", "train/hits/values", "train/hits/offsets", "train/e"]
    assert arrays["train/X"].chunks == (64, 20, 3)
    # no statistics: the rule of chunk_bytes alone (stores written before the statistics)
    assert arrays["train/hits/values"].chunk_len == layout.value_chunk_rows("hits") == 1024
    assert arrays["train/hits/offsets"].chunk_len == 2**16
    assert arrays["train/hits/offsets"].dtype == np.dtype("<i8")
    assert arrays["train/e"].chunks == (64, 1)  # zarr needs extents >= 1


def test_dask_driver_imports_only_public_store_names() -> None:
    tree = ast.parse((REPO / "converters" / "_dask.py").read_text())
    modules = [
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    ]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    private = [m for m in modules if m.startswith("fastload.") and "._" in m]
    assert "fastload.store" in modules
    assert private == []
