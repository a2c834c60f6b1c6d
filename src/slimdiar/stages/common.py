"""What the training stages share: how WavLM trains, how the data is chunked, distillation lrs.

Every stage (:mod:`~slimdiar.stages.finetune`, :mod:`~slimdiar.stages.prune`,
:mod:`~slimdiar.stages.distill`, :mod:`~slimdiar.stages.pretrain`) is a config dataclass, an
:class:`~slimdiar.train.objective.Objective` and a ``run()`` that hands both to the one
:class:`~slimdiar.train.trainer.Trainer`; the sections below appear in several of those configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from slimdiar.config import Range, above, at_least, check_ranges
from slimdiar.data import ChunkDataset, DataDir
from slimdiar.errors import ConfigError
from slimdiar.frames import FrameGrid
from slimdiar.models.wavlm import WavLM


@dataclass
class WavLMTrainingSection:
    """How WavLM trains in every stage where it is updated (the reference recipe's values).

    Parameters
    ----------
    feature_grad_mult
        Factor on the gradient flowing from the transformer into the conv feature extractor
        (fairseq's ``feature_grad_mult``; reference 0.1). The Lagrangian's gradient on the conv
        gates is not scaled. 1.0 turns the scaling off.
    feat_proj_dropout, attention_dropout, hidden_dropout, activation_dropout
        Dropout after the feature projection, on the attention probabilities, on the residual
        branches and FFN output, and inside the FFN (the Hugging Face config keys of WavLM
        Base+/Large; reference 0.1, 0.1, 0.1, 0.0). They override whatever the checkpoint's
        config says.
    """

    feature_grad_mult: float = 0.1
    feat_proj_dropout: float = 0.1
    attention_dropout: float = 0.1
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.feature_grad_mult <= 1.0:
            raise ConfigError(
                f"wavlm.feature_grad_mult must be in (0, 1], got {self.feature_grad_mult}"
            )
        for key in (
            "feat_proj_dropout",
            "attention_dropout",
            "hidden_dropout",
            "activation_dropout",
        ):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"wavlm.{key} must be in [0, 1), got {value}")

    def apply(self, model: WavLM) -> WavLM:
        """Set these options on ``model`` (a WavLM) and return it."""
        return model.set_training_options(
            self.feature_grad_mult,
            feat_proj_dropout=self.feat_proj_dropout,
            attention_dropout=self.attention_dropout,
            dropout=self.hidden_dropout,
            activation_dropout=self.activation_dropout,
        )


@dataclass
class DataSection:
    """Chunking of the training and validation data.

    Parameters
    ----------
    chunk_duration_s, shift_s
        Training chunks (8 s every 6 s).
    val_chunk_duration_s, val_shift_s
        Validation chunks (8 s every 8 s).
    channel
        Audio channel to read (0-based); unset: downmix to mono.
    """

    chunk_duration_s: float = 8.0
    shift_s: float = 6.0
    val_chunk_duration_s: float = 8.0
    val_shift_s: float = 8.0
    channel: int | None = None

    RANGES: ClassVar[dict[str, Range]] = {
        "chunk_duration_s": above(0),
        "shift_s": above(0),
        "val_chunk_duration_s": above(0),
        "val_shift_s": above(0),
        "channel": at_least(0),
    }

    def __post_init__(self) -> None:
        check_ranges(self)


def chunk_datasets(
    data: DataSection,
    grid: FrameGrid | object,
    train_dir: str | Path,
    dev_dir: str | Path,
    max_speakers: int = 4,
) -> tuple[ChunkDataset, ChunkDataset]:
    """The training and validation chunks of a run, on the frame grid of ``grid``.

    ``grid`` is a :class:`~slimdiar.frames.FrameGrid` or what it is built from (a WavLM config,
    a diarization model).
    """
    train = ChunkDataset(
        DataDir.load(train_dir, data.channel),
        grid,
        data.chunk_duration_s,
        data.shift_s,
        max_speakers,
        data.channel,
    )
    dev = ChunkDataset(
        DataDir.load(dev_dir, data.channel),
        grid,
        data.val_chunk_duration_s,
        data.val_shift_s,
        max_speakers,
        data.channel,
    )
    return train, dev


@dataclass
class DistillOptimSection:
    """One AdamW with weight decay 0: student weights (stage 1 adds gates and multipliers).

    ``lr_gates`` and ``lr_lambda`` are read by stage 1 only; the multipliers ascend through a
    gradient reversal (:class:`~slimdiar.stages.prune.SparsityController`), so every learning
    rate is positive.
    """

    lr_weights: float = 2e-4
    lr_gates: float = 2e-2
    lr_lambda: float = 2e-2
    weight_decay: float = 0.0

    RANGES: ClassVar[dict[str, Range]] = {
        "lr_weights": above(0),
        "lr_gates": above(0),
        "lr_lambda": above(0),
        "weight_decay": at_least(0),
    }

    def __post_init__(self) -> None:
        check_ranges(self)
