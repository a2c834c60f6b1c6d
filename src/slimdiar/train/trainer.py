"""The one training loop of slimdiar.

Every stage (:mod:`slimdiar.stages`: fine-tuning, distill-and-prune, further distillation,
pretraining) runs here; it differs only by its :class:`~slimdiar.train.objective.Objective`.
The loop knows no stage. One experiment directory holds a run::

    EXP_DIR/config.json                     the resolved configuration of the run
    EXP_DIR/metrics.jsonl                   one JSON record per step and per epoch (1-based
                                            "epoch" in both): :mod:`slimdiar.train.metrics`
    EXP_DIR/checkpoints/epoch-NNN/          a checkpoint directory per epoch (1-based NNN) plus
                                            training-state.pt (optimisers, clipper, RNG,
                                            counters): :mod:`slimdiar.train.checkpoints`
    EXP_DIR/best/                           average of the best checkpoints by validation loss

The same command runs on one process or under ``torchrun`` / ``accelerate launch``; only rank 0
writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from slimdiar.config import Range, at_least, check_ranges
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.fileio import write_json_atomic
from slimdiar.train.averaging import average_checkpoints
from slimdiar.train.checkpoints import (
    checkpoint_epoch,
    checkpoint_name,
    last_checkpoint,
    read_training_state,
    rng_state,
    seed_everything,
    set_rng_state,
    write_checkpoint,
)
from slimdiar.train.clipping import PercentileClipper
from slimdiar.train.distributed import (
    DistContext,
    EpochBatchSampler,
    ShardBatchSampler,
    all_reduce_gradients,
    all_reduce_sum,
    barrier,
    broadcast_tensors,
    gather_objects,
)
from slimdiar.train.metrics import METRICS_NAME, append_record, truncate_metrics
from slimdiar.train.objective import Objective, ParamGroup

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainerConfig:
    """How to train, whatever the objective.

    Parameters
    ----------
    max_epochs
        Upper bound on the number of epochs.
    patience
        Stop after this many epochs without a lower validation loss (0: never stop early).
    batch_size
        Global batch size (items per optimiser step over all processes).
    val_batch_size
        Per-process validation batch size (0: the per-process training batch size).
    seed
        Seeds the data order and the random number generators.
    clip_percentile, clip_history
        Clip the gradient norm at this percentile of the last ``clip_history`` norms.
    average_best
        The final model averages this many best checkpoints by validation loss.
    num_workers
        Data-loading worker processes per training process.
    precision
        ``"fp32"``, or ``"bf16"`` autocast for the forward pass.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    max_steps_per_epoch
        Cut every epoch after this many steps (0: whole epochs); for smoke runs.
    progress
        Show a progress bar (rank 0 only).
    """

    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 64
    val_batch_size: int = 0
    seed: int = 3407
    clip_percentile: float = 90.0
    clip_history: int = 1000
    average_best: int = 5
    num_workers: int = 2
    precision: str = "fp32"
    device: str = "auto"
    max_steps_per_epoch: int = 0
    progress: bool = True

    RANGES: ClassVar[dict[str, Range]] = {
        "max_epochs": at_least(1),
        "patience": at_least(0),
        "batch_size": at_least(1),
        "val_batch_size": at_least(0),
        "average_best": at_least(1),
        "num_workers": at_least(0),
        "max_steps_per_epoch": at_least(0),
        "clip_history": at_least(1),
        "clip_percentile": Range(low=0, high=100, low_open=True),
    }

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did."""

    best_dir: Path
    best_epochs: list[int]
    epochs_run: int
    steps: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)


def move_to_device(batch, device: torch.device):
    """``batch`` with every tensor (in dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Train an :class:`Objective` on a dataset, with validation, checkpoints and resume.

    Parameters
    ----------
    objective
        The stage to train, already built (identically on every process).
    train_data, val_data
        Map-style datasets; items are combined by ``collate_fn`` into what
        :meth:`Objective.loss` and :meth:`Objective.validate` read.
    config
        Trainer settings.
    exp_dir
        Experiment directory (written by rank 0 only).
    ctx
        Distributed context from :func:`~slimdiar.train.distributed.init_distributed`.
    collate_fn
        Batch collation (default: :func:`torch.utils.data.default_collate`).
    run_config
        The resolved configuration of the whole run, written to ``config.json``.
    """

    def __init__(
        self,
        objective: Objective,
        train_data: Dataset,
        val_data: Dataset,
        config: TrainerConfig,
        exp_dir: str | Path,
        ctx: DistContext | None = None,
        collate_fn=None,
        run_config: dict | None = None,
    ):
        self.objective = objective
        self.train_data = train_data
        self.val_data = val_data
        self.config = config
        self.exp_dir = Path(exp_dir)
        self.ctx = ctx or DistContext()
        self.collate_fn = collate_fn
        self.run_config = run_config if run_config is not None else {"trainer": asdict(config)}
        self.clipper = PercentileClipper(config.clip_percentile, config.clip_history)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken
        self.history: list[dict] = []  # per epoch: epoch, val_loss
        self.stopped_early = False

        objective.to(self.ctx.device)
        self.groups = objective.parameter_groups()
        self.params = _check_groups(self.groups)
        self.optimizers = _build_optimizers(self.groups)
        # every process starts from rank 0's weights, as DistributedDataParallel does
        broadcast_tensors(
            [t for m in objective.modules().values() for t in m.state_dict().values()],
            self.ctx.world_size,
        )
        self.sampler = EpochBatchSampler(
            _num_items(train_data, "training"),
            config.batch_size,
            config.seed,
            self.ctx.rank,
            self.ctx.world_size,
            shuffle=True,
        )

    # ------------------------------------------------------------------ files
    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl`` of the run: one JSON record per logged step, epoch and result."""
        return self.exp_dir / METRICS_NAME

    @property
    def best_dir(self) -> Path:
        """The final model: the average of the best checkpoints by validation loss."""
        return self.exp_dir / "best"

    def _log(self, record: dict) -> None:
        if self.ctx.is_main:
            append_record(self.metrics_path, record)

    def _prepare_exp_dir(self, resume: bool) -> Path | None:
        """Check the experiment directory, write config.json, return the checkpoint to resume."""
        checkpoint = last_checkpoint(self.exp_dir)
        if not resume and (checkpoint is not None or self.metrics_path.exists()):
            raise ConfigError(
                f"{self.exp_dir} already holds a run; continue it with --resume or choose "
                "another output directory"
            )
        if self.ctx.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            config_path = self.exp_dir / "config.json"
            if resume and config_path.exists():
                previous = json.loads(config_path.read_text())
                changed = sorted(_diff(previous, self.run_config))
                if changed:
                    logger.warning("resuming with a changed configuration: %s", ", ".join(changed))
            write_json_atomic(config_path, self.run_config)
            truncate_metrics(
                self.metrics_path, 0 if checkpoint is None else checkpoint_epoch(checkpoint)
            )
        barrier(self.ctx)
        return checkpoint

    # ------------------------------------------------------------------ checkpoints
    def _training_state(self, rng_states: list[dict]) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "stopped_early": self.stopped_early,
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "clipper": self.clipper.state_dict(),
            "rng": rng_states,
            "world_size": self.ctx.world_size,
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/epoch-NNN`` for the epochs done so far (a collective call)."""
        rng_states = gather_objects(rng_state(), self.ctx)
        final = self.exp_dir / "checkpoints" / checkpoint_name(self.epoch)
        if self.ctx.is_main:
            metadata = {
                "stage": self.objective.stage,
                "epoch": self.epoch,
                "step": self.step,
                "metrics": self.history[-1] if self.history else {},
            }
            write_checkpoint(
                final,
                lambda directory: self.objective.save(directory, metadata),
                self._training_state(rng_states),
            )
            logger.info("saved %s", final)
        barrier(self.ctx)
        return final

    def load_checkpoint(self, checkpoint: Path) -> None:
        """Restore the objective and the loop state from an epoch checkpoint."""
        state = read_training_state(checkpoint)
        self.objective.restore(checkpoint)
        if set(state["optimizers"]) != set(self.optimizers):
            raise CheckpointError(
                f"{checkpoint}: optimisers {sorted(state['optimizers'])} do not match this "
                f"run's {sorted(self.optimizers)}"
            )
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.clipper.load_state_dict(state["clipper"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.stopped_early = bool(state["stopped_early"])
        if state["world_size"] == self.ctx.world_size:
            set_rng_state(state["rng"][self.ctx.rank])
        else:
            logger.warning(
                "checkpoint written by %d processes, resumed on %d: random streams differ "
                "from the uninterrupted run",
                state["world_size"],
                self.ctx.world_size,
            )
            seed_everything(self.config.seed + 1000 * self.epoch + self.ctx.rank)
        logger.info("resumed from %s (epoch %d, step %d)", checkpoint, self.epoch, self.step)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``max_epochs`` or early stopping, then build and validate ``best/``.

        Parameters
        ----------
        resume
            Continue from the last complete checkpoint of ``exp_dir`` (a finished run only
            rebuilds ``best/``); without it, ``exp_dir`` must not hold a run.

        Returns
        -------
        TrainResult
            On return the objective holds the averaged model of ``best/``.
        """
        checkpoint = self._prepare_exp_dir(resume)
        seed_everything(self.config.seed + self.ctx.rank)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        while self.epoch < self.config.max_epochs and not self.stopped_early:
            train_loss = self._train_epoch()
            metrics = self._validate()
            self._end_epoch(train_loss, metrics)
            self.save_checkpoint()
        best_epochs = self._average_best()
        best_metrics = self._validate_best()
        return TrainResult(
            self.best_dir,
            best_epochs,
            self.epoch,
            self.step,
            self.stopped_early,
            self.history,
            best_metrics,
        )

    def _loader(self, data: Dataset, batch_sampler, generator_seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(generator_seed)
        return DataLoader(
            data,
            batch_sampler=batch_sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=generator,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=False,
        )

    def _autocast(self):
        return torch.autocast(
            self.ctx.device.type,
            dtype=torch.bfloat16,
            enabled=self.config.precision == "bf16",
        )

    def _train_epoch(self) -> float:
        config, ctx = self.config, self.ctx
        self.sampler.set_epoch(self.epoch)
        num_batches = len(self.sampler)
        if config.max_steps_per_epoch:
            num_batches = min(num_batches, config.max_steps_per_epoch)
        loader = self._loader(
            self.train_data, self.sampler, config.seed * 100003 + self.epoch * 101 + ctx.rank
        )
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {self.epoch + 1}/{config.max_epochs}",
            disable=not (ctx.is_main and config.progress),
            dynamic_ncols=True,
        )
        losses = []
        self.objective.train(True)
        for index, batch in enumerate(loader):
            if index >= num_batches:
                break
            start = time.perf_counter()
            batch = move_to_device(batch, ctx.device)
            self.objective.on_step(self.epoch, self.step, self.epoch + index / num_batches)
            with self._autocast():
                loss, scalars = self.objective.loss(batch)
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            all_reduce_gradients(self.params, ctx.world_size)
            norm, threshold = self.clipper(self.params)
            skipped = not math.isfinite(norm)
            if skipped:
                logger.warning("step %d: non-finite gradient norm, step skipped", self.step)
            else:
                for optimizer in self.optimizers.values():
                    optimizer.step()
                self.objective.after_step()
            broadcast_tensors(self.objective.buffers_to_sync(), ctx.world_size)
            names = sorted(scalars)
            values = all_reduce_sum(
                [float(loss.detach())] + [float(scalars[k]) for k in names], ctx
            )
            values = [v / ctx.world_size for v in values]
            self.step += 1
            losses.append(values[0])
            record = {"type": "step", "epoch": self.epoch + 1, "step": self.step}
            record["loss"] = values[0]
            record.update({k: v for k, v in zip(names, values[1:])})
            record.update({f"lr/{g.name}": g.lr for g in self.groups})
            record.update(
                grad_norm=norm,
                clip_threshold=threshold,
                skipped=skipped,
                time_s=time.perf_counter() - start,
            )
            self._log(record)
            bar.update(1)
            postfix = {"loss": f"{values[0]:.4f}"}
            postfix.update({f"lr_{g.name}": f"{g.lr:.0e}" for g in self.groups})
            bar.set_postfix(postfix, refresh=False)
        bar.close()
        return float(np.mean(losses)) if losses else math.nan

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        ctx = self.ctx
        batch_size = self.config.val_batch_size or self.sampler.local_batch_size
        num_items = _num_items(self.val_data, "validation")
        sampler = ShardBatchSampler(num_items, batch_size, ctx.rank, ctx.world_size)
        loader = self._loader(self.val_data, sampler, self.config.seed)
        self.objective.train(False)
        with self._autocast():
            stats = self.objective.validate(move_to_device(b, ctx.device) for b in loader)
        if "loss" not in stats:
            raise ConfigError(f"{type(self.objective).__name__}.validate must return 'loss'")
        names = sorted(stats)
        sums = all_reduce_sum([v for k in names for v in stats[k]], ctx)
        return {
            k: sums[2 * i] / sums[2 * i + 1] if sums[2 * i + 1] else math.nan
            for i, k in enumerate(names)
        }

    def _best_entry(self) -> dict | None:
        """The selectable epoch with the lowest validation loss (earliest on ties), if any."""
        candidates = [h for h in self.history if h["selectable"]]
        if not candidates:
            return None
        return min(candidates, key=lambda h: (_nan_last(h["val_loss"]), h["epoch"]))

    def _end_epoch(self, train_loss: float, metrics: dict[str, float]) -> None:
        self.epoch += 1
        val_loss = metrics["loss"]
        previous = self._best_entry()
        selectable = bool(self.objective.selectable(self.epoch))
        self.history.append(
            {
                "epoch": self.epoch,
                "val_loss": val_loss,
                "selectable": selectable,
                "metrics": dict(metrics),
            }
        )
        best = self._best_entry()
        # patience counts from the first epoch that may be selected
        since_best = 0 if best is None else self.epoch - best["epoch"]
        if self.config.patience and since_best >= self.config.patience:
            self.stopped_early = True
        record = {"type": "epoch", "epoch": self.epoch, "step": self.step, "train_loss": train_loss}
        record.update({f"val/{k}": v for k, v in metrics.items()})
        record.update(
            selectable=selectable,
            improved=best is not None and best is not previous and best["epoch"] == self.epoch,
            best_epoch=None if best is None else best["epoch"],
            epochs_without_improvement=since_best,
            stopped_early=self.stopped_early,
        )
        self._log(record)
        logger.info(
            "epoch %d: train loss %.4f, %s",
            self.epoch,
            train_loss,
            ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()),
        )
        if self.stopped_early:
            logger.info("no improvement for %d epochs: stopping", since_best)

    def _average_best(self) -> list[int]:
        epochs = self.objective.final_epochs(self.history, self.config.average_best)
        if not epochs and self.history:
            logger.warning("no epoch was selectable: the final model is the last epoch's")
            epochs = [self.history[-1]["epoch"]]
        by_epoch = {h["epoch"]: h for h in self.history}
        unknown = [e for e in epochs if e not in by_epoch]
        if unknown:
            raise ConfigError(
                f"{type(self.objective).__name__}.final_epochs chose epochs "
                f"{unknown} that the run does not have"
            )
        chosen = [by_epoch[e] for e in epochs]
        if self.ctx.is_main and epochs:
            directories = [self.exp_dir / "checkpoints" / checkpoint_name(e) for e in epochs]
            average_checkpoints(
                directories,
                self.best_dir,
                {
                    "stage": self.objective.stage,
                    "epochs": epochs,
                    "val_losses": [h["val_loss"] for h in chosen],
                    "val_metrics": [h.get("metrics", {}) for h in chosen],
                    "step": self.step,
                },
            )
        barrier(self.ctx)
        return epochs

    def _validate_best(self) -> dict[str, float]:
        """Validate the averaged model (left loaded in the objective) and log a "best" record."""
        self.objective.restore(self.best_dir)
        metrics = self._validate()
        record = {"type": "best", "epoch": self.epoch, "step": self.step}
        record.update({f"val/{k}": v for k, v in metrics.items()})
        self._log(record)
        logger.info("averaged model: %s", ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()))
        return metrics


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _num_items(data: Dataset, name: str) -> int:
    """Length of a map-style dataset; a dataset without one is a configuration error."""
    if not isinstance(data, Sized):
        raise ConfigError(
            f"the {name} data is a {type(data).__name__} without a length; the trainer needs "
            "a map-style dataset (with __len__ and __getitem__)"
        )
    return len(data)


def _check_groups(groups: list[ParamGroup]) -> list[torch.nn.Parameter]:
    if not groups:
        raise ConfigError("the objective has no trainable parameter groups")
    seen: dict[int, str] = {}
    params = []
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter group names must be unique, got {names}")
    for group in groups:
        for p in group.params:
            if id(p) in seen:
                raise ConfigError(
                    f"a parameter is in both groups {seen[id(p)]!r} and {group.name!r}"
                )
            if not p.requires_grad:
                raise ConfigError(f"group {group.name!r} holds a parameter that is frozen")
            seen[id(p)] = group.name
            params.append(p)
    return params


def _build_optimizers(groups: list[ParamGroup]) -> dict[str, torch.optim.Optimizer]:
    by_id: dict[str, list[dict]] = {}
    for g in groups:
        by_id.setdefault(g.optimizer, []).append(
            {
                "params": g.params,
                "lr": g.lr,
                "weight_decay": g.weight_decay,
                "betas": g.betas,
                "eps": g.eps,
                "name": g.name,
            }
        )
    return {key: torch.optim.AdamW(param_groups) for key, param_groups in by_id.items()}


def _diff(old, new, prefix: str = "") -> set[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = set()
        for key in set(old) | set(new):
            out |= _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return set() if old == new else {prefix.rstrip(".")}
