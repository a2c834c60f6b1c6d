"""The generic training loop, tested with a toy objective (no diarization model needed).

This file is also a script: ``python -m torch.distributed.run --nproc_per_node 2
tests/test_train.py OUT_DIR GLOBAL_BATCH`` trains the toy objective under DDP; the DDP test runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_checkpoint, save_checkpoint
from slimdiar.stages.prune import reverse_gradient
from slimdiar.train import (
    Objective,
    ParamGroup,
    PercentileClipper,
    Trainer,
    TrainerConfig,
    average_checkpoints,
    init_distributed,
    last_checkpoint,
    shutdown_distributed,
)
from slimdiar.train.checkpoints import checkpoint_epoch, checkpoint_name
from slimdiar.train.distributed import EpochBatchSampler, ShardBatchSampler

DIM = 6


class ToyData(torch.utils.data.Dataset):
    """Noisy linear regression: y = x . w_true + 0.1 noise."""

    def __init__(self, num_items: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_items, DIM, generator=g)
        w_true = torch.arange(1.0, DIM + 1)
        self.y = self.x @ w_true + 0.1 * torch.randn(num_items, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index]}


class ToyObjective(Objective):
    """Two-layer regressor in two optimisers; optional dropout and a Lagrange-like scalar."""

    stage = "toy"
    checkpoint_kind = "toy"

    def __init__(self, dropout: float = 0.0, with_lambda: bool = False):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(DIM, 16),
            torch.nn.Tanh(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(16, 1),
        )
        self.extra = torch.nn.Module()
        self.extra.lam = torch.nn.Parameter(torch.zeros(()))
        self.with_lambda = with_lambda

    def modules(self):
        return {"net": self.net, "extra": self.extra}

    def parameter_groups(self):
        groups = [
            ParamGroup(
                "body", self.net[0].parameters(), lr=1e-2, weight_decay=0.01, optimizer="body"
            ),
            ParamGroup("out", self.net[3].parameters(), lr=5e-2, optimizer="out"),
        ]
        if self.with_lambda:
            groups.append(ParamGroup("lambda", [self.extra.lam], lr=1e-1, optimizer="out"))
        return groups

    def loss(self, batch):
        prediction = self.net(batch["x"]).squeeze(-1)
        mse = torch.mean((prediction - batch["y"]) ** 2)
        loss = mse
        if self.with_lambda:
            # constraint violation fixed at +1: through the gradient reversal lambda must rise
            loss = loss + reverse_gradient(self.extra.lam) * 1.0
        return loss, {"mse": float(mse.detach())}

    def validate(self, batches):
        total, count = 0.0, 0
        for batch in batches:
            prediction = self.net(batch["x"]).squeeze(-1)
            total += float(torch.sum((prediction - batch["y"]) ** 2))
            count += len(batch["y"])
        return {"loss": (total, count)}

    def state_dict(self):
        return {
            **{f"net.{k}": v for k, v in self.net.state_dict().items()},
            "lam": self.extra.lam.detach(),
        }

    def load_state_dict(self, state_dict):
        self.net.load_state_dict({k[4:]: v for k, v in state_dict.items() if k != "lam"})
        with torch.no_grad():
            self.extra.lam.copy_(state_dict["lam"])


def make_trainer(out, dropout=0.0, with_lambda=False, ctx=None, **overrides):
    settings = dict(
        max_epochs=2,
        patience=0,
        batch_size=8,
        seed=11,
        num_workers=0,
        average_best=2,
        progress=False,
    )
    settings.update(overrides)
    return Trainer(
        ToyObjective(dropout, with_lambda),
        ToyData(48, 1),
        ToyData(20, 2),
        TrainerConfig(**settings),
        out,
        ctx=ctx,
    )


def read_metrics(path):
    return [json.loads(line) for line in Path(path, "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- clipping
def test_percentile_clipper_hand_case():
    clipper = PercentileClipper(percentile=90, history_size=10)
    p = torch.nn.Parameter(torch.zeros(2))
    for norm in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]:
        p.grad = torch.tensor([norm, 0.0])
        clipper([p])
    # history 1..9 plus the new norm 100: 90th percentile = 9 + 0.1 * (100 - 9) = 18.1
    p.grad = torch.tensor([60.0, 80.0])
    norm, threshold = clipper([p])
    assert norm == pytest.approx(100.0)
    assert threshold == pytest.approx(18.1)
    assert torch.linalg.vector_norm(p.grad).item() == pytest.approx(18.1, rel=1e-5)
    assert torch.allclose(p.grad / p.grad.norm(), torch.tensor([0.6, 0.8]))
    # a bounded history forgets the oldest norm (1.0)
    assert list(clipper.history) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    p.grad = torch.tensor([0.5, 0.0])
    clipper([p])
    assert list(clipper.history) == [2, 3, 4, 5, 6, 7, 8, 9, 100, 0.5]


def test_percentile_clipper_first_step_and_nonfinite():
    clipper = PercentileClipper()
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clipper([p]) == (pytest.approx(5.0), pytest.approx(5.0))
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0, 0.0]))
    p.grad = torch.tensor([float("inf"), 0.0, 0.0])
    norm, _ = clipper([p])
    assert not np.isfinite(norm) and list(clipper.history) == [5.0]
    restored = PercentileClipper(50, 3)
    restored.load_state_dict(clipper.state_dict())
    assert list(restored.history) == [5.0] and restored.percentile == 90.0
    with pytest.raises(ConfigError, match="percentile"):
        PercentileClipper(percentile=0)


# ---------------------------------------------------------------------- samplers
def test_epoch_sampler_shards_partition_the_global_batches():
    single = list(EpochBatchSampler(21, 6, seed=3, shuffle=True))
    assert len(single) == 3 and all(len(b) == 6 for b in single)
    assert single == list(EpochBatchSampler(21, 6, seed=3))
    other_epoch = EpochBatchSampler(21, 6, seed=3)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != single
    shards = [list(EpochBatchSampler(21, 6, seed=3, rank=r, world_size=3)) for r in range(3)]
    for step, global_batch in enumerate(single):
        assert sum((shard[step] for shard in shards), []) == global_batch
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        EpochBatchSampler(21, 6, seed=3, world_size=4)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        EpochBatchSampler(5, 6, seed=3)
    val = [list(ShardBatchSampler(7, 2, rank=r, world_size=2)) for r in range(2)]
    assert val == [[[0, 2], [4, 6]], [[1, 3], [5]]]


# ---------------------------------------------------------------------- averaging
def test_average_checkpoints_equals_hand_mean(tmp_path):
    half = torch.float16
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3), "h": torch.tensor([1.0], dtype=half)},
        {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7), "h": torch.tensor([2.0], dtype=half)},
        {"w": torch.tensor([5.0, 1.0]), "n": torch.tensor(9), "h": torch.tensor([4.0], dtype=half)},
    ]
    dirs = [
        save_checkpoint(tmp_path / f"c{i}", s, "toy", {"d": 2}, {"stage": "toy"})
        for i, s in enumerate(states)
    ]
    out = average_checkpoints(dirs, tmp_path / "avg", {"note": "x"})
    averaged, config, metadata = load_checkpoint(out, kind="toy")
    assert torch.equal(averaged["w"], torch.tensor([3.0, 3.0]))
    assert averaged["n"].item() == 3  # integer buffers come from the first checkpoint
    assert averaged["h"].dtype == torch.float16
    assert averaged["h"].item() == pytest.approx(7 / 3, 1e-3)
    assert config == {"d": 2} and metadata["stage"] == "toy" and metadata["note"] == "x"
    assert metadata["averaged_from"] == [str(d) for d in dirs]

    save_checkpoint(tmp_path / "other", states[0], "toy", {"d": 3})
    with pytest.raises(CheckpointError, match="config differs"):
        average_checkpoints([dirs[0], tmp_path / "other"], tmp_path / "bad")
    save_checkpoint(tmp_path / "fewer", {"w": torch.zeros(2)}, "toy", {"d": 2})
    with pytest.raises(CheckpointError, match="keys differ"):
        average_checkpoints([dirs[0], tmp_path / "fewer"], tmp_path / "bad")
    save_checkpoint(tmp_path / "kind", states[0], "other", {"d": 2})
    with pytest.raises(CheckpointError, match="expected 'toy'"):
        average_checkpoints([dirs[0], tmp_path / "kind"], tmp_path / "bad")


# ---------------------------------------------------------------------- loop
def test_training_writes_metrics_checkpoints_and_best(tmp_path):
    result = make_trainer(tmp_path / "exp", max_epochs=3, average_best=2).fit()
    records = read_metrics(tmp_path / "exp")
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(steps) == 3 * 6 and [r["step"] for r in steps] == list(range(1, 19))
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert {"loss", "mse", "lr/body", "lr/out", "grad_norm", "clip_threshold"} <= set(steps[0])
    norms = [r["grad_norm"] for r in steps]
    for i, r in enumerate(steps):  # the threshold is the 90th percentile of the norms so far
        assert r["clip_threshold"] == pytest.approx(np.percentile(norms[: i + 1], 90))
    assert epochs[-1]["val/loss"] < epochs[0]["val/loss"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    for e in (1, 2, 3):
        assert last_checkpoint(tmp_path / "exp") == tmp_path / "exp/checkpoints/epoch-003"
        assert (tmp_path / f"exp/checkpoints/epoch-{e:03d}/training-state.pt").is_file()
    # best/ is the mean of the two epochs with the lowest validation loss
    ranked = sorted(epochs, key=lambda r: r["val/loss"])[:2]
    assert result.best_epochs == [r["epoch"] for r in ranked]
    sources = [
        load_checkpoint(tmp_path / f"exp/checkpoints/epoch-{r['epoch']:03d}")[0] for r in ranked
    ]
    best, _, metadata = load_checkpoint(tmp_path / "exp/best", kind="toy")
    for key in best:
        assert torch.allclose(best[key], (sources[0][key] + sources[1][key]) / 2)
    assert metadata["epochs"] == result.best_epochs
    config = json.loads((tmp_path / "exp/config.json").read_text())
    assert config["trainer"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="--resume"):
        make_trainer(tmp_path / "exp").fit()


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "a", dropout=0.3, max_epochs=2)
    straight.fit()
    make_trainer(tmp_path / "b", dropout=0.3, max_epochs=1).fit()
    # a kill during epoch 2 leaves a half-written checkpoint and step records behind
    (tmp_path / "b/checkpoints/.epoch-002.tmp.x/epoch-002").mkdir(parents=True)
    (tmp_path / "b/checkpoints/epoch-002").mkdir()
    with open(tmp_path / "b/metrics.jsonl", "a") as stream:
        stream.write('{"type": "step", "epoch": 2, "step": 7, "loss": 123.0}\n{"type": "st')
    assert last_checkpoint(tmp_path / "b") == tmp_path / "b/checkpoints/epoch-001"
    shutil.rmtree(tmp_path / "b/checkpoints/epoch-002")
    resumed = make_trainer(tmp_path / "b", dropout=0.3, max_epochs=2)
    resumed.fit(resume=True)
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["type"] for r in a] == [r["type"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm", "clip_threshold", "val/loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], abs=1e-6), (ra, rb)
    for key, value in straight.objective.state_dict().items():
        assert torch.allclose(resumed.objective.state_dict()[key], value, atol=1e-6)
    # without restoring the random state the dropout masks of epoch 2 would differ
    assert a[7]["loss"] != pytest.approx(a[1]["loss"])


def test_early_stopping_and_gradient_ascent(tmp_path):
    trainer = make_trainer(
        tmp_path / "exp", with_lambda=True, max_epochs=50, patience=2, average_best=1
    )
    # validation loss rises every epoch after the first: stop after patience epochs
    calls = []

    def rising(batches):
        for _ in batches:
            pass
        calls.append(1)
        return {"loss": (float(len(calls)), 1.0)}

    trainer.objective.validate = rising
    result = trainer.fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epochs == [1]
    # loss = mse + reversed(lambda) * 1: lambda rises by about lr per step (an Adam step ~ lr)
    last = load_checkpoint(tmp_path / "exp/checkpoints/epoch-003")[0]["lam"].item()
    assert last == pytest.approx(0.1 * result.steps, rel=0.05)
    # the objective is left holding best/ (epoch 1, after 6 steps)
    assert trainer.objective.extra.lam.item() == pytest.approx(0.1 * 6, rel=0.05)
    # resuming a finished run trains nothing more and rebuilds best/
    again = make_trainer(
        tmp_path / "exp", with_lambda=True, max_epochs=50, patience=2, average_best=1
    )
    assert again.fit(resume=True).steps == result.steps


def test_unselectable_epochs_are_never_best(tmp_path):
    trainer = make_trainer(tmp_path / "exp", max_epochs=50, patience=2, average_best=2)
    losses = iter([1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 7.0, 8.0])

    def rising(batches):
        for _ in batches:
            pass
        return {"loss": (next(losses), 1.0)}

    trainer.objective.validate = rising
    trainer.objective.selectable = lambda epoch: epoch >= 3
    result = trainer.fit()
    # epochs 1-2 have the lowest losses but may not be chosen; patience counts from epoch 3
    assert result.epochs_run == 5 and result.best_epochs == [3, 5]
    epochs = [r for r in read_metrics(tmp_path / "exp") if r["type"] == "epoch"]
    assert [r["best_epoch"] for r in epochs] == [None, None, 3, 3, 3]
    assert [r["improved"] for r in epochs] == [False, False, True, False, False]


def test_after_step_projects_the_parameters_after_every_optimiser_step(tmp_path):
    """The objective's ``after_step`` runs after each update, so the next loss sees its effect."""
    trainer = make_trainer(tmp_path / "exp", max_epochs=1)
    weight = trainer.objective.net[0].weight
    seen = []
    loss = trainer.objective.loss

    def checked_loss(batch):
        seen.append(float(weight.detach().abs().max()))
        return loss(batch)

    def clamp():
        with torch.no_grad():
            weight.clamp_(-0.01, 0.01)

    trainer.objective.loss = checked_loss
    trainer.objective.after_step = clamp
    trainer.fit()
    assert len(seen) == 6 and seen[0] > 0.01  # 48 items, batch 8; the initial weights are wide
    assert all(value <= 0.01 for value in seen[1:])


def test_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ConfigError, match="precision"):
        TrainerConfig(precision="fp8")
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ConfigError, match="learning rate must be > 0, got -1.0"):
        ParamGroup("lam", [p], lr=-1.0)
    with pytest.raises(ConfigError, match="no parameters"):
        ParamGroup("empty", [], lr=1.0)


class ToyStream(torch.utils.data.IterableDataset):
    """The items of ToyData as a stream, without a length."""

    def __iter__(self):
        data = ToyData(48, 1)
        return (data[i] for i in range(len(data)))


def test_a_dataset_without_length_is_a_config_error(tmp_path):
    config = TrainerConfig(max_epochs=1, batch_size=8, num_workers=0, progress=False)
    with pytest.raises(ConfigError, match="training data is a ToyStream without a length"):
        Trainer(ToyObjective(), ToyStream(), ToyData(20, 2), config, tmp_path / "run")


def test_checkpoint_epoch_reads_the_directory_name(tmp_path):
    assert checkpoint_epoch(tmp_path / checkpoint_name(7)) == 7
    with pytest.raises(CheckpointError, match="not an epoch checkpoint"):
        checkpoint_epoch(tmp_path / "best")


def test_a_failed_checkpoint_write_leaves_no_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path / "exp", max_epochs=1)
    original = trainer.objective.save

    def dies_midway(directory, metadata):
        original(directory, metadata)
        raise OSError("disk full")

    trainer.objective.save = dies_midway
    with pytest.raises(OSError, match="disk full"):
        trainer.fit()
    assert last_checkpoint(tmp_path / "exp") is None
    assert list((tmp_path / "exp/checkpoints").iterdir()) == []


def test_bf16_autocast_trains(tmp_path):
    result = make_trainer(tmp_path / "exp", max_epochs=1, precision="bf16").fit()
    records = read_metrics(tmp_path / "exp")
    assert result.steps == 6 and all(np.isfinite(r["loss"]) for r in records if "loss" in r)


# ---------------------------------------------------------------------- DDP
def _ddp_worker(out: str, global_batch: int) -> None:
    ctx = init_distributed("cpu")
    trainer = make_trainer(out, ctx=ctx, batch_size=global_batch, max_epochs=2)
    trainer.fit()
    torch.save(trainer.objective.state_dict(), Path(out, f"params-rank{ctx.rank}.pt"))
    shutdown_distributed()


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    make_trainer(tmp_path / "single", batch_size=8, max_epochs=2).fit()
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        __file__,
        str(tmp_path / "ddp"),
        "8",
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"ddp/params-rank{r}.pt") for r in range(2)]
    # every process ends holding best/ (the average of the two epochs)
    single = load_checkpoint(tmp_path / "single/best")[0]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.allclose(ranks[0][key], single[key], atol=1e-5), key
    last = load_checkpoint(tmp_path / "single/checkpoints/epoch-002")[0]
    last_ddp = load_checkpoint(tmp_path / "ddp/checkpoints/epoch-002")[0]
    for key in last:
        assert torch.allclose(last_ddp[key], last[key], atol=1e-5), key
    assert not torch.allclose(last["net.0.weight"], single["net.0.weight"], atol=1e-5)
    a, b = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm", "val/loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5), (key, ra, rb)


if __name__ == "__main__":
    _ddp_worker(sys.argv[1], int(sys.argv[2]))


def test_the_objective_chooses_the_epochs_of_the_final_model(tmp_path):
    """``Objective.final_epochs`` sees every epoch's validation metrics and picks ``best/``."""
    trainer = make_trainer(tmp_path / "exp", max_epochs=3, average_best=2)
    seen = []

    def final_epochs(history, count):
        seen.append((count, [(h["epoch"], sorted(h["metrics"])) for h in history]))
        return [3, 1]

    trainer.objective.final_epochs = final_epochs
    result = trainer.fit()
    assert seen[0] == (2, [(1, ["loss"]), (2, ["loss"]), (3, ["loss"])])
    assert result.best_epochs == [3, 1]
    metadata = json.loads((tmp_path / "exp" / "best" / "metadata.json").read_text())
    assert metadata["epochs"] == [3, 1]
    first = load_checkpoint(tmp_path / "exp" / "checkpoints" / "epoch-001")[0]
    third = load_checkpoint(tmp_path / "exp" / "checkpoints" / "epoch-003")[0]
    best = load_checkpoint(tmp_path / "exp" / "best")[0]
    for key in best:
        assert torch.allclose(best[key], (first[key] + third[key]) / 2, atol=1e-6), key
    # an epoch the run does not have is a clear error
    other = make_trainer(tmp_path / "other", max_epochs=1)
    other.objective.final_epochs = lambda history, count: [7]
    with pytest.raises(ConfigError, match=r"chose epochs \[7\]"):
        other.fit()
