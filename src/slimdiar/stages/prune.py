"""Stage 1 (``slimdiar prune``): distill-and-prune WavLM under a Lagrangian sparsity control.

Everything that configures this stage is in this file except the sections it shares with the
other stages, all in :mod:`slimdiar.stages.common`, and the trainer settings it extends
(:class:`~slimdiar.train.trainer.TrainerConfig`)::

    PruneConfig
      prune    PruneSection          what to prune, how hard, which checkpoints become the model
      wavlm    WavLMTrainingSection  (common) dropout and feature_grad_mult of the student
      data     DataSection           (common) chunking
      optim    DistillOptimSection   (common) lr of weights, gate log-alphas, multipliers
      trainer  PruneTrainerConfig    epochs, batch, patience (over TrainerConfig: clipping, ...)

The student is a copy of the teacher's WavLM with hard-concrete gates; its loss is the
layer-wise distillation loss plus ``λ1 (ŝ - t) + λ2 (ŝ - t)²``, where ``ŝ`` is the expected
sparsity of the gated student and ``t`` the target of the moment (SPEC §1.4). The student's
weights and gates minimise it; ``λ1`` and ``λ2`` maximise it: they enter the loss through a
gradient reversal, so the one optimiser minimises them like every other parameter (positive
learning rate) while they climb. The multipliers grow while ``ŝ`` lags ``t`` and push the gates
until the expected sparsity tracks the target, which rises over the warm-up.

At the end the chosen checkpoints of the *gated* model are averaged (log-alphas included: by
default the 5 epochs with the lowest total validation loss from the epoch where that loss peaks
on), the deterministic masks applied, and the pruned WavLM written to ``EXP_DIR/pruned`` with its
report (``EXP_DIR/report.json``, ``report.md`` and plots: :mod:`slimdiar.stages.report`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from slimdiar.config import Range, at_least, check_ranges, to_dict
from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import load_checkpoint, load_state_dict_strict
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import WavLMConfig
from slimdiar.models.wavlm.units import CONFIG_NAMES, PruneUnit
from slimdiar.stages.common import (
    DataSection,
    DistillOptimSection,
    WavLMTrainingSection,
    chunk_datasets,
)
from slimdiar.stages.distill import (
    DistillObjective,
    default_distill_layers,
    load_teacher,
    validate_layers,
)
from slimdiar.stages.report import write_report
from slimdiar.train.averaging import lowest_loss_epochs, post_peak_epochs
from slimdiar.train.checkpoints import seed_everything
from slimdiar.train.distributed import DistContext
from slimdiar.train.objective import Objective, ParamGroup
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

logger = logging.getLogger(__name__)

UNITS = tuple(CONFIG_NAMES.values())
FINAL_MODELS = ("average", "on-target")
OBJECTIVES = ("params", "macs")
GATED_KIND = "wavlm-gated"


@dataclass
class PruneSection:
    """What to prune and how hard.

    Parameters
    ----------
    sparsity
        Final target, in (0, 1): the fraction of the teacher's WavLM parameters (or MACs) removed.
    objective
        ``"params"`` (the paper) or ``"macs"`` (expected MACs for one second of audio).
    warmup_epochs
        The target rises linearly from 0 to ``sparsity`` over this many epochs.
    units
        Gated units among ``conv``, ``head``, ``ffn``, ``attention_block``, ``ffn_block``.
    distill_layers
        Hidden states matched to the teacher's (empty: 0 and every third of the depth).
    channel_drop_rate, head_drop_rate, ffn_drop_rate, block_drop_rate
        Initial closing probability of each kind of gate.
    gate_bound
        After every step each gate's open probability is clamped to ``[b, 1 - b]``; 0 (the
        reference: no clamp) never clamps. A bound keeps gates from saturating, so a closed unit
        can reopen and the multipliers need not grow without bound to close an important one.
    final_model
        Which checkpoints of the gated model become the final model:

        ``"average"`` (the reference): the average, weights and log-alphas, of the
        ``trainer.average_best`` epochs with the lowest total validation loss (distillation +
        Lagrangian term) among the epoch where that loss peaks and those after it.

        ``"on-target"``: the one checkpoint past the warm-up whose deterministic sparsity is
        within ``tolerance`` of the target with the lowest validation distillation loss (the last
        one if no epoch is on target).
    tolerance
        What ``"on-target"`` means: reached sparsity within this of the target.
    """

    sparsity: float = 0.8
    objective: str = "params"
    warmup_epochs: float = 5.0
    units: list[str] = field(default_factory=lambda: ["conv", "head", "ffn"])
    distill_layers: list[int] = field(default_factory=list)
    channel_drop_rate: float = 0.01
    head_drop_rate: float = 0.01
    ffn_drop_rate: float = 0.5
    block_drop_rate: float = 0.01
    gate_bound: float = 0.0
    final_model: str = "average"
    tolerance: float = 0.01

    RANGES: ClassVar[dict[str, Range]] = {
        "warmup_epochs": at_least(0),
        "tolerance": at_least(0),
        **{
            f"{kind}_drop_rate": Range(low=0, high=1, low_open=True, high_open=True)
            for kind in ("channel", "head", "ffn", "block")
        },
    }

    def __post_init__(self) -> None:
        check_ranges(self)
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be strictly between 0 and 1, got {self.sparsity}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 <= self.gate_bound < 0.5:
            raise ConfigError(f"gate_bound must be in [0, 0.5), got {self.gate_bound}")
        if self.final_model not in FINAL_MODELS:
            raise ConfigError(
                f"final_model must be one of {FINAL_MODELS}, got {self.final_model!r}"
            )
        unknown = sorted(set(self.units) - set(UNITS))
        if unknown or not self.units:
            raise ConfigError(f"units must be a non-empty list from {UNITS}, got {self.units}")


@dataclass
class PruneTrainerConfig(TrainerConfig):
    """Trainer settings of stage 1, the reference's: up to 30 epochs, global batch 64.

    Early stopping (``patience`` 5) counts from the first epoch past the warm-up, on the
    validation distillation loss (with ``prune.final_model = "on-target"``: from the first
    on-target epoch). ``average_best`` (5) is the number of epochs the ``"average"`` final model
    averages. The reference trains WavLM Large with a global batch of 32
    (the bundled ``prune-wavlm-large``).
    """

    max_epochs: int = 30
    patience: int = 5
    average_best: int = 5
    batch_size: int = 64


@dataclass
class PruneConfig:
    """Everything ``slimdiar prune`` needs besides paths."""

    prune: PruneSection = field(default_factory=PruneSection)
    wavlm: WavLMTrainingSection = field(default_factory=WavLMTrainingSection)
    data: DataSection = field(default_factory=DataSection)
    optim: DistillOptimSection = field(default_factory=DistillOptimSection)
    trainer: PruneTrainerConfig = field(default_factory=PruneTrainerConfig)


class _ReverseGradient(torch.autograd.Function):
    """The identity forward; the negated gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.neg()


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, but the gradient flowing back into it is negated.

    A parameter that enters a loss only through this function climbs that loss when an optimiser
    minimises it: with zero weight decay the AdamW step is bit for bit the step of gradient
    ascent (the sign flip is exact, and the clipping norm ignores signs).
    """
    return _ReverseGradient.apply(x)


def expected_sparsity(
    student: WavLM, reference_size: float, objective: str = "params", seconds: float = 1.0
) -> torch.Tensor:
    """``1 - expected size of the gated student / size of the reference`` (differentiable).

    Parameters
    ----------
    student
        A :class:`~slimdiar.models.wavlm.WavLM` with gates.
    reference_size
        Parameters (or MACs for ``seconds`` of audio) of the unpruned teacher.
    objective
        ``"params"`` or ``"macs"``.
    seconds
        Audio duration of the MAC count.
    """
    if objective == "params":
        size = student.expected_num_params()
    elif objective == "macs":
        size = student.expected_macs(seconds)
    else:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return 1.0 - size / reference_size


class SparsityController(nn.Module):
    """The multipliers ``λ1, λ2`` and the target schedule.

    Parameters
    ----------
    final_sparsity
        Target at the end of the warm-up, in (0, 1).
    warmup_epochs
        The target rises linearly from 0 to ``final_sparsity`` over this many epochs.
    """

    def __init__(self, final_sparsity: float, warmup_epochs: float = 5.0):
        super().__init__()
        if not 0.0 < final_sparsity < 1.0:
            raise ConfigError(f"sparsity must be in (0, 1), got {final_sparsity}")
        if warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.final_sparsity = float(final_sparsity)
        self.warmup_epochs = float(warmup_epochs)
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def target(self, epoch_progress: float) -> float:
        """Target sparsity after ``epoch_progress`` (fractional) epochs."""
        if self.warmup_epochs == 0:
            return self.final_sparsity
        return self.final_sparsity * min(1.0, max(0.0, epoch_progress) / self.warmup_epochs)

    def penalty(self, sparsity: torch.Tensor, target: float) -> torch.Tensor:
        """``λ1 (ŝ - t) + λ2 (ŝ - t)²`` for expected sparsity ``ŝ`` and target ``t``.

        The multipliers enter through :func:`reverse_gradient`: minimising the penalty moves
        ``ŝ`` (and the gates) down its gradient and ``λ1, λ2`` up theirs.
        """
        gap = sparsity - target
        return reverse_gradient(self.lambda1) * gap + reverse_gradient(self.lambda2) * gap * gap


def enable_units(model: WavLM, section: PruneSection) -> WavLM:
    """Attach the gates that ``section.units`` asks for."""
    rates: dict[PruneUnit | str, float] = {
        PruneUnit.CONV: section.channel_drop_rate,
        PruneUnit.HEADS: section.head_drop_rate,
        PruneUnit.FFN: section.ffn_drop_rate,
        PruneUnit.ATTENTION_BLOCKS: section.block_drop_rate,
        PruneUnit.FFN_BLOCKS: section.block_drop_rate,
    }
    return model.enable_pruning([PruneUnit(name) for name in section.units], rates)


class PruneObjective(DistillObjective):
    """Distillation of a gated student plus the Lagrangian sparsity term (stage 1).

    Parameters
    ----------
    student, teacher
        The WavLMs; the student carries gates, the teacher is frozen and always in eval mode.
    layers
        Hidden states to match.
    optim
        Learning rates of the weights, the gate log-alphas and the multipliers.
    controller
        Multipliers and target schedule.
    objective
        ``"params"`` or ``"macs"``: what the sparsity measures.
    tolerance
        Deterministic-sparsity tolerance for a checkpoint to count as on target.
    gate_bound
        After every step each gate's open probability is clamped to ``[b, 1 - b]`` (0: never).
    seed
        Seed of the gate masks (drawn afresh for every step from ``seed`` and the step).
    final_model
        ``"average"`` or ``"on-target"``: how the final checkpoints are chosen
        (:class:`PruneSection`).
    """

    stage = "prune"
    checkpoint_kind = GATED_KIND
    _state_prefixes = ("student.", "controller.")

    def __init__(
        self,
        student: WavLM,
        teacher: WavLM,
        layers: list[int],
        optim: DistillOptimSection,
        controller: SparsityController,
        objective: str = "params",
        tolerance: float = 0.01,
        gate_bound: float = 0.0,
        seed: int = 0,
        final_model: str = "average",
    ):
        super().__init__(student, teacher, layers, optim)
        if final_model not in FINAL_MODELS:
            raise ConfigError(f"final_model must be one of {FINAL_MODELS}, got {final_model!r}")
        if not student.pruning_enabled:
            raise ConfigError("a sparsity controller needs a student with gates")
        self.controller = controller
        self.objective = objective
        self.tolerance = tolerance
        self.gate_bound = gate_bound
        self.seed = seed
        self.final_model = final_model
        self.target = 0.0
        self._epochs_done = 0.0  # when validating: the epochs trained so far
        self._on_target = False
        self.reference_size = float(
            teacher.num_params() if objective == "params" else teacher.macs(1.0)
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        """The student, the teacher and the sparsity controller."""
        return {**super().modules(), "controller": self.controller}

    def parameter_groups(self) -> list[ParamGroup]:
        """Student weights, gate log-alphas and multipliers, each with its own learning rate."""
        return [
            *super().parameter_groups(),
            ParamGroup("gates", self.student.gate_parameters(), self.optim.lr_gates, 0.0),
            ParamGroup("lambda", list(self.controller.parameters()), self.optim.lr_lambda, 0.0),
        ]

    def on_step(self, epoch: int, step: int, epoch_progress: float) -> None:
        """Move the target sparsity along its schedule and seed this step's gate masks."""
        self.target = self.controller.target(epoch_progress)
        self._epochs_done = float(epoch + 1)
        # The gate masks of a step depend on the seed and the step only: every process of a
        # distributed run draws the masks a single process would, and resuming redraws them.
        device = self.student.gate_parameters()[0].device
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed * 1_000_003 + step)
        for gate in self.student.gates():
            gate.generator = generator

    def after_step(self) -> None:
        """Clamp every gate's open probability to ``[gate_bound, 1 - gate_bound]``."""
        for gate in self.student.gates():
            gate.constrain_(self.gate_bound)

    def sparsity(self) -> torch.Tensor:
        """Expected sparsity of the gated student (differentiable)."""
        return expected_sparsity(self.student, self.reference_size, self.objective)

    def deterministic_sparsity(self) -> float:
        """Sparsity that pruning now would reach (parameters or MACs)."""
        if self.objective == "params":
            kept = self.student.deterministic_num_params()
        else:
            kept = WavLM.macs(self.student.prune(), 1.0)
        return 1.0 - kept / self.reference_size

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Distillation loss plus the Lagrangian sparsity penalty at the current target."""
        distill, scalars = super().loss(batch)
        sparsity = self.sparsity()
        penalty = self.controller.penalty(sparsity, self.target)
        scalars.update(
            expected_sparsity=float(sparsity.detach()),
            target_sparsity=self.target,
            lambda1=float(self.controller.lambda1.detach()),
            lambda2=float(self.controller.lambda2.detach()),
            penalty=float(penalty.detach()),
        )
        return distill + penalty, scalars

    def validate(self, batches) -> dict[str, tuple[float, float]]:
        """Distillation loss (the ``"loss"``), reached sparsity, on-target share, penalty, total."""
        total, count = self._validate_distill(batches)
        reached = self.deterministic_sparsity()
        final = self.controller.final_sparsity
        self._on_target = self.target >= final and abs(reached - final) <= self.tolerance
        # The Lagrangian term as training sees it at the end of the epoch: expected sparsity,
        # the target after the epochs done, the current multipliers.
        penalty = float(
            self.controller.penalty(self.sparsity(), self.controller.target(self._epochs_done))
        )
        return {
            "distill": (total, count),
            "sparsity": (reached * count, count),
            "on_target": (float(self._on_target) * count, count),
            "penalty": (penalty * count, count),
            "total": (total + penalty * count, count),
            "loss": (total, count),
        }

    def selectable(self, epoch: int) -> bool:
        """Checkpoints past the warm-up (``"on-target"``: and on target)."""
        if self.final_model == "on-target":
            return self._on_target
        return epoch > self.controller.warmup_epochs

    def final_epochs(self, history: list[dict], count: int) -> list[int]:
        """The epochs of :attr:`final_model`."""
        if self.final_model == "on-target":
            return lowest_loss_epochs(history, 1)
        return post_peak_epochs(history, count, "total")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The gated student (``student.``) and the multipliers (``controller.``)."""
        state = super().state_dict()
        state.update({f"controller.{k}": v for k, v in self.controller.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the student and the multipliers; a missing or unexpected key is an error."""
        super().load_state_dict(state_dict)
        controller = {k[11:]: v for k, v in state_dict.items() if k.startswith("controller.")}
        load_state_dict_strict(self.controller, controller, "controller state")

    def save(self, directory: str | Path, metadata: dict) -> Path:
        """The whole gated state (student and multipliers) as a ``wavlm-gated`` checkpoint."""
        return Objective.save(self, directory, metadata)

    def restore(self, directory: str | Path) -> None:
        """Load a ``wavlm-gated`` checkpoint directory written by :meth:`save`."""
        Objective.restore(self, directory)


class PruneResult(NamedTuple):
    """What :func:`run` returns (unpacks as ``train, teacher, pruned``)."""

    train: TrainResult
    teacher: WavLM
    pruned: WavLM


def load_gated_student(directory: str | Path, section: PruneSection) -> WavLM:
    """Rebuild the gated student of a stage-1 checkpoint (e.g. ``EXP_DIR/best``)."""
    state, config, _ = load_checkpoint(directory, kind=GATED_KIND)
    student = enable_units(WavLM(WavLMConfig.from_dict(config["wavlm"])), section)
    weights = {k[8:]: v for k, v in state.items() if k.startswith("student.")}
    load_state_dict_strict(student, weights, directory)
    return student.eval()


def run(
    config: PruneConfig,
    teacher_path: str | Path,
    train_dir: str | Path,
    dev_dir: str | Path,
    exp_dir: str | Path,
    ctx: DistContext | None = None,
    resume: bool = False,
) -> PruneResult:
    """Run stage 1; write ``exp_dir/pruned`` and the report (``exp_dir/report.json``, ...).

    Returns
    -------
    PruneResult
        ``(train, teacher, pruned)``: what the trainer did, the teacher, the pruned WavLM.
    """
    ctx = ctx or DistContext()
    section = config.prune
    seed_everything(config.trainer.seed)
    teacher = load_teacher(teacher_path)
    layers = section.distill_layers or default_distill_layers(teacher.config.num_layers)
    validate_layers(layers, teacher.config.num_layers)
    train_set, dev_set = chunk_datasets(config.data, teacher.config, train_dir, dev_dir)
    student = enable_units(config.wavlm.apply(copy.deepcopy(teacher)), section)
    for name, p in student.named_parameters():
        # The conv output scale is fixed (it only stores the last gate's values once pruned).
        p.requires_grad_(name != "feature_extractor.output_scale")
    controller = SparsityController(section.sparsity, section.warmup_epochs)
    objective = PruneObjective(
        student,
        teacher,
        layers,
        config.optim,
        controller,
        section.objective,
        section.tolerance,
        section.gate_bound,
        config.trainer.seed,
        section.final_model,
    )
    run_config = to_dict(config)
    run_config["prune"]["distill_layers"] = layers
    run_config["paths"] = {
        "teacher": str(teacher_path),
        "train": str(train_dir),
        "dev": str(dev_dir),
    }
    run_config["world_size"] = ctx.world_size
    trainer = Trainer(
        objective, train_set, dev_set, config.trainer, exp_dir, ctx=ctx, run_config=run_config
    )
    result = trainer.fit(resume=resume)
    # fit leaves the objective holding the final (averaged) gated model of best/
    pruned = objective.student.eval().prune()
    if ctx.is_main:
        _write_pruned(exp_dir, section, teacher_path, teacher, pruned, result.best_epochs)
    return PruneResult(result, teacher, pruned)


def _write_pruned(
    exp_dir: str | Path,
    section: PruneSection,
    teacher_path: str | Path,
    teacher: WavLM,
    pruned: WavLM,
    epochs: list[int],
) -> None:
    """``exp_dir/pruned`` and the report of the run."""
    reached = 1.0 - pruned.num_params() / teacher.num_params()
    reached_macs = 1.0 - pruned.macs(1.0) / teacher.macs(1.0)
    pruned.save_pretrained(
        Path(exp_dir) / "pruned",
        {
            "stage": "prune",
            "teacher": str(teacher_path),
            "target_sparsity": section.sparsity,
            "objective": section.objective,
            "reached_sparsity": reached,
            "reached_mac_sparsity": reached_macs,
            "final_model": section.final_model,
            "epochs": epochs,
        },
    )
    logger.info(
        "pruned WavLM (%s of epochs %s): %.2fM -> %.2fM parameters (sparsity %.3f, "
        "MAC sparsity %.3f, target %.3f in %s)",
        section.final_model,
        epochs,
        teacher.num_params() / 1e6,
        pruned.num_params() / 1e6,
        reached,
        reached_macs,
        section.sparsity,
        section.objective,
    )
    measured = reached if section.objective == "params" else reached_macs
    if abs(measured - section.sparsity) > section.tolerance:
        logger.warning(
            "the pruned model's sparsity %.3f is %.3f off the target %.3f",
            measured,
            measured - section.sparsity,
            section.sparsity,
        )
    write_report(
        exp_dir,
        teacher,
        pruned,
        section.sparsity,
        section.objective,
        {"rule": section.final_model, "epochs": epochs},
    )
