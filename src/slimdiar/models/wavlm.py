"""A prunable WavLM backbone.

One implementation covers WavLM Base+, WavLM Large and every structurally pruned shape. The model
is composed of small modules built from a :class:`~slimdiar.models.config.WavLMConfig`; each
prunable module owns its hard-concrete gates, its expected parameter and MAC count, and its own
``prune`` step (see :meth:`WavLM.enable_pruning` and :meth:`WavLM.prune`).

Numerically the forward pass follows ``transformers.WavLMModel`` (hidden states in the same order:
index 0 is the transformer input, index ``i`` the output of layer ``i``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import AudioError
from slimdiar.models.config import DROPOUT_KEYS, WavLMConfig, preset
from slimdiar.models.hardconcrete import HardConcrete

logger = logging.getLogger(__name__)

WAVEFORM_NORM_EPS = 1e-5


def _as_number(value) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _relative_offset_buckets(num_frames: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional buckets of the offsets ``-(T-1) .. T-1``, shape ``(2T - 1,)``.

    Computed on every call (it is ``O(T)``): a cached tensor made under ``torch.inference_mode``
    could not take part in a later training step.
    """
    offsets = torch.arange(-(num_frames - 1), num_frames, dtype=torch.long)
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    large = max_exact + (
        torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
        * (half - max_exact)
    ).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, with the gradient flowing back through it multiplied by ``scale``."""
    if scale == 1.0 or not x.requires_grad:
        return x
    return _ScaleGradient.apply(x, scale)


# ---------------------------------------------------------------------------------------------
# Convolutional feature extractor
# ---------------------------------------------------------------------------------------------
class ConvLayer(nn.Module):
    """One conv feature-extractor layer: Conv1d (no bias) -> optional norm -> GELU -> gate.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride
        Shape of the convolution.
    norm
        ``"group"`` (a GroupNorm with one group per channel), ``"layer"`` (LayerNorm over
        channels) or ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 norm: str | None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.norm_kind = norm
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        else:
            self.norm = None
        self.gate: HardConcrete | None = None

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor, apply_gate: bool = True) -> torch.Tensor:
        """Map ``(batch, in_channels, time)`` to ``(batch, out_channels, time')``."""
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.norm(x)
        elif self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = F.gelu(x)
        if apply_gate and self.gate is not None:
            x = x * self.gate()[None, :, None]
        return x

    def expected_out_channels(self):
        """Expected number of kept output channels (a tensor when gated, else an int)."""
        return self.gate.expected_num_open() if self.gate is not None else self.out_channels


class FeatureExtractor(nn.Module):
    """The stack of conv layers that turns a waveform into 20 ms frames."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        layers, in_channels = [], 1
        for i, (channels, kernel, stride) in enumerate(config.conv_layers):
            if config.extractor_mode == "layer_norm":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(in_channels, channels, kernel, stride, norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(layers)
        # A fixed per-channel scale of the last layer's output; it holds the soft mask values of
        # that layer's gate once pruned (it cannot be folded: a LayerNorm follows).
        self.output_scale = (
            nn.Parameter(torch.ones(in_channels), requires_grad=False)
            if config.conv_output_scale else None
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, num_samples)`` to ``(batch, conv_dim, num_frames)``.

        With an output scale, every gate acts after its layer's GELU and the scale follows.
        Without one, the gate of the last conv layer is applied by :class:`FeatureProjection`,
        after its LayerNorm, so that it folds into the projection when pruned.
        """
        x = waveforms[:, None, :]
        last = len(self.conv_layers) - 1
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, apply_gate=i != last or self.output_scale is not None)
        if self.output_scale is not None:
            x = x * self.output_scale[None, :, None]
        return x


class FeatureProjection(nn.Module):
    """LayerNorm(conv_dim) -> [last conv layer's channel gate] -> Linear(conv_dim -> E)."""

    def __init__(self, conv_dim: int, embed_dim: int, eps: float, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(conv_dim, eps=eps)
        self.projection = nn.Linear(conv_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, channel_gate: HardConcrete | None) -> torch.Tensor:
        """Map ``(batch, frames, conv_dim)`` to ``(batch, frames, E)``."""
        x = self.layer_norm(x)
        if channel_gate is not None:
            x = x * channel_gate()
        return self.dropout(self.projection(x))


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """WavLM self-attention over a subset of the original heads, with gated relative position bias.

    Parameters
    ----------
    embed_dim
        Model width ``E``.
    heads
        Indices of the kept heads among the ``num_heads`` original ones.
    num_heads
        Number of heads of the unpruned model (sets the gate input slices of width
        ``E / num_heads``).
    head_dim
        Width of one head.
    dropout
        Attention-probability dropout.
    """

    def __init__(self, embed_dim: int, heads: list[int], num_heads: int, head_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.register_buffer("heads", torch.tensor(heads, dtype=torch.long), persistent=False)
        self.all_heads = list(heads) == list(range(num_heads))
        inner = len(heads) * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        gate_dim = embed_dim // num_heads
        self.gru_rel_pos_linear = nn.Linear(gate_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(len(heads)))
        self.head_gate: HardConcrete | None = None
        self.block_gate: HardConcrete | None = None

    @property
    def num_kept_heads(self) -> int:
        return int(self.heads.numel())

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """Attend over ``x``.

        Parameters
        ----------
        x
            ``(batch, frames, E)`` input of the attention block.
        position_bias
            ``(num_heads, frames, frames)`` shared relative position bias of all original heads.

        Returns
        -------
        torch.Tensor
            ``(batch, frames, E)``.
        """
        batch, frames, _ = x.shape
        n, d = self.num_kept_heads, self.head_dim
        # Gate of the relative position bias, from the input slice of each kept head.
        gate_in = x.view(batch, frames, self.num_heads, -1)
        if not self.all_heads:
            gate_in = gate_in.index_select(2, self.heads)
            position_bias = position_bias.index_select(0, self.heads)
        gate = self.gru_rel_pos_linear(gate_in).view(batch, frames, n, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(gate).unbind(-1)                       # (B, T, n)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        bias = gate.transpose(1, 2)[..., None] * position_bias                # (B, n, T, T)
        q = self.q_proj(x).view(batch, frames, n, d).transpose(1, 2)          # (B, n, T, d)
        k = self.k_proj(x).view(batch, frames, n, d).transpose(1, 2)
        v = self.v_proj(x).view(batch, frames, n, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )                                                                     # (B, n, T, d)
        out_bias = self.out_proj.bias
        if self.head_gate is not None:
            mask = self.head_gate()
            out = out * mask[None, :, None, None]
            # A block whose heads are all closed outputs nothing, so removing it is exact.
            out_bias = out_bias * (mask.detach() > 0).any().to(out_bias.dtype)
        out = F.linear(out.transpose(1, 2).reshape(batch, frames, n * d), self.out_proj.weight,
                       out_bias)
        if self.block_gate is not None:
            out = out * self.block_gate()
        return out


class FeedForward(nn.Module):
    """Linear(E -> F) -> GELU -> dropout -> [unit gate] -> Linear(F -> E) -> [block gate]."""

    def __init__(self, embed_dim: int, ffn_dim: int, dropout: float = 0.0,
                 activation_dropout: float = 0.0):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)
        self.unit_gate: HardConcrete | None = None
        self.block_gate: HardConcrete | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, frames, E)`` to ``(batch, frames, E)``."""
        h = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        out_bias = self.output_dense.bias
        if self.unit_gate is not None:
            mask = self.unit_gate()
            h = h * mask
            out_bias = out_bias * (mask.detach() > 0).any().to(out_bias.dtype)
        out = F.linear(h, self.output_dense.weight, out_bias)
        if self.block_gate is not None:
            out = out * self.block_gate()
        return self.dropout(out)


class EncoderLayer(nn.Module):
    """A transformer layer, post-norm (Base+) or pre-norm (Large); either block may be absent."""

    def __init__(self, config: WavLMConfig, index: int):
        super().__init__()
        E = config.embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.dropout = nn.Dropout(config.dropout)
        self.attention = (
            SelfAttention(E, config.remaining_heads[index], config.num_heads, config.head_dim,
                          config.attention_dropout)
            if config.use_attention[index] else None
        )
        self.feed_forward = (
            FeedForward(E, config.ffn_dim[index], config.dropout, config.activation_dropout)
            if config.use_ffn[index] else None
        )
        # Post-norm layers always normalise after each residual; pre-norm layers only have the
        # LayerNorm that feeds a block that is present.
        keep_attn_norm = not self.layer_norm_first or self.attention is not None
        keep_ffn_norm = not self.layer_norm_first or self.feed_forward is not None
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps) if keep_attn_norm else None
        self.final_layer_norm = (
            nn.LayerNorm(E, eps=config.layer_norm_eps) if keep_ffn_norm else None
        )

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, frames, E)`` to ``(batch, frames, E)``."""
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.dropout(self.attention(self.layer_norm(x), position_bias))
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.dropout(self.attention(x, position_bias))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class PositionalConv(nn.Module):
    """Convolutional positional embedding with weight normalisation over dim 2."""

    def __init__(self, embed_dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(embed_dim, embed_dim // groups, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(embed_dim))
        std = 2 * math.sqrt(1 / (kernel_size * embed_dim))
        with torch.no_grad():
            self.weight_v.normal_(0.0, std)
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, frames, E)`` to the positional term ``(batch, frames, E)``."""
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        y = F.conv1d(x.transpose(1, 2), weight, self.bias, padding=self.kernel_size // 2,
                     groups=self.groups)
        if self.kernel_size % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


class Encoder(nn.Module):
    """Positional conv -> (LayerNorm) -> transformer layers sharing one relative position bias."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.config = config
        E = config.embed_dim
        self.pos_conv = PositionalConv(E, config.pos_conv_kernel, config.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.rel_attn_embed = nn.Embedding(config.num_buckets, config.num_heads)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_layers))

    def position_bias(self, num_frames: int) -> torch.Tensor:
        """The shared relative position bias, shape ``(num_heads, frames, frames)``.

        Built from the ``2T - 1`` distinct offsets, so its cost is one ``(T, T)`` gather per head.
        """
        cfg = self.config
        buckets = _relative_offset_buckets(num_frames, cfg.num_buckets, cfg.max_distance)
        per_offset = self.rel_attn_embed(buckets.to(self.rel_attn_embed.weight.device))
        positions = torch.arange(num_frames, device=per_offset.device)
        index = positions[None, :] - positions[:, None] + num_frames - 1    # (T, T): key - query
        return per_offset[index].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Map projected features ``(batch, frames, E)`` to the L+1 hidden states."""
        x = x + self.pos_conv(x)
        if not self.config.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        bias = self.position_bias(x.shape[1])
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, bias)
            hidden_states.append(x)
        return hidden_states


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
@dataclass
class PruneResult:
    """What :meth:`WavLM.prune` kept.

    Attributes
    ----------
    conv_channels
        Kept channel indices of each conv layer (into the channels before pruning).
    heads
        Kept heads of each layer (indices into the original heads).
    ffn_units
        Kept FFN unit indices of each layer (into the units before pruning).
    """

    conv_channels: list[list[int]]
    heads: list[list[int]]
    ffn_units: list[list[int]]


_NO_UNITS = (torch.zeros(0, dtype=torch.long), torch.zeros(0), 0.0)


def _kept_units(unit_gate: HardConcrete | None, block_gate: HardConcrete | None,
                num_units: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """What the eval-mode masks keep of one block: unit indices, their scales, the block scale."""
    mask = (unit_gate.deterministic_mask().float().cpu() if unit_gate is not None
            else torch.ones(num_units))
    block = float(block_gate.deterministic_mask()[0]) if block_gate is not None else 1.0
    keep = torch.nonzero(mask > 0).flatten() if block > 0 else _NO_UNITS[0]
    return keep, mask[keep], block


class WavLM(nn.Module):
    """WavLM backbone returning all hidden states.

    Parameters
    ----------
    config
        The architecture; see :class:`~slimdiar.models.config.WavLMConfig`.

    Examples
    --------
    >>> m = WavLM.from_preset("wavlm-tiny")
    >>> hs = m(torch.randn(2, 16000))
    >>> len(hs), tuple(hs[0].shape)
    (3, (2, 49, 64))
    """

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(
            config.conv_dim, config.embed_dim, config.layer_norm_eps, config.feat_proj_dropout
        )
        self.encoder = Encoder(config)
        self.last_prune_result: PruneResult | None = None
        self.feature_grad_mult = 1.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str) -> WavLM:
        """A randomly initialised model of a named preset (see ``slimdiar.models.config``)."""
        return cls(preset(name))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> WavLM:
        """Load a Hugging Face directory, an original release ``.pt`` or a slimdiar checkpoint.

        Parameters
        ----------
        path
            A Hugging Face model directory (``config.json`` + ``model.safetensors`` or
            ``pytorch_model.bin``), an original WavLM release file (a dict with ``cfg`` and
            ``model``), a DiariZen WavLM file (a dict with ``config`` and ``state_dict``), or a
            slimdiar checkpoint directory written by :meth:`save_pretrained`.
        """
        from slimdiar.models.convert import load_wavlm

        return load_wavlm(path)

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write a slimdiar checkpoint directory (gates are not saved; prune first)."""
        from slimdiar.models.checkpoint import save_checkpoint

        if self.pruning_enabled:
            raise RuntimeError(
                "this WavLM has pruning gates; call prune() and save the pruned model, or use "
                "state_dict() to checkpoint the gated model"
            )
        return save_checkpoint(directory, self.state_dict(), "wavlm", self.config.to_dict(),
                               metadata)

    # ------------------------------------------------------------------ training options
    def set_training_options(self, feature_grad_mult: float = 1.0, **dropouts: float) -> WavLM:
        """Set the training-only behaviour of the backbone and return ``self``.

        Parameters
        ----------
        feature_grad_mult
            Factor on the gradient that flows from the transformer into the conv feature
            extractor (0.1 in the reference recipe; 1 leaves it unchanged). Not saved with
            the model.
        **dropouts
            Any of ``feat_proj_dropout``, ``attention_dropout``, ``dropout`` (residual and FFN
            output) and ``activation_dropout`` (inside the FFN); recorded in :attr:`config`.
        """
        if not 0.0 < feature_grad_mult <= 1.0:
            raise ValueError(f"feature_grad_mult must be in (0, 1], got {feature_grad_mult}")
        self.feature_grad_mult = float(feature_grad_mult)
        if not dropouts:
            return self
        unknown = sorted(set(dropouts) - set(DROPOUT_KEYS))
        if unknown:
            raise ValueError(f"unknown dropout settings {unknown}; known: {list(DROPOUT_KEYS)}")
        self.config = self.config.replace(**dropouts)
        cfg = self.config
        self.feature_projection.dropout.p = cfg.feat_proj_dropout
        self.encoder.config = cfg
        self.encoder.dropout.p = cfg.dropout
        for layer in self.encoder.layers:
            layer.dropout.p = cfg.dropout
            if layer.attention is not None:
                layer.attention.dropout = cfg.attention_dropout
            if layer.feed_forward is not None:
                layer.feed_forward.dropout.p = cfg.dropout
                layer.feed_forward.intermediate_dropout.p = cfg.activation_dropout
        return self

    # ------------------------------------------------------------------ forward
    def normalize_waveform(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance per utterance (``(batch, num_samples)``)."""
        return F.layer_norm(waveforms, waveforms.shape[-1:], eps=WAVEFORM_NORM_EPS)

    def check_input(self, waveforms) -> None:
        """Raise a clear error unless ``waveforms`` is a usable ``(batch, num_samples)`` tensor."""
        if not isinstance(waveforms, torch.Tensor):
            raise TypeError(
                f"waveforms must be a torch.Tensor of shape (batch, num_samples), got "
                f"{type(waveforms).__name__}"
            )
        if waveforms.dim() != 2:
            raise ValueError(
                f"waveforms must have shape (batch, num_samples) at 16 kHz, got shape "
                f"{tuple(waveforms.shape)}; add a batch dimension with waveforms[None] for one "
                "utterance"
            )
        if not waveforms.is_floating_point():
            raise TypeError(
                f"waveforms must be floating point (float32 samples in [-1, 1]), got "
                f"{waveforms.dtype}"
            )
        minimum = self.config.receptive_field_samples
        if waveforms.shape[1] < minimum:
            raise AudioError(
                f"audio of {waveforms.shape[1]} samples is shorter than the model's receptive "
                f"field ({minimum} samples = {minimum / 16000 * 1000:.0f} ms at 16 kHz)"
            )

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """Compute all hidden states.

        Parameters
        ----------
        waveforms
            ``(batch, num_samples)`` float audio at 16 kHz.

        Returns
        -------
        list of torch.Tensor
            ``num_layers + 1`` tensors of shape ``(batch, num_frames, embed_dim)``: the
            transformer input, then the output of each layer.
        """
        return self.encoder(self.project(waveforms))

    def project(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The transformer's input: ``(batch, num_samples)`` -> ``(batch, num_frames, E)``.

        Conv feature extractor and feature projection, before the positional embedding.
        """
        self.check_input(waveforms)
        if self.config.normalize_waveform:
            waveforms = self.normalize_waveform(waveforms)
        features = self.feature_extractor(waveforms)                          # (B, C, T)
        # The transformer's gradient reaches the conv layers scaled (fairseq's
        # feature_grad_mult); a loss on the gates themselves (the Lagrangian) is not.
        features = scale_gradient(features, self.feature_grad_mult).transpose(1, 2)
        last_gate = (self.feature_extractor.conv_layers[-1].gate
                     if self.feature_extractor.output_scale is None else None)
        return self.feature_projection(features, last_gate)                   # (B, T, E)

    # ------------------------------------------------------------------ counting
    def num_params(self) -> int:
        """Counted parameters of the network (hard-concrete gates excluded)."""
        return sum(
            p.numel() for name, p in self.named_parameters() if "log_alpha" not in name
        )

    def _dimensions(self, mode: str) -> dict:
        """Per-block sizes of the model.

        ``mode`` is ``"exact"`` (the ints of the current architecture), ``"expected"``
        (differentiable expectations under the gates) or ``"deterministic"`` (what
        :meth:`prune` will keep: the non-zero units of the eval-mode masks).
        """

        def size(gate, full):
            if mode == "exact" or gate is None:
                count = full
            elif mode == "expected":
                count = gate.expected_num_open()
            else:
                count = int((gate.deterministic_mask() > 0).sum())
            return count

        def block_prob(gate, count):
            if mode == "deterministic":
                open_ = gate is None or float(gate.deterministic_mask()[0]) > 0
                return 1.0 if open_ and count > 0 else 0.0
            if mode == "exact" or gate is None:
                return 1.0
            return gate.expected_num_open()

        conv = []
        for layer in self.feature_extractor.conv_layers:
            channels = size(layer.gate, layer.out_channels)
            conv.append(max(channels, 1) if mode == "deterministic" else channels)
        heads, attn_prob, ffn, ffn_prob = [], [], [], []
        for layer in self.encoder.layers:
            attn, ff = layer.attention, layer.feed_forward
            if attn is None:
                heads.append(0)
                attn_prob.append(0.0)
            else:
                h = size(attn.head_gate, attn.num_kept_heads)
                p = block_prob(attn.block_gate, h)
                heads.append(h if p else 0)
                attn_prob.append(p)
            if ff is None:
                ffn.append(0)
                ffn_prob.append(0.0)
            else:
                f = size(ff.unit_gate, ff.intermediate_dense.out_features)
                p = block_prob(ff.block_gate, f)
                ffn.append(f if p else 0)
                ffn_prob.append(p)
        return {"conv": conv, "heads": heads, "attn_prob": attn_prob, "ffn": ffn,
                "ffn_prob": ffn_prob}

    def _count_params(self, dims: dict):
        cfg = self.config
        E, d, gate_dim = cfg.embed_dim, cfg.head_dim, cfg.head_gate_dim
        total = 0
        in_channels = 1
        for i, (channels, (_, kernel, _)) in enumerate(zip(dims["conv"], cfg.conv_layers)):
            total = total + in_channels * channels * kernel
            if cfg.extractor_mode == "layer_norm" or i == 0:
                total = total + 2 * channels
            in_channels = channels
        if cfg.conv_output_scale:
            total = total + in_channels                                       # output scale
        total = total + 2 * in_channels + in_channels * E + E                 # feature projection
        total = total + E * (E // cfg.pos_conv_groups) * cfg.pos_conv_kernel  # weight_v
        total = total + cfg.pos_conv_kernel + E                               # weight_g, bias
        total = total + 2 * E + cfg.num_buckets * cfg.num_heads               # encoder LN, bias
        for h, p_attn, f, p_ffn in zip(dims["heads"], dims["attn_prob"], dims["ffn"],
                                       dims["ffn_prob"]):
            attention = h * (4 * E * d + 3 * d + 1) + E + 8 * gate_dim + 8
            ffn = f * (2 * E + 1) + E
            norms = 4 * E
            if cfg.layer_norm_first:
                norms = 2 * E * (p_attn + p_ffn)
            total = total + p_attn * attention + p_ffn * ffn + norms
        return total

    def _count_macs(self, dims: dict, num_samples: int):
        cfg = self.config
        E, d = cfg.embed_dim, cfg.head_dim
        lengths = cfg.conv_lengths(num_samples)
        T = lengths[-1]
        total = 0
        in_channels = 1
        for channels, (_, kernel, _), length in zip(dims["conv"], cfg.conv_layers, lengths):
            total = total + length * in_channels * channels * kernel
            in_channels = channels
        total = total + T * in_channels * E                                   # projection
        pos_frames = T + 2 * (cfg.pos_conv_kernel // 2) - cfg.pos_conv_kernel + 1
        total = total + pos_frames * E * (E // cfg.pos_conv_groups) * cfg.pos_conv_kernel
        for h, p_attn, f, p_ffn in zip(dims["heads"], dims["attn_prob"], dims["ffn"],
                                       dims["ffn_prob"]):
            attention = 4 * T * E * d * h + 2 * T * T * d * h
            total = total + p_attn * attention + p_ffn * 2 * T * E * f
        return total

    def analytic_num_params(self) -> int:
        """Parameters computed from the architecture (equals :meth:`num_params`)."""
        return int(round(_as_number(self._count_params(self._dimensions("exact")))))

    def expected_num_params(self) -> torch.Tensor:
        """Expected parameter count under the hard-concrete gates (differentiable)."""
        value = self._count_params(self._dimensions("expected"))
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    @torch.no_grad()
    def deterministic_num_params(self) -> int:
        """Parameters that :meth:`prune` will keep, from the eval-mode masks of the gates."""
        return int(round(_as_number(self._count_params(self._dimensions("deterministic")))))

    def macs(self, seconds: float = 1.0) -> int:
        """Analytic multiply-accumulates for ``seconds`` of audio (norms, softmax excluded)."""
        num_samples = int(round(seconds * 16000))
        return int(round(_as_number(self._count_macs(self._dimensions("exact"), num_samples))))

    def expected_macs(self, seconds: float = 1.0) -> torch.Tensor:
        """Expected MACs for ``seconds`` of audio under the gates (the exact count if ungated)."""
        num_samples = int(round(seconds * 16000))
        value = self._count_macs(self._dimensions("expected"), num_samples)
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    # ------------------------------------------------------------------ pruning
    @property
    def pruning_enabled(self) -> bool:
        return any(isinstance(m, HardConcrete) for m in self.modules())

    def gates(self) -> list[HardConcrete]:
        """All hard-concrete gates of the model."""
        return [m for m in self.modules() if isinstance(m, HardConcrete)]

    def gate_parameters(self) -> list[nn.Parameter]:
        """The ``log_alpha`` of every gate (their own learning rate in the pruning recipe)."""
        return [g.log_alpha for g in self.gates()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is not a gate (the fixed conv output scale is not)."""
        return [p for n, p in self.named_parameters()
                if "log_alpha" not in n and n != "feature_extractor.output_scale"]

    def enable_pruning(self, conv: bool = True, heads: bool = True, ffn: bool = True,
                       attention_blocks: bool = False, ffn_blocks: bool = False,
                       channel_drop_rate: float = 0.01, head_drop_rate: float = 0.01,
                       ffn_drop_rate: float = 0.5, block_drop_rate: float = 0.01,
                       conv_output_scale: bool = True) -> WavLM:
        """Attach hard-concrete gates to the chosen units (SPEC §1.4) and return ``self``.

        Parameters
        ----------
        conv, heads, ffn
            Gate the output channels of every conv layer, the attention heads, the FFN units.
        attention_blocks, ffn_blocks
            Also gate whole attention / FFN blocks.
        channel_drop_rate, head_drop_rate, ffn_drop_rate, block_drop_rate
            Initial probability that a unit of that kind is closed.
        conv_output_scale
            With ``conv``: give the model a per-channel output scale of the conv stack (ones, so
            the model computes the same) if it has none, so that the last conv layer's gate acts
            after its GELU, before the feature-projection LayerNorm, as in the reference recipe.
            ``False`` keeps a model without one gating after that LayerNorm.
        """
        device = next(self.parameters()).device
        if conv and conv_output_scale and self.feature_extractor.output_scale is None:
            self.config = self.config.replace(conv_output_scale=True)
            self.feature_extractor.output_scale = nn.Parameter(
                torch.ones(self.config.conv_dim, device=device), requires_grad=False
            )
        if conv:
            for layer in self.feature_extractor.conv_layers:
                layer.gate = HardConcrete(layer.out_channels, channel_drop_rate).to(device)
        for layer in self.encoder.layers:
            if layer.attention is not None:
                if heads:
                    layer.attention.head_gate = HardConcrete(
                        layer.attention.num_kept_heads, head_drop_rate).to(device)
                if attention_blocks:
                    layer.attention.block_gate = HardConcrete(1, block_drop_rate).to(device)
            if layer.feed_forward is not None:
                if ffn:
                    units = layer.feed_forward.intermediate_dense.out_features
                    layer.feed_forward.unit_gate = HardConcrete(units, ffn_drop_rate).to(device)
                if ffn_blocks:
                    layer.feed_forward.block_gate = HardConcrete(1, block_drop_rate).to(device)
        return self

    @torch.no_grad()
    def prune(self) -> WavLM:
        """Return a new, plain, smaller WavLM computing what this gated model computes in eval.

        Closed units are removed and the soft scales of the deterministic masks are folded into
        the following weights; those of the last conv layer of a model with an output scale
        (``config.conv_output_scale``) are multiplied into that scale. Exact for heads, FFN
        units and whole blocks, and for conv channels that no LayerNorm spans; channels removed
        under a LayerNorm (Large's conv layers, the feature projection's LayerNorm) change its
        statistics. A conv layer keeps at least its strongest channel.
        """
        cfg = self.config
        src = self.state_dict()
        # ---------------------------------------------------------------- conv channels
        conv_keep, conv_scale = [], []
        for layer in self.feature_extractor.conv_layers:
            if layer.gate is None:
                mask = torch.ones(layer.out_channels)
            else:
                mask = layer.gate.deterministic_mask().float().cpu()
                if not (mask > 0).any():
                    strongest = int(layer.gate.log_alpha.argmax())
                    mask = torch.zeros_like(mask)
                    mask[strongest] = 1.0
            keep = torch.nonzero(mask > 0).flatten()
            conv_keep.append(keep)
            conv_scale.append(mask[keep])
        # ---------------------------------------------------------------- transformer units
        heads_keep, head_scale, attn_scale = [], [], []
        ffn_keep, ffn_scale, ffn_block_scale = [], [], []
        for layer in self.encoder.layers:
            attn, ff = layer.attention, layer.feed_forward
            keep, scale, block = (
                _kept_units(attn.head_gate, attn.block_gate, attn.num_kept_heads)
                if attn is not None else _NO_UNITS
            )
            heads_keep.append(keep)
            head_scale.append(scale)
            attn_scale.append(block)
            keep, scale, block = (
                _kept_units(ff.unit_gate, ff.block_gate, ff.intermediate_dense.out_features)
                if ff is not None else _NO_UNITS
            )
            ffn_keep.append(keep)
            ffn_scale.append(scale)
            ffn_block_scale.append(block)
        # ---------------------------------------------------------------- new config
        remaining = []
        for i, layer in enumerate(self.encoder.layers):
            if layer.attention is None:
                remaining.append([])
            else:
                original = layer.attention.heads.cpu()
                remaining.append(original[heads_keep[i]].tolist())
        new_cfg = cfg.replace(
            conv_layers=[(len(k), kernel, stride)
                         for k, (_, kernel, stride) in zip(conv_keep, cfg.conv_layers)],
            remaining_heads=remaining,
            use_attention=[bool(r) for r in remaining],
            ffn_dim=[len(k) for k in ffn_keep],
            use_ffn=[len(k) > 0 for k in ffn_keep],
            name=f"{cfg.name}-pruned",
        )
        small = WavLM(new_cfg).to(next(self.parameters()).device)
        dst = {}
        # ---------------------------------------------------------------- conv weights
        prev_keep, prev_scale = None, None
        last = len(conv_keep) - 1
        for i, (keep, scale) in enumerate(zip(conv_keep, conv_scale)):
            prefix = f"feature_extractor.conv_layers.{i}."
            w = src[prefix + "conv.weight"][keep.to(src[prefix + "conv.weight"].device)]
            if prev_keep is not None:
                w = w[:, prev_keep.to(w.device)] * prev_scale.to(w)[None, :, None]
            dst[prefix + "conv.weight"] = w
            for name in ("norm.weight", "norm.bias"):
                if prefix + name in src:
                    dst[prefix + name] = src[prefix + name][keep.to(src[prefix + name].device)]
            if i != last:
                prev_keep, prev_scale = keep, scale
        keep, scale = conv_keep[-1], conv_scale[-1]
        for name in ("layer_norm.weight", "layer_norm.bias"):
            t = src["feature_projection." + name]
            dst["feature_projection." + name] = t[keep.to(t.device)]
        w = src["feature_projection.projection.weight"]
        if cfg.conv_output_scale:
            # The last gate sits before the projection's LayerNorm: its soft values stay a scale.
            t = src["feature_extractor.output_scale"]
            dst["feature_extractor.output_scale"] = t[keep.to(t.device)] * scale.to(t)
            dst["feature_projection.projection.weight"] = w[:, keep.to(w.device)]
        else:
            dst["feature_projection.projection.weight"] = (
                w[:, keep.to(w.device)] * scale.to(w)[None, :]
            )
        dst["feature_projection.projection.bias"] = src["feature_projection.projection.bias"]
        # ---------------------------------------------------------------- encoder
        for name, t in src.items():
            if name.startswith("encoder.") and not name.startswith("encoder.layers."):
                dst[name] = t
        d = cfg.head_dim
        for i, layer in enumerate(small.encoder.layers):
            prefix = f"encoder.layers.{i}."
            for norm in ("layer_norm", "final_layer_norm"):
                if getattr(layer, norm) is not None:
                    for p in ("weight", "bias"):
                        dst[f"{prefix}{norm}.{p}"] = src[f"{prefix}{norm}.{p}"]
            if layer.attention is not None:
                a = prefix + "attention."
                keep, scale = heads_keep[i], head_scale[i]
                rows = (keep[:, None] * d + torch.arange(d)[None, :]).flatten()
                for proj in ("q_proj", "k_proj", "v_proj"):
                    dst[f"{a}{proj}.weight"] = src[f"{a}{proj}.weight"][rows.to(
                        src[f"{a}{proj}.weight"].device)]
                    dst[f"{a}{proj}.bias"] = src[f"{a}{proj}.bias"][rows.to(
                        src[f"{a}{proj}.bias"].device)]
                w = src[a + "out_proj.weight"]
                col_scale = scale.repeat_interleave(d).to(w) * attn_scale[i]
                dst[a + "out_proj.weight"] = w[:, rows.to(w.device)] * col_scale[None, :]
                dst[a + "out_proj.bias"] = src[a + "out_proj.bias"] * attn_scale[i]
                dst[a + "gru_rel_pos_linear.weight"] = src[a + "gru_rel_pos_linear.weight"]
                dst[a + "gru_rel_pos_linear.bias"] = src[a + "gru_rel_pos_linear.bias"]
                c = src[a + "gru_rel_pos_const"]
                dst[a + "gru_rel_pos_const"] = c[keep.to(c.device)]
            if layer.feed_forward is not None:
                f = prefix + "feed_forward."
                keep, scale = ffn_keep[i], ffn_scale[i]
                w = src[f + "intermediate_dense.weight"]
                dst[f + "intermediate_dense.weight"] = w[keep.to(w.device)]
                b = src[f + "intermediate_dense.bias"]
                dst[f + "intermediate_dense.bias"] = b[keep.to(b.device)]
                w = src[f + "output_dense.weight"]
                dst[f + "output_dense.weight"] = (
                    w[:, keep.to(w.device)] * scale.to(w)[None, :] * ffn_block_scale[i]
                )
                dst[f + "output_dense.bias"] = src[f + "output_dense.bias"] * ffn_block_scale[i]
        small.load_state_dict(dst, strict=True)
        small.train(self.training)
        small.last_prune_result = PruneResult(
            conv_channels=[k.tolist() for k in conv_keep],
            heads=remaining,
            ffn_units=[k.tolist() for k in ffn_keep],
        )
        logger.info(
            "pruned WavLM: %.2fM -> %.2fM parameters", self.num_params() / 1e6,
            small.num_params() / 1e6,
        )
        return small
