"""PyTorch adapter: ``loader.torch()``, ``FastloadIterableDataset``, ``distributed_loader``.

Every sample of the test store carries its own index (field ``idx``) and
values derived from it, so each test checks *which* samples arrive, in plan
order, not only shapes.  CUDA paths run only where a GPU is present (``gpu``).
"""

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
from fastload.errors import ConfigError

torch = pytest.importorskip("torch")

from fastload.adapters.torch import (  # noqa: E402  (after importorskip)
    FastloadIterableDataset,
    TorchBatches,
    distributed_loader,
    distributed_rank,
    to_torch,
)

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("no_leaks")]

REPO = Path(__file__).resolve().parent.parent
N_TRAIN = 203
CHUNK = 16
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def sample_arrays(n: int, offset: int = 0) -> dict[str, np.ndarray]:
    """Fields whose values identify the sample: idx, X (6, 4) float32, y, mask (6,) bool."""
    idx = np.arange(offset, offset + n, dtype=np.int64)
    X = (idx[:, None, None] * 10.0 + np.arange(24).reshape(6, 4)).astype(np.float32)
    return {"idx": idx, "X": X, "y": (idx % 2).astype(np.int64), "mask": (X[:, :, 0] % 3) == 0}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> fl.Store:
    path = tmp_path_factory.mktemp("torch") / "ids.zarr"
    fl.write_arrays(
        path, {"train": sample_arrays(N_TRAIN), "test": sample_arrays(40, 10_000)}, chunk_len=CHUNK
    )
    return fl.open_store(path)


def expected_batches(loader: fl.Loader, split: fl.Split, epoch: int) -> list[dict[str, np.ndarray]]:
    """What batch b of ``epoch`` must hold, from the loader's plan and the store."""
    plan = loader.plan(epoch)
    arrays = {f: np.asarray(split.read(f)) for f in loader.fields}
    out = []
    for b in range(plan.n_batches):
        rows = plan.index[plan.batch_bounds[b] : plan.batch_bounds[b + 1]]
        out.append({f: a[rows] for f, a in arrays.items()})
    return out


def shm_ranges() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of fastload shared-memory segments."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "/dev/shm/fastload-" in line:
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def in_shared_memory(tensor: torch.Tensor) -> bool:
    ptr = tensor.data_ptr()
    return any(lo <= ptr < hi for lo, hi in shm_ranges())


def assert_batch_equal(batch: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    assert set(batch) == set(want)
    for name, value in want.items():
        got = batch[name]
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.cpu().numpy(), value, err_msg=name)


# --------------------------------------------------------------------------- CPU
def test_cpu_tensors_are_zero_copy_views_in_plan_order(store: fl.Store) -> None:
    """Default CPU tensors share the loader's shared memory and hold the planned samples."""
    split = store["train"]
    with fl.Loader(split, 32, seed=5, workers=2) as loader:
        want = expected_batches(loader, split, 0)
        batches = loader.torch()
        assert isinstance(batches, TorchBatches)
        assert len(batches) == len(want)
        n = 0
        for b, batch in enumerate(batches):
            assert_batch_equal(batch, want[b])
            assert batch["X"].dtype == torch.float32
            assert batch["mask"].dtype == torch.bool
            assert in_shared_memory(batch["X"])
            assert in_shared_memory(batch["idx"])
            n += 1
        assert n == len(want)


def test_copy_true_gives_tensors_that_outlive_the_batch(store: fl.Store) -> None:
    """copy=True tensors own their memory: kept across the epoch, they still hold their samples."""
    split = store["train"]
    with fl.Loader(split, 16, seed=1, workers=1, prefetch=2) as loader:
        want = expected_batches(loader, split, 0)
        kept = list(to_torch(loader, copy=True))
    assert len(kept) == len(want)
    for got, expect in zip(kept, want, strict=True):
        assert not in_shared_memory(got["X"])
        assert_batch_equal(got, expect)


def test_views_kept_past_their_batch_stay_correct(store: fl.Store) -> None:
    """Zero-copy tensors keep their slot: the loader reuses it only once they are gone."""
    split = store["train"]
    with fl.Loader(split, 16, seed=1, workers=0, prefetch=2) as loader:
        want = expected_batches(loader, split, 0)
        # two epochs: the second reuses every slot of the ring, whatever its size
        kept = [batch["idx"] for _ in range(2) for batch in loader.torch()][: len(want)]
        stale = [not np.array_equal(t.numpy(), w["idx"]) for t, w in zip(kept, want, strict=True)]
    assert not any(stale)


def test_each_iteration_is_one_epoch_and_state_passes_through(store: fl.Store) -> None:
    """iter() runs the loader's next epoch; state_dict/set_epoch are the loader's."""
    split = store["train"]
    with fl.Loader(split, 50, seed=2, workers=0) as loader:
        batches = loader.torch()
        want1 = expected_batches(loader, split, 1)
        first = [b["idx"].clone() for b in batches]
        assert loader.epoch == 1
        assert batches.state_dict()["epoch"] == 1
        second = [b["idx"].clone() for b in batches]
        for got, expect in zip(second, want1, strict=True):
            np.testing.assert_array_equal(got.numpy(), expect["idx"])
        assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        batches.set_epoch(0)
        again = [b["idx"].clone() for b in batches]
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_resume_mid_epoch_through_the_adapter(store: fl.Store) -> None:
    """A state saved after k batches resumes at batch k of the same epoch."""
    split = store["train"]
    with fl.Loader(split, 20, seed=9, workers=0) as loader:
        want = expected_batches(loader, split, 0)
        batches = loader.torch()
        for k, _ in enumerate(batches):
            if k == 3:
                state = batches.state_dict()
                break
        batches.load_state_dict(state)
        rest = [b["idx"].clone() for b in batches]
    assert len(rest) == len(want) - 4
    for got, expect in zip(rest, want[4:], strict=True):
        np.testing.assert_array_equal(got.numpy(), expect["idx"])


def test_dataloader_with_iterable_dataset(store: fl.Store) -> None:
    """DataLoader(ds, batch_size=None, num_workers=0) yields the loader's batches unchanged."""
    split = store["train"]
    with fl.Loader(split, 25, seed=3, workers=1) as loader:
        want = expected_batches(loader, split, 0)
        dl = torch.utils.data.DataLoader(
            FastloadIterableDataset(loader), batch_size=None, num_workers=0
        )
        assert len(dl) == len(want)
        got = 0
        for b, batch in enumerate(dl):
            assert_batch_equal(batch, want[b])
            got += 1
        assert got == len(want)


def test_dataloader_workers_are_refused(store: fl.Store) -> None:
    """DataLoader worker processes would copy the loader: the error says to use num_workers=0."""
    with fl.Loader(store["train"], 25, workers=0) as loader:
        dl = torch.utils.data.DataLoader(
            FastloadIterableDataset(loader),
            batch_size=None,
            num_workers=1,
            multiprocessing_context="spawn",
        )
        with pytest.raises(ConfigError, match="num_workers=0"):
            next(iter(dl))


def test_cuda_without_gpu_is_a_clear_error(store: fl.Store) -> None:
    """Asking for CUDA or pinned memory without a GPU raises ConfigError naming the fix."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; covered by the gpu tests")
    with fl.Loader(store["train"], 25, workers=0) as loader:
        with pytest.raises(ConfigError, match="CUDA"):
            loader.torch(device="cuda")
        with pytest.raises(ConfigError, match="CUDA"):
            loader.torch(pin_memory=True)
        with pytest.raises(ConfigError, match="unknown torch device"):
            loader.torch(device="not-a-device")
        with pytest.raises(ConfigError, match="staging_buffers"):
            loader.torch(staging_buffers=1)


def test_training_steps_on_cpu(store: fl.Store) -> None:
    """A few real optimisation steps from loader.torch() reduce the loss on a learnable label."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    with fl.Loader(store["train"], 32, seed=0, workers=2, drop_last=True) as loader:
        for _ in range(15):
            for batch in loader.torch():
                # y = idx % 2 is a function of X's first value: learnable after scaling
                x = (batch["X"] % 20.0) / 10.0
                loss = loss_fn(model(x).squeeze(-1), batch["y"].float())
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])


# --------------------------------------------------------------------------- distributed
def test_distributed_loader_needs_an_initialised_group(store: fl.Store) -> None:
    """Without a process group: a clear error, or a single-rank loader when asked for."""
    assert distributed_rank() == (0, 1)
    with pytest.raises(ConfigError, match="init_process_group"):
        distributed_loader(store["train"], 10)
    with pytest.raises(ConfigError, match="rank"):
        distributed_loader(store["train"], 10, rank=1, require_initialized=False)
    with distributed_loader(store["train"], 10, require_initialized=False, workers=0) as loader:
        assert len(loader) == N_TRAIN // 10  # drop_last=True by default


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    import fastload as fl
    from fastload.adapters.torch import distributed_loader

    def main(rank, world, port, store, out):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(24, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        seen, steps = [], 0
        with distributed_loader(fl.open_store(store)["train"], 16, seed=4, workers=1) as loader:
            for epoch in range(2):
                ids = []
                for batch in loader.torch():
                    loss = model(batch["X"].flatten(1) / 1000.0).pow(2).mean()
                    opt.zero_grad()
                    loss.backward()  # all-reduce across ranks: needs equal step counts
                    opt.step()
                    ids.extend(batch["idx"].tolist())
                    steps += 1
                seen.append(ids)
        dist.barrier()
        weight = model.module.weight.detach().flatten().tolist()
        dist.destroy_process_group()
        json.dump({"seen": seen, "steps": steps, "weight": weight}, open(out, "w"))

    if __name__ == "__main__":
        main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_ranks_see_disjoint_samples(store: fl.Store, tmp_path: Path) -> None:
    """Two gloo ranks train with DDP from distributed_loader: disjoint shards, equal steps."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(rank),
                "2",
                str(port),
                store.path,
                str(tmp_path / f"r{rank}.json"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=180)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} failed:\n{outputs[rank]}"
    results = [json.loads((tmp_path / f"r{rank}.json").read_text()) for rank in range(2)]
    assert results[0]["steps"] == results[1]["steps"] == 2 * ((N_TRAIN // 2) // 16)
    assert results[0]["weight"] == pytest.approx(results[1]["weight"])  # DDP kept them in sync
    for epoch in range(2):
        a, b = (set(r["seen"][epoch]) for r in results)
        assert len(a) == len(results[0]["seen"][epoch])  # no repeats within a rank
        assert not a & b
        assert a | b <= set(range(N_TRAIN))
        assert len(a | b) == 2 * (N_TRAIN // 2 // 16) * 16


def test_import_fastload_loads_no_framework() -> None:
    """``import fastload`` (and fastload.adapters) imports neither torch nor TensorFlow."""
    code = (
        "import sys, fastload, fastload.adapters;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@cuda
def test_cuda_batches_match_plan_and_survive_slot_reuse(store: fl.Store) -> None:
    """GPU tensors (pinned staging, side stream) hold the planned samples, even when all are kept."""
    split = store["train"]
    with fl.Loader(split, 16, seed=7, workers=2, prefetch=2) as loader:
        want = expected_batches(loader, split, 0)
        kept = []
        for batch in loader.torch(device="cuda"):
            assert all(t.is_cuda for t in batch.values())
            torch.cuda._sleep(1_000_000)  # a slow consumer stream: copies must still wait correctly
            kept.append(
                {k: v * 1 if v.dtype != torch.bool else v.clone() for k, v in batch.items()}
            )
        torch.cuda.synchronize()
    assert len(kept) == len(want)
    for got, expect in zip(kept, want, strict=True):
        assert_batch_equal(got, expect)


@pytest.mark.gpu
@cuda
def test_pinned_cpu_tensors(store: fl.Store) -> None:
    """pin_memory=True on the CPU gives pinned copies holding the planned samples."""
    split = store["train"]
    with fl.Loader(split, 32, seed=8, workers=1) as loader:
        want = expected_batches(loader, split, 0)
        kept = list(loader.torch(pin_memory=True))
    for got, expect in zip(kept, want, strict=True):
        assert all(t.is_pinned() for t in got.values())
        assert_batch_equal(got, expect)
