"""End-to-end neural diarization model: front-end → weighted layer sum → Conformer → powerset.

::

    waveforms (batch, num_samples)
      └─ backbone (WavLM or filterbank)       L+1 hidden states (batch, num_frames, E)
      └─ weighted sum of the states           (batch, num_frames, E)
      └─ Linear(E→d) → LayerNorm              (batch, num_frames, d)
      └─ Conformer × num_blocks               (batch, num_frames, d)
      └─ Linear(d→num_classes) → log-softmax  (batch, num_frames, num_classes)

The layer sum is a plain ``Linear(L+1 → 1, bias=False)`` over the stacked states, as in the
reference recipe (``layer_sum="linear"``), or a softmax over learned layer weights
(``layer_sum="softmax"``, what checkpoints written before the option hold).

Three variants are compared: WavLM updated (the default), WavLM frozen (``freeze_backbone``: no
gradient reaches the backbone and it stays in eval mode) and the filterbank front-end (no SSL).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from slimdiar.models.conformer import Conformer
from slimdiar.models.frontend import FRONTENDS, Fbank, FbankConfig, build_backbone
from slimdiar.models.powerset import Powerset
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import WavLMConfig, preset

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "eend"
LAYER_SUMS = ("linear", "softmax")


@dataclass
class EENDConfig:
    """Architecture of the diarization model.

    Parameters
    ----------
    frontend
        ``"wavlm"`` (self-supervised backbone) or ``"fbank"`` (log-mel filterbank, no SSL).
    wavlm
        Architecture of the WavLM backbone (``"wavlm"`` front-end only; pruned shapes included).
    fbank
        Filterbank configuration (``"fbank"`` front-end only; defaults to :class:`FbankConfig`).
    freeze_backbone
        Keep the WavLM backbone fixed: no gradient, always in eval mode.
    d_model, num_heads, ffn_dim, conv_kernel, num_blocks, dropout
        Conformer width, attention heads, FFN width, depthwise kernel, depth and dropout.
    max_speakers_per_chunk
        Local speakers per chunk of the powerset.
    max_speakers_per_frame
        Largest set of simultaneous speakers of the powerset.
    layer_sum
        How the L+1 hidden states are combined: ``"linear"`` (an unnormalised
        ``Linear(L+1, 1, bias=False)``, the reference's ``weight_sum``) or ``"softmax"`` (weights
        ``softmax(layer_weights)``). ``None``: ``"linear"`` for the WavLM front-end,
        ``"softmax"`` for the filterbank (its one state passes unchanged, as in the reference's
        filterbank model, which has no layer sum). A stored config without this key means
        ``"softmax"``.
    """

    frontend: str = "wavlm"
    wavlm: WavLMConfig | None = None
    fbank: FbankConfig | None = None
    freeze_backbone: bool = False
    d_model: int = 256
    num_heads: int = 4
    ffn_dim: int = 1024
    conv_kernel: int = 31
    num_blocks: int = 4
    dropout: float = 0.1
    max_speakers_per_chunk: int = 4
    max_speakers_per_frame: int = 2
    layer_sum: str | None = None

    def __post_init__(self) -> None:
        if self.layer_sum is None:
            self.layer_sum = "softmax" if self.frontend == "fbank" else "linear"
        if self.layer_sum not in LAYER_SUMS:
            raise ConfigError(
                f"unknown layer_sum {self.layer_sum!r}; valid values: {', '.join(LAYER_SUMS)}"
            )
        if self.frontend not in FRONTENDS:
            raise ConfigError(
                f"unknown front-end {self.frontend!r}; valid front-ends: {', '.join(FRONTENDS)}"
            )
        if self.frontend == "fbank":
            if self.wavlm is not None:
                raise ConfigError("the fbank front-end takes no WavLM config; set wavlm to None")
            if self.freeze_backbone:
                raise ConfigError(
                    "freeze_backbone applies to the pre-trained WavLM front-end only; the "
                    "fbank front-end's layer is trained with the head"
                )
            if self.fbank is None:
                self.fbank = FbankConfig()
        elif self.fbank is not None:
            raise ConfigError("the wavlm front-end takes no fbank config; set fbank to None")
        positive = {
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "conv_kernel": self.conv_kernel,
            "num_blocks": self.num_blocks,
            "max_speakers_per_chunk": self.max_speakers_per_chunk,
            "max_speakers_per_frame": self.max_speakers_per_frame,
        }
        for key, value in positive.items():
            if int(value) != value or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_speakers_per_frame > self.max_speakers_per_chunk:
            raise ConfigError(
                f"max_speakers_per_frame ({self.max_speakers_per_frame}) exceeds "
                f"max_speakers_per_chunk ({self.max_speakers_per_chunk})"
            )

    @property
    def backbone_config(self) -> WavLMConfig | FbankConfig | None:
        """The configuration of the selected front-end."""
        return self.wavlm if self.frontend == "wavlm" else self.fbank

    def to_dict(self) -> dict:
        """Plain-JSON form (the front-end's full config included)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["wavlm"] = self.wavlm.to_dict() if self.wavlm is not None else None
        data["fbank"] = self.fbank.to_dict() if self.fbank is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EENDConfig:
        """Build a config from :meth:`to_dict` output.

        ``wavlm`` may also be the name of a WavLM preset (e.g. ``"wavlm-base-plus"``). A
        mapping without ``layer_sum`` (written before that option existed) gets ``"softmax"``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"EEND config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown EEND config keys {unknown}; known keys: {sorted(known)}")
        values = dict(data)
        values.setdefault("layer_sum", "softmax")
        wavlm = values.get("wavlm")
        if isinstance(wavlm, str):
            values["wavlm"] = preset(wavlm)
        elif isinstance(wavlm, dict):
            values["wavlm"] = WavLMConfig.from_dict(wavlm)
        fbank = values.get("fbank")
        if isinstance(fbank, dict):
            values["fbank"] = FbankConfig.from_dict(fbank)
        return cls(**values)


class EEND(nn.Module):
    """Powerset end-to-end diarization model.

    Parameters
    ----------
    config
        The architecture. With ``backbone`` given, the config's front-end config is replaced by
        the backbone's own (so a pruned backbone's shapes are recorded).
    backbone
        An existing front-end (e.g. a loaded or pruned WavLM); built from ``config`` if ``None``.
    """

    def __init__(self, config: EENDConfig, backbone: WavLM | Fbank | None = None):
        super().__init__()
        if backbone is None:
            backbone = build_backbone(config.frontend, config.wavlm, config.fbank)
        else:
            field = "wavlm" if config.frontend == "wavlm" else "fbank"
            expected = WavLMConfig if field == "wavlm" else FbankConfig
            given = getattr(backbone, "config", None)
            if not isinstance(given, expected):
                raise ConfigError(
                    f"the {config.frontend} front-end needs a backbone whose config is a "
                    f"{expected.__name__}, got {type(backbone).__name__}"
                )
            if getattr(config, field) not in (None, given):
                logger.info("using the backbone's own %s config instead of the given one", field)
            if isinstance(given, WavLMConfig):
                config = dataclasses.replace(config, wavlm=given)
            else:
                config = dataclasses.replace(config, fbank=given)
        self.config = config
        self.backbone: WavLM | Fbank = backbone
        self.powerset = Powerset(config.max_speakers_per_chunk, config.max_speakers_per_frame)
        backbone_config = backbone.config
        num_states = backbone_config.num_layers + 1
        if config.layer_sum == "linear":
            self.weight_sum = nn.Linear(num_states, 1, bias=False)
        else:
            self.layer_weights = nn.Parameter(torch.zeros(num_states))
        self.projection = nn.Linear(backbone_config.embed_dim, config.d_model)
        self.norm = nn.LayerNorm(config.d_model)
        self.conformer = Conformer(
            config.num_blocks,
            config.d_model,
            config.num_heads,
            config.ffn_dim,
            config.conv_kernel,
            config.dropout,
        )
        self.classifier = nn.Linear(config.d_model, self.powerset.num_classes)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    # ------------------------------------------------------------------ geometry
    @property
    def num_classes(self) -> int:
        """Number of powerset classes (11 by default)."""
        return self.powerset.num_classes

    @property
    def frame_step_samples(self) -> int:
        """Samples between two output frames (320: 20 ms)."""
        return self.backbone.config.frame_step_samples

    @property
    def receptive_field_samples(self) -> int:
        """Samples that one frame of the front-end sees (400: 25 ms)."""
        return self.backbone.config.receptive_field_samples

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples (399 for 8 s)."""
        return self.backbone.config.num_frames(num_samples)

    # ------------------------------------------------------------------ training helpers
    def train(self, mode: bool = True) -> EEND:
        """Set training mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the pre-trained WavLM backbone (lr 2e-5 in fine-tuning).

        Empty for a frozen backbone and for the filterbank front-end, whose learnable layer is
        trained from scratch with the head (see :meth:`head_parameters`).
        """
        if self.config.frontend != "wavlm":
            return []
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (lr 1e-3 in fine-tuning)."""
        backbone_ids = {id(p) for p in self.backbone_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]

    # ------------------------------------------------------------------ forward
    def forward(
        self, waveforms: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Powerset log-probabilities of each frame.

        Parameters
        ----------
        waveforms
            ``(batch, num_samples)`` float 16 kHz audio.
        frame_mask
            ``(batch, num_frames)`` bool, ``True`` on valid frames (padded frames are not attended
            to); ``None`` means all frames are valid.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, num_classes)`` log-probabilities, with
            ``num_frames = self.num_frames(num_samples)``.
        """
        if waveforms.dim() != 2:
            raise AudioError(
                f"waveforms must have shape (batch, num_samples), got {tuple(waveforms.shape)}"
            )
        num_frames = self.num_frames(waveforms.shape[1])
        if num_frames < 1:
            raise AudioError(
                f"waveforms hold {waveforms.shape[1]} samples, fewer than one frame "
                f"({self.receptive_field_samples} samples)"
            )
        if frame_mask is not None and tuple(frame_mask.shape) != (waveforms.shape[0], num_frames):
            raise ValueError(
                f"frame_mask must have shape (batch, num_frames) = "
                f"{(waveforms.shape[0], num_frames)}, got {tuple(frame_mask.shape)}"
            )
        # a model cast to bfloat16/float16 (slimdiar.models.precision) runs in that precision
        waveforms = waveforms.to(self.classifier.weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            hidden_states = self.backbone(waveforms)
        features = self.combine_layers(hidden_states)
        # (batch, num_frames, embed_dim)
        x = self.norm(self.projection(features))
        # (batch, num_frames, d_model)
        x = self.conformer(x, frame_mask)
        # (batch, num_frames, d_model)
        logits = self.classifier(x)
        if logits.dtype in (torch.bfloat16, torch.float16):
            logits = logits.float()  # the log-softmax of a lower-precision model runs in float32
        log_probs = F.log_softmax(logits, dim=-1)
        # (batch, num_frames, num_classes)
        return log_probs

    def combine_layers(self, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the L+1 ``(batch, num_frames, E)`` hidden states, same shape."""
        weights = self.layer_sum_weights()
        if len(hidden_states) != weights.numel():
            raise RuntimeError(
                f"backbone returned {len(hidden_states)} hidden states, expected {weights.numel()}"
            )
        # state by state, in at least float32: the reference's Linear(L+1 -> 1) over the stacked
        # states without the (batch, num_frames, E, L+1) copy (a slow strided concatenation,
        # and L+1 states held twice)
        first = hidden_states[0]
        total = torch.zeros(
            first.shape, dtype=torch.promote_types(first.dtype, torch.float32), device=first.device
        )
        for weight, state in zip(weights, hidden_states, strict=True):
            total.addcmul_(state, weight)
        return total.to(torch.promote_types(first.dtype, weights.dtype))

    def layer_sum_weights(self) -> torch.Tensor:
        """The effective weight of each hidden state, shape ``(L+1,)``."""
        if self.config.layer_sum == "linear":
            return self.weight_sum.weight[0]
        return torch.softmax(self.layer_weights, dim=0)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write the model as a slimdiar checkpoint directory (kind ``"eend"``).

        Parameters
        ----------
        directory
            Checkpoint directory (replaced atomically if it exists).
        metadata
            JSON-serialisable facts to store beside the weights (stage, epoch, metrics, ...).

        Returns
        -------
        Path
            The checkpoint directory.
        """
        return save_checkpoint(
            directory, self.state_dict(), CHECKPOINT_KIND, self.config.to_dict(), metadata
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EEND:
        """Load a model written by :meth:`save_pretrained`; strict about every key and shape.

        Parameters
        ----------
        directory
            Checkpoint directory.

        Raises
        ------
        CheckpointError
            If the directory is not an EEND checkpoint, its config is invalid, or its weights do
            not match the architecture its config describes.
        """
        state_dict, config_dict, _ = load_checkpoint(directory, kind=CHECKPOINT_KIND)
        try:
            config = EENDConfig.from_dict(config_dict)
        except ConfigError as error:
            raise CheckpointError(f"{directory}: invalid EEND config ({error})") from None
        model = cls(config)
        load_state_dict_strict(model, state_dict, directory)
        model.eval()
        return model

    @classmethod
    def from_backbone_checkpoint(cls, path: str | Path, config: EENDConfig | None = None) -> EEND:
        """A freshly initialised head on a WavLM backbone loaded from ``path``.

        Used to fine-tune a pruned (or pre-trained) WavLM for diarization.

        Parameters
        ----------
        path
            Anything ``WavLM.from_pretrained`` reads.
        config
            Head configuration (``frontend`` must be ``"wavlm"``; its ``wavlm`` field is replaced
            by the loaded backbone's config). Defaults to :class:`EENDConfig`.
        """
        config = config or EENDConfig()
        if config.frontend != "wavlm":
            raise ConfigError(
                f"a WavLM backbone checkpoint needs the wavlm front-end, got {config.frontend!r}"
            )
        return cls(config, backbone=WavLM.from_pretrained(path))
