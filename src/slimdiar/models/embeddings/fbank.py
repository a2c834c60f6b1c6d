"""Kaldi-compatible log mel filterbank features, written in torch.

The features follow Kaldi's ``compute-fbank-feats`` (and therefore
``torchaudio.compliance.kaldi.fbank``) step by step, for a batch of equally long waveforms:

1. cut the signal into frames of ``frame_length_ms`` every ``frame_shift_ms``; only frames that
   fit entirely in the signal are kept (Kaldi's ``snip_edges=true``);
2. add Gaussian dither (``dither`` times a standard normal draw; 0 at inference);
3. remove the DC offset of each frame;
4. optionally compute the log energy of the frame (``use_energy``), floored at ``energy_floor``;
5. pre-emphasise: ``x[i] -= preemphasis * x[i - 1]``, the first sample using itself as its
   predecessor;
6. multiply by the analysis window (``povey`` is Kaldi's default, WeSpeaker uses ``hamming``);
7. zero-pad to the next power of two and take the power spectrum;
8. apply triangular filters equally spaced on Kaldi's mel scale ``1127 ln(1 + f / 700)`` between
   ``low_freq_hz`` and ``high_freq_hz``;
9. floor at the float32 machine epsilon and take the natural log.

:func:`cepstral_mean_normalize` then subtracts each utterance's mean over frames, as WeSpeaker
does before its ResNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from slimdiar.errors import AudioError, ConfigError
from slimdiar.frames import SAMPLE_RATE

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular")


@dataclass(frozen=True)
class FbankConfig:
    """Parameters of :func:`kaldi_fbank`; defaults are Kaldi's, with dither 0 for inference.

    Attributes
    ----------
    sample_rate
        Sampling rate of the input in Hz.
    num_mel_bins
        Number of triangular mel filters.
    frame_length_ms
        Analysis window length in milliseconds.
    frame_shift_ms
        Hop between frames in milliseconds.
    window_type
        One of ``"povey"``, ``"hamming"``, ``"hanning"``, ``"rectangular"``.
    preemphasis
        Pre-emphasis coefficient.
    remove_dc_offset
        Subtract each frame's mean before anything else.
    dither
        Standard deviation of the Gaussian noise added to each frame (0 turns it off).
    low_freq_hz
        Lower edge of the first mel filter in Hz.
    high_freq_hz
        Upper edge of the last mel filter in Hz; 0 or negative means Nyquist plus this value.
    use_energy
        Prepend the log energy of each frame as an extra first coefficient.
    energy_floor
        Floor applied to the energy (before the log) when ``use_energy``; 0 disables it.
    input_scale
        Factor applied to the waveform first; WeSpeaker multiplies [-1, 1] audio by 32768.
    """

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "povey"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    dither: float = 0.0
    low_freq_hz: float = 20.0
    high_freq_hz: float = 0.0
    use_energy: bool = False
    energy_floor: float = 1.0
    input_scale: float = 1.0

    def __post_init__(self):
        if self.window_type not in WINDOW_TYPES:
            raise ConfigError(
                f"window_type {self.window_type!r} is not one of {', '.join(WINDOW_TYPES)}"
            )
        if self.sample_rate <= 0 or self.num_mel_bins <= 0:
            raise ConfigError("sample_rate and num_mel_bins must be positive")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ConfigError(
                f"frame_shift_ms ({self.frame_shift_ms}) must be positive and at most "
                f"frame_length_ms ({self.frame_length_ms})"
            )
        if self.dither < 0:
            raise ConfigError(f"dither must be >= 0, got {self.dither}")
        nyquist_hz = self.sample_rate / 2
        if not 0 <= self.low_freq_hz < self.resolved_high_freq_hz <= nyquist_hz:
            raise ConfigError(
                f"need 0 <= low_freq_hz ({self.low_freq_hz}) < high frequency "
                f"({self.resolved_high_freq_hz}) <= Nyquist ({nyquist_hz})"
            )

    @property
    def window_num_samples(self) -> int:
        """Samples in one analysis window."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def shift_num_samples(self) -> int:
        """Samples between the starts of two consecutive frames."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_num_samples(self) -> int:
        """FFT size: the window length rounded up to a power of two."""
        return 1 << (self.window_num_samples - 1).bit_length()

    @property
    def resolved_high_freq_hz(self) -> float:
        """Upper edge of the filterbank in Hz, with Kaldi's non-positive offset resolved."""
        nyquist_hz = self.sample_rate / 2
        return self.high_freq_hz if self.high_freq_hz > 0 else nyquist_hz + self.high_freq_hz

    @property
    def num_features(self) -> int:
        """Coefficients per frame (mel bins, plus one with ``use_energy``)."""
        return self.num_mel_bins + int(self.use_energy)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (0 when shorter than one window)."""
        if num_samples < self.window_num_samples:
            return 0
        return 1 + (num_samples - self.window_num_samples) // self.shift_num_samples


def wespeaker_fbank() -> FbankConfig:
    """The features of the WeSpeaker ResNet models (also used by pyannote's redistribution).

    80 bins, 25 ms / 10 ms, Hamming window, no energy, no dither, audio scaled to int16 range.
    """
    return FbankConfig(num_mel_bins=80, window_type="hamming", input_scale=32768.0)


def mel_scale(frequency_hz: torch.Tensor) -> torch.Tensor:
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(frequency_hz / 700.0)


def analysis_window(window_type: str, num_samples: int) -> torch.Tensor:
    """Symmetric analysis window of Kaldi's ``feature-window.cc``.

    Returns
    -------
    window : (num_samples,) torch.Tensor, float64
    """
    if window_type not in WINDOW_TYPES:
        raise ConfigError(f"window_type {window_type!r} is not one of {', '.join(WINDOW_TYPES)}")
    phase = 2 * math.pi * torch.arange(num_samples, dtype=torch.float64) / (num_samples - 1)
    if window_type == "hanning":
        return 0.5 - 0.5 * torch.cos(phase)
    if window_type == "povey":
        return (0.5 - 0.5 * torch.cos(phase)).pow(0.85)
    if window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(phase)
    return torch.ones(num_samples, dtype=torch.float64)


def kaldi_mel_banks(config: FbankConfig) -> torch.Tensor:
    """Triangular filters on Kaldi's mel scale.

    Returns
    -------
    banks : (num_mel_bins, fft_num_samples // 2 + 1) torch.Tensor, float64
        Weight of each FFT bin in each filter; the Nyquist bin always has weight 0, as in Kaldi.
    """
    num_fft_bins = config.fft_num_samples // 2
    bin_width_hz = config.sample_rate / config.fft_num_samples
    mel_low = mel_scale(torch.tensor(config.low_freq_hz, dtype=torch.float64))
    mel_high = mel_scale(torch.tensor(config.resolved_high_freq_hz, dtype=torch.float64))
    mel_step = (mel_high - mel_low) / (config.num_mel_bins + 1)
    left = mel_low + mel_step * torch.arange(config.num_mel_bins, dtype=torch.float64)[:, None]
    center = left + mel_step
    right = center + mel_step
    fft_mel = mel_scale(bin_width_hz * torch.arange(num_fft_bins, dtype=torch.float64))[None, :]
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # (num_mel_bins, num_fft_bins) -> the Nyquist bin gets no weight
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(
    waveforms: torch.Tensor,
    config: FbankConfig | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Log mel filterbank features of a batch of waveforms, as Kaldi computes them.

    Parameters
    ----------
    waveforms : (batch, num_samples) torch.Tensor
        Equally long waveforms sampled at ``config.sample_rate``.
    config
        Feature parameters; Kaldi's defaults when omitted.
    generator
        Random generator for the dither (only used when ``config.dither > 0``).

    Returns
    -------
    features : (batch, num_frames, num_features) torch.Tensor
        float32 unless the input is float64; ``num_frames = config.num_frames(num_samples)``.

    Raises
    ------
    AudioError
        When the input is not 2-D or shorter than one analysis window.
    """
    config = config or FbankConfig()
    if waveforms.ndim != 2:
        raise AudioError(
            f"expected waveforms of shape (batch, num_samples), got {tuple(waveforms.shape)}"
        )
    num_samples = waveforms.shape[1]
    window_num_samples = config.window_num_samples
    if num_samples < window_num_samples:
        raise AudioError(
            f"{num_samples} samples is shorter than one {config.frame_length_ms} ms analysis "
            f"window ({window_num_samples} samples)"
        )
    dtype = torch.float64 if waveforms.dtype == torch.float64 else torch.float32
    signal = waveforms.to(dtype) * config.input_scale
    frames = signal.unfold(1, window_num_samples, config.shift_num_samples)
    # (batch, num_frames, window_num_samples)
    if config.dither > 0:
        noise = torch.randn(frames.shape, generator=generator, dtype=dtype)
        frames = frames + config.dither * noise.to(frames.device)
    if config.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    epsilon = torch.finfo(torch.float32).eps
    if config.use_energy:
        log_energy = frames.pow(2).sum(dim=-1).clamp(min=epsilon).log()
        if config.energy_floor > 0:
            log_energy = log_energy.clamp(min=math.log(config.energy_floor))
        # (batch, num_frames)
    if config.preemphasis != 0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - config.preemphasis * previous
    window = analysis_window(config.window_type, window_num_samples).to(frames.device, dtype)
    frames = frames * window
    padded = torch.nn.functional.pad(frames, (0, config.fft_num_samples - window_num_samples))
    power = torch.fft.rfft(padded, dim=-1).abs().pow(2)
    # (batch, num_frames, fft_num_samples // 2 + 1)
    banks = kaldi_mel_banks(config).to(power.device, dtype)
    features = torch.matmul(power, banks.T).clamp(min=epsilon).log()
    # (batch, num_frames, num_mel_bins)
    if config.use_energy:
        features = torch.cat([log_energy[..., None], features], dim=-1)
    return features


def cepstral_mean_normalize(features: torch.Tensor) -> torch.Tensor:
    """Subtract each utterance's mean over frames (no variance normalisation).

    Parameters
    ----------
    features : (batch, num_frames, num_features) torch.Tensor

    Returns
    -------
    normalized : (batch, num_frames, num_features) torch.Tensor
    """
    return features - features.mean(dim=1, keepdim=True)
