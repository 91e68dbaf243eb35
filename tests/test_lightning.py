"""Lightning: ``FastloadDataModule`` under ``Trainer.fit``, on one process and under ``ddp_spawn``.

Every training step records ``(epoch, batch_idx, sample ids)``; the ids are a
field of the store (``id[i] = i``), so a run says exactly which samples each
rank saw in which step.  The checks: each rank's batches are its loader
plan's (``fl.Loader(..., rank=r, world_size=2).plan(e)``), the ranks' shards
are disjoint and together the whole epoch, and a run resumed from a checkpoint
taken mid-epoch sees the same batches from the same step on as a run that was
never interrupted.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import fastload as fl
from fastload.errors import ConfigError

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from fastload.adapters.lightning import FastloadDataModule, LightningBatches  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.usefixtures("no_leaks"),
    # Lightning 2.5 uses a torch.utils._pytree class that torch 2.13 deprecates
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning"),
]

N = 384  # 2 ranks x 12 batches x 16 samples: the shards cover the epoch exactly
N_VAL = 96
CHUNK = 32
SEED = 3


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``id`` identifies each sample; ``x`` separates the labels ``y`` (a model can learn)."""
    ids = np.arange(N, dtype=np.int64)
    y = (ids % 2).astype(np.float32)
    x = ((2 * y - 1)[:, None] * np.array([1.0, 0.5]) + 0.1 * np.sin(ids)[:, None]).astype(
        np.float32
    )
    path = tmp_path_factory.mktemp("lightning") / "ids.zarr"
    fl.write_arrays(
        path,
        {
            "train": {"id": ids, "x": x, "y": y},
            "val": {"id": ids[:N_VAL], "x": x[:N_VAL], "y": y[:N_VAL]},
        },
        chunk_len=CHUNK,
    )
    return str(path)


class Recorder(pl.LightningModule):
    """A tiny model that records the samples of every step and writes them at the end of fit.

    Defined at module level: ``ddp_spawn`` pickles it into the rank processes.
    """

    def __init__(self, out: str, tag: str) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.out, self.tag = out, tag
        self.seen: list[list] = []
        self.val_seen: list[list] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append([int(self.current_epoch), int(batch_idx), batch["id"].tolist()])
        logits = self.lin(batch["x"])[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_seen.append([int(self.current_epoch), int(batch_idx), batch["id"].tolist()])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_end(self) -> None:
        record = {"train": self.seen, "val": self.val_seen}
        path = Path(self.out) / f"{self.tag}-rank{self.global_rank}.json"
        path.write_text(json.dumps(record))


def trainer(ckpt_dir: Path | None, **kwargs: object) -> pl.Trainer:
    """2 epochs on the CPU; checkpoints every 16 steps into ``ckpt_dir`` (None: no checkpoints).

    Step 16 of 2 x 12 is mid-epoch: epoch 1, after its batch 4.
    """
    saving = ckpt_dir is not None
    return pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_checkpointing=saving,
        callbacks=(
            [pl.callbacks.ModelCheckpoint(ckpt_dir, every_n_train_steps=16, save_top_k=-1)]
            if saving
            else []
        ),
        **kwargs,
    )


#: a resumed run that saves no checkpoints of its own is warned it lacks the saving callback
RESUMED_WITHOUT_CALLBACK = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`:UserWarning"
)


def planned(store_path: str, batch_size: int, rank: int, world: int, epoch: int) -> list[list]:
    """Sample ids of every batch of ``epoch`` on ``rank``, from the loader's own plan."""
    split = fl.open_store(store_path)["train"]
    with fl.Loader(
        split, batch_size, seed=SEED, rank=rank, world_size=world, drop_last=True, workers=0
    ) as loader:
        plan = loader.plan(epoch)
        return [plan.batch(b)[1].tolist() for b in range(plan.n_batches)]


def by_step(records: list[list]) -> dict[tuple[int, int], list[int]]:
    return {(epoch, batch): ids for epoch, batch, ids in records}


def test_datamodule_pickles_by_configuration_and_builds_in_setup(store_path: str) -> None:
    """A set-up module pickles without its loaders; the copy builds the same batches."""
    dm = FastloadDataModule(
        train="train", val="val", store=store_path, batch_size=32, workers=1, seed=SEED
    )
    assert dm.sources["train"].store.path == fl.open_store(store_path).path
    dm.setup("fit")
    first = next(iter(dm.train_dataloader()))
    assert isinstance(dm.train_dataloader(), LightningBatches)
    assert dm.train_dataloader() is dm.train_dataloader()  # one iterable per split
    assert dm.test_dataloader is None  # no test=: Lightning sees no test hook
    blob = pickle.dumps(dm)
    dm.teardown("fit")
    copy = pickle.loads(blob)
    assert copy._loaders == {}  # configuration only
    assert copy._batches == {}
    copy.setup("fit")
    again = next(iter(copy.train_dataloader()))
    copy.teardown("fit")
    np.testing.assert_array_equal(first["id"].numpy(), again["id"].numpy())
    assert first["id"].tolist() == planned(store_path, 32, 0, 1, 0)[0]


def test_datamodule_refuses_what_it_cannot_use(store_path: str) -> None:
    with pytest.raises(ConfigError, match="store="):
        FastloadDataModule(train="train", batch_size=8)
    with pytest.raises(ConfigError, match="world_size"):
        FastloadDataModule(train="train", store=store_path, batch_size=8, world_size=2)
    with pytest.raises(ConfigError, match=r"not a fl\.Loader option"):
        FastloadDataModule(train="train", store=store_path, batch_size=8, wrokers=2)
    with pytest.raises(ConfigError, match="at least one"):
        FastloadDataModule(batch_size=8)
    dm = FastloadDataModule(train=(store_path, "train"), batch_size=8)
    dm.setup("fit")
    try:
        with pytest.raises(ConfigError, match="3 ranks"):
            dm.load_state_dict({"train": {"epoch": 0, "batch": 1, "rank": 1, "world_size": 3}})
    finally:
        dm.teardown("fit")


@pytest.mark.timeout(120)
@RESUMED_WITHOUT_CALLBACK
def test_fit_follows_epochs_and_resumes_mid_epoch(store_path: str, tmp_path: Path) -> None:
    """One process: batches are the plan's, validation is the same each epoch, resume is exact."""
    kwargs = {"train": "train", "val": "val", "store": store_path, "batch_size": 32, "seed": SEED}
    full = Recorder(str(tmp_path), "full")
    trainer(tmp_path / "ckpt", devices=1).fit(full, datamodule=FastloadDataModule(**kwargs))
    for epoch in range(2):
        got = [ids for e, _, ids in full.seen if e == epoch]
        assert got == planned(
            store_path, 32, 0, 1, epoch
        )  # epoch e of the trainer is loader epoch e
    val = [[ids for e, _, ids in full.val_seen if e == epoch] for epoch in range(2)]
    assert val[0] == val[1] == [list(range(b, b + 32)) for b in range(0, N_VAL, 32)]

    ckpt = tmp_path / "ckpt" / "epoch=1-step=16.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["FastloadDataModule"]["train"]["epoch"] == 1
    assert saved["FastloadDataModule"]["train"]["batch"] == 4  # 16 steps = 12 + 4
    resumed = Recorder(str(tmp_path), "resumed")
    trainer(None, devices=1).fit(resumed, datamodule=FastloadDataModule(**kwargs), ckpt_path=ckpt)
    assert [(e, b) for e, b, _ in resumed.seen] == [(1, b) for b in range(4, 12)]
    reference = by_step(full.seen)
    for epoch, batch, ids in resumed.seen:
        assert ids == reference[(epoch, batch)], f"epoch {epoch} batch {batch}"


@pytest.mark.timeout(180)
@RESUMED_WITHOUT_CALLBACK
def test_ddp_spawn_two_ranks_disjoint_shards_and_exact_resume(
    store_path: str, tmp_path: Path
) -> None:
    """``ddp_spawn`` on 2 CPU processes (gloo): disjoint shards covering each epoch, exact resume."""
    kwargs = {"train": "train", "store": store_path, "batch_size": 16, "seed": SEED, "workers": 1}
    ddp = {"devices": 2, "strategy": "ddp_spawn"}
    # the module is pickled into each rank (by store path and options) and set up there;
    # Lightning's default use_distributed_sampler=True leaves its iterables alone
    trainer(tmp_path / "ckpt", **ddp).fit(
        Recorder(str(tmp_path), "full"), datamodule=FastloadDataModule(**kwargs)
    )
    full = [json.loads((tmp_path / f"full-rank{r}.json").read_text())["train"] for r in range(2)]
    for epoch in range(2):
        shards = []
        for rank in range(2):
            got = [ids for e, _, ids in full[rank] if e == epoch]
            assert got == planned(store_path, 16, rank, 2, epoch), f"rank {rank} epoch {epoch}"
            shards.append({i for ids in got for i in ids})
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(N))

    # rank 0 wrote the checkpoint; each rank resumes its own shard at the same step
    trainer(None, **ddp).fit(
        Recorder(str(tmp_path), "resumed"),
        datamodule=FastloadDataModule(**kwargs),
        ckpt_path=tmp_path / "ckpt" / "epoch=1-step=16.ckpt",
    )
    for rank in range(2):
        resumed = json.loads((tmp_path / f"resumed-rank{rank}.json").read_text())["train"]
        assert [(e, b) for e, b, _ in resumed] == [(1, b) for b in range(4, 12)]
        reference = by_step(full[rank])
        for epoch, batch, ids in resumed:
            assert ids == reference[(epoch, batch)], f"rank {rank} epoch {epoch} batch {batch}"


def test_datamodule_takes_any_source() -> None:
    """An in-memory source (fl.from_arrays) feeds the module as a store split does."""
    ids = np.arange(64, dtype=np.int64)
    source = fl.from_arrays({"id": ids, "x": np.ones((64, 2), np.float32)}, chunk_len=16)
    dm = FastloadDataModule(train=source, batch_size=16, workers=0, shuffle=False)
    assert dm.sources["train"] is source
    dm.setup("fit")
    try:
        seen = [batch["id"].tolist() for batch in dm.train_dataloader()]
    finally:
        dm.teardown("fit")
    assert [i for batch_ids in seen for i in batch_ids] == ids.tolist()
    with pytest.raises(ConfigError, match=r"train= must be a source"):
        FastloadDataModule(train=np.zeros(4), batch_size=8)
