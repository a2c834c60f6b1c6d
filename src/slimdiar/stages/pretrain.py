"""``slimdiar pretrain``: self-supervised pretraining of a WavLM by masked prediction.

Iteration 1 (``targets.source = "mfcc"``) predicts k-means clusters of MFCC features;
iteration 2 (``targets.source`` = the iteration-1 model, ``targets.layer`` = one of its layers)
predicts k-means clusters of that layer. The experiment directory::

    EXP_DIR/targets/        the k-means centroids (fitted once; a resumed run reuses them)
    EXP_DIR/checkpoints/    per epoch: WavLM + pretraining heads, training state
    EXP_DIR/metrics.jsonl   as every training stage
    EXP_DIR/best/           the final WavLM alone (no heads), for --backbone / --teacher
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from slimdiar.config import to_dict
from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import is_checkpoint_dir
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import PRESETS, preset
from slimdiar.pretrain.data import CropDataset
from slimdiar.pretrain.objective import (
    DenoiseSection,
    HeadSection,
    MaskedPredictionObjective,
    MaskingSection,
    PretrainOptimSection,
)
from slimdiar.pretrain.targets import (
    ClusterTargets,
    build_features,
    fit_kmeans,
    frame_valid,
    load_centroids,
    save_centroids,
)
from slimdiar.stages.common import WavLMTrainingSection
from slimdiar.train.checkpoints import seed_everything
from slimdiar.train.distributed import DistContext, barrier
from slimdiar.train.trainer import Trainer, TrainerConfig, TrainResult

logger = logging.getLogger(__name__)


@dataclass
class PretrainModelSection:
    """The model to pretrain.

    Parameters
    ----------
    backbone
        A WavLM preset (random initialisation) or a WavLM checkpoint to continue from.
    """

    backbone: str = "wavlm-demo"


@dataclass
class TargetsSection:
    """Where the discrete targets come from.

    Parameters
    ----------
    source
        ``"mfcc"`` (iteration 1) or a WavLM checkpoint whose hidden state ``layer`` is
        clustered (iteration 2).
    layer
        Hidden state of ``source`` to cluster (1-based layer output; unused for MFCC).
    num_clusters
        k-means clusters: target classes (100 for MFCC, 500 for a layer in HuBERT).
    kmeans_batch_frames
        Frames per ``partial_fit``.
    kmeans_passes
        Passes over the training crops while fitting.
    kmeans_max_frames
        Frames used per pass at most (0: all).
    """

    source: str = "mfcc"
    layer: int = 0
    num_clusters: int = 100
    kmeans_batch_frames: int = 10000
    kmeans_passes: int = 1
    kmeans_max_frames: int = 0

    def __post_init__(self) -> None:
        if self.source != "mfcc" and self.layer < 1:
            raise ConfigError(
                f"targets from a model ({self.source}) need targets.layer >= 1 (--layer N)"
            )
        if self.num_clusters < 2 or self.kmeans_passes < 1 or self.kmeans_batch_frames < 1:
            raise ConfigError(
                "targets need num_clusters >= 2, kmeans_passes >= 1 and kmeans_batch_frames >= 1"
            )


@dataclass
class CropSection:
    """Crops of the audio.

    Parameters
    ----------
    crop_duration_s, shift_s
        Training crops and the step between their starts.
    val_crop_duration_s, val_shift_s
        Validation crops.
    min_duration_s
        Files shorter than this are skipped.
    channel
        Audio channel to read (0-based); unset: downmix to mono.
    """

    crop_duration_s: float = 4.0
    shift_s: float = 4.0
    val_crop_duration_s: float = 4.0
    val_shift_s: float = 4.0
    min_duration_s: float = 1.0
    channel: int | None = None


@dataclass
class PretrainTrainerConfig(TrainerConfig):
    """Trainer settings of pretraining: no early stop, the last-best epoch is the result."""

    max_epochs: int = 20
    patience: int = 0
    average_best: int = 1
    batch_size: int = 16


@dataclass
class PretrainConfig:
    """Everything ``slimdiar pretrain`` needs besides paths."""

    model: PretrainModelSection = field(default_factory=PretrainModelSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    masking: MaskingSection = field(default_factory=MaskingSection)
    denoise: DenoiseSection = field(default_factory=DenoiseSection)
    head: HeadSection = field(default_factory=HeadSection)
    wavlm: WavLMTrainingSection = field(default_factory=WavLMTrainingSection)
    data: CropSection = field(default_factory=CropSection)
    optim: PretrainOptimSection = field(default_factory=PretrainOptimSection)
    trainer: PretrainTrainerConfig = field(default_factory=PretrainTrainerConfig)


def build_backbone(source: str) -> WavLM:
    """A WavLM from a preset name (random initialisation) or a checkpoint path."""
    if source in PRESETS:
        return WavLM(preset(source))
    if not Path(source).exists():
        raise ConfigError(
            f"backbone {source!r} is neither a WavLM preset ({', '.join(sorted(PRESETS))}) nor "
            "an existing checkpoint path"
        )
    model = WavLM.from_pretrained(source)
    if model.pruning_enabled:
        raise ConfigError(f"{source}: pretraining needs a plain WavLM, not a gated one")
    return model


def stream_features(
    features: torch.nn.Module, dataset: CropDataset, grid, device: torch.device, batch_size: int = 8
):
    """Yield the valid frames' features of every crop, ``(frames, dim)`` float32, in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    features = features.to(device).eval()
    with torch.no_grad():
        for batch in loader:
            waveforms = batch["waveform"].to(device)
            x = features(waveforms)  # (B, T, D)
            valid = frame_valid(grid, batch["num_samples"].to(device), x.shape[1])
            for item, keep in zip(x, valid):
                yield item[keep].float().cpu().numpy()


def fit_targets(
    section: TargetsSection, dataset: CropDataset, grid, seed: int, device: torch.device
) -> tuple[np.ndarray, dict]:
    """Fit the k-means of ``section`` on the (clean) training crops; ``(centroids, info)``."""
    features = build_features(section.source, section.layer, grid)

    def passes():
        for _ in range(section.kmeans_passes):
            seen = 0
            for array in stream_features(features, dataset, grid, device):
                if section.kmeans_max_frames and seen >= section.kmeans_max_frames:
                    break
                if section.kmeans_max_frames:
                    array = array[: section.kmeans_max_frames - seen]
                seen += array.shape[0]
                yield array

    kmeans = fit_kmeans(passes(), section.num_clusters, seed, section.kmeans_batch_frames)
    info = {
        "source": section.source,
        "layer": section.layer if section.source != "mfcc" else None,
        "num_clusters": section.num_clusters,
        "seed": seed,
        "frame_step_samples": grid.frame_step_samples,
        "kmeans_passes": section.kmeans_passes,
        "kmeans_max_frames": section.kmeans_max_frames,
        "crops": len(dataset),
    }
    return kmeans.cluster_centers_.astype(np.float32), info


def prepare_targets(
    section: TargetsSection, dataset: CropDataset, grid, seed: int, exp_dir: Path, ctx: DistContext
) -> ClusterTargets:
    """Fit the targets once (rank 0) into ``exp_dir/targets``, or reuse those already there."""
    directory = exp_dir / "targets"
    if ctx.is_main and not is_checkpoint_dir(directory):
        fitted, fit_info = fit_targets(section, dataset, grid, seed, ctx.device)
        save_centroids(directory, fitted, fit_info)
    barrier(ctx)
    centroids, info = load_centroids(directory)
    expected = {"source": section.source, "num_clusters": section.num_clusters, "seed": seed}
    changed = [k for k, v in expected.items() if info.get(k) != v]
    if changed:
        raise ConfigError(
            f"{directory} holds targets fitted with other settings ({', '.join(changed)}); "
            "use another output directory"
        )
    return ClusterTargets(build_features(section.source, section.layer, grid), centroids)


def run(
    config: PretrainConfig,
    train_source: str | Path,
    dev_source: str | Path,
    exp_dir: str | Path,
    ctx: DistContext | None = None,
    resume: bool = False,
) -> TrainResult:
    """Pretrain a WavLM by masked prediction; ``exp_dir/best`` is the plain WavLM.

    Parameters
    ----------
    config
        The resolved configuration.
    train_source, dev_source
        Directory trees of audio files or ``wav.scp`` files.
    exp_dir
        Experiment directory.
    ctx
        Distributed context (one process by default).
    resume
        Continue the run in ``exp_dir``.
    """
    ctx = ctx or DistContext()
    exp_dir = Path(exp_dir)
    if not resume and ((exp_dir / "metrics.jsonl").exists() or (exp_dir / "targets").exists()):
        raise ConfigError(
            f"{exp_dir} already holds a run; continue it with --resume or choose another "
            "output directory"
        )
    seed = config.trainer.seed
    seed_everything(seed)
    wavlm = config.wavlm.apply(build_backbone(config.model.backbone))
    grid = wavlm.config
    data = config.data
    train_set = CropDataset(
        train_source, data.crop_duration_s, data.shift_s, data.min_duration_s, data.channel
    )
    dev_set = CropDataset(
        dev_source, data.val_crop_duration_s, data.val_shift_s, data.min_duration_s, data.channel
    )
    targets = prepare_targets(config.targets, train_set, grid, seed, exp_dir, ctx)
    seed_everything(seed)
    objective = MaskedPredictionObjective(
        wavlm, targets, config.masking, config.denoise, config.head, config.optim, seed
    )
    run_config = to_dict(config)
    run_config["paths"] = {"train": str(train_source), "dev": str(dev_source)}
    run_config["world_size"] = ctx.world_size
    run_config["wavlm_config"] = grid.to_dict()
    trainer = Trainer(
        objective, train_set, dev_set, config.trainer, exp_dir, ctx=ctx, run_config=run_config
    )
    result = trainer.fit(resume=resume)
    if ctx.is_main:
        # best/ held the averaged WavLM + heads; the result is the WavLM alone
        wavlm.save_pretrained(
            result.best_dir,
            {
                "stage": "pretrain",
                "targets": {
                    "source": config.targets.source,
                    "layer": config.targets.layer,
                    "num_clusters": config.targets.num_clusters,
                },
                "epochs": result.best_epochs,
                "val_masked_loss": result.best_metrics.get("loss"),
                "val_masked_accuracy": result.best_metrics.get("masked_accuracy"),
            },
        )
        logger.info("pretrained WavLM written to %s", result.best_dir)
    barrier(ctx)
    return result
