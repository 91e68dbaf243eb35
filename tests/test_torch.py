"""PyTorch adapter: ``loader.torch()``, ``FastloadIterableDataset``, ``distributed_loader``.

Every sample of the test store carries its own index (field ``idx``) and
values derived from it, so each test checks *which* samples arrive, in plan
order, not only shapes.  CUDA paths run only where a GPU is present (``gpu``).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
import weakref
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


def test_views_kept_past_their_batch_keep_their_samples(store: fl.Store) -> None:
    """Zero-copy tensors kept across two epochs (the ring wraps many times) still hold their samples.

    tests/test_kept_batches_adapters.py checks the same over ring sizes, chunk
    lengths and batch sizes on larger data.
    """
    split = store["train"]
    with fl.Loader(split, 16, seed=1, workers=0, prefetch=2) as loader:
        want = expected_batches(loader, split, 0) + expected_batches(loader, split, 1)
        kept = [batch for _ in range(2) for batch in loader.torch()]
        assert len(kept) == len(want)
        for got, expect in zip(kept, want, strict=True):
            assert_batch_equal(got, expect)
        del kept


def test_read_only_arrays_become_tensors_without_a_warning() -> None:
    """The loader lends read-only views; the adapter wraps them without torch's warning."""
    from fastload.adapters.torch import _view_tensor

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = _view_tensor(array)
    assert tensor.data_ptr() == array.ctypes.data  # no copy
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_adapter_holds_no_reference_to_a_batch_it_handed_out(store: fl.Store) -> None:
    """Once the caller drops a batch, nothing in the adapter keeps its tensors alive."""
    with fl.Loader(store["train"], 16, workers=0) as loader:
        for mode in ({}, {"copy": True}, {"x": "X", "y": "y"}):
            iterator = iter(loader.torch(**mode))
            element = next(iterator)
            tensor = element[0] if isinstance(element, tuple) else element["X"]
            ref = weakref.ref(tensor)
            del element, tensor
            gc.collect()
            assert ref() is None, mode  # the generator, suspended, holds nothing of it
            iterator.close()


# --------------------------------------------------------------------------- selection
def test_x_y_selection_gives_tuples_in_plan_order(store: fl.Store) -> None:
    """``for x, y in loader.torch(x="X", y="y")`` works; nested templates give nested structures."""
    split = store["train"]
    with fl.Loader(split, 32, seed=4, workers=1) as loader:
        want = expected_batches(loader, split, 0)
        n = 0
        for (x, y), expect in zip(loader.torch(x="X", y="y"), want, strict=True):
            np.testing.assert_array_equal(x.numpy(), expect["X"])
            np.testing.assert_array_equal(y.numpy(), expect["y"])
            n += 1
        assert n == len(want)
        want = expected_batches(loader, split, 1)
        for element, expect in zip(
            loader.torch(x=("X", {"m": "mask"}), y=["y"], sample_weight="idx"), want, strict=True
        ):
            (X, inner), ys, w = element
            assert isinstance(inner, dict)
            assert set(inner) == {"m"}
            assert isinstance(ys, tuple)
            assert len(ys) == 1
            np.testing.assert_array_equal(X.numpy(), expect["X"])
            np.testing.assert_array_equal(inner["m"].numpy(), expect["mask"])
            np.testing.assert_array_equal(ys[0].numpy(), expect["y"])
            np.testing.assert_array_equal(w.numpy(), expect["idx"])
        only_x = next(iter(loader.torch(x="idx")))
        assert isinstance(only_x, torch.Tensor)


def test_selection_errors_name_the_field(store: fl.Store) -> None:
    """A misspelt field or y without x fails at once, naming the fix."""
    from fastload.errors import FieldNotFoundError

    with fl.Loader(store["train"], 32, workers=0) as loader:
        with pytest.raises(FieldNotFoundError, match=r"'Y'.*closest: 'y'"):
            loader.torch(x="X", y="Y")
        with pytest.raises(ConfigError, match="without x"):
            loader.torch(y="y")
        with pytest.raises(ConfigError, match="without y"):
            to_torch(loader, x="X", sample_weight="idx")


# --------------------------------------------------------------------------- close
def test_close_and_with_close_the_loader_and_end_the_iteration(store: fl.Store) -> None:
    """``with loader.torch() as batches`` ends a running epoch and closes the loader on exit."""
    loader = fl.Loader(store["train"], 16, workers=2)
    with loader.torch() as batches:
        iterator = iter(batches)
        next(iterator)
        assert loader.worker_pids()
    assert loader.shared_nbytes == 0
    assert not loader.worker_pids()
    with pytest.raises(StopIteration):
        next(iterator)  # the interrupted iteration is over
    with pytest.raises(ConfigError, match="closed"):
        iter(loader)
    with pytest.raises(ConfigError, match="closed"):
        iter(batches)
    batches.close()  # idempotent
    with FastloadIterableDataset(fl.Loader(store["train"], 16, workers=0)) as ds:
        next(iter(ds))
    with pytest.raises(ConfigError, match="closed"):
        iter(ds.loader)


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


class _HostStager:
    """The CUDA path's staging ring, on the CPU: copies, handed over as they are."""

    def stage(self, batch):
        return {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}, None

    def hand_over(self, tensors, event):
        return tensors


def test_state_of_the_cuda_path_counts_only_batches_handed_out(store: fl.Store) -> None:
    """The CUDA path stays one batch ahead of the caller; its state must not count that batch.

    Runs the path's own generator with a CPU stand-in for the pinned ring (no
    GPU needed): after the caller has seen k batches, the state resumes at
    batch k, mid-epoch and at the epoch's end.
    """
    split = store["train"]
    with fl.Loader(split, 20, seed=9, workers=0) as loader:
        want = expected_batches(loader, split, 0)
        batches = loader.torch()
        batches._stager = _HostStager()
        states = []
        for batch in batches._iter_cuda():
            assert batch["idx"].tolist() == want[len(states)]["idx"].tolist()
            states.append(batches.state_dict())
        assert [s["batch"] for s in states[:-1]] == list(range(1, len(want)))
        assert (states[-1]["epoch"], states[-1]["batch"]) == (1, 0)  # after the last one
        resumed = states[3]  # the caller had seen batches 0..3
        loader.load_state_dict(resumed)
        rest = [b["idx"].tolist() for b in loader.torch()]
    assert rest == [w["idx"].tolist() for w in want[4:]]


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


# JAX, once a test has started its backend in this process, warns at every os.fork(); this
# is the test that forks the test process itself (DataLoader's fork workers)
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_dataloader_workers_are_refused(store: fl.Store, context: str) -> None:
    """DataLoader worker processes would each run the loader: the error says num_workers=0.

    spawn (and forkserver) fail when pickling the dataset; fork fails in the
    worker's first ``iter()`` and DataLoader re-raises the ConfigError here.
    The loader, already running, keeps working afterwards.
    """
    with fl.Loader(store["train"], 25, workers=1) as loader:
        want = expected_batches(loader, store["train"], 1)
        assert sum(1 for _ in loader) == len(want)  # workers and shared memory exist now
        dl = torch.utils.data.DataLoader(
            FastloadIterableDataset(loader),
            batch_size=None,
            num_workers=2,
            multiprocessing_context=context,
        )
        with pytest.raises(ConfigError, match="num_workers=0"):
            next(iter(dl))
        del dl
        gc.collect()  # the exception's traceback held DataLoader's iterator, which stops its workers
        got = [b["idx"].clone() for b in loader.torch()]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g.numpy(), w["idx"])


@pytest.mark.parametrize("kwargs", [{"batch_size": 64}, {}, {"batch_size": 4, "drop_last": True}])
def test_dataloader_batching_is_refused_at_once(store: fl.Store, kwargs: dict) -> None:
    """A DataLoader batch_size (default 1) would stack batches: ConfigError naming batch_size=None."""
    with fl.Loader(store["train"], 25, workers=0) as loader:
        dl = torch.utils.data.DataLoader(FastloadIterableDataset(loader), **kwargs)
        with pytest.raises(ConfigError, match=r"batch_size=None"):
            next(iter(dl))
        assert loader.epoch == 0  # refused before the loader started an epoch
        # the same dataset with batch_size=None, and x/y items, work
        dl = torch.utils.data.DataLoader(
            FastloadIterableDataset(loader, x="X", y="y"), batch_size=None
        )
        want = expected_batches(loader, store["train"], 0)
        for (x, y), expect in zip(dl, want, strict=True):
            np.testing.assert_array_equal(x.numpy(), expect["X"])
            np.testing.assert_array_equal(y.numpy(), expect["y"])


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
def test_raw_cuda_tensors_kept_past_the_staging_ring_keep_their_samples(store: fl.Store) -> None:
    """GPU tensors own their memory: kept as handed out (no copy), past 2 staging buffers, they hold."""
    split = store["train"]
    with fl.Loader(split, 16, seed=3, workers=1, prefetch=2) as loader:
        want = expected_batches(loader, split, 0)
        kept = list(loader.torch(device="cuda", staging_buffers=2, x="idx", y="X"))
        torch.cuda.synchronize()
    assert len(kept) == len(want)
    for (idx, X), expect in zip(kept, want, strict=True):
        assert idx.is_cuda
        assert X.is_cuda
        np.testing.assert_array_equal(idx.cpu().numpy(), expect["idx"])
        np.testing.assert_array_equal(X.cpu().numpy(), expect["X"])


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
