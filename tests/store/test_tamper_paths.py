"""One chunk decoder on every path: the same error for the same damage, local and remote.

A missing, truncated or corrupt chunk raises the same CorruptStoreError through
``Split.read``, a dataset's ``load()`` and the Loader on every backend; remote
stores read through fsspec with the same checks; a missing fsspec, a missing
remote store and an unreachable endpoint each say what they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastload as fl
import fastload.datasets as fd
from fastload import synthetic
from fastload.errors import (
    CorruptStoreError,
    FastloadError,
    StoreError,
    StoreNotFoundError,
)

REPO = Path(__file__).resolve().parents[2]


def _damage(chunk: Path, how: str) -> None:
    raw = chunk.read_bytes()
    if how == "missing":
        chunk.unlink()
    elif how == "truncated":
        chunk.write_bytes(raw[: len(raw) // 3])
    else:
        flipped = bytearray(raw)
        flipped[len(raw) // 2] ^= 0x01
        chunk.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["missing", "truncated", "corrupt"])
def test_same_error_through_every_path(tmp_path: Path, how: str) -> None:
    data = tmp_path / "datasets"
    synthetic.make_spinodal(data / "Spinodal", seed=2, n_train=40, n_test=9)
    fd.Spinodal.load("train", data, verbose=False)  # converts on first load
    (store,) = sorted(data.glob("*.zarr"))
    split = fl.open_store(store)["train"]
    chunk = Path(split.reader("histogram").chunk_file(0))
    _damage(chunk, how)

    errors: list[BaseException] = []
    with pytest.raises(CorruptStoreError) as info:
        fl.open_store(store)["train"].read("histogram")
    errors.append(info.value)
    with pytest.raises(CorruptStoreError) as info:
        fd.Spinodal.load("train", data, verbose=False)
    errors.append(info.value)
    for kw in ({"workers": 0}, {"workers": 1, "backend": "thread"}, {"workers": 1}):
        with pytest.raises(FastloadError) as info:
            _drain(store, **kw)
        # worker replies keep their type: every backend raises the store's error
        assert isinstance(info.value, CorruptStoreError), kw
        errors.append(info.value)
    first = str(errors[0])
    assert str(chunk) in first
    for err in errors:
        assert first in str(err)


def _drain(store: Path, **kw: object) -> None:
    with fl.Loader(fl.open_store(store)["train"], 8, fields=("histogram",), **kw) as loader:
        for _ in loader:
            pass


def test_remote_store_reads_and_verifies_through_fsspec(tmp_path: Path) -> None:
    """A store on an fsspec filesystem decodes with the same checks (memory:// here)."""
    fsspec = pytest.importorskip("fsspec")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    local = fl.write_arrays(tmp_path / "r.zarr", {"train": {"X": X}}, chunk_len=64)
    fs = fsspec.filesystem("memory")
    url = "memory://fastload-tamper/r.zarr"
    try:
        fs.put(str(local), "/fastload-tamper/r.zarr", recursive=True)
        split = fl.open_store(url)["train"]
        np.testing.assert_array_equal(split.read("X"), X)
        batches = [np.array(b["X"]) for b in fl.Loader(split, 50, shuffle=False, workers=0)]
        np.testing.assert_array_equal(np.concatenate(batches), X)
        key = "/fastload-tamper/r.zarr/train/X/c/1/0"
        raw = bytearray(fs.cat_file(key))
        raw[20] ^= 0x04
        fs.pipe_file(key, bytes(raw))
        with pytest.raises(CorruptStoreError, match=r"r\.zarr/train/X/c/1/0"):
            fl.open_store(url)["train"].read("X")
        fs.rm(key)
        with pytest.raises(CorruptStoreError, match="missing"):
            fl.open_store(url)["train"].read("X")
    finally:
        fs.rm("/fastload-tamper", recursive=True)


def test_missing_remote_store_is_store_not_found() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(StoreNotFoundError, match=r"memory://nowhere/x\.zarr"):
        fl.open_store("memory://nowhere/x.zarr")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        check=False,
    )


def test_open_store_without_fsspec_names_the_extra() -> None:
    """Without fsspec, a remote URL says which extra to install (not 'not a Zarr v3 group')."""
    proc = _run(
        """
        import sys
        sys.modules["fsspec"] = None  # as if it were not installed
        import fastload as fl
        try:
            fl.open_store("s3://bucket/x.zarr")
        except ModuleNotFoundError as exc:
            print("ERR", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout
    assert "fastload[s3]" in proc.stdout
    assert "Zarr v3 group" not in proc.stdout


def test_unreachable_endpoint_says_so() -> None:
    pytest.importorskip("s3fs")
    proc = _run(
        """
        import fastload as fl
        from fastload.errors import StoreError
        try:
            fl.open_store("s3://bucket/x.zarr")
        except StoreError as exc:
            print("ERR", exc)
        """,
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # discard port: nothing listens
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "unreachable" in proc.stdout
    assert "s3://bucket/x.zarr" in proc.stdout
    assert issubclass(StoreNotFoundError, StoreError)
