"""Store format v1: a store appears whole or not at all, and never clobbers other data."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from store_helpers import root_attrs, siblings

import fastload as fl
from fastload.errors import (
    IncompleteStoreError,
    StoreExistsError,
    StoreNotFoundError,
    StoreWriteError,
)
from fastload.store import probe_store

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path | str, value: float, n: int = 5, **options: object) -> None:
    fl.write_arrays(path, {"train": {"x": np.full(n, value)}}, **options)  # type: ignore[arg-type]


def _value(path: Path) -> float:
    return float(fl.open_store(path)["train"].read("x")[0])


def test_existing_complete_store_is_refused(tmp_path: Path) -> None:
    """Without overwrite=True a complete store is never replaced."""
    _write(tmp_path / "s.zarr", 1.0)
    with pytest.raises(
        StoreExistsError, match=r"complete store already exists at .*s\.zarr.*overwrite=True"
    ):
        _write(tmp_path / "s.zarr", 2.0)
    assert _value(tmp_path / "s.zarr") == 1.0
    assert siblings(tmp_path / "s.zarr") == ["s.zarr"]


def test_overwrite_replaces_only_once_complete(tmp_path: Path) -> None:
    """While the new store is written the old one stays readable; it is swapped on close."""
    path = tmp_path / "s.zarr"
    _write(path, 1.0)
    with fl.create_store(path, overwrite=True) as w:
        w.append("train", {"x": np.full(3, 2.0)})
        assert _value(path) == 1.0
        assert len(fl.open_store(path)["train"]) == 5
    assert _value(path) == 2.0
    assert len(fl.open_store(path)["train"]) == 3
    assert siblings(path) == ["s.zarr"]


def test_failed_overwrite_keeps_the_old_store(tmp_path: Path) -> None:
    """An overwrite that fails half-way leaves the old store untouched and no temporary."""
    path = tmp_path / "s.zarr"
    _write(path, 1.0)

    def crash() -> None:
        with fl.create_store(path, overwrite=True) as w:
            w.append("train", {"x": np.full(3, 2.0)})
            raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        crash()
    assert _value(path) == 1.0
    assert siblings(path) == ["s.zarr"]


def test_existing_non_store_directory_is_never_clobbered(tmp_path: Path) -> None:
    """A directory of other files (or a plain file) at the target is refused, even with overwrite."""
    target = tmp_path / "mydata"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(StoreExistsError, match=r"mydata.*not a fastload store"):
            _write(target, 1.0, overwrite=overwrite)
    assert (target / "thesis.tex").read_text() == "precious"
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreExistsError, match="not a fastload store"):
        _write(tmp_path / "file.zarr", 1.0, overwrite=True)
    assert siblings(target) == ["file.zarr", "mydata"]


def test_empty_directory_at_target_is_used(tmp_path: Path) -> None:
    """An empty directory (e.g. made by a job script) is not data: the store takes its place."""
    (tmp_path / "s.zarr").mkdir()
    _write(tmp_path / "s.zarr", 4.0)
    assert _value(tmp_path / "s.zarr") == 4.0


def test_path_under_a_regular_file_is_unwritable(tmp_path: Path) -> None:
    """A parent that is a file cannot hold a store (for root too): StoreWriteError naming the path."""
    (tmp_path / "somefile").write_text("x")
    with pytest.raises(StoreWriteError, match=r"somefile/x\.zarr"):
        _write(tmp_path / "somefile" / "x.zarr", 1.0)
    assert siblings(tmp_path / "somefile") == ["somefile"]


def test_unwritable_directory(tmp_path: Path) -> None:
    """A read-only parent directory gives StoreWriteError (root ignores modes: use a file as parent)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # chmod does not stop root; a regular file as parent stops everyone
        locked.rmdir()
        locked.write_text("not a directory")
    else:
        locked.chmod(0o500)
    try:
        with pytest.raises(StoreWriteError, match=r"locked"):
            _write(locked / "x.zarr", 1.0)
    finally:
        if locked.is_dir():
            locked.chmod(0o700)
    assert not (locked / "x.zarr").exists()


def test_exception_in_with_block_leaves_nothing(tmp_path: Path) -> None:
    """Raising inside `with create_store(...)` removes the temporary; no store appears."""

    def crash() -> None:
        with fl.create_store(tmp_path / "s.zarr", chunk_len=2) as w:
            w.append("train", {"x": np.zeros(9)})
            assert len(siblings(tmp_path / "s.zarr")) == 1  # the hidden temporary
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        crash()
    assert siblings(tmp_path / "s.zarr") == []
    with pytest.raises(StoreNotFoundError, match="convert the data first"):
        fl.open_store(tmp_path / "s.zarr")


def test_dropped_writer_removes_its_temporary(tmp_path: Path) -> None:
    """A writer garbage-collected without close() cleans up after itself."""
    w = fl.create_store(tmp_path / "s.zarr")
    w.append("train", {"x": np.zeros(3)})
    del w
    gc.collect()
    assert siblings(tmp_path / "s.zarr") == []


_KILLED_WRITER = """
import os, sys
import numpy as np
import fastload as fl
w = fl.create_store(sys.argv[1], chunk_len=4)
w.append("train", {"x": np.zeros(10)})
os._exit(1)
"""


def test_killed_writer_leaves_a_stale_temporary_the_next_writer_removes(tmp_path: Path) -> None:
    """A writer killed half-way: no store, a clear error, and the next writer cleans up."""
    target = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], env=env, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert not target.exists()
    leftovers = [name for name in siblings(target) if name != "s.zarr"]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".s.zarr.fastload-tmp-")
    with pytest.raises(
        StoreNotFoundError, match=f"interrupted write left the temporary .*{leftovers[0]}"
    ):
        fl.open_store(target)
    assert probe_store(target) == "missing"
    _write(target, 3.0)
    assert siblings(target) == ["s.zarr"]
    assert _value(target) == 3.0


def test_live_writers_temporaries_are_kept(tmp_path: Path) -> None:
    """Only temporaries of dead processes are removed: a concurrent live writer is left alone."""
    target = tmp_path / "s.zarr"
    first = fl.create_store(target)
    first.append("train", {"x": np.ones(2)})

    def race() -> None:
        with fl.create_store(target) as second:  # same process, so its pid is alive
            second.append("train", {"x": np.zeros(2)})
            assert len(siblings(target)) == 2
            first.close()

    with pytest.raises(StoreExistsError, match="complete store already exists"):
        race()
    assert _value(target) == 1.0  # the second writer found a complete store at commit and gave up
    assert siblings(target) == ["s.zarr"]


def test_incomplete_store_is_refused_then_replaced(tmp_path: Path) -> None:
    """A store whose complete flag is false is refused by readers and may be overwritten."""
    path = tmp_path / "s.zarr"
    _write(path, 1.0)
    from store_helpers import edit_root_attrs

    edit_root_attrs(path, lambda a: a.update(complete=False))
    assert probe_store(path) == "incomplete"
    with pytest.raises(IncompleteStoreError, match=r"s\.zarr.*incomplete"):
        fl.open_store(path)
    _write(path, 2.0)  # no overwrite needed: an incomplete store holds nothing usable
    assert _value(path) == 2.0


def test_file_url_write_and_read(tmp_path: Path) -> None:
    """file:// URLs work for writing (atomically) and reading."""
    url = f"file://{tmp_path / 'u.zarr'}"
    _write(url, 5.0, n=7)
    assert (tmp_path / "u.zarr" / "zarr.json").is_file()
    assert siblings(tmp_path / "u.zarr") == ["u.zarr"]
    store = fl.open_store(url)
    assert store.name == "u"
    assert store.path == url
    np.testing.assert_array_equal(store["train"].read("x"), np.full(7, 5.0))
    np.testing.assert_array_equal(store["train"].read_chunk("x", 0), np.full(7, 5.0))
    assert root_attrs(tmp_path / "u.zarr")["complete"] is True
    with pytest.raises(StoreExistsError):
        _write(url, 6.0)
