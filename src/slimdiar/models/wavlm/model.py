"""The WavLM backbone: built from a config, forward pass, loading and saving, pruning.

One implementation covers WavLM Base+, WavLM Large and every structurally pruned shape. The model
is composed of the blocks of :mod:`slimdiar.models.wavlm.components`, built from a
:class:`~slimdiar.models.wavlm.config.WavLMConfig`; each prunable block owns its hard-concrete
gates, its parameter and MAC count and its own pruning step, and this module only folds over
them (see :meth:`WavLM.enable_pruning` and :meth:`WavLM.prune`).

Numerically the forward pass follows ``transformers.WavLMModel`` (hidden states in the same order:
index 0 is the transformer input, index ``i`` the output of layer ``i``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from itertools import chain
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import AudioError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import load_state_dict_strict, save_checkpoint
from slimdiar.models.wavlm.components import (
    Encoder,
    FeatureExtractor,
    FeatureProjection,
    Gated,
    add_up,
    plain_inference,
)
from slimdiar.models.wavlm.config import DROPOUT_KEYS, WavLMConfig, preset
from slimdiar.models.wavlm.convert import read_wavlm
from slimdiar.models.wavlm.hardconcrete import HardConcrete
from slimdiar.models.wavlm.units import (
    DEFAULT_UNITS,
    Count,
    PruneResult,
    PruneUnit,
    parse_units,
    resolve_rates,
)

logger = logging.getLogger(__name__)

WAVEFORM_NORM_EPS = 1e-5


def _as_number(value) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


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


class WavLM(nn.Module):
    """WavLM backbone returning all hidden states.

    Parameters
    ----------
    config
        The architecture; see :class:`~slimdiar.models.wavlm.config.WavLMConfig`.

    Examples
    --------
    >>> m = WavLM.from_preset("wavlm-tiny")
    >>> hs = m(torch.randn(2, 16000))
    >>> len(hs), tuple(hs[0].shape)
    (3, (2, 49, 64))
    """

    #: On a CPU, in eval without autograd, a larger batch runs through the network this many
    #: inputs at a time (``None``: all at once). Every input is computed on its own, so the
    #: results are those of one pass; but a pass over 32 windows of 8 s streams every activation
    #: through memory (the first conv layer's output alone is 32 x 25 599 frames x its
    #: channels), where slices of 4 stay in cache: on a 2-core AVX2 CPU Base+ s80 took 235 ms
    #: per input at 32 in one pass and 136 ms in slices (docs/benchmarks.md, op profiles).
    cpu_batch_slice: int | None = 4

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
        """A randomly initialised model of a named preset (see :func:`~.config.preset`)."""
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
        weights = read_wavlm(path)
        model = cls(weights.config)
        load_state_dict_strict(model, weights.state_dict, Path(path), weights.file_keys)
        model.eval()
        logger.info(
            "loaded %s (%.1fM parameters) from %s",
            weights.config.name,
            model.num_params() / 1e6,
            path,
        )
        return model

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write a slimdiar checkpoint directory (gates are not saved; prune first)."""
        if self.pruning_enabled:
            raise RuntimeError(
                "this WavLM has pruning gates; call prune() and save the pruned model, or use "
                "state_dict() to checkpoint the gated model"
            )
        return save_checkpoint(
            directory, self.state_dict(), "wavlm", self.config.to_dict(), metadata
        )

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
                f"field ({minimum} samples = {minimum / SAMPLE_RATE * 1000:.0f} ms at 16 kHz)"
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
        size = self.cpu_batch_slice
        if (
            size is None
            or waveforms.dim() != 2
            or waveforms.shape[0] <= size
            or waveforms.device.type != "cpu"
            or not plain_inference(self)
        ):
            return self.encoder(self.project(waveforms))
        slices = [self.encoder(self.project(part)) for part in waveforms.split(size)]
        return [torch.cat(layer) for layer in zip(*slices, strict=True)]

    def project(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The transformer's input: ``(batch, num_samples)`` -> ``(batch, num_frames, E)``.

        Conv feature extractor and feature projection, before the positional embedding.
        """
        self.check_input(waveforms)
        if self.config.normalize_waveform:
            waveforms = self.normalize_waveform(waveforms)
        features = self.feature_extractor(waveforms)  # (B, C, T)
        # The transformer's gradient reaches the conv layers scaled (fairseq's
        # feature_grad_mult); a loss on the gates themselves (the Lagrangian) is not.
        features = scale_gradient(features, self.feature_grad_mult).transpose(1, 2)
        last_gate = (
            self.feature_extractor.conv_layers[-1].gate
            if self.feature_extractor.output_scale is None
            else None
        )
        return self.feature_projection(features, last_gate)  # (B, T, E)

    # ------------------------------------------------------------------ counting
    def num_params(self) -> int:
        """Counted parameters of the network (hard-concrete gates excluded)."""
        return sum(p.numel() for name, p in self.named_parameters() if "log_alpha" not in name)

    def count_params(self, count: Count):
        """Parameters from the architecture, the sizes counted as ``count`` says.

        An int or float for :attr:`Count.EXACT` and :attr:`Count.DETERMINISTIC`, a tensor when
        :attr:`Count.EXPECTED` meets a gate.
        """
        conv = self.feature_extractor.dims(count)
        return add_up(
            chain(
                self.feature_extractor.param_terms(conv),
                self.feature_projection.param_terms(conv[-1]),
                self.encoder.param_terms(self.encoder.dims(count)),
            )
        )

    def count_macs(self, num_samples: int, count: Count):
        """Multiply-accumulates for ``num_samples`` of audio, sizes counted as ``count`` says."""
        frames = self.config.conv_lengths(num_samples)[-1]
        conv = self.feature_extractor.dims(count)
        return add_up(
            chain(
                self.feature_extractor.mac_terms(num_samples, conv),
                self.feature_projection.mac_terms(frames, conv[-1]),
                self.encoder.mac_terms(frames, self.encoder.dims(count)),
            )
        )

    def analytic_num_params(self) -> int:
        """Parameters computed from the architecture (equals :meth:`num_params`)."""
        return int(round(_as_number(self.count_params(Count.EXACT))))

    def expected_num_params(self) -> torch.Tensor:
        """Expected parameter count under the hard-concrete gates (differentiable)."""
        value = self.count_params(Count.EXPECTED)
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    @torch.no_grad()
    def deterministic_num_params(self) -> int:
        """Parameters that :meth:`prune` will keep, from the eval-mode masks of the gates."""
        return int(round(_as_number(self.count_params(Count.DETERMINISTIC))))

    def macs(self, seconds: float = 1.0) -> int:
        """Analytic multiply-accumulates for ``seconds`` of audio (norms, softmax excluded)."""
        num_samples = int(round(seconds * SAMPLE_RATE))
        return int(round(_as_number(self.count_macs(num_samples, Count.EXACT))))

    def expected_macs(self, seconds: float = 1.0) -> torch.Tensor:
        """Expected MACs for ``seconds`` of audio under the gates (the exact count if ungated)."""
        num_samples = int(round(seconds * SAMPLE_RATE))
        value = self.count_macs(num_samples, Count.EXPECTED)
        return value if isinstance(value, torch.Tensor) else torch.tensor(float(value))

    # ------------------------------------------------------------------ pruning
    @property
    def pruning_enabled(self) -> bool:
        """Whether the model has any hard-concrete gate."""
        return any(isinstance(m, HardConcrete) for m in self.modules())

    def gates(self) -> list[HardConcrete]:
        """All hard-concrete gates of the model."""
        return [m for m in self.modules() if isinstance(m, HardConcrete)]

    def gate_parameters(self) -> list[nn.Parameter]:
        """The ``log_alpha`` of every gate (their own learning rate in the pruning recipe)."""
        return [g.log_alpha for g in self.gates()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter that is not a gate (the fixed conv output scale is not)."""
        return [
            p
            for n, p in self.named_parameters()
            if "log_alpha" not in n and n != "feature_extractor.output_scale"
        ]

    def enable_pruning(
        self,
        units: Iterable[PruneUnit | str] | None = None,
        rates: Mapping[PruneUnit | str, float] | None = None,
        *,
        conv_output_scale: bool = True,
        conv: bool | None = None,
        heads: bool | None = None,
        ffn: bool | None = None,
        attention_blocks: bool | None = None,
        ffn_blocks: bool | None = None,
        channel_drop_rate: float | None = None,
        head_drop_rate: float | None = None,
        ffn_drop_rate: float | None = None,
        block_drop_rate: float | None = None,
    ) -> WavLM:
        """Attach hard-concrete gates to the chosen units (SPEC §1.4) and return ``self``.

        Parameters
        ----------
        units
            The :class:`~slimdiar.models.wavlm.units.PruneUnit` kinds to gate (members or their
            names); default :data:`~slimdiar.models.wavlm.units.DEFAULT_UNITS` (conv channels,
            heads, FFN units).
        rates
            Initial probability that a unit of a kind is closed; the kinds not given keep
            :data:`~slimdiar.models.wavlm.units.DEFAULT_RATES`.
        conv_output_scale
            When conv channels are gated: give the model a per-channel output scale of the conv
            stack (ones, so the model computes the same) if it has none, so that the last conv
            layer's gate acts after its GELU, before the feature-projection LayerNorm, as in the
            reference recipe. ``False`` keeps a model without one gating after that LayerNorm.
        conv, heads, ffn, attention_blocks, ffn_blocks
            The keyword form of ``units``: switch one kind on or off (the first three are on
            unless switched off). Not combined with ``units``.
        channel_drop_rate, head_drop_rate, ffn_drop_rate, block_drop_rate
            The keyword form of ``rates`` (``block_drop_rate`` sets both block kinds).
        """
        chosen = _chosen_units(
            units,
            conv=conv,
            heads=heads,
            ffn=ffn,
            attention_blocks=attention_blocks,
            ffn_blocks=ffn_blocks,
        )
        resolved = resolve_rates(
            {
                **(rates or {}),
                **_keyword_rates(channel_drop_rate, head_drop_rate, ffn_drop_rate, block_drop_rate),
            }
        )
        if (
            PruneUnit.CONV in chosen
            and conv_output_scale
            and self.feature_extractor.output_scale is None
        ):
            self.config = self.config.replace(conv_output_scale=True)
            self.feature_extractor.add_output_scale()
        for block in [m for m in self.modules() if isinstance(m, Gated)]:
            block.enable_gates(chosen, resolved)
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
        conv_kept = self.feature_extractor.kept()
        layers_kept = self.encoder.kept()
        # A gateless copy, pruned in place block by block.
        small = WavLM(self.config).to(next(self.parameters()).device)
        small.load_state_dict(
            {k: v for k, v in self.state_dict().items() if "log_alpha" not in k}, strict=True
        )
        fold = small.feature_extractor.prune_(conv_kept)
        small.feature_projection.prune_(conv_kept[-1], fold)
        small.encoder.prune_(layers_kept)
        small.config = self.config.replace(
            conv_layers=small.feature_extractor.shape(),
            name=f"{self.config.name}-pruned",
            **small.encoder.shape(),
        )
        small.encoder.config = small.config
        _check_shapes(small)
        small.train(self.training)
        small.last_prune_result = PruneResult(
            conv_channels=[k.index.tolist() for k in conv_kept],
            heads=small.config.remaining_heads,
            ffn_units=[ffn.index.tolist() for _, ffn in layers_kept],
        )
        logger.info(
            "pruned WavLM: %.2fM -> %.2fM parameters",
            self.num_params() / 1e6,
            small.num_params() / 1e6,
        )
        return small


def _chosen_units(units, **switches: bool | None) -> set[PruneUnit]:
    """The units to gate from ``units`` or from the keyword switches of the same names."""
    given = {PruneUnit(name): on for name, on in switches.items() if on is not None}
    if units is not None:
        if given:
            raise ValueError("give the units either as a list or as keyword switches, not both")
        return parse_units(units)
    chosen = set(DEFAULT_UNITS)
    for unit, on in given.items():
        if on:
            chosen.add(unit)
        else:
            chosen.discard(unit)
    return chosen


def _keyword_rates(
    channel: float | None, head: float | None, ffn: float | None, block: float | None
) -> dict[PruneUnit | str, float]:
    pairs = [
        (PruneUnit.CONV, channel),
        (PruneUnit.HEADS, head),
        (PruneUnit.FFN, ffn),
        (PruneUnit.ATTENTION_BLOCKS, block),
        (PruneUnit.FFN_BLOCKS, block),
    ]
    return {unit: rate for unit, rate in pairs if rate is not None}


def _check_shapes(model: WavLM) -> None:
    """Fail unless ``model``'s weights have the shapes its config builds (keys included)."""
    with torch.device("meta"):
        reference = WavLM(model.config).state_dict()
    actual = model.state_dict()
    wrong = sorted(
        k
        for k in reference.keys() | actual.keys()
        if k not in reference or k not in actual or reference[k].shape != actual[k].shape
    )
    if wrong:
        raise RuntimeError(f"pruned WavLM does not match its config at: {', '.join(wrong)}")
