"""Front-ends of the diarization model: the WavLM backbone or a log-mel filterbank.

Both front-ends look the same to :class:`~slimdiar.models.eend.EEND`: calling one on
``(batch, num_samples)`` waveforms returns a list of ``config.num_layers + 1`` hidden states of
shape ``(batch, num_frames, config.embed_dim)``, and ``config.num_frames(num_samples)`` gives the
frame count. The filterbank front-end ("no SSL" baseline) has a single hidden state and uses the
same frame grid as WavLM: 25 ms windows every 20 ms without centre padding, so 8 s give 399
frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from slimdiar.errors import AudioError, ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import WavLMConfig

FRONTENDS = ("wavlm", "fbank")


@dataclass
class FbankConfig:
    """Log-mel filterbank front-end.

    Parameters
    ----------
    num_mel_bins
        Number of mel bands.
    window_samples
        Analysis window length in samples (400: 25 ms at 16 kHz).
    hop_samples
        Samples between frames (320: 20 ms at 16 kHz).
    fft_size
        FFT length (the window is zero-padded to it).
    low_freq_hz, high_freq_hz
        Frequency range covered by the mel filters.
    embed_dim
        Width of the learnable layer's output.
    context_frames
        Kernel size (odd) of the learnable convolution over time.
    """

    num_mel_bins: int = 80
    window_samples: int = 400
    hop_samples: int = 320
    fft_size: int = 512
    low_freq_hz: float = 20.0
    high_freq_hz: float = 8000.0
    embed_dim: int = 256
    context_frames: int = 3
    name: str = dataclasses.field(default="fbank", compare=False)

    def __post_init__(self) -> None:
        if self.num_mel_bins < 1 or self.embed_dim < 1:
            raise ConfigError("num_mel_bins and embed_dim must be >= 1")
        if self.hop_samples < 1 or not 1 <= self.window_samples <= self.fft_size:
            raise ConfigError(
                f"need 1 <= window_samples ({self.window_samples}) <= fft_size "
                f"({self.fft_size}) and hop_samples ({self.hop_samples}) >= 1"
            )
        if not 0 <= self.low_freq_hz < self.high_freq_hz <= SAMPLE_RATE / 2:
            raise ConfigError(
                f"need 0 <= low_freq_hz ({self.low_freq_hz}) < high_freq_hz "
                f"({self.high_freq_hz}) <= {SAMPLE_RATE / 2}"
            )
        if self.context_frames < 1 or self.context_frames % 2 == 0:
            raise ConfigError(f"context_frames must be odd and >= 1, got {self.context_frames}")

    @property
    def num_layers(self) -> int:
        """Number of layers above the input (0: the front-end has a single hidden state)."""
        return 0

    @property
    def frame_step_samples(self) -> int:
        """Samples between two consecutive frames."""
        return self.hop_samples

    @property
    def receptive_field_samples(self) -> int:
        """Samples that one filterbank frame sees."""
        return self.window_samples

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for ``num_samples`` input samples (0 if too short)."""
        if num_samples < self.window_samples:
            return 0
        return (int(num_samples) - self.window_samples) // self.hop_samples + 1

    def to_dict(self) -> dict:
        """Plain-JSON form of this config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FbankConfig:
        """Build a config from :meth:`to_dict` output."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fbank config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


def _hz_to_mel(freq_hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq_hz / 700.0)


def mel_filterbank(config: FbankConfig) -> torch.Tensor:
    """Triangular filters, evenly spaced on the mel scale: ``(fft_size // 2 + 1, num_mel_bins)``.

    Parameters
    ----------
    config
        The front-end configuration (band count, FFT size, frequency range).

    Returns
    -------
    torch.Tensor
        Non-negative weights; each column is one filter over the FFT bins.
    """
    num_bins = config.fft_size // 2 + 1
    bin_hz = torch.arange(num_bins, dtype=torch.float64) * SAMPLE_RATE / config.fft_size
    bin_mel = _hz_to_mel(bin_hz)
    edges = torch.linspace(
        float(_hz_to_mel(torch.tensor(config.low_freq_hz, dtype=torch.float64))),
        float(_hz_to_mel(torch.tensor(config.high_freq_hz, dtype=torch.float64))),
        config.num_mel_bins + 2,
        dtype=torch.float64,
    )
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - left) / (center - left)
    falling = (right - bin_mel[:, None]) / (right - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class Fbank(nn.Module):
    """Log-mel filterbank followed by a small learnable layer.

    Features: per-frame DC removal → Hamming window → power spectrum → mel filters → log. The
    learnable layer is BatchNorm over the bands (an input normalisation learned from data) →
    Conv1d over ``context_frames`` frames (bands → ``embed_dim``) → GELU.

    Parameters
    ----------
    config
        The front-end configuration; the default gives 80 bands, 25 ms / 20 ms, width 256.
    """

    filters: torch.Tensor  # (fft_size // 2 + 1, num_mel_bins), see mel_filterbank
    window: torch.Tensor  # (window_samples,) Hamming window

    def __init__(self, config: FbankConfig | None = None):
        super().__init__()
        self.config = config or FbankConfig()
        self.register_buffer("filters", mel_filterbank(self.config), persistent=False)
        self.register_buffer(
            "window",
            torch.hamming_window(self.config.window_samples, periodic=False),
            persistent=False,
        )
        self.input_norm = nn.BatchNorm1d(self.config.num_mel_bins)
        self.conv = nn.Conv1d(
            self.config.num_mel_bins,
            self.config.embed_dim,
            self.config.context_frames,
            padding=self.config.context_frames // 2,
        )
        self.activation = nn.GELU()

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel energies.

        Parameters
        ----------
        waveforms
            ``(batch, num_samples)`` float 16 kHz audio.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, num_mel_bins)`` with ``num_frames = config.num_frames``.
        """
        if waveforms.dim() != 2:
            raise AudioError(
                f"waveforms must have shape (batch, num_samples), got {tuple(waveforms.shape)}"
            )
        if waveforms.shape[1] < self.config.window_samples:
            raise AudioError(
                f"waveforms hold {waveforms.shape[1]} samples, fewer than one analysis window "
                f"({self.config.window_samples} samples)"
            )
        frames = waveforms.float().unfold(1, self.config.window_samples, self.config.hop_samples)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        spectrum = torch.fft.rfft(frames * self.window, n=self.config.fft_size)
        power = spectrum.real.square() + spectrum.imag.square()
        return torch.log(torch.clamp(power @ self.filters, min=1e-10))

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """Compute the front-end output.

        Parameters
        ----------
        waveforms
            ``(batch, num_samples)`` float 16 kHz audio.

        Returns
        -------
        list of torch.Tensor
            One hidden state, ``(batch, num_frames, embed_dim)``.
        """
        features = self.log_mel(waveforms).transpose(1, 2)  # (batch, num_mel_bins, num_frames)
        hidden = self.activation(self.conv(self.input_norm(features)))
        return [hidden.transpose(1, 2)]


def build_backbone(
    frontend: str, wavlm: WavLMConfig | None = None, fbank: FbankConfig | None = None
) -> WavLM | Fbank:
    """Build a randomly initialised front-end.

    Parameters
    ----------
    frontend
        ``"wavlm"`` or ``"fbank"``.
    wavlm
        Architecture of the WavLM backbone (required for ``"wavlm"``).
    fbank
        Filterbank configuration (``"fbank"``; defaults to :class:`FbankConfig`).

    Returns
    -------
    WavLM or Fbank
        A module mapping ``(batch, num_samples)`` waveforms to a list of hidden states, with a
        ``config`` that has ``embed_dim``, ``num_layers`` and ``num_frames(num_samples)``.
    """
    if frontend == "wavlm":
        if wavlm is None:
            raise ConfigError("the wavlm front-end needs a WavLM config (e.g. a preset name)")
        return WavLM(wavlm)
    if frontend == "fbank":
        return Fbank(fbank)
    raise ConfigError(f"unknown front-end {frontend!r}; valid front-ends: {', '.join(FRONTENDS)}")


__all__ = [
    "FRONTENDS",
    "Fbank",
    "FbankConfig",
    "build_backbone",
    "mel_filterbank",
]
