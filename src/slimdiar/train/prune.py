"""Stages 1 and 2: distill-and-prune, then further distillation of the pruned WavLM.

Stage 1 (``slimdiar prune``): the student is a copy of the teacher's WavLM with hard-concrete
gates; its loss is the layer-wise distillation loss plus the Lagrangian sparsity term, with
``λ1, λ2`` trained by gradient ascent while the target sparsity rises over the warm-up. At the end
the chosen checkpoints of the *gated* model are averaged (log-alphas included: by default the 5
epochs with the lowest total validation loss from the epoch where that loss peaks on), the
deterministic masks applied, and the pruned WavLM written to ``EXP_DIR/pruned``.

Stage 2 (``slimdiar distill``): the same objective without gates and multipliers.

The teacher is the WavLM of a fine-tuned diarization checkpoint (the paper's order) or a
pre-trained WavLM (the "prune before fine-tune" baseline): the code path is the same.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from slimdiar.config import Range, above, at_least, check_ranges, to_dict
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_checkpoint, load_state_dict_strict
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import WavLMConfig
from slimdiar.prune import (
    SparsityController,
    default_distill_layers,
    distillation_loss,
    expected_sparsity,
    validate_layers,
)
from slimdiar.prune.lagrangian import OBJECTIVES
from slimdiar.train.averaging import lowest_loss_epochs, post_peak_epochs
from slimdiar.train.distributed import DistContext
from slimdiar.train.finetune import (
    DataSection,
    WavLMTrainingSection,
    chunk_datasets,
    seed_everything,
)
from slimdiar.train.objective import Objective, ParamGroup
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

logger = logging.getLogger(__name__)

UNITS = ("conv", "head", "ffn", "attention_block", "ffn_block")
FINAL_MODELS = ("average", "on-target")
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
        "warmup_epochs": at_least(0), "tolerance": at_least(0),
        **{f"{kind}_drop_rate": Range(low=0, high=1, low_open=True, high_open=True)
           for kind in ("channel", "head", "ffn", "block")},
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
                f"final_model must be one of {FINAL_MODELS}, got {self.final_model!r}")
        unknown = sorted(set(self.units) - set(UNITS))
        if unknown or not self.units:
            raise ConfigError(f"units must be a non-empty list from {UNITS}, got {self.units}")


@dataclass
class DistillOptimSection:
    """One AdamW with weight decay 0: student weights, gate log-alphas, multipliers (ascent)."""

    lr_weights: float = 2e-4
    lr_gates: float = 2e-2
    lr_lambda: float = 2e-2
    weight_decay: float = 0.0

    RANGES: ClassVar[dict[str, Range]] = {
        "lr_weights": above(0), "lr_gates": above(0), "lr_lambda": above(0),
        "weight_decay": at_least(0),
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class PruneTrainerConfig(TrainerConfig):
    """Trainer settings of stage 1, the reference's: up to 30 epochs, global batch 64.

    Early stopping (``patience`` 5) counts from the first epoch past the warm-up, on the
    validation distillation loss (with ``prune.final_model = "on-target"``: from the first
    on-target epoch). ``average_best`` (5) is the number of epochs the ``"average"`` final model
    averages. The reference trains WavLM Large with a global batch of 32
    (``configs/prune-wavlm-large.toml``).
    """

    max_epochs: int = 30
    patience: int = 5
    average_best: int = 5
    batch_size: int = 64


@dataclass
class DistillTrainerConfig(TrainerConfig):
    """Trainer settings of stage 2, the reference's: up to 20 epochs, global batch 64.

    Early stop after 5 epochs without a lower validation loss; the final model averages the 5
    best.
    """

    max_epochs: int = 20
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


@dataclass
class DistillConfig:
    """Everything ``slimdiar distill`` needs besides paths."""

    distill_layers: list[int] = field(default_factory=list)
    wavlm: WavLMTrainingSection = field(default_factory=WavLMTrainingSection)
    data: DataSection = field(default_factory=DataSection)
    optim: DistillOptimSection = field(default_factory=DistillOptimSection)
    trainer: DistillTrainerConfig = field(default_factory=DistillTrainerConfig)


def enable_units(model: WavLM, section: PruneSection) -> WavLM:
    """Attach the gates that ``section.units`` asks for."""
    units = set(section.units)
    return model.enable_pruning(
        conv="conv" in units, heads="head" in units, ffn="ffn" in units,
        attention_blocks="attention_block" in units, ffn_blocks="ffn_block" in units,
        channel_drop_rate=section.channel_drop_rate, head_drop_rate=section.head_drop_rate,
        ffn_drop_rate=section.ffn_drop_rate, block_drop_rate=section.block_drop_rate,
    )


def load_teacher(path: str | Path) -> WavLM:
    """The frozen teacher WavLM of a diarization checkpoint or a pre-trained WavLM."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"teacher {str(path)!r} does not exist; give a fine-tuned diarization checkpoint "
            "(e.g. EXP_DIR/best) or a pre-trained WavLM (Hugging Face dir, .pt, slimdiar dir)"
        )
    teacher = WavLM.from_pretrained(path)
    if teacher.pruning_enabled:
        raise CheckpointError(f"{path}: the teacher must be a plain WavLM, not a gated one")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillObjective(Objective):
    """Layer-wise distillation of a student WavLM from a frozen teacher.

    With a :class:`~slimdiar.prune.SparsityController` the student must carry gates and the
    loss gains the Lagrangian sparsity term (stage 1); without one it is plain distillation of a
    (pruned) student (stage 2).

    Parameters
    ----------
    student, teacher
        The WavLMs; the teacher is frozen and always in eval mode.
    layers
        Hidden states to match.
    optim
        Learning rates.
    controller
        Multipliers and target schedule (stage 1 only).
    objective
        ``"params"`` or ``"macs"``: what the sparsity measures.
    tolerance
        Deterministic-sparsity tolerance for a checkpoint to count as on target.
    gate_bound
        After every step each gate's open probability is clamped to ``[b, 1 - b]`` (0: never).
    seed
        Seed of the gate masks (drawn afresh for every step from ``seed`` and the step).
    final_model
        ``"average"`` or ``"on-target"``: how stage 1 chooses its final checkpoints
        (:class:`PruneSection`).
    """

    def __init__(self, student: WavLM, teacher: WavLM, layers: list[int],
                 optim: DistillOptimSection, controller: SparsityController | None = None,
                 objective: str = "params", tolerance: float = 0.01,
                 gate_bound: float = 0.0, seed: int = 0, final_model: str = "average"):
        self.student = student
        self.teacher = teacher
        self.layers = validate_layers(layers, student.config.num_layers)
        validate_layers(layers, teacher.config.num_layers)
        self.optim = optim
        self.controller = controller
        self.objective = objective
        self.tolerance = tolerance
        self.gate_bound = gate_bound
        self.seed = seed
        if final_model not in FINAL_MODELS:
            raise ConfigError(f"final_model must be one of {FINAL_MODELS}, got {final_model!r}")
        self.final_model = final_model
        self.target = 0.0
        self._epochs_done = 0.0  # when validating: the epochs trained so far
        self._on_target = controller is None
        if controller is not None and not student.pruning_enabled:
            raise ConfigError("a sparsity controller needs a student with gates")
        self.reference_size = float(
            teacher.num_params() if objective == "params" else teacher.macs(1.0)
        )
        self.stage = "prune" if controller is not None else "distill"
        self.checkpoint_kind = GATED_KIND if controller is not None else "wavlm"

    def modules(self) -> dict[str, torch.nn.Module]:
        modules = {"student": self.student, "teacher": self.teacher}
        if self.controller is not None:
            modules["controller"] = self.controller
        return modules

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)
        self.teacher.eval()

    def parameter_groups(self) -> list[ParamGroup]:
        wd = self.optim.weight_decay
        groups = [ParamGroup("weights", self.student.weight_parameters(), self.optim.lr_weights,
                             wd)]
        if self.controller is not None:
            groups.append(ParamGroup("gates", self.student.gate_parameters(),
                                     self.optim.lr_gates, 0.0))
            groups.append(ParamGroup("lambda", list(self.controller.parameters()),
                                     -abs(self.optim.lr_lambda), 0.0))
        return groups

    def on_step(self, epoch: int, step: int, epoch_progress: float) -> None:
        if self.controller is not None:
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
        if self.controller is not None:
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

    def _distill(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        waveforms, mask = batch["waveform"], batch["mask"]
        with torch.no_grad():
            teacher_states = self.teacher(waveforms)
        student_states = self.student(waveforms)
        return distillation_loss(student_states, teacher_states, self.layers, mask)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        distill, scalars = self._distill(batch)
        scalars["distill"] = float(distill.detach())
        if self.controller is None:
            return distill, scalars
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
        total = count = 0.0
        for batch in batches:
            distill, _ = self._distill(batch)
            n = float(batch["waveform"].shape[0])
            total += float(distill) * n
            count += n
        stats = {"distill": (total, count)}
        if self.controller is None:
            stats["loss"] = (total, count)
            return stats
        reached = self.deterministic_sparsity()
        final = self.controller.final_sparsity
        self._on_target = self.target >= final and abs(reached - final) <= self.tolerance
        # The Lagrangian term as training sees it at the end of the epoch: expected sparsity,
        # the target after the epochs done, the current multipliers.
        penalty = float(self.controller.penalty(
            self.sparsity(), self.controller.target(self._epochs_done)))
        stats["sparsity"] = (reached * count, count)
        stats["on_target"] = (float(self._on_target) * count, count)
        stats["penalty"] = (penalty * count, count)
        stats["total"] = (total + penalty * count, count)
        stats["loss"] = (total, count)
        return stats

    def selectable(self, epoch: int) -> bool:
        """Stage 1: checkpoints past the warm-up (``"on-target"``: and on target)."""
        if self.controller is None:
            return True
        if self.final_model == "on-target":
            return self._on_target
        return epoch > self.controller.warmup_epochs

    def final_epochs(self, history: list[dict], count: int) -> list[int]:
        """Stage 1: the epochs of :attr:`final_model`; stage 2: the ``count`` best."""
        if self.controller is None:
            return super().final_epochs(history, count)
        if self.final_model == "on-target":
            return lowest_loss_epochs(history, 1)
        return post_peak_epochs(history, count, "total")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"student.{k}": v for k, v in self.student.state_dict().items()}
        if self.controller is not None:
            state.update({f"controller.{k}": v for k, v in self.controller.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        student = {k[8:]: v for k, v in state_dict.items() if k.startswith("student.")}
        load_state_dict_strict(self.student, student, "student state")
        if self.controller is not None:
            controller = {k[11:]: v for k, v in state_dict.items() if k.startswith("controller.")}
            load_state_dict_strict(self.controller, controller, "controller state")
        extra = [k for k in state_dict if not k.startswith(("student.", "controller."))]
        if extra:
            raise CheckpointError(f"unexpected keys in a distillation state: {extra[:10]}")

    def checkpoint_config(self) -> dict:
        return {"wavlm": self.student.config.to_dict(), "layers": self.layers}

    def save(self, directory: str | Path, metadata: dict) -> Path:
        if self.controller is None:
            return self.student.save_pretrained(directory, metadata)
        return super().save(directory, metadata)

    def restore(self, directory: str | Path) -> None:
        if self.controller is not None:
            return super().restore(directory)
        state, _, _ = load_checkpoint(directory, kind="wavlm")
        load_state_dict_strict(self.student, state, directory)
        return None


def load_gated_student(directory: str | Path, section: PruneSection) -> WavLM:
    """Rebuild the gated student of a stage-1 checkpoint (e.g. ``EXP_DIR/best``)."""
    state, config, _ = load_checkpoint(directory, kind=GATED_KIND)
    student = enable_units(WavLM(WavLMConfig.from_dict(config["wavlm"])), section)
    weights = {k[8:]: v for k, v in state.items() if k.startswith("student.")}
    load_state_dict_strict(student, weights, directory)
    return student.eval()


def prune(config: PruneConfig, teacher_path: str | Path, train_dir: str | Path,
          dev_dir: str | Path, exp_dir: str | Path, ctx: DistContext | None = None,
          resume: bool = False) -> tuple[TrainResult, WavLM, WavLM]:
    """Run stage 1 and write ``exp_dir/pruned``.

    Returns
    -------
    tuple
        ``(train_result, teacher, pruned_student)``.
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
    objective = DistillObjective(student, teacher, layers, config.optim, controller,
                                 section.objective, section.tolerance, section.gate_bound,
                                 config.trainer.seed, section.final_model)
    run_config = to_dict(config)
    run_config["prune"]["distill_layers"] = layers
    run_config["paths"] = {"teacher": str(teacher_path), "train": str(train_dir),
                           "dev": str(dev_dir)}
    run_config["world_size"] = ctx.world_size
    trainer = Trainer(objective, train_set, dev_set, config.trainer, exp_dir, ctx=ctx,
                      run_config=run_config)
    result = trainer.fit(resume=resume)
    gated = load_gated_student(result.best_dir, section).to(ctx.device)
    pruned = gated.prune()
    if ctx.is_main:
        reached = 1.0 - pruned.num_params() / teacher.num_params()
        reached_macs = 1.0 - pruned.macs(1.0) / teacher.macs(1.0)
        pruned.save_pretrained(Path(exp_dir) / "pruned", {
            "stage": "prune",
            "teacher": str(teacher_path),
            "target_sparsity": section.sparsity,
            "objective": section.objective,
            "reached_sparsity": reached,
            "reached_mac_sparsity": reached_macs,
            "final_model": section.final_model,
            "epochs": result.best_epochs,
        })
        logger.info("pruned WavLM (%s of epochs %s): %.2fM -> %.2fM parameters (sparsity %.3f, "
                    "MAC sparsity %.3f, target %.3f in %s)", section.final_model,
                    result.best_epochs, teacher.num_params() / 1e6, pruned.num_params() / 1e6,
                    reached, reached_macs, section.sparsity, section.objective)
        measured = reached if section.objective == "params" else reached_macs
        if abs(measured - section.sparsity) > section.tolerance:
            logger.warning("the pruned model's sparsity %.3f is %.3f off the target %.3f",
                           measured, measured - section.sparsity, section.sparsity)
    return result, teacher, pruned


def distill(config: DistillConfig, student_path: str | Path, teacher_path: str | Path,
            train_dir: str | Path, dev_dir: str | Path, exp_dir: str | Path,
            ctx: DistContext | None = None, resume: bool = False) -> TrainResult:
    """Run stage 2: distil a plain (pruned) student from the teacher; ``exp_dir/best`` is it."""
    ctx = ctx or DistContext()
    seed_everything(config.trainer.seed)
    teacher = load_teacher(teacher_path)
    if not Path(student_path).exists():
        raise CheckpointError(f"student {str(student_path)!r} does not exist")
    student = config.wavlm.apply(WavLM.from_pretrained(student_path))
    if student.config.embed_dim != teacher.config.embed_dim:
        raise ConfigError(
            f"student width {student.config.embed_dim} differs from the teacher's "
            f"{teacher.config.embed_dim}; distillation has no projection heads"
        )
    layers = config.distill_layers or default_distill_layers(teacher.config.num_layers)
    validate_layers(layers, teacher.config.num_layers)
    train_set, dev_set = chunk_datasets(config.data, teacher.config, train_dir, dev_dir)
    objective = DistillObjective(student, teacher, layers, config.optim)
    run_config = to_dict(config)
    run_config["distill_layers"] = layers
    run_config["paths"] = {"student": str(student_path), "teacher": str(teacher_path),
                           "train": str(train_dir), "dev": str(dev_dir)}
    run_config["world_size"] = ctx.world_size
    trainer = Trainer(objective, train_set, dev_set, config.trainer, exp_dir, ctx=ctx,
                      run_config=run_config)
    return trainer.fit(resume=resume)

