"""What a training stage plugs into the one training loop.

A stage (fine-tuning, distill-and-prune, further distillation) is an :class:`Objective`: it owns
its modules, says which parameters train with which learning rate in which optimiser, computes a
loss on a batch, validates, and saves what it trains as a checkpoint directory. The
:class:`~slimdiar.train.trainer.Trainer` does everything else (data order, distribution, clipping,
optimiser steps, checkpoints, resume, early stopping, averaging, metrics).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from slimdiar.train.averaging import lowest_loss_epochs


@dataclass
class ParamGroup:
    """Parameters that share a learning rate and an optimiser.

    Parameters
    ----------
    name
        Name of the group in logs and ``metrics.jsonl`` (``"wavlm"``, ``"head"``, ``"lambda"``).
    params
        The parameters; each belongs to exactly one group.
    lr
        Constant learning rate, > 0. Every group descends its loss; a parameter that must climb
        it (a Lagrange multiplier) enters the loss through a gradient reversal
        (:func:`slimdiar.stages.prune.reverse_gradient`).
    weight_decay
        Decoupled AdamW weight decay.
    optimizer
        Groups with the same id share one AdamW optimiser; different ids get separate ones.
    betas, eps
        AdamW coefficients.
    """

    name: str
    params: list[torch.nn.Parameter]
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "main"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self.params = list(self.params)
        if not self.params:
            raise ConfigError(f"parameter group {self.name!r} holds no parameters")
        if not self.lr > 0:
            raise ConfigError(
                f"parameter group {self.name!r}: the learning rate must be > 0, got {self.lr}"
            )


class Objective(abc.ABC):
    """The part of a training stage that differs from stage to stage.

    Subclasses build and own their modules in ``__init__`` (identically on every process: seed
    first), and implement the abstract methods. The default :meth:`save` / :meth:`restore` write
    and read :meth:`state_dict` as a slimdiar checkpoint directory of kind :attr:`checkpoint_kind`
    with :meth:`checkpoint_config`; override them when the trained model has its own
    ``save_pretrained``.

    The trainer calls, in this order: :meth:`to`, :meth:`parameter_groups` (once), then per step
    :meth:`train`, :meth:`on_step`, :meth:`loss`, :meth:`after_step`; per epoch :meth:`train`
    ``(False)``, :meth:`validate`, :meth:`save`.
    """

    #: Name of the stage, recorded in checkpoint metadata.
    stage: str = "train"
    #: ``kind`` of the checkpoint directories written by the default :meth:`save`.
    checkpoint_kind: str = "objective"

    @abc.abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module the objective owns, trained or frozen, by name."""

    @abc.abstractmethod
    def parameter_groups(self) -> list[ParamGroup]:
        """Trainable parameters, grouped by learning rate and optimiser."""

    @abc.abstractmethod
    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one (per-process) batch.

        Returns
        -------
        tuple
            ``(loss, scalars)``: the scalar tensor to minimise (a mean over the batch, so that
            averaging gradients over processes gives the gradient of the global batch) and named
            floats to log.
        """

    @abc.abstractmethod
    def validate(self, batches: Iterable) -> dict[str, tuple[float, float]]:
        """Validation statistics over this process's share of the validation data.

        Returns
        -------
        dict
            ``name -> (numerator, denominator)``; the trainer sums both over processes and logs
            ``numerator / denominator``. Must include ``"loss"`` (used for early stopping and,
            by default, for choosing the checkpoints to average: :meth:`final_epochs`).
        """

    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything trainable, as a flat dict of tensors."""

    @abc.abstractmethod
    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict` returned (strictly)."""

    def checkpoint_config(self) -> dict:
        """JSON description of the architecture, stored with the default :meth:`save`."""
        return {}

    # ------------------------------------------------------------------ defaults
    def save(self, directory: str | Path, metadata: dict) -> Path:
        """Write everything trainable as a checkpoint directory that the model's loader reads."""
        return save_checkpoint(
            directory, self.state_dict(), self.checkpoint_kind, self.checkpoint_config(), metadata
        )

    def restore(self, directory: str | Path) -> None:
        """Load a directory written by :meth:`save` (or an average of such directories)."""
        state_dict, _, _ = load_checkpoint(directory, kind=self.checkpoint_kind)
        holder = _StateHolder(self)
        load_state_dict_strict(holder, state_dict, directory)

    def train(self, mode: bool = True) -> None:
        """Put the modules in training (``True``) or evaluation mode; frozen parts may stay eval."""
        for module in self.modules().values():
            module.train(mode)

    def to(self, device: torch.device) -> None:
        """Move every module to ``device``."""
        for module in self.modules().values():
            module.to(device)

    def on_step(self, epoch: int, step: int, epoch_progress: float) -> None:
        """Called before every training step (schedules such as a rising sparsity target).

        Parameters
        ----------
        epoch
            0-based epoch.
        step
            0-based global optimiser step.
        epoch_progress
            Fractional epochs done so far (``epoch + batch_index / batches_per_epoch``).
        """
        return None

    def after_step(self) -> None:
        """Called after every optimiser step (projections such as clamping gate parameters)."""
        return None

    def selectable(self, epoch: int) -> bool:
        """Whether the checkpoint after ``epoch`` (1-based) may become the final model.

        Epochs that are not selectable are validated and checkpointed but never averaged into
        ``best/`` and do not count towards early stopping (e.g. while a pruning objective's
        target sparsity is still rising, its validation losses are not comparable).
        """
        return True

    def final_epochs(self, history: list[dict], count: int) -> list[int]:
        """The epochs whose checkpoints are averaged into the final model (``best/``).

        Parameters
        ----------
        history
            Every epoch of the run: dicts with ``epoch`` (1-based), ``val_loss``,
            ``selectable`` and ``metrics`` (the validation metrics by name).
        count
            ``trainer.average_best``.

        Returns
        -------
        list of int
            By default the ``count`` selectable epochs with the lowest validation loss; empty if
            none is selectable (the trainer then takes the last epoch).
        """
        return lowest_loss_epochs(history, count)

    def buffers_to_sync(self) -> list[torch.Tensor]:
        """Floating buffers that must be identical on every process (BatchNorm statistics).

        The trainer broadcasts them from rank 0 after every step, as
        :class:`torch.nn.parallel.DistributedDataParallel` does by default.
        """
        return [b for m in self.modules().values() for b in m.buffers() if b.is_floating_point()]


class _StateHolder(torch.nn.Module):
    """Adapter that gives :func:`load_state_dict_strict` the key checks for an objective."""

    def __init__(self, objective: Objective):
        super().__init__()
        self._objective = objective

    def state_dict(self, *args, **kwargs):  # noqa: D102 - mirrors nn.Module
        return self._objective.state_dict()

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: D102
        self._objective.load_state_dict(state_dict)
