"""The masked-prediction objective of HuBERT / WavLM as an :class:`Objective`.

One step: (1) targets of the clean crops (nearest k-means centroid of each frame's features);
(2) for a fraction of the crops, a segment of another crop or noise is mixed in (WavLM's
denoising; the targets stay those of the clean primary); (3) the conv features of the corrupted
audio are projected, span masks drawn, and a learned mask embedding replaces the masked frames;
(4) the transformer's last hidden state goes through a projection, and logits are the cosine
similarities with learned cluster embeddings over a temperature; (5) cross-entropy on the masked
frames, plus optionally ``unmasked_weight`` times that on the unmasked frames.

The heads (mask embedding, projection, cluster embeddings) train with the WavLM but are not part
of the result: the final model is the plain WavLM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_state_dict_strict
from slimdiar.models.wavlm import WavLM
from slimdiar.pretrain.masking import mix_utterances, span_mask
from slimdiar.pretrain.targets import ClusterTargets, frame_valid
from slimdiar.train.objective import Objective, ParamGroup

PRETRAIN_KIND = "wavlm-pretrain"


@dataclass
class MaskingSection:
    """Span masking and the loss.

    Parameters
    ----------
    prob
        Probability that a frame starts a masked span (0.08 in HuBERT/WavLM).
    span
        Span length in frames (10): with 0.08, about half the frames are masked.
    unmasked_weight
        Weight of the loss on unmasked frames (0 in HuBERT/WavLM: masked frames only).
    """

    prob: float = 0.08
    span: int = 10
    unmasked_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.prob < 1.0 or self.span < 1 or self.unmasked_weight < 0:
            raise ConfigError(
                f"masking needs 0 < prob < 1, span >= 1, unmasked_weight >= 0; got prob="
                f"{self.prob}, span={self.span}, unmasked_weight={self.unmasked_weight}"
            )


@dataclass
class DenoiseSection:
    """WavLM's utterance mixing.

    Parameters
    ----------
    prob
        Fraction of the crops that get an interference (0.2 in WavLM; 0 turns it off).
    noise_fraction
        Fraction of those interferences that are Gaussian noise instead of another crop of the
        batch.
    min_ratio_db, max_ratio_db
        The primary-to-interference energy ratio is uniform in this range (dB).
    max_fraction
        The interference lasts at most this fraction of the primary's length.
    """

    prob: float = 0.2
    noise_fraction: float = 0.0
    min_ratio_db: float = -5.0
    max_ratio_db: float = 20.0
    max_fraction: float = 0.5

    def __post_init__(self) -> None:
        ok = (
            0.0 <= self.prob <= 1.0
            and 0.0 <= self.noise_fraction <= 1.0
            and self.min_ratio_db <= self.max_ratio_db
            and 0.0 < self.max_fraction <= 1.0
        )
        if not ok:
            raise ConfigError(
                "denoise needs prob and noise_fraction in [0, 1], min_ratio_db <= max_ratio_db "
                f"and max_fraction in (0, 1]; got {self}"
            )


@dataclass
class HeadSection:
    """The prediction head.

    Parameters
    ----------
    proj_dim
        Width of the projection and of the cluster embeddings (256 in HuBERT Base).
    temperature
        Cosine similarities are divided by it (0.1).
    """

    proj_dim: int = 256
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.proj_dim < 1 or not self.temperature > 0:
            raise ConfigError(
                f"head needs proj_dim >= 1 and temperature > 0, got {self.proj_dim}, "
                f"{self.temperature}"
            )


@dataclass
class PretrainOptimSection:
    """One AdamW (constant learning rate) for the WavLM and the heads."""

    lr: float = 5e-4
    weight_decay: float = 0.01
    beta2: float = 0.98


class PretrainHeads(nn.Module):
    """Mask embedding, projection and cluster embeddings.

    Parameters
    ----------
    embed_dim
        Width of the WavLM.
    num_clusters
        Number of target classes.
    head
        Projection width and temperature.
    """

    def __init__(self, embed_dim: int, num_clusters: int, head: HeadSection):
        super().__init__()
        self.temperature = head.temperature
        self.mask_embedding = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.projection = nn.Linear(embed_dim, head.proj_dim)
        self.cluster_embeddings = nn.Parameter(torch.randn(num_clusters, head.proj_dim))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, frames, E)`` to ``(batch, frames, num_clusters)`` scaled cosines."""
        projected = F.normalize(self.projection(hidden).float(), dim=-1)
        clusters = F.normalize(self.cluster_embeddings.float(), dim=-1)
        return projected @ clusters.T / self.temperature


def masked_hidden_states(
    wavlm: WavLM,
    waveforms: torch.Tensor,
    mask: torch.Tensor | None,
    mask_embedding: torch.Tensor | None,
) -> list[torch.Tensor]:
    """WavLM's forward pass with masked frames replaced after the feature projection.

    Between :meth:`WavLM.project` and the transformer, the frames where ``mask``
    (``(batch, frames)`` bool) is true become ``mask_embedding`` (``(E,)``), as in HuBERT.
    """
    x = wavlm.project(waveforms)  # (B, T, E)
    if mask is not None:
        if mask_embedding is None:
            raise ConfigError("masked frames need a mask_embedding to replace them")
        x = torch.where(mask[..., None], mask_embedding.to(x.dtype), x)
    return wavlm.encoder(x)


class MaskedPredictionObjective(Objective):
    """Masked prediction of cluster targets, with utterance mixing.

    Parameters
    ----------
    wavlm
        The model to pretrain.
    targets
        Frame targets of clean audio (frozen).
    masking, denoise, head, optim
        Settings (see the sections).
    seed
        Seeds the masks and the mixing of every step (with the step index).
    """

    stage = "pretrain"
    checkpoint_kind = PRETRAIN_KIND

    def __init__(
        self,
        wavlm: WavLM,
        targets: ClusterTargets,
        masking: MaskingSection,
        denoise: DenoiseSection,
        head: HeadSection,
        optim: PretrainOptimSection,
        seed: int = 0,
    ):
        self.wavlm = wavlm
        self.targets = targets
        self.masking = masking
        self.denoise = denoise
        self.optim = optim
        self.seed = seed
        self.heads = PretrainHeads(wavlm.config.embed_dim, targets.num_clusters, head)
        self._step = 0

    def modules(self) -> dict[str, nn.Module]:
        """The model, the prediction heads and the (frozen) target model."""
        return {"wavlm": self.wavlm, "heads": self.heads, "targets": self.targets}

    def train(self, mode: bool = True) -> None:
        """Set the model and heads to training (``True``) or evaluation mode; targets stay eval."""
        self.wavlm.train(mode)
        self.heads.train(mode)
        self.targets.eval()

    def parameter_groups(self) -> list[ParamGroup]:
        """The model's trainable parameters and the heads, at the same learning rate."""
        betas = (0.9, self.optim.beta2)
        return [
            ParamGroup(
                "wavlm",
                [p for p in self.wavlm.parameters() if p.requires_grad],
                self.optim.lr,
                self.optim.weight_decay,
                betas=betas,
            ),
            ParamGroup(
                "heads",
                list(self.heads.parameters()),
                self.optim.lr,
                self.optim.weight_decay,
                betas=betas,
            ),
        ]

    def on_step(self, epoch: int, step: int, epoch_progress: float) -> None:
        """Record the step index, which seeds the masks and the mixing of the step."""
        self._step = step

    def buffers_to_sync(self) -> list[torch.Tensor]:
        """The model's floating-point buffers."""
        return [b for b in self.wavlm.buffers() if b.is_floating_point()]

    def _generator(self, device: torch.device, salt: int) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed * 1_000_003 + salt)
        return generator

    def _forward(
        self,
        batch,
        generator: torch.Generator,
        mix: bool,
    ) -> tuple[torch.Tensor, dict[str, float], tuple[float, float, float]]:
        waveforms, num_samples = batch["waveform"], batch["num_samples"]
        targets = self.targets(waveforms)  # (B, T)
        valid = frame_valid(self.wavlm.config, num_samples, targets.shape[1])
        if mix and self.denoise.prob > 0:
            d = self.denoise
            waveforms, _ = mix_utterances(
                waveforms,
                num_samples,
                d.prob,
                d.noise_fraction,
                d.min_ratio_db,
                d.max_ratio_db,
                d.max_fraction,
                generator,
            )
        mask = span_mask(valid, self.masking.prob, self.masking.span, generator) & valid
        hidden = masked_hidden_states(self.wavlm, waveforms, mask, self.heads.mask_embedding)
        last = hidden[-1]
        if self.wavlm.config.layer_norm_first:
            last = self.wavlm.encoder.layer_norm(last)
        logits = self.heads.logits(last)  # (B, T, K)
        if logits.shape[1] != targets.shape[1]:
            raise ConfigError(
                f"{targets.shape[1]} target frames for {logits.shape[1]} model frames"
            )
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
        correct = (logits.argmax(-1) == targets).float()
        unmasked = valid & ~mask
        n_masked = mask.sum().clamp(min=1)
        n_unmasked = unmasked.sum().clamp(min=1)
        masked_loss = (losses * mask).sum() / n_masked
        unmasked_loss = (losses * unmasked).sum() / n_unmasked
        loss = masked_loss
        if self.masking.unmasked_weight:
            loss = loss + self.masking.unmasked_weight * unmasked_loss
        scalars = {
            "masked_loss": float(masked_loss.detach()),
            "unmasked_loss": float(unmasked_loss.detach()),
            "masked_accuracy": float((correct * mask).sum() / n_masked),
            "mask_fraction": float(mask.sum() / valid.sum().clamp(min=1)),
        }
        counts = (
            float(mask.sum()),
            float((correct * mask).sum()),
            float((losses.detach() * mask).sum()),
        )
        return loss, scalars, counts

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked-prediction loss of one batch, with utterance mixing; ``(loss, scalars)``."""
        generator = self._generator(batch["waveform"].device, self._step)
        loss, scalars, _ = self._forward(batch, generator, mix=True)
        return loss, scalars

    def validate(self, batches: Iterable) -> dict[str, tuple[float, float]]:
        """Loss and accuracy on the masked frames, without mixing and with fixed masks."""
        frames = correct = loss_sum = 0.0
        for index, batch in enumerate(batches):
            # the same masks every epoch: validation losses are comparable
            generator = self._generator(batch["waveform"].device, -1 - index)
            _, _, (n, c, s) = self._forward(batch, generator, mix=False)
            frames, correct, loss_sum = frames + n, correct + c, loss_sum + s
        return {"loss": (loss_sum, frames), "masked_accuracy": (correct, frames)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's and the heads' tensors, under ``wavlm.`` and ``heads.``."""
        state = {f"wavlm.{k}": v for k, v in self.wavlm.state_dict().items()}
        state.update({f"heads.{k}": v for k, v in self.heads.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict` returned; a missing or unexpected key is an error."""
        load_state_dict_strict(
            self.wavlm,
            {k[6:]: v for k, v in state_dict.items() if k.startswith("wavlm.")},
            "pretraining state (wavlm)",
        )
        load_state_dict_strict(
            self.heads,
            {k[6:]: v for k, v in state_dict.items() if k.startswith("heads.")},
            "pretraining state (heads)",
        )
        extra = [k for k in state_dict if not k.startswith(("wavlm.", "heads."))]
        if extra:
            raise CheckpointError(f"unexpected keys in a pretraining state: {extra[:10]}")

    def checkpoint_config(self) -> dict:
        """The model's architecture, the number of target clusters and the projection size."""
        return {
            "wavlm": self.wavlm.config.to_dict(),
            "num_clusters": self.targets.num_clusters,
            "proj_dim": self.heads.projection.out_features,
        }
