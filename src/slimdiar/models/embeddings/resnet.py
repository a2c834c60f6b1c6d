"""WeSpeaker's ResNet speaker embedding model (ResNet34: the reference embedding of the pipeline).

The network reads 80-d log mel filterbanks (mean-normalised per utterance) as a one-channel
image (frequency x time), runs a ResNet of BasicBlocks with ``base_channels`` channels in the
first stage (doubled at each of the three strided stages), pools mean and standard deviation
over time ("TSTP") and projects them to the embedding with one linear layer (``seg_1``).

Module names follow WeSpeaker's, so its state dicts load as they are: ``conv1``, ``bn1``,
``layer{1..4}.{block}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}``, ``seg_1``. Converting the
other published layouts to this one is kept apart in :func:`to_wespeaker_layout`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_state_dict_strict
from slimdiar.models.embeddings.fbank import (
    FbankConfig,
    cepstral_mean_normalize,
    kaldi_fbank,
    wespeaker_fbank,
)

logger = logging.getLogger(__name__)

#: Prefixes under which published checkpoints nest the ResNet: pyannote's redistribution
#: (``resnet.``) and wrappers that call the network their front end (``front.``).
WRAPPER_PREFIXES = ("resnet.", "front.")
#: WeSpeaker saves its training-time classifier (the margin softmax) beside the network.
TRAINING_ONLY_PREFIXES = ("projection.",)
STD_EPSILON = 1e-7
NUM_STRIDED_STAGES = 3


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of a WeSpeaker ResNet with BasicBlocks.

    Attributes
    ----------
    num_blocks
        BasicBlocks in each of the four stages.
    base_channels
        Channels of the first stage; stages 2-4 have 2, 4 and 8 times as many.
    embedding_dim
        Size of the output embedding.
    fbank
        Input features; ``fbank.num_mel_bins`` is the input height.
    """

    num_blocks: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    base_channels: int = 32
    embedding_dim: int = 256
    fbank: FbankConfig = field(default_factory=wespeaker_fbank)

    def __post_init__(self):
        if len(self.num_blocks) != 4 or any(int(n) < 1 for n in self.num_blocks):
            raise ConfigError(f"num_blocks must be four positive counts, got {self.num_blocks}")
        if self.base_channels < 1 or self.embedding_dim < 1:
            raise ConfigError("base_channels and embedding_dim must be positive")
        if self.fbank.use_energy:
            raise ConfigError("the ResNet embedding reads mel bins only: set use_energy=False")

    @property
    def stats_dim(self) -> int:
        """Size of the pooled statistics (mean and std of every channel x frequency)."""
        frequency_bins = self.fbank.num_mel_bins // 2**NUM_STRIDED_STAGES
        return 2 * frequency_bins * self.base_channels * 2**NUM_STRIDED_STAGES

    def num_output_frames(self, num_fbank_frames: int) -> int:
        """Frames left after the three strided stages (each halves time, rounding up)."""
        for _ in range(NUM_STRIDED_STAGES):
            num_fbank_frames = (num_fbank_frames + 1) // 2
        return num_fbank_frames

    @property
    def min_num_samples(self) -> int:
        """Fewest samples that give two pooled frames, so that a standard deviation exists."""
        num_fbank_frames = 1
        while self.num_output_frames(num_fbank_frames) < 2:
            num_fbank_frames += 1
        fbank = self.fbank
        return fbank.window_num_samples + (num_fbank_frames - 1) * fbank.shift_num_samples

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> ResNetConfig:
        """Infer the architecture from a state dict in WeSpeaker's layout.

        The mel bin count cannot be read from the weights beyond a multiple of 8; 80 (every
        published model) is assumed when it fits, else the smallest count that does.
        """
        try:
            base_channels = state_dict["conv1.weight"].shape[0]
            embedding_dim, stats_dim = state_dict["seg_1.weight"].shape
        except KeyError as error:
            raise CheckpointError(
                f"not a WeSpeaker ResNet state dict: key {error.args[0]!r} is missing"
            ) from None
        num_blocks = []
        for stage in range(1, 5):
            pattern = re.compile(rf"layer{stage}\.(\d+)\.")
            indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
            if not indices:
                raise CheckpointError(f"not a WeSpeaker ResNet state dict: no layer{stage} keys")
            num_blocks.append(max(indices) + 1)
        frequency_bins, remainder = divmod(stats_dim, 2 * base_channels * 2**NUM_STRIDED_STAGES)
        if remainder or frequency_bins < 1:
            raise CheckpointError(
                f"seg_1.weight has {stats_dim} inputs, which is not 2 x 8 x {base_channels} "
                "channels x (mel bins / 8)"
            )
        default = wespeaker_fbank()
        num_mel_bins = default.num_mel_bins
        if num_mel_bins // 2**NUM_STRIDED_STAGES != frequency_bins:
            num_mel_bins = frequency_bins * 2**NUM_STRIDED_STAGES
        fbank = FbankConfig(**{**default.__dict__, "num_mel_bins": num_mel_bins})
        return cls(num_blocks, base_channels, embedding_dim, fbank)


def wespeaker_resnet34() -> ResNetConfig:
    """WeSpeaker's ResNet34 (voxceleb_resnet34_LM, pyannote/wespeaker-voxceleb-resnet34-LM)."""
    return ResNetConfig(num_blocks=[3, 4, 6, 3], base_channels=32, embedding_dim=256)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection.

    The shortcut is a strided 1x1 convolution with batch norm when the shape changes, else the
    identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, in_channels, freq, time) to (batch, out_channels, freq', time')."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def statistics_pooling(features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean and standard deviation over time, optionally weighted per frame.

    With weights, the mean is ``sum(w x) / sum(w)`` and the variance is the unbiased weighted
    variance ``sum(w (x - mean)^2) / (V1 - V2 / V1)`` with ``V1 = sum(w)``, ``V2 = sum(w^2)``;
    for 0/1 weights this is exactly the unweighted statistics of the selected frames. A small
    constant is added to the variance before the square root, as in WeSpeaker.

    Leading dimensions broadcast: features ``(batch, 1, dimension, num_frames)`` and weights
    ``(batch, num_speakers, num_frames)`` pool every speaker of a window at once.

    Parameters
    ----------
    features : (batch, dimension, num_frames) torch.Tensor
    weights : (batch, num_frames) torch.Tensor, optional
        Non-negative frame weights.

    Returns
    -------
    stats : (batch, 2 * dimension) torch.Tensor
        Means then standard deviations. A row whose weights sum to 0 is NaN.
    """
    if weights is None:
        mean = features.mean(dim=-1)
        var = (
            features.var(dim=-1, correction=1)
            if features.shape[-1] > 1
            else (torch.zeros_like(mean))
        )
    else:
        w = weights.unsqueeze(-2).to(features.dtype)
        v1 = w.sum(dim=-1)
        v2 = w.pow(2).sum(dim=-1)
        mean = (w * features).sum(dim=-1) / v1
        denominator = (v1 - v2 / v1).clamp(min=torch.finfo(features.dtype).eps)
        var = (w * (features - mean[..., None]).pow(2)).sum(dim=-1) / denominator
    return torch.cat([mean, torch.sqrt(var + STD_EPSILON)], dim=-1)


def input_features(waveforms: torch.Tensor, config: ResNetConfig) -> torch.Tensor:
    """The network's input: the mean-normalised Kaldi filterbank of ``(batch, num_samples)`` audio.

    Raises
    ------
    AudioError
        If the waveforms are shorter than ``config.min_num_samples``.
    """
    if waveforms.shape[-1] < config.min_num_samples:
        raise AudioError(
            f"{waveforms.shape[-1]} samples is too short for the ResNet embedding: it "
            f"needs at least {config.min_num_samples}"
        )
    return cepstral_mean_normalize(kaldi_fbank(waveforms, config.fbank))


class ResNet(nn.Module):
    """WeSpeaker's ResNet on filterbank features, with (optionally masked) statistics pooling."""

    # the four stages (ResNetConfig.num_blocks has four entries), added by name in __init__
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        channels = config.base_channels
        self.conv1 = nn.Conv2d(1, channels, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        in_channels = channels
        for stage, num_blocks in enumerate(config.num_blocks):
            out_channels = channels * 2**stage
            blocks = []
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride))
                in_channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.seg_1 = nn.Linear(config.stats_dim, config.embedding_dim)

    def forward_frames(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frame-level features.

        Parameters
        ----------
        fbank : (batch, num_fbank_frames, num_mel_bins) torch.Tensor

        Returns
        -------
        frames : (batch, channels * freq, num_output_frames) torch.Tensor
        """
        x = fbank.transpose(1, 2)[:, None].to(self.conv1.weight.dtype)
        # (batch, 1, num_mel_bins, num_fbank_frames), channels last: every convolution then runs
        # in oneDNN's native layout, 1.05-1.3x (float32) and 1.7-2x (bfloat16) faster on a
        # CPU, the same values to float32 rounding (docs/results/call-costs-layouts.json)
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # (batch, 8 * base_channels, num_mel_bins / 8, num_output_frames)
        return x.flatten(1, 2)

    def forward(self, fbank: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of a batch of filterbank sequences.

        Parameters
        ----------
        fbank : (batch, num_fbank_frames, num_mel_bins) torch.Tensor
        weights : (batch, num_weight_frames) torch.Tensor, optional
            Per-frame weights at any resolution, spread uniformly over the input; they are
            resampled (nearest) to the pooled frames.

        Returns
        -------
        embeddings : (batch, embedding_dim) torch.Tensor
        """
        return self.pool(self.forward_frames(fbank), weights)

    def pool(self, frames: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings from frame-level features: (weighted) statistics pooling, then ``seg_1``.

        The pooling and the projection run in the precision of ``seg_1`` (float32 when only
        the trunk is cast to bfloat16, see :meth:`ResNetEmbedding.set_compute_dtype`).

        Parameters
        ----------
        frames : (batch, dimension, num_output_frames) torch.Tensor
            From :meth:`forward_frames`.
        weights : (batch, num_weight_frames) torch.Tensor, optional
            Per-frame weights at any resolution, resampled (nearest) to the pooled frames.

        Returns
        -------
        embeddings : (batch, embedding_dim) torch.Tensor
        """
        frames = frames.to(self.seg_1.weight.dtype)
        if weights is not None:
            weights = resample_weights(weights, frames.shape[-1])
        return self.seg_1(statistics_pooling(frames, weights))


def resample_weights(weights: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Nearest-neighbour resampling of per-frame weights to ``num_frames`` frames.

    Parameters
    ----------
    weights : (batch, num_weight_frames) torch.Tensor

    Returns
    -------
    resampled : (batch, num_frames) torch.Tensor
    """
    if weights.shape[-1] == num_frames:
        return weights
    return F.interpolate(weights[:, None].float(), size=num_frames, mode="nearest")[:, 0]


class ResNetEmbedding(nn.Module):
    """Waveform to embedding: Kaldi filterbank, per-utterance mean normalisation, ResNet."""

    def __init__(self, config: ResNetConfig | None = None):
        super().__init__()
        self.config = config or wespeaker_resnet34()
        self.resnet = ResNet(self.config)

    @property
    def dimension(self) -> int:
        """Size of the embedding."""
        return self.config.embedding_dim

    @property
    def sample_rate(self) -> int:
        """Expected sampling rate in Hz."""
        return self.config.fbank.sample_rate

    @property
    def min_num_samples(self) -> int:
        """Fewest samples the model takes."""
        return self.config.min_num_samples

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Raw (not normalised) embeddings of a batch of waveforms.

        Parameters
        ----------
        waveforms : (batch, num_samples) torch.Tensor
            Audio in [-1, 1] at :attr:`sample_rate`.
        weights : (batch, num_weight_frames) torch.Tensor, optional
            Frame weights (a 0/1 mask selects frames) at any resolution covering the waveform
            uniformly, e.g. one per sample or one per segmentation frame.

        Returns
        -------
        embeddings : (batch, dimension) torch.Tensor
        """
        return self.resnet.pool(self.window_frames(waveforms), weights)

    @property
    def compute_dtype(self) -> torch.dtype:
        """Precision of the trunk."""
        return self.resnet.conv1.weight.dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> ResNetEmbedding:
        """Run the trunk (the convolutions and batch norms) in ``dtype``.

        The filterbank, the statistics pooling and the projection ``seg_1`` stay in float32:
        the pooled standard deviations and the log mel energies lose too much in 8 mantissa
        bits. Returns the model itself.
        """
        for name, module in self.resnet.named_children():
            module.to(torch.float32 if name == "seg_1" else dtype)
        return self

    def window_frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Frame-level features of whole waveforms: the filterbank and the ResNet trunk.

        The filterbank and its mean normalisation are computed in float32 (float64 for a
        float64 input), the trunk in the precision of its weights.

        Parameters
        ----------
        waveforms : (batch, num_samples) torch.Tensor

        Returns
        -------
        frames : (batch, channels * freq, num_output_frames) torch.Tensor
        """
        return self.resnet.forward_frames(input_features(waveforms, self.config))

    def embed_windows(self, waveforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Embeddings of several masked speakers per waveform, the trunk run once per waveform.

        Only the statistics pooling depends on a speaker's mask: the filterbank, its mean
        normalisation and the trunk see the whole waveform. So the embedding of speaker ``k``
        of waveform ``i`` is exactly ``self(waveforms[i:i+1], weights[i, k:k+1])``.

        Parameters
        ----------
        waveforms : (batch, num_samples) torch.Tensor
        weights : (batch, num_speakers, num_weight_frames) torch.Tensor
            Frame weights of each speaker of each waveform, at any resolution.

        Returns
        -------
        embeddings : (batch, num_speakers, dimension) torch.Tensor, float32
            NaN for a speaker whose weights are all zero (its pooling is skipped).
        """
        if weights.ndim != 3 or weights.shape[0] != waveforms.shape[0]:
            raise AudioError(
                f"weights of shape {tuple(weights.shape)} do not match waveforms of shape "
                f"{tuple(waveforms.shape)}: expected (batch, num_speakers, num_weight_frames)"
            )
        frames = self.window_frames(waveforms)
        # (batch, dimension, num_output_frames)
        window_index, speaker_index = torch.nonzero(weights.sum(dim=-1) > 0, as_tuple=True)
        embeddings = torch.full(
            (*weights.shape[:2], self.dimension), float("nan"), device=frames.device
        )
        if len(window_index):
            embeddings[window_index, speaker_index] = self.resnet.pool(
                frames[window_index], weights[window_index, speaker_index]
            )
        return embeddings

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], source: str = "<state dict>"
    ) -> ResNetEmbedding:
        """Build the model a checkpoint describes and load it strictly.

        ``state_dict`` may be in any layout :func:`to_wespeaker_layout` knows.
        """
        weights, layout = to_wespeaker_layout(state_dict)
        model = cls(ResNetConfig.from_state_dict(weights))
        load_state_dict_strict(model.resnet, weights, source)
        logger.info("loaded a %s ResNet checkpoint from %s", layout, source)
        return model.eval()


def to_wespeaker_layout(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a published ResNet state dict to WeSpeaker's own key names.

    Known layouts:

    - ``"wespeaker"``: WeSpeaker's release (``avg_model.pt``), keys as the model names them
      (``conv1.weight``, ``layer1.0.conv1.weight``, ``seg_1.weight``), possibly with the
      training-time classifier ``projection.*``, which an embedding extractor does not use and
      which is dropped;
    - ``"pyannote"``: pyannote's redistribution (``pytorch_model.bin``), the same keys under
      ``resnet.`` (``resnet.conv1.weight``, ``resnet.seg_1.weight``);
    - ``"front"``: the same keys under ``front.``.

    Keys outside these patterns are kept as they are, so that strict loading reports them.

    Returns
    -------
    state_dict
        The renamed tensors.
    layout
        The name of the layout found.
    """
    layout = "wespeaker"
    for prefix in WRAPPER_PREFIXES:
        if f"{prefix}conv1.weight" in state_dict:
            layout = "pyannote" if prefix == "resnet." else prefix.rstrip(".")
            state_dict = {
                (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()
            }
            break
    dropped = [k for k in state_dict if k.startswith(TRAINING_ONLY_PREFIXES)]
    if dropped:
        logger.info("dropping the training-only classifier keys %s", ", ".join(sorted(dropped)))
        state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    return state_dict, layout
