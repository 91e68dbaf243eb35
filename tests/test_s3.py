"""Stores on S3: write and read through ``s3://`` URLs against a moto server on loopback.

The endpoint and credentials reach s3fs/botocore through environment variables
(``AWS_ENDPOINT_URL`` and friends), so the store layer needs no S3 options.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import fastload as fl
from fastload.converters._spec import load_spec
from fastload.converters.generic import convert
from fastload.errors import SourceFileError, StoreError
from fastload.store import probe_store

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "fastload-test"
DATA = Path(__file__).resolve().parent / "data" / "root"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with one bucket; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        }.items():
            mp.setenv(key, value)
        import boto3
        import fsspec

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        fsspec.filesystem("s3").invalidate_cache()
        try:
            yield endpoint
        finally:
            _close_s3_sessions()
            server.stop()


def _close_s3_sessions() -> None:
    """Close the aiohttp sessions of every cached s3fs instance (zarr's async ones have no finalizer)."""
    import s3fs
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        creator = getattr(fs, "_s3creator", None)
        if creator is None:
            continue
        if fs.asynchronous:  # created by zarr on its event loop
            sync(creator.__aexit__(None, None, None))
        else:
            s3fs.S3FileSystem.close_session(fs.loop, creator)
    s3fs.S3FileSystem.clear_instance_cache()


SPEC = """
    [dataset]
    name = "HZZ"

    [source]
    files = ["uproot-HZZ.root"]
    tree = "events"
    block_events = 700

    [fields.muons]
    columns = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E"]
    ragged = true

    [fields.met]
    columns = ["MET_px", "MET_py"]

    [label]
    from = "none"

    [split]
    by = "fraction"
    fractions = { train = 0.75, test = 0.25 }

    [store]
    chunk_len = 256
"""


def write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "hzz.toml"
    path.write_text(textwrap.dedent(SPEC))
    return path


def test_convert_to_s3_and_read_back(s3: str, tmp_path: Path) -> None:
    """A serial conversion writes s3://...; open_store, read and read_chunk give the local store's values."""
    spec = load_spec(write_spec(tmp_path))
    local = fl.open_store(convert(spec, tmp_path / "local.zarr", source_dir=DATA))
    url = f"s3://{BUCKET}/hzz.zarr"
    assert probe_store(url) == "missing"
    assert convert(spec, url, source_dir=DATA) == url
    assert probe_store(url) == "complete"
    remote = fl.open_store(url)
    assert remote.splits == local.splits
    for split in remote.splits:
        for field in ("muons", "met"):
            a, b = remote[split].read(field), local[split].read(field)
            if isinstance(a, fl.Ragged):
                np.testing.assert_array_equal(a.values, b.values)
                np.testing.assert_array_equal(a.offsets, b.offsets)
            else:
                np.testing.assert_array_equal(a, b)
        out = np.empty((remote[split].chunk_len, 2), np.float32)
        np.testing.assert_array_equal(
            remote[split].read_chunk("met", 0, out), local[split].read_chunk("met", 0)
        )


def test_dask_conversion_to_s3_matches_local_chunks(s3: str, tmp_path: Path) -> None:
    """Dask tasks write their chunks and fragments to S3; every chunk object equals the local file."""
    import fsspec
    from distributed import Client, LocalCluster

    spec = load_spec(write_spec(tmp_path))
    convert(spec, tmp_path / "local.zarr", source_dir=DATA)
    url = f"s3://{BUCKET}/hzz-dask.zarr"
    # threads share this process's environment (the S3 endpoint); processes would need it exported
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        convert(spec, url, source_dir=DATA, client=client)
    fs = fsspec.filesystem("s3")
    local_root = tmp_path / "local.zarr"
    for path in local_root.rglob("*"):
        rel = path.relative_to(local_root).as_posix()
        if path.is_file() and rel != "zarr.json":
            assert fs.cat_file(f"{BUCKET}/hzz-dask.zarr/{rel}") == path.read_bytes(), rel
    assert not fs.exists(f"{BUCKET}/hzz-dask.zarr.work")  # fragments and markers removed
    assert len(fl.open_store(url)["train"]) == len(fl.open_store(local_root)["train"])


def test_failed_remote_conversion_leaves_no_complete_store(s3: str, tmp_path: Path) -> None:
    """A source failing mid-run leaves the S3 prefix without a complete store."""
    import shutil

    import uproot

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(DATA / "uproot-HZZ.root", src / "uproot-HZZ.root")
    seek = int(uproot.open(src / "uproot-HZZ.root")["events"]["Muon_Px"].member("fBasketSeek")[1])
    with open(src / "uproot-HZZ.root", "r+b") as fh:
        fh.seek(seek + 120)
        fh.write(bytes(range(200, 256)) * 2)
    url = f"s3://{BUCKET}/broken.zarr"
    with pytest.raises(SourceFileError, match=r"uproot-HZZ\.root"):
        convert(load_spec(write_spec(tmp_path)), url, source_dir=src)
    assert probe_store(url) != "complete"
    with pytest.raises(StoreError):
        fl.open_store(url)
