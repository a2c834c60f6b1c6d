"""The blocks WavLM is composed of, each owning its pruning.

Every prunable block owns its hard-concrete gates (its ``GATES`` table maps a
:class:`~slimdiar.models.wavlm.units.PruneUnit` to the attribute holding that gate) and offers:

- ``dims(count)``: its sizes under a :class:`~slimdiar.models.wavlm.units.Count` (ints, or
  differentiable tensors for :attr:`Count.EXPECTED`);
- ``num_params(dims)`` and ``macs(frames, dims)``: its parameters and multiply-accumulates at
  those sizes (norms, activations, softmax and the relative bias are not counted as MACs);
- ``kept()``: what its eval-mode masks keep (a :class:`~slimdiar.models.wavlm.units.Kept`);
- ``prune_(kept)``: remove the closed units of its own weights in place, folding the soft mask
  values into the weights that follow them, and drop its gates.

Numerically the forward passes follow ``transformers.WavLMModel``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.models.containers import ModuleList
from slimdiar.models.wavlm.config import WavLMConfig
from slimdiar.models.wavlm.hardconcrete import HardConcrete
from slimdiar.models.wavlm.units import Count, Kept, PruneUnit, block_probability, gated_size


def _take(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(dim, index.to(tensor.device))


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of the parameter ``name`` of ``module``, keeping its trainability."""
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def _slice_norm_(norm: nn.GroupNorm | nn.LayerNorm, index: torch.Tensor) -> None:
    """Keep the channels ``index`` of a GroupNorm (one group per channel) or a LayerNorm."""
    _replace(norm, "weight", _take(norm.weight, 0, index))
    _replace(norm, "bias", _take(norm.bias, 0, index))
    if isinstance(norm, nn.GroupNorm):
        norm.num_groups = norm.num_channels = len(index)
    else:
        norm.normalized_shape = (len(index),)


def add_up(terms: Iterable):
    """``0 + t0 + t1 + ...`` in order (so a float count comes out the same bit for bit)."""
    total = 0
    for term in terms:
        total = total + term
    return total


class Counted(nn.Module):
    """A block that counts its parameters and MACs from its sizes (``dims``).

    Subclasses yield the terms; a model adds up the terms of all its blocks in order.
    """

    def param_terms(self, *dims) -> Iterator:
        """The parameter counts of the block's parts at the sizes ``dims``, in order."""
        raise NotImplementedError

    def mac_terms(self, frames: int, *dims) -> Iterator:
        """The MAC counts of the block's parts for ``frames`` input frames, in order."""
        raise NotImplementedError

    def num_params(self, *dims):
        """Parameters at the sizes ``dims`` (an int, or a tensor for expected sizes)."""
        return add_up(self.param_terms(*dims))

    def macs(self, frames: int, *dims):
        """Multiply-accumulates for ``frames`` input frames at the sizes ``dims``."""
        return add_up(self.mac_terms(frames, *dims))


class Gated(Counted):
    """A block with hard-concrete gates: ``GATES`` maps each unit it can gate to an attribute."""

    GATES: dict[PruneUnit, str] = {}

    def gate_width(self, unit: PruneUnit) -> int:
        """Number of gated units of kind ``unit`` in this block."""
        raise NotImplementedError

    def enable_gates(self, units: set[PruneUnit], rates: dict[PruneUnit, float]) -> None:
        """Attach a fresh gate for every unit of ``units`` that this block gates."""
        device = next(self.parameters()).device
        for unit, attribute in self.GATES.items():
            if unit in units:
                gate = HardConcrete(self.gate_width(unit), rates[unit]).to(device)
                setattr(self, attribute, gate)

    def drop_gates(self) -> None:
        """Remove every gate of this block."""
        for attribute in self.GATES.values():
            setattr(self, attribute, None)


# ---------------------------------------------------------------------------------------------
# Convolutional feature extractor
# ---------------------------------------------------------------------------------------------
class ConvLayer(Gated):
    """One conv feature-extractor layer: Conv1d (no bias) -> optional norm -> GELU -> gate.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride
        Shape of the convolution.
    norm
        ``"group"`` (a GroupNorm with one group per channel), ``"layer"`` (LayerNorm over
        channels) or ``None``.
    """

    GATES = {PruneUnit.CONV: "gate"}

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: str | None
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.norm_kind = norm
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
        self.norm: nn.GroupNorm | nn.LayerNorm | None
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        else:
            self.norm = None
        self.gate: HardConcrete | None = None

    @property
    def out_channels(self) -> int:
        """Output channels of the convolution (what pruning has left of them)."""
        return self.conv.out_channels

    def gate_width(self, unit: PruneUnit) -> int:
        """One gate per output channel."""
        return self.out_channels

    def forward(self, x: torch.Tensor, apply_gate: bool = True) -> torch.Tensor:
        """Map ``(batch, in_channels, time)`` to ``(batch, out_channels, time')``."""
        x = self.conv(x)
        if isinstance(self.norm, nn.GroupNorm):
            x = self.norm(x)
        elif isinstance(self.norm, nn.LayerNorm):
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = F.gelu(x)
        if apply_gate and self.gate is not None:
            x = x * self.gate()[None, :, None]
        return x

    def forward_frames(self, x: torch.Tensor, apply_gate: bool = True) -> torch.Tensor:
        """:meth:`forward` on ``(batch, time, in_channels)`` -> ``(batch, time', out_channels)``.

        Both contiguous (the channels-last layout).

        A first layer (one input channel) is a matmul over the strided windows of the waveform;
        any other is a 2-D convolution of height 1 on a channels-last view, which oneDNN runs in
        its native layout for any channel count (the pruned counts are odd, and the
        channels-first layout cost reorders around every convolution).
        """
        weight = self.conv.weight  # (out, in, kernel)
        if self.conv.in_channels == 1:
            windows = x[..., 0].unfold(1, self.kernel_size, self.stride)  # (B, T', kernel)
            x = windows @ weight[:, 0, :].t()
        else:
            x = _height_one(F.conv2d)(x, weight[:, :, None, :], stride=(1, self.stride))
        if isinstance(self.norm, nn.GroupNorm):
            x = _height_one(self.norm)(x)  # its channels-last kernel, no reorder
        elif isinstance(self.norm, nn.LayerNorm):
            x = self.norm(x)
        x = F.gelu(x)
        if apply_gate and self.gate is not None:
            x = x * self.gate()
        return x

    def expected_out_channels(self):
        """Expected number of kept output channels (a tensor when gated, else an int)."""
        return self.gate.expected_num_open() if self.gate is not None else self.out_channels

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count):
        """Output channels under ``count`` (pruning keeps at least one)."""
        channels = gated_size(self.gate, self.out_channels, count)
        return max(channels, 1) if count is Count.DETERMINISTIC else channels

    def param_terms(self, in_channels, channels) -> Iterator:
        """Parameters with ``in_channels`` inputs and ``channels`` outputs."""
        yield in_channels * channels * self.kernel_size
        if self.norm is not None:
            yield 2 * channels

    def output_length(self, length: int) -> int:
        """Output frames for ``length`` input frames."""
        return max(0, (length - self.kernel_size) // self.stride + 1)

    def mac_terms(self, frames: int, in_channels, channels) -> Iterator:
        """MACs for ``frames`` input frames."""
        yield self.output_length(frames) * in_channels * channels * self.kernel_size

    # ------------------------------------------------------------------ pruning
    def kept(self) -> Kept:
        """The channels the eval-mode mask keeps (at least the strongest one) and their scales."""
        if self.gate is None:
            mask = torch.ones(self.out_channels)
        else:
            mask = self.gate.deterministic_mask().float().cpu()
            if not (mask > 0).any():
                strongest = int(self.gate.log_alpha.argmax())
                mask = torch.zeros_like(mask)
                mask[strongest] = 1.0
        index = torch.nonzero(mask > 0).flatten()
        return Kept(index, mask[index])

    def prune_(self, kept: Kept, previous: Kept | None = None) -> None:
        """Keep the output channels ``kept``; take only the kept channels of the layer before.

        ``previous`` scales fold into this layer's weights (its mask acted on this input).
        """
        weight = _take(self.conv.weight, 0, kept.index)
        if previous is not None:
            weight = _take(weight, 1, previous.index) * previous.scale.to(weight)[None, :, None]
            self.conv.in_channels = len(previous)
        _replace(self.conv, "weight", weight)
        self.conv.out_channels = len(kept)
        if self.norm is not None:
            _slice_norm_(self.norm, kept.index)
        self.drop_gates()


def _height_one(function):
    """``function`` of an ``NCHW`` tensor, applied to ``(batch, time, channels)`` frames.

    The frames are handed over as a channels-last ``(batch, channels, 1, time)`` view and the
    result, channels-last too, comes back as contiguous ``(batch, time', channels')`` frames.
    """

    def apply(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = function(x.transpose(1, 2)[:, :, None, :], *args, **kwargs)
        return y[:, :, 0, :].transpose(1, 2).contiguous()  # a no-op when y is channels-last

    return apply


class FeatureExtractor(Counted):
    """The stack of conv layers that turns a waveform into 20 ms frames."""

    #: Whether a CPU computes the stack on the channels-last layout (not while traced or
    #: exported, whose graphs keep the plain convolutions); the same function either way.
    channels_last = True

    def __init__(self, config: WavLMConfig):
        super().__init__()
        layers, in_channels = [], 1
        for i, (channels, kernel, stride) in enumerate(config.conv_layers):
            norm: str | None
            if config.extractor_mode == "layer_norm":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(in_channels, channels, kernel, stride, norm))
            in_channels = channels
        self.conv_layers = ModuleList(layers)
        # A fixed per-channel scale of the last layer's output; it holds the soft mask values of
        # that layer's gate once pruned (it cannot be folded: a LayerNorm follows).
        self.output_scale = (
            nn.Parameter(torch.ones(in_channels), requires_grad=False)
            if config.conv_output_scale
            else None
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, num_samples)`` to ``(batch, conv_dim, num_frames)``.

        With an output scale, every gate acts after its layer's GELU and the scale follows.
        Without one, the gate of the last conv layer is applied by :class:`FeatureProjection`,
        after its LayerNorm, so that it folds into the projection when pruned.
        """
        # On a CPU the same function runs on the channels-last layout (ConvLayer.forward_frames)
        # and the result is a (B, C, T) view of (B, T, C) frames.
        frames = self.channels_last and waveforms.device.type == "cpu" and not _exporting()
        x = waveforms[:, :, None] if frames else waveforms[:, None, :]
        last = len(self.conv_layers) - 1
        for i, layer in enumerate(self.conv_layers):
            step = layer.forward_frames if frames else layer
            x = step(x, apply_gate=i != last or self.output_scale is not None)
        if self.output_scale is not None:
            x = x * (self.output_scale if frames else self.output_scale[None, :, None])
        return x.transpose(1, 2) if frames else x

    def add_output_scale(self) -> None:
        """Give the stack an output scale of ones (the model computes the same)."""
        device = self.conv_layers[-1].conv.weight.device
        channels = self.conv_layers[-1].out_channels
        self.output_scale = nn.Parameter(torch.ones(channels, device=device), requires_grad=False)

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count) -> list:
        """Output channels of every conv layer under ``count``."""
        return [layer.dims(count) for layer in self.conv_layers]

    def param_terms(self, dims: list) -> Iterator:
        """Parameters with the output channels ``dims`` of every conv layer."""
        in_channels = 1
        for layer, channels in zip(self.conv_layers, dims):
            yield from layer.param_terms(in_channels, channels)
            in_channels = channels
        if self.output_scale is not None:
            yield in_channels

    def mac_terms(self, frames: int, dims: list) -> Iterator:
        """MACs for ``frames`` input samples."""
        in_channels = 1
        for layer, channels in zip(self.conv_layers, dims):
            yield from layer.mac_terms(frames, in_channels, channels)
            frames = layer.output_length(frames)
            in_channels = channels

    # ------------------------------------------------------------------ pruning
    def kept(self) -> list[Kept]:
        """What the eval-mode mask of every conv layer keeps."""
        return [layer.kept() for layer in self.conv_layers]

    def prune_(self, kept: list[Kept]) -> Kept | None:
        """Prune every conv layer; return the scales the feature projection must fold.

        The last layer's soft mask values go into the output scale when there is one (``None``
        is returned), else to the projection after its LayerNorm (returned).
        """
        previous: Kept | None = None
        for layer, layer_kept in zip(self.conv_layers, kept):
            layer.prune_(layer_kept, previous)
            previous = layer_kept
        if self.output_scale is None or previous is None:
            return previous
        scale = _take(self.output_scale, 0, previous.index) * previous.scale.to(self.output_scale)
        _replace(self, "output_scale", scale)
        return None

    def shape(self) -> list[tuple[int, int, int]]:
        """``(channels, kernel, stride)`` of every conv layer (``WavLMConfig.conv_layers``)."""
        return [(layer.out_channels, layer.kernel_size, layer.stride) for layer in self.conv_layers]


class FeatureProjection(Counted):
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

    def param_terms(self, in_channels) -> Iterator:
        """Parameters with ``in_channels`` conv channels coming in."""
        E = self.projection.out_features
        yield from (2 * in_channels, in_channels * E, E)

    def mac_terms(self, frames: int, in_channels) -> Iterator:
        """MACs for ``frames`` frames of ``in_channels`` channels."""
        yield frames * in_channels * self.projection.out_features

    def prune_(self, kept: Kept, fold: Kept | None) -> None:
        """Keep the input channels ``kept``; multiply the projection by ``fold``'s scales."""
        _slice_norm_(self.layer_norm, kept.index)
        weight = _take(self.projection.weight, 1, kept.index)
        if fold is not None:
            weight = weight * fold.scale.to(weight)[None, :]
        _replace(self.projection, "weight", weight)
        self.projection.in_features = len(kept)


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------
def relative_offset_buckets(num_frames: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional buckets of the offsets ``-(T-1) .. T-1``, shape ``(2T - 1,)``.

    Computed on every call (it is ``O(T)``): a cached tensor made under ``torch.inference_mode``
    could not take part in a later training step.
    """
    offsets = torch.arange(-(num_frames - 1), num_frames, dtype=torch.long)
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    large = (
        max_exact
        + (
            torch.log(distance.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (half - max_exact)
        ).long()
    )
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class SelfAttention(Gated):
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

    GATES = {PruneUnit.HEADS: "head_gate", PruneUnit.ATTENTION_BLOCKS: "block_gate"}
    #: ``(num_kept_heads,)`` long buffer: the original index of every kept head.
    heads: torch.Tensor

    def __init__(
        self, embed_dim: int, heads: list[int], num_heads: int, head_dim: int, dropout: float = 0.0
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self._set_heads(list(heads))
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

    def _set_heads(self, heads: list[int], device: torch.device | None = None) -> None:
        self.register_buffer(
            "heads", torch.tensor(heads, dtype=torch.long, device=device), persistent=False
        )
        self.all_heads = heads == list(range(self.num_heads))

    @property
    def num_kept_heads(self) -> int:
        """Number of heads the block still has."""
        return int(self.heads.numel())

    def gate_width(self, unit: PruneUnit) -> int:
        """One gate per kept head, or one for the whole block."""
        return self.num_kept_heads if unit is PruneUnit.HEADS else 1

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
        gate_a, gate_b = torch.sigmoid(gate).unbind(-1)  # (B, T, n)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        bias = gate.transpose(1, 2)[..., None] * position_bias  # (B, n, T, T)
        q = self.q_proj(x).view(batch, frames, n, d).transpose(1, 2)  # (B, n, T, d)
        k = self.k_proj(x).view(batch, frames, n, d).transpose(1, 2)
        v = self.v_proj(x).view(batch, frames, n, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )  # (B, n, T, d)
        out_bias = self.out_proj.bias
        if self.head_gate is not None:
            mask = self.head_gate()
            out = out * mask[None, :, None, None]
            # A block whose heads are all closed outputs nothing, so removing it is exact.
            out_bias = out_bias * (mask.detach() > 0).any().to(out_bias.dtype)
        out = F.linear(
            out.transpose(1, 2).reshape(batch, frames, n * d), self.out_proj.weight, out_bias
        )
        if self.block_gate is not None:
            out = out * self.block_gate()
        return out

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count) -> tuple:
        """``(heads, block probability)`` under ``count``; a closed block keeps no heads."""
        heads = gated_size(self.head_gate, self.num_kept_heads, count)
        probability = block_probability(self.block_gate, heads, count)
        return (heads if probability else 0), probability

    def param_terms(self, dims: tuple) -> Iterator:
        """Parameters at ``dims = (heads, block probability)`` (see :meth:`dims`)."""
        heads, probability = dims
        E, d = self.embed_dim, self.head_dim
        gate_dim = self.gru_rel_pos_linear.in_features
        yield probability * (heads * (4 * E * d + 3 * d + 1) + E + 8 * gate_dim + 8)

    def mac_terms(self, frames: int, dims: tuple) -> Iterator:
        """MACs over ``frames`` frames at ``dims = (heads, block probability)``."""
        heads, probability = dims
        E, d, T = self.embed_dim, self.head_dim, frames
        yield probability * (4 * T * E * d * heads + 2 * T * T * d * heads)

    # ------------------------------------------------------------------ pruning
    def kept(self) -> Kept:
        """The heads the eval-mode masks keep, their scales and the block's."""
        return Kept.of(self.head_gate, self.block_gate, self.num_kept_heads)

    def prune_(self, kept: Kept) -> None:
        """Keep the heads ``kept`` (with their slices of the relative-bias gates)."""
        d = self.head_dim
        rows = (kept.index[:, None] * d + torch.arange(d)[None, :]).flatten()
        for projection in (self.q_proj, self.k_proj, self.v_proj):
            _replace(projection, "weight", _take(projection.weight, 0, rows))
            _replace(projection, "bias", _take(projection.bias, 0, rows))
            projection.out_features = len(rows)
        weight = _take(self.out_proj.weight, 1, rows)
        column_scale = kept.scale.repeat_interleave(d).to(weight) * kept.block
        _replace(self.out_proj, "weight", weight * column_scale[None, :])
        _replace(self.out_proj, "bias", self.out_proj.bias * kept.block)
        self.out_proj.in_features = len(rows)
        _replace(self, "gru_rel_pos_const", _take(self.gru_rel_pos_const, 0, kept.index))
        self._set_heads(_take(self.heads, 0, kept.index).tolist(), self.heads.device)
        self.drop_gates()


class FeedForward(Gated):
    """Linear(E -> F) -> GELU -> dropout -> [unit gate] -> Linear(F -> E) -> [block gate]."""

    GATES = {PruneUnit.FFN: "unit_gate", PruneUnit.FFN_BLOCKS: "block_gate"}

    def __init__(
        self, embed_dim: int, ffn_dim: int, dropout: float = 0.0, activation_dropout: float = 0.0
    ):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)
        self.unit_gate: HardConcrete | None = None
        self.block_gate: HardConcrete | None = None

    @property
    def num_units(self) -> int:
        """Intermediate units ``F`` the block still has."""
        return self.intermediate_dense.out_features

    def gate_width(self, unit: PruneUnit) -> int:
        """One gate per intermediate unit, or one for the whole block."""
        return self.num_units if unit is PruneUnit.FFN else 1

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

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count) -> tuple:
        """``(units, block probability)`` under ``count``; a closed block keeps no units."""
        units = gated_size(self.unit_gate, self.num_units, count)
        probability = block_probability(self.block_gate, units, count)
        return (units if probability else 0), probability

    def param_terms(self, dims: tuple) -> Iterator:
        """Parameters at ``dims = (units, block probability)`` (see :meth:`dims`)."""
        units, probability = dims
        E = self.output_dense.out_features
        yield probability * (units * (2 * E + 1) + E)

    def mac_terms(self, frames: int, dims: tuple) -> Iterator:
        """MACs over ``frames`` frames at ``dims = (units, block probability)``."""
        units, probability = dims
        yield probability * 2 * frames * self.output_dense.out_features * units

    # ------------------------------------------------------------------ pruning
    def kept(self) -> Kept:
        """The units the eval-mode masks keep, their scales and the block's."""
        return Kept.of(self.unit_gate, self.block_gate, self.num_units)

    def prune_(self, kept: Kept) -> None:
        """Keep the units ``kept``; fold their scales and the block's into the output layer."""
        dense = self.intermediate_dense
        _replace(dense, "weight", _take(dense.weight, 0, kept.index))
        _replace(dense, "bias", _take(dense.bias, 0, kept.index))
        dense.out_features = len(kept)
        weight = _take(self.output_dense.weight, 1, kept.index)
        weight = weight * kept.scale.to(weight)[None, :] * kept.block
        _replace(self.output_dense, "weight", weight)
        _replace(self.output_dense, "bias", self.output_dense.bias * kept.block)
        self.output_dense.in_features = len(kept)
        self.drop_gates()


_ABSENT = (0, 0.0)


class EncoderLayer(Counted):
    """A transformer layer, post-norm (Base+) or pre-norm (Large); either block may be absent."""

    def __init__(self, config: WavLMConfig, index: int):
        super().__init__()
        E = config.embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.dropout = nn.Dropout(config.dropout)
        self.attention = (
            SelfAttention(
                E,
                config.remaining_heads[index],
                config.num_heads,
                config.head_dim,
                config.attention_dropout,
            )
            if config.use_attention[index]
            else None
        )
        self.feed_forward = (
            FeedForward(E, config.ffn_dim[index], config.dropout, config.activation_dropout)
            if config.use_ffn[index]
            else None
        )
        # Post-norm layers always normalise after each residual; pre-norm layers only have the
        # LayerNorm that feeds a block that is present.
        keep_attn_norm = not self.layer_norm_first or self.attention is not None
        keep_ffn_norm = not self.layer_norm_first or self.feed_forward is not None
        self.layer_norm: nn.LayerNorm | None = (
            nn.LayerNorm(E, eps=config.layer_norm_eps) if keep_attn_norm else None
        )
        self.final_layer_norm: nn.LayerNorm | None = (
            nn.LayerNorm(E, eps=config.layer_norm_eps) if keep_ffn_norm else None
        )
        self.embed_dim = E

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, frames, E)`` to ``(batch, frames, E)``."""
        if self.layer_norm_first:
            # a pre-norm layer has the LayerNorm of each block it has
            if self.attention is not None and self.layer_norm is not None:
                x = x + self.dropout(self.attention(self.layer_norm(x), position_bias))
            if self.feed_forward is not None and self.final_layer_norm is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        # a post-norm layer always has both LayerNorms
        assert self.layer_norm is not None and self.final_layer_norm is not None
        if self.attention is not None:
            x = x + self.dropout(self.attention(x, position_bias))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count) -> tuple:
        """``(attention dims, FFN dims)`` under ``count``; an absent block is ``(0, 0.0)``."""
        attention = self.attention.dims(count) if self.attention is not None else _ABSENT
        feed_forward = self.feed_forward.dims(count) if self.feed_forward is not None else _ABSENT
        return attention, feed_forward

    def param_terms(self, dims: tuple) -> Iterator:
        """Parameters at ``dims = (attention dims, FFN dims)`` (see :meth:`dims`)."""
        attention, feed_forward = dims
        if self.attention is not None:
            yield from self.attention.param_terms(attention)
        if self.feed_forward is not None:
            yield from self.feed_forward.param_terms(feed_forward)
        E = self.embed_dim
        yield 2 * E * (attention[1] + feed_forward[1]) if self.layer_norm_first else 4 * E

    def mac_terms(self, frames: int, dims: tuple) -> Iterator:
        """MACs over ``frames`` frames at ``dims = (attention dims, FFN dims)``."""
        attention, feed_forward = dims
        if self.attention is not None:
            yield from self.attention.mac_terms(frames, attention)
        if self.feed_forward is not None:
            yield from self.feed_forward.mac_terms(frames, feed_forward)

    # ------------------------------------------------------------------ pruning
    def kept(self) -> tuple[Kept, Kept]:
        """What the masks keep of the attention heads and of the FFN units."""
        attention = self.attention.kept() if self.attention is not None else Kept.nothing()
        feed_forward = self.feed_forward.kept() if self.feed_forward is not None else Kept.nothing()
        return attention, feed_forward

    def prune_(self, kept: tuple[Kept, Kept]) -> None:
        """Prune both blocks; a block that keeps nothing goes (with its pre-norm LayerNorm)."""
        attention, feed_forward = kept
        if self.attention is not None:
            if len(attention):
                self.attention.prune_(attention)
            else:
                self.attention = None
        if self.feed_forward is not None:
            if len(feed_forward):
                self.feed_forward.prune_(feed_forward)
            else:
                self.feed_forward = None
        if self.layer_norm_first:
            if self.attention is None:
                self.layer_norm = None
            if self.feed_forward is None:
                self.final_layer_norm = None


def _exporting() -> bool:
    """Whether the forward pass is being traced, exported to ONNX or compiled."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def plain_inference(module: nn.Module) -> bool:
    """Whether ``module`` runs eagerly in eval mode without autograd.

    Not traced, exported or compiled either: only there may kept tensors and the FFT path stand
    in for the plain computation.
    """
    return not (module.training or torch.is_grad_enabled() or _exporting())


def _stamp(*params: torch.Tensor) -> tuple | None:
    """What identifies the current values of ``params``: the tensors, versions and storage.

    ``None`` for inference tensors (made under ``torch.inference_mode``), whose in-place
    changes leave no trace: nothing computed from them may be kept.
    """
    if any(p.is_inference() for p in params):
        return None
    return tuple((p, p._version, p.data_ptr()) for p in params)


def _unchanged(stamp: tuple, now: tuple) -> bool:
    return all(a[0] is b[0] and a[1:] == b[1:] for a, b in zip(stamp, now))


#: Window lengths whose kernel spectrum an eval-mode positional conv keeps (about 80 MB each
#: for Base+ at 8 s).
SPECTRUM_CACHE_ENTRIES = 2


def _fft_size(length: int) -> int:
    """The smallest ``2^a 3^b 5^c`` that is at least ``length`` (a fast FFT length)."""
    size = length
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


class PositionalConv(Counted):
    """Convolutional positional embedding with weight normalisation over dim 2."""

    #: Whether eval mode without autograd on a CPU may take the FFT path (``False``: always
    #: direct).
    use_fft = True
    #: On a CPU, a reduced-precision grouped convolution with fewer input channels per group
    #: than this is computed in float32: oneDNN's bfloat16 kernel for 2 to 12 channels per group
    #: and an even kernel returns wrong values on CPUs with AMX (relative error about 1 with
    #: torch 2.13 / oneDNN 3.12; 16 and more, as every published WavLM has, are right).
    min_low_precision_group_channels = 16

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
        """Map ``(batch, frames, E)`` to the positional term ``(batch, frames, E)``.

        On a CPU in eval mode without autograd (and not traced, exported or compiled), for
        float32/float64 inputs, the convolution is computed through the FFT with the transformed
        kernel kept per window length: the same function to about 1e-6, and several times faster
        than the direct grouped convolution from batch 8 on; a single window longer than a
        block goes block by block (:meth:`_blockwise`), in float32 under bfloat16 too.
        Otherwise (and for weights that are inference tensors, whose changes cannot be seen) it
        is computed directly. A small model in bfloat16 on a CPU computes this term in float32
        (:attr:`min_low_precision_group_channels`).
        """
        if (
            x.device.type == "cpu"
            and self._low_precision(x.dtype)
            and (
                self.weight_v.shape[1] < self.min_low_precision_group_channels or self._blockwise(x)
            )
        ):
            with torch.autocast("cpu", enabled=False):
                return self._positional(x.float()).to(x.dtype)
        return self._positional(x)

    def _blockwise(self, x: torch.Tensor) -> bool:
        """Whether the FFT goes block by block (overlap-save): one window longer than a block.

        One transform of the whole window reads a kernel spectrum of ``frames + kernel`` bins
        per channel pair for a single column: at batch 1 that read is the cost (80 MB for Base+
        at 8 s). Blocks of :attr:`block_fft_size` halve it and give the product several
        columns; from a few windows on, the one transform is cheaper. Also taken in bfloat16
        (computed in float32), where it beats the direct convolution at batch 1.
        """
        size = self.block_fft_size
        return (
            self.use_fft
            and x.shape[0] == 1
            and x.shape[1] > size - self.kernel_size + 1
            and plain_inference(self)
        )

    @property
    def block_fft_size(self) -> int:
        """The transform length of the blockwise FFT: the power of two at least twice the kernel."""
        return 1 << (2 * self.kernel_size - 1).bit_length()

    @staticmethod
    def _low_precision(dtype: torch.dtype) -> bool:
        """Whether the convolution would run in bfloat16/float16 (by dtype or CPU autocast)."""
        low = (torch.bfloat16, torch.float16)
        if dtype in low:
            return True
        if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
            return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in low
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() in low

    def _positional(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = None
        if (
            self.use_fft
            and x.device.type == "cpu"
            and plain_inference(self)
            and x.dtype in (torch.float32, torch.float64)
        ):
            if self._blockwise(x):
                size = self.block_fft_size
                spectrum = self._weight_spectrum(size, x.dtype)
                if spectrum is not None:
                    return F.gelu(self.conv_fft_blocks(x, spectrum, size)).transpose(1, 2)
            size = _fft_size(x.shape[1] + self.kernel_size - 1)
            spectrum = self._weight_spectrum(size, x.dtype)
        if spectrum is None:
            y = F.conv1d(
                x.transpose(1, 2),
                self._direct_weight(x.dtype),
                self.bias.to(x.dtype),
                padding=self.kernel_size // 2,
                groups=self.groups,
            )
            if self.kernel_size % 2 == 0:
                y = y[:, :, :-1]
        else:
            y = self.conv_fft(x, spectrum)
        return F.gelu(y).transpose(1, 2)

    def weight(self) -> torch.Tensor:
        """The kernel: ``weight_v`` normalised over dims 0 and 1, times ``weight_g``."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)

    def _direct_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`weight` in ``dtype``, kept while the weights are unchanged.

        Kept in eval mode without autograd only: its norm over a strided axis cost as much as
        the convolution of a pruned model at batch 1 in bfloat16.
        """
        stamp = _stamp(self.weight_v, self.weight_g) if plain_inference(self) else None
        if stamp is None:
            return self.weight().to(dtype)
        key = (self.weight_v.device, dtype)
        cache = self.__dict__.setdefault("_weight_cache", {})
        hit = cache.get(key)
        if hit is None or not _unchanged(hit[0], stamp):
            cache.clear()
            hit = cache[key] = (stamp, self.weight().to(dtype))
        return hit[1]

    def conv_fft(self, x: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        """The grouped convolution (bias added, before the GELU) through the FFT.

        ``(batch, frames, E)`` -> ``(batch, E, frames)``: the full linear convolution with the
        flipped kernel (``spectrum``, ``(groups, bins, out, in)`` from :meth:`_weight_spectrum`),
        cropped to the outputs the padded cross-correlation keeps.
        """
        batch, frames, E = x.shape
        groups, k = self.groups, self.kernel_size
        size = _fft_size(frames + k - 1)
        xs = x.transpose(1, 2).reshape(batch, groups, E // groups, frames)
        xf = torch.fft.rfft(xs, n=size).permute(1, 3, 2, 0)  # (g, F, Ci, B)
        yf = torch.matmul(spectrum, xf).permute(3, 0, 2, 1)  # (B, g, Co, F)
        start = k - 1 - k // 2
        y = torch.fft.irfft(yf, n=size)[..., start : start + frames]
        return y.reshape(batch, E, frames) + self.bias.to(x.dtype)[None, :, None]

    def conv_fft_blocks(self, x: torch.Tensor, spectrum: torch.Tensor, size: int) -> torch.Tensor:
        """:meth:`conv_fft` by overlap-save with transforms of length ``size``.

        ``(batch, frames, E)`` -> ``(batch, E, frames)``. Each block of ``size`` padded input
        frames gives ``size - kernel + 1`` outputs; ``spectrum`` is :meth:`_weight_spectrum`
        of that ``size``.
        """
        batch, frames, E = x.shape
        groups, k = self.groups, self.kernel_size
        step = size - k + 1
        blocks = -(-frames // step)
        left = k // 2  # so that block b starts at the output the padded correlation has first
        xs = x.transpose(1, 2).reshape(batch, groups, E // groups, frames)
        xs = F.pad(xs, (left, blocks * step + k - 1 - frames - left))
        xf = torch.fft.rfft(xs.unfold(-1, size, step), n=size)  # (B, g, Ci, blocks, F)
        bins = xf.shape[-1]
        xf = xf.permute(1, 4, 2, 0, 3).reshape(groups, bins, E // groups, batch * blocks)
        yf = torch.matmul(spectrum, xf).reshape(groups, bins, E // groups, batch, blocks)
        y = torch.fft.irfft(yf.permute(3, 0, 2, 4, 1), n=size)[..., k - 1 :]  # the valid part
        y = y.reshape(batch, E, blocks * step)[..., :frames]
        return y + self.bias.to(x.dtype)[None, :, None]

    def _weight_spectrum(self, size: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The rfft of the flipped, normalised kernel, kept while the weights are unchanged.

        ``None`` when the weights are inference tensors (then the direct convolution is used).
        """
        stamp = _stamp(self.weight_v, self.weight_g)
        if stamp is None:
            return None
        key = (size, self.weight_v.device, dtype)
        cache = self.__dict__.setdefault("_spectrum_cache", OrderedDict())
        hit = cache.get(key)
        if hit is not None and _unchanged(hit[0], stamp):
            cache.move_to_end(key)
            return hit[1]
        weight = self.weight()
        E, channels, k = weight.shape
        kernel = weight.to(dtype).flip(-1).reshape(self.groups, E // self.groups, channels, k)
        spectrum = torch.fft.rfft(kernel, n=size).permute(0, 3, 1, 2).contiguous()
        cache[key] = (stamp, spectrum)
        while len(cache) > SPECTRUM_CACHE_ENTRIES:
            cache.popitem(last=False)
        return spectrum

    def param_terms(self) -> Iterator:
        """Parameters of the weight-normalised convolution (its size never changes)."""
        E, k = self.bias.numel(), self.kernel_size
        yield from (E * (E // self.groups) * k, k, E)

    def mac_terms(self, frames: int) -> Iterator:
        """MACs of the convolution over ``frames`` frames."""
        E, k = self.bias.numel(), self.kernel_size
        output_frames = frames + 2 * (k // 2) - k + 1
        yield output_frames * E * (E // self.groups) * k


#: Window lengths whose relative position bias an eval-mode encoder keeps, and the largest
#: bias (in bytes) it keeps.
BIAS_CACHE_ENTRIES = 4
BIAS_CACHE_BYTES = 64 * 2**20


class Encoder(Counted):
    """Positional conv -> (LayerNorm) -> transformer layers sharing one relative position bias."""

    #: Whether eval mode without autograd may reuse the bias of a window length it has seen.
    cache_position_bias = True

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.config = config
        E = config.embed_dim
        self.pos_conv = PositionalConv(E, config.pos_conv_kernel, config.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.rel_attn_embed = nn.Embedding(config.num_buckets, config.num_heads)
        self.layers = ModuleList(EncoderLayer(config, i) for i in range(config.num_layers))

    def position_bias(self, num_frames: int) -> torch.Tensor:
        """The shared relative position bias, shape ``(num_heads, frames, frames)``.

        Built from the ``2T - 1`` distinct offsets, so its cost is one ``(T, T)`` gather per head.
        In eval mode without autograd (and not traced, exported or compiled) the result is kept
        per ``(frames, device, dtype)`` and reused while ``rel_attn_embed.weight`` is the same
        tensor, unmodified (at most :data:`BIAS_CACHE_ENTRIES` lengths, each under
        :data:`BIAS_CACHE_BYTES`); in training or under autograd it is built on every call. The
        cache is not part of the state dict.
        """
        if not self.cache_position_bias or not plain_inference(self):
            return self._build_position_bias(num_frames)
        weight = self.rel_attn_embed.weight
        key = (num_frames, weight.device, weight.dtype)
        stamp = _stamp(weight)
        if stamp is None:
            return self._build_position_bias(num_frames)
        cache = self.__dict__.setdefault("_bias_cache", OrderedDict())
        hit = cache.get(key)
        if hit is not None and _unchanged(hit[0], stamp):
            cache.move_to_end(key)
            return hit[1]
        bias = self._build_position_bias(num_frames)
        if bias.numel() * bias.element_size() <= BIAS_CACHE_BYTES:
            cache[key] = (stamp, bias)
            cache.move_to_end(key)
            while len(cache) > BIAS_CACHE_ENTRIES:
                cache.popitem(last=False)
        return bias

    def _build_position_bias(self, num_frames: int) -> torch.Tensor:
        cfg = self.config
        buckets = relative_offset_buckets(num_frames, cfg.num_buckets, cfg.max_distance)
        weight = self.rel_attn_embed.weight
        per_offset = self.rel_attn_embed(buckets.to(weight.device)).t()  # (heads, 2T - 1)
        positions = torch.arange(num_frames, device=weight.device)
        index = positions[None, :] - positions[:, None] + num_frames - 1  # (T, T): key - query
        # Gathered head-major, so the bias is contiguous: the per-layer head selection and the
        # gate product read it several times faster than a permuted view.
        return per_offset[:, index]

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

    # ------------------------------------------------------------------ counting
    def dims(self, count: Count) -> list:
        """The sizes of every transformer layer under ``count``."""
        return [layer.dims(count) for layer in self.layers]

    def param_terms(self, dims: list) -> Iterator:
        """Parameters with the layer sizes ``dims`` (see :meth:`dims`)."""
        yield from self.pos_conv.param_terms()
        yield from (2 * self.layer_norm.normalized_shape[0], self.rel_attn_embed.weight.numel())
        for layer, layer_dims in zip(self.layers, dims):
            yield from layer.param_terms(layer_dims)

    def mac_terms(self, frames: int, dims: list) -> Iterator:
        """MACs over ``frames`` frames with the layer sizes ``dims``."""
        yield from self.pos_conv.mac_terms(frames)
        for layer, layer_dims in zip(self.layers, dims):
            yield from layer.mac_terms(frames, layer_dims)

    # ------------------------------------------------------------------ pruning
    def kept(self) -> list[tuple[Kept, Kept]]:
        """What the masks keep of every transformer layer."""
        return [layer.kept() for layer in self.layers]

    def prune_(self, kept: list[tuple[Kept, Kept]]) -> None:
        """Prune every transformer layer to what ``kept`` says it keeps."""
        for layer, layer_kept in zip(self.layers, kept):
            layer.prune_(layer_kept)

    def shape(self) -> dict:
        """The per-layer fields of a ``WavLMConfig`` that describe the current blocks."""
        heads = [
            layer.attention.heads.tolist() if layer.attention is not None else []
            for layer in self.layers
        ]
        ffn = [
            layer.feed_forward.num_units if layer.feed_forward is not None else 0
            for layer in self.layers
        ]
        return {
            "remaining_heads": heads,
            "use_attention": [bool(h) for h in heads],
            "ffn_dim": ffn,
            "use_ffn": [f > 0 for f in ffn],
        }
