"""The demo's sizes (``configs/demo.toml``, ``configs/demo-quick.toml``) and its four systems."""

from __future__ import annotations

from dataclasses import dataclass, field

from slimdiar.config import bundled_config, load_config
from slimdiar.demo.pretrained import PretrainSettings

__all__ = ["SYSTEMS", "DemoSettings", "System", "demo_settings"]


@dataclass
class DemoSettings:
    """Sizes of one demo run (``quick`` for a smoke test of a few minutes at most).

    Each run's values are a bundled configuration (:func:`demo_settings`); the defaults here are
    those both runs share.
    """

    splits: dict[str, int]
    duration_s: float
    tts_speakers: int
    utterances_per_speaker: int
    chunk_duration_s: float
    shift_s: float
    finetune_epochs: int
    prune_epochs: int
    prune_warmup_epochs: float
    distill_epochs: int
    finetune_pruned_epochs: int
    batch_size: int
    max_steps_per_epoch: int
    pbf_finetune_epochs: int
    pretrain_epochs: int
    pretrain_steps_per_epoch: int
    pretrain_batch_size: int
    pretrain_crop_s: float
    pretrain_clusters: int
    pretrain_lr: float
    pretrain_utterances_per_speaker: int
    pretrained_sha256: str = ""
    compare_seeds: int = 3
    sparsity: float = 0.8
    backbone: str = "wavlm-demo"
    lr_backbone: float = 1e-3
    #: The backbone's learning rate when it starts from a trained WavLM (the SSL one, or a
    #: pruned and distilled one), as the reference recipe fine-tunes a pretrained WavLM more
    #: slowly than the rest (``docs/pretraining.md``, "SSL initialisation against random").
    lr_backbone_pretrained: float = 2e-4
    lr_head: float = 2e-3
    lr_gates: float = 0.1
    lr_lambda: float = 0.1
    distill_chunk_duration_s: float = 1.0
    distill_shift_s: float = 0.5
    bench_seconds: float = 8.0
    pipeline_step_s: float = 0.4
    thresholds: tuple[float, ...] = (0.4, 0.45, 0.5)
    head: dict = field(
        default_factory=lambda: {
            "d_model": 128,
            "num_heads": 4,
            "ffn_dim": 256,
            "conv_kernel": 15,
            "num_blocks": 2,
            "dropout": 0.1,
        }
    )

    def pretraining(self) -> PretrainSettings:
        """The settings of the demo's self-supervised pretraining run."""
        return PretrainSettings(
            epochs=self.pretrain_epochs,
            steps_per_epoch=self.pretrain_steps_per_epoch,
            batch_size=self.pretrain_batch_size,
            crop_s=self.pretrain_crop_s,
            clusters=self.pretrain_clusters,
            lr=self.pretrain_lr,
            utterances_per_speaker=self.pretrain_utterances_per_speaker,
        )


@dataclass(frozen=True)
class System:
    """One row of the demo's comparison: a directory under ``out`` and how it was made."""

    name: str
    label: str
    init: str
    order: str


SYSTEMS = (
    System("finetune-random", "unpruned, random init", "random", "fine-tuned"),
    System("finetune", "unpruned, SSL init", "self-supervised", "fine-tuned"),
    System("finetune-pruned", "FBP", "self-supervised", "fine-tune, prune, fine-tune"),
    System("pbf-finetune", "PBF", "self-supervised", "prune, fine-tune"),
)


def demo_settings(quick: bool = False) -> DemoSettings:
    """The sizes of the full demo or, with ``quick``, of ``slimdiar demo --quick``.

    They are the bundled configurations ``configs/demo.toml`` and ``configs/demo-quick.toml``.
    """
    return load_config(DemoSettings, bundled_config("demo-quick" if quick else "demo"))
