"""Stage 2 (``slimdiar distill``): further distillation of the pruned WavLM from its teacher.

The loss is the layer-wise distillation loss of SPEC §1.4 (L1 distance minus cosine similarity,
averaged over the chosen hidden states); stage 1 (:mod:`slimdiar.stages.prune`) adds the gates
and the Lagrangian sparsity term to the same objective.

The teacher is the WavLM of a fine-tuned diarization checkpoint (the paper's order) or a
pre-trained WavLM (the "prune before fine-tune" baseline): the code path is the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from slimdiar.config import to_dict
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_checkpoint, load_state_dict_strict
from slimdiar.models.wavlm import WavLM
from slimdiar.stages.common import (
    DataSection,
    DistillOptimSection,
    WavLMTrainingSection,
    chunk_datasets,
)
from slimdiar.train.checkpoints import seed_everything
from slimdiar.train.distributed import DistContext
from slimdiar.train.objective import Objective, ParamGroup
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

logger = logging.getLogger(__name__)


def default_distill_layers(num_layers: int) -> list[int]:
    """Hidden states distilled by default: the input and every third of the depth.

    ``[0, 4, 8, 12]`` for 12 layers (Base+), ``[0, 8, 16, 24]`` for 24 (Large).
    """
    return [0, *sorted({max(1, round(num_layers * k / 3)) for k in (1, 2, 3)})]


def validate_layers(layers: list[int], num_layers: int) -> list[int]:
    """Check that every index names a hidden state of a ``num_layers``-layer model.

    Raises
    ------
    ConfigError
        If a layer is out of range, repeated, or the list is empty.
    """
    layers = [int(i) for i in layers]
    if not layers:
        raise ConfigError("distill_layers is empty; give at least one hidden-state index")
    bad = [i for i in layers if not 0 <= i <= num_layers]
    if bad:
        raise ConfigError(
            f"distill_layers {bad} are beyond the model's depth: a {num_layers}-layer WavLM has "
            f"hidden states 0..{num_layers}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"distill_layers has repeated entries: {layers}")
    return layers


def distillation_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    layers: list[int],
    frame_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 distance plus negative cosine similarity, averaged over the chosen hidden states.

    Per hidden state, the L1 term is the mean absolute difference over every element of the
    real frames and the cosine term the mean over those frames of the cosine similarity of the
    two feature vectors; both are then averaged over ``layers``. For equally long chunks this is
    the mean absolute error and the mean cosine of the stacked ``(batch, layer, frames, E)``
    states, the reference's loss; no log-sigmoid is applied to the cosine.

    Parameters
    ----------
    student, teacher
        All hidden states, each ``(batch, frames, E)``.
    layers
        Indices of the hidden states to match.
    frame_mask
        ``(batch, frames)`` bool, True on real frames (padding is ignored).

    Returns
    -------
    tuple
        ``(loss, scalars)``: ``loss = distill_l1 - distill_cos``, the two layer-averaged terms
        also in ``scalars``.
    """
    if not layers:
        raise ConfigError("distill_layers is empty; give at least one hidden-state index")
    l1_terms: list[torch.Tensor] = []
    cos_terms: list[torch.Tensor] = []
    for i in layers:
        s, t = student[i], teacher[i].detach()
        l1 = (s - t).abs().mean(-1)  # (B, T)
        cos = F.cosine_similarity(s, t, dim=-1)  # (B, T)
        if frame_mask is None:
            l1_terms.append(l1.mean())
            cos_terms.append(cos.mean())
        else:
            weight = frame_mask.to(l1.dtype)
            count = weight.sum().clamp(min=1.0)
            l1_terms.append((l1 * weight).sum() / count)
            cos_terms.append((cos * weight).sum() / count)
    total_l1 = sum(l1_terms[1:], l1_terms[0])
    total_cos = sum(cos_terms[1:], cos_terms[0])
    mean_l1, mean_cos = total_l1 / len(layers), total_cos / len(layers)
    loss = mean_l1 - mean_cos
    return loss, {"distill_l1": float(mean_l1.detach()), "distill_cos": float(mean_cos.detach())}


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
class DistillConfig:
    """Everything ``slimdiar distill`` needs besides paths."""

    distill_layers: list[int] = field(default_factory=list)
    wavlm: WavLMTrainingSection = field(default_factory=WavLMTrainingSection)
    data: DataSection = field(default_factory=DataSection)
    optim: DistillOptimSection = field(default_factory=DistillOptimSection)
    trainer: DistillTrainerConfig = field(default_factory=DistillTrainerConfig)


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
    """Layer-wise distillation of a plain (pruned) student WavLM from a frozen teacher.

    Parameters
    ----------
    student, teacher
        The WavLMs; the teacher is frozen and always in eval mode.
    layers
        Hidden states to match.
    optim
        Learning rates.
    """

    stage = "distill"
    checkpoint_kind = "wavlm"
    #: The key prefixes of :meth:`state_dict`.
    _state_prefixes: tuple[str, ...] = ("student.",)

    def __init__(
        self, student: WavLM, teacher: WavLM, layers: list[int], optim: DistillOptimSection
    ):
        self.student = student
        self.teacher = teacher
        self.layers = validate_layers(layers, student.config.num_layers)
        validate_layers(layers, teacher.config.num_layers)
        self.optim = optim

    def modules(self) -> dict[str, torch.nn.Module]:
        """The student and the teacher."""
        return {"student": self.student, "teacher": self.teacher}

    def train(self, mode: bool = True) -> None:
        """Set the student's mode; the teacher stays in eval mode."""
        self.student.train(mode)
        self.teacher.eval()

    def parameter_groups(self) -> list[ParamGroup]:
        """The student's weights, one group."""
        return [
            ParamGroup(
                "weights",
                self.student.weight_parameters(),
                self.optim.lr_weights,
                self.optim.weight_decay,
            )
        ]

    def _distill(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        waveforms, mask = batch["waveform"], batch["mask"]
        with torch.no_grad():
            teacher_states = self.teacher(waveforms)
        student_states = self.student(waveforms)
        return distillation_loss(student_states, teacher_states, self.layers, mask)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Distillation loss of the batch, logged with its L1 and cosine terms."""
        distill, scalars = self._distill(batch)
        scalars["distill"] = float(distill.detach())
        return distill, scalars

    def _validate_distill(self, batches) -> tuple[float, float]:
        """Sum over the items of their distillation loss, and the number of items."""
        total = count = 0.0
        for batch in batches:
            distill, _ = self._distill(batch)
            n = float(batch["waveform"].shape[0])
            total += float(distill) * n
            count += n
        return total, count

    def validate(self, batches) -> dict[str, tuple[float, float]]:
        """Distillation loss per chunk (also the ``"loss"`` that selects checkpoints)."""
        total, count = self._validate_distill(batches)
        return {"distill": (total, count), "loss": (total, count)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The student's weights, their keys prefixed ``student.``."""
        return {f"student.{k}": v for k, v in self.student.state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the student's weights; a missing or unexpected key is an error."""
        student = {k[8:]: v for k, v in state_dict.items() if k.startswith("student.")}
        load_state_dict_strict(self.student, student, "student state")
        extra = [k for k in state_dict if not k.startswith(self._state_prefixes)]
        if extra:
            raise CheckpointError(f"unexpected keys in a distillation state: {extra[:10]}")

    def checkpoint_config(self) -> dict:
        """The student's WavLM config and the distilled layers."""
        return {"wavlm": self.student.config.to_dict(), "layers": self.layers}

    def save(self, directory: str | Path, metadata: dict) -> Path:
        """Write the student as a plain WavLM checkpoint directory."""
        return self.student.save_pretrained(directory, metadata)

    def restore(self, directory: str | Path) -> None:
        """Load the student from a WavLM checkpoint directory written by :meth:`save`."""
        state, _, _ = load_checkpoint(directory, kind="wavlm")
        load_state_dict_strict(self.student, state, directory)


def run(
    config: DistillConfig,
    student_path: str | Path,
    teacher_path: str | Path,
    train_dir: str | Path,
    dev_dir: str | Path,
    exp_dir: str | Path,
    ctx: DistContext | None = None,
    resume: bool = False,
) -> TrainResult:
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
    run_config["paths"] = {
        "student": str(student_path),
        "teacher": str(teacher_path),
        "train": str(train_dir),
        "dev": str(dev_dir),
    }
    run_config["world_size"] = ctx.world_size
    trainer = Trainer(
        objective, train_set, dev_set, config.trainer, exp_dir, ctx=ctx, run_config=run_config
    )
    return trainer.fit(resume=resume)
