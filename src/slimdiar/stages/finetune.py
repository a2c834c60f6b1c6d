"""Stage 0 (and stage 3): fine-tune WavLM inside the diarization model.

The recipe: 8 s chunks with a 6 s shift inside the UEM regions for training, 8 s / 8 s for
validation; two AdamW optimisers with constant learning rates (2e-5 for WavLM, 1e-3 for the
rest); the permutation-invariant powerset loss; validation loss and chunk-level DER every epoch;
up to 100 epochs with patience 10; the final model averages the 5 best checkpoints. Stage 3 is the
same with a pruned backbone, 20 epochs and patience 5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from slimdiar.config import Range, above, at_least, check_ranges, to_dict
from slimdiar.errors import ConfigError
from slimdiar.frames import FrameGrid
from slimdiar.models.checkpoint import load_state_dict_strict
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.powerset import chunk_der, permutation_invariant_powerset_loss
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import PRESETS, preset
from slimdiar.stages.common import DataSection, WavLMTrainingSection, chunk_datasets
from slimdiar.train.checkpoints import seed_everything
from slimdiar.train.distributed import DistContext
from slimdiar.train.objective import Objective, ParamGroup
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

logger = logging.getLogger(__name__)

FRONTEND_VARIANTS = ("wavlm", "wavlm-frozen", "fbank")


@dataclass
class ModelSection:
    """The diarization model.

    Parameters
    ----------
    backbone
        WavLM preset name (random initialisation) or a checkpoint path (Hugging Face directory,
        original ``.pt`` release, or slimdiar WavLM checkpoint); ignored by the fbank front-end.
    frontend
        ``"wavlm"`` (WavLM updated), ``"wavlm-frozen"`` (only the head trains) or ``"fbank"``
        (log-mel filterbank, no self-supervised model).
    d_model, num_heads, ffn_dim, conv_kernel, num_blocks, dropout
        Conformer head.
    max_speakers_per_chunk, max_speakers_per_frame
        The powerset (4 and 2: 11 classes).
    layer_sum
        ``"linear"`` (the reference: ``Linear(L+1, 1, bias=False)`` over the hidden states) or
        ``"softmax"`` (softmax-normalised layer weights); unset: ``"linear"`` with WavLM,
        ``"softmax"`` (the identity on its one state) with the filterbank.
    """

    backbone: str = "wavlm-base-plus"
    frontend: str = "wavlm"
    d_model: int = 256
    num_heads: int = 4
    ffn_dim: int = 1024
    conv_kernel: int = 31
    num_blocks: int = 4
    dropout: float = 0.1
    max_speakers_per_chunk: int = 4
    max_speakers_per_frame: int = 2
    layer_sum: str | None = None

    RANGES: ClassVar[dict[str, Range]] = {
        "d_model": at_least(1),
        "num_heads": at_least(1),
        "ffn_dim": at_least(1),
        "conv_kernel": at_least(1),
        "num_blocks": at_least(1),
        "dropout": Range(low=0, high=1, high_open=True),
        "max_speakers_per_chunk": at_least(1),
        "max_speakers_per_frame": at_least(1),
    }

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.frontend not in FRONTEND_VARIANTS:
            raise ConfigError(
                f"model.frontend must be one of {', '.join(FRONTEND_VARIANTS)}, got "
                f"{self.frontend!r}"
            )


@dataclass
class OptimSection:
    """Learning rates (constant) and weight decay of the two AdamW optimisers."""

    lr_backbone: float = 2e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01

    RANGES: ClassVar[dict[str, Range]] = {
        "lr_backbone": above(0),
        "lr_head": above(0),
        "weight_decay": at_least(0),
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class FinetuneConfig:
    """Everything ``slimdiar finetune`` needs besides the data directories."""

    model: ModelSection = field(default_factory=ModelSection)
    wavlm: WavLMTrainingSection = field(default_factory=WavLMTrainingSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class FinetuneObjective(Objective):
    """Powerset diarization loss of an :class:`~slimdiar.models.eend.EEND` model.

    Parameters
    ----------
    model
        The model to train.
    optim
        Learning rates and weight decay.
    """

    stage = "finetune"
    checkpoint_kind = "eend"

    def __init__(self, model: EEND, optim: OptimSection):
        self.model = model
        self.optim = optim

    def modules(self) -> dict[str, torch.nn.Module]:
        """The diarization model, under ``"model"``."""
        return {"model": self.model}

    def parameter_groups(self) -> list[ParamGroup]:
        """WavLM (when it trains) and the head, each with its own learning rate."""
        groups = []
        backbone = self.model.backbone_parameters()
        if backbone:
            groups.append(
                ParamGroup(
                    "wavlm", backbone, self.optim.lr_backbone, self.optim.weight_decay, "wavlm"
                )
            )
        groups.append(
            ParamGroup(
                "head",
                self.model.head_parameters(),
                self.optim.lr_head,
                self.optim.weight_decay,
                "head",
            )
        )
        return groups

    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = batch["mask"]
        log_probs = self.model(batch["waveform"], mask)
        # (batch, num_frames, num_classes)
        loss, _ = permutation_invariant_powerset_loss(
            log_probs.float(), batch["labels"], mask, self.model.powerset
        )
        return loss, log_probs, mask

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Permutation-invariant powerset loss of the batch (no extra scalars)."""
        loss, _, _ = self._forward(batch)
        return loss, {}

    def validate(self, batches) -> dict[str, tuple[float, float]]:
        """Loss per frame, and DER with its parts over the speech frames of the chunks."""
        loss_sum = valid_frames = 0.0
        errors = None
        for batch in batches:
            loss, log_probs, mask = self._forward(batch)
            frames = float(mask.sum())
            loss_sum += float(loss) * frames
            valid_frames += frames
            counts = chunk_der(self.model.powerset.to_multilabel(log_probs), batch["labels"], mask)
            errors = counts if errors is None else errors + counts
        speech = errors.speech_frames if errors is not None else 0.0
        return {
            "loss": (loss_sum, valid_frames),
            "der": (errors.errors if errors else 0.0, speech),
            "missed": (errors.missed_frames if errors else 0.0, speech),
            "false_alarm": (errors.false_alarm_frames if errors else 0.0, speech),
            "confusion": (errors.confusion_frames if errors else 0.0, speech),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights."""
        return self.model.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load model weights; a missing or unexpected key is an error."""
        load_state_dict_strict(self.model, state_dict, "training state")

    def checkpoint_config(self) -> dict:
        """The model's full resolved config."""
        return self.model.config.to_dict()

    def save(self, directory: str | Path, metadata: dict) -> Path:
        """Write the model as a diarization checkpoint directory (its ``save_pretrained``)."""
        return self.model.save_pretrained(directory, metadata)


def build_model(section: ModelSection, backbone: str | None = None) -> EEND:
    """The diarization model of a config section, its WavLM from a preset or a checkpoint.

    Parameters
    ----------
    section
        The ``[model]`` section.
    backbone
        Overrides ``section.backbone``: a preset name or a checkpoint path.
    """
    source = backbone or section.backbone
    head: dict[str, Any] = {  # EENDConfig fields of the head, the same for every front-end
        "d_model": section.d_model,
        "num_heads": section.num_heads,
        "ffn_dim": section.ffn_dim,
        "conv_kernel": section.conv_kernel,
        "num_blocks": section.num_blocks,
        "dropout": section.dropout,
        "max_speakers_per_chunk": section.max_speakers_per_chunk,
        "max_speakers_per_frame": section.max_speakers_per_frame,
        "layer_sum": section.layer_sum,
    }
    if section.frontend == "fbank":
        return EEND(EENDConfig(frontend="fbank", **head))
    frozen = section.frontend == "wavlm-frozen"
    if source in PRESETS:
        logger.info("WavLM backbone: preset %s, random initialisation", source)
        return EEND(EENDConfig(wavlm=preset(source), freeze_backbone=frozen, **head))
    if not Path(source).exists():
        raise ConfigError(
            f"backbone {source!r} is neither a WavLM preset ({', '.join(sorted(PRESETS))}) nor "
            "an existing checkpoint path"
        )
    logger.info("WavLM backbone: pre-trained weights from %s", source)
    return EEND.from_backbone_checkpoint(source, EENDConfig(freeze_backbone=frozen, **head))


def run(
    config: FinetuneConfig,
    train_dir: str | Path,
    dev_dir: str | Path,
    exp_dir: str | Path,
    ctx: DistContext | None = None,
    backbone: str | None = None,
    resume: bool = False,
) -> TrainResult:
    """Fine-tune a diarization model on a training data directory, validating on another.

    Parameters
    ----------
    config
        The resolved configuration.
    train_dir, dev_dir
        Data directories (``wav.scp``, ``rttm``, ``uem``).
    exp_dir
        Experiment directory; ``exp_dir/best`` is the final model.
    ctx
        Distributed context (one process by default).
    backbone
        Overrides ``config.model.backbone``.
    resume
        Continue the run in ``exp_dir`` from its last complete checkpoint.
    """
    ctx = ctx or DistContext()
    seed_everything(config.trainer.seed)
    model = build_model(config.model, backbone)
    if isinstance(model.backbone, WavLM):
        config.wavlm.apply(model.backbone)
    grid = FrameGrid.from_config(model)
    max_speakers = config.model.max_speakers_per_chunk
    train_set, dev_set = chunk_datasets(config.data, grid, train_dir, dev_dir, max_speakers)
    run_config = to_dict(config)
    run_config["model"]["backbone"] = backbone or config.model.backbone
    run_config["paths"] = {"train": str(train_dir), "dev": str(dev_dir)}
    run_config["world_size"] = ctx.world_size
    run_config["model_config"] = model.config.to_dict()
    trainer = Trainer(
        FinetuneObjective(model, config.optim),
        train_set,
        dev_set,
        config.trainer,
        exp_dir,
        ctx=ctx,
        run_config=run_config,
    )
    return trainer.fit(resume=resume)
