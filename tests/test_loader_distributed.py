"""A plain fl.Loader inside a torch.distributed job warns that every rank reads the same samples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastload as fl

REPO = Path(__file__).resolve().parents[1]

RANK_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, warnings
    import torch.distributed as dist
    import fastload as fl

    def main(rank, world, port, store, out):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(name)s %(message)s")
        split = fl.open_store(store)["train"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fl.Loader(split, 4, workers=0).close()  # no rank/world_size: warns
            fl.Loader(split, 4, workers=0).close()  # once per process
            fl.Loader(split, 4, workers=0, rank=rank, world_size=world).close()  # sharded: fine
            fl.Loader(split, 4, workers=0, world_size=1).close()  # explicitly unsharded: fine
        dist.barrier()
        dist.destroy_process_group()
        json.dump([str(w.message) for w in caught], open(out, "w"))

    if __name__ == "__main__":
        main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dist") / "s.zarr"
    fl.write_arrays(path, {"train": {"id": np.arange(40)}}, chunk_len=8)
    return str(path)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.mark.timeout(120)
def test_unsharded_loader_in_a_two_rank_group_warns_once(store_path: str, tmp_path: Path) -> None:
    """Both gloo ranks get one warning naming distributed_loader, and a log record."""
    pytest.importorskip("torch.distributed")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(r),
                "2",
                str(port),
                store_path,
                str(tmp_path / f"{r}.json"),
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=100)[0])
    finally:
        for proc in procs:
            proc.kill()
    for r, (proc, out) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, out[-3000:]
        messages = json.loads((tmp_path / f"{r}.json").read_text())
        assert len(messages) == 1, messages
        assert "distributed_loader" in messages[0]
        assert "2 processes" in messages[0]
        assert out.count("LOG fastload.loader") == 1, out[-3000:]


def test_no_torch_import_when_the_program_has_none(store_path: str) -> None:
    """The check looks torch up in sys.modules only: a numpy-only program never imports it."""
    code = (
        "import sys, fastload as fl\n"
        f"fl.Loader(fl.open_store({store_path!r})['train'], 4, workers=0).close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
