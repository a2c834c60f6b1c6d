"""Resemblyzer's GE2E speaker encoder, the embedding whose trained weights work offline.

The encoder was trained with the GE2E loss (Wan et al., "Generalized End-to-End Loss for
Speaker Verification", ICASSP 2018).

An utterance is turned into a 40-band mel power spectrogram (25 ms Hann windows every 10 ms at
16 kHz, Slaney-style mel filters as librosa builds them, no log), cut into partial utterances
of 160 frames (1.6 s) about 1.3 times per second; a 3-layer LSTM reads each partial, the last
hidden state goes through ``Linear(256 -> 256)`` and a ReLU and is L2-normalised; the utterance
embedding is the L2-normalised mean of its partial embeddings.

The trained weights ship inside the ``resemblyzer`` wheel as ``resemblyzer/pretrained.pt``.
Only that file is read (with ``torch.load(weights_only=True)``): the package is not imported
and its dependencies are not needed; ``pip install --no-deps resemblyzer`` is enough.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import load_state_dict_strict

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
INSTALL_HINT = "pip install --no-deps resemblyzer"
#: Parameters of the GE2E loss (the similarity scale and offset), unused at inference.
TRAINING_ONLY_KEYS = ("similarity_weight", "similarity_bias")
NORM_EPSILON = 1e-12


@dataclass(frozen=True)
class GE2EConfig:
    """Features, network and partial-utterance parameters of the GE2E encoder.

    Attributes
    ----------
    sample_rate
        Input sampling rate in Hz.
    num_mel_bins
        Mel bands of the input spectrogram.
    window_ms
        STFT window (and FFT) length in milliseconds.
    hop_ms
        STFT hop in milliseconds.
    hidden_size
        LSTM width.
    num_layers
        Stacked LSTM layers.
    embedding_dim
        Size of the embedding.
    partial_num_frames
        Spectrogram frames in one partial utterance.
    partials_per_second
        How many partial utterances start per second of audio.
    min_partial_coverage
        The last partial is kept only if at least this fraction of it is real audio (unless it
        is the only one).
    target_dbfs
        Quieter inputs are amplified to this RMS level (in dB re. full scale); louder ones are
        left as they are.
    """

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    hidden_size: int = 256
    num_layers: int = 3
    embedding_dim: int = 256
    partial_num_frames: int = 160
    partials_per_second: float = 1.3
    min_partial_coverage: float = 0.75
    target_dbfs: float = -30.0

    def __post_init__(self):
        if not 0 < self.min_partial_coverage <= 1:
            raise ConfigError(
                f"min_partial_coverage must be in (0, 1], got {self.min_partial_coverage}"
            )
        if not 0 < self.partial_step_num_frames <= self.partial_num_frames:
            raise ConfigError(
                f"partials_per_second {self.partials_per_second} gives a step of "
                f"{self.partial_step_num_frames} frames; it must be between 1 and "
                f"partial_num_frames ({self.partial_num_frames})"
            )

    @property
    def window_num_samples(self) -> int:
        """Samples in one STFT window (also the FFT size)."""
        return int(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_num_samples(self) -> int:
        """Samples between two spectrogram frames."""
        return int(self.sample_rate * self.hop_ms / 1000)

    @property
    def partial_step_num_frames(self) -> int:
        """Frames between the starts of two partial utterances."""
        return int(round(self.sample_rate / self.partials_per_second / self.hop_num_samples))


def resemblyzer_ge2e() -> GE2EConfig:
    """The configuration of Resemblyzer's pretrained encoder."""
    return GE2EConfig()


def hz_to_slaney_mel(frequency_hz: npt.ArrayLike) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.

    3 mels per 200 Hz up to 1 kHz (15 mels), then 27 mels per factor 6.4 in frequency.
    """
    frequency_hz = np.asarray(frequency_hz, dtype=np.float64)
    linear = frequency_hz * 3.0 / 200.0
    log_step = math.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(frequency_hz, 1e-10) / 1000.0) / log_step
    return np.where(frequency_hz >= 1000.0, logarithmic, linear)


def slaney_mel_to_hz(mel: npt.ArrayLike) -> np.ndarray:
    """Inverse of :func:`hz_to_slaney_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def slaney_mel_filterbank(
    sample_rate: int,
    num_fft: int,
    num_mel_bins: int,
    low_hz: float = 0.0,
    high_hz: float | None = None,
) -> np.ndarray:
    """Triangular filters equally spaced on the Slaney mel scale, with unit area in Hz.

    This is the filterbank ``librosa.filters.mel`` builds with its defaults (``htk=False``,
    ``norm="slaney"``): filter ``m`` rises from mel point ``m`` to ``m + 1`` and falls to
    ``m + 2`` (points equally spaced in mel between ``low_hz`` and ``high_hz``), evaluated at the
    FFT bin frequencies and scaled by ``2 / (f[m + 2] - f[m])``.

    Returns
    -------
    filters : (num_mel_bins, num_fft // 2 + 1) np.ndarray, float64
    """
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    fft_hz = np.linspace(0.0, sample_rate / 2, num_fft // 2 + 1)
    mel_points = np.linspace(hz_to_slaney_mel(low_hz), hz_to_slaney_mel(high_hz), num_mel_bins + 2)
    points_hz = slaney_mel_to_hz(mel_points)
    lower, center, upper = points_hz[:-2, None], points_hz[1:-1, None], points_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (center - lower)
    falling = (upper - fft_hz[None, :]) / (upper - center)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (upper - lower))


def mel_power_spectrogram(waveform: torch.Tensor, config: GE2EConfig) -> torch.Tensor:
    """The encoder's input: mel-filtered power spectrogram (not log) of one waveform.

    Frames are centred: the signal is reflect-padded by half a window on both sides, so that
    there are ``1 + num_samples // hop`` frames; each is multiplied by a periodic Hann window.

    Parameters
    ----------
    waveform : (num_samples,) torch.Tensor
        At least half a window plus one sample long.

    Returns
    -------
    mel : (num_frames, num_mel_bins) torch.Tensor, float32
    """
    num_fft = config.window_num_samples
    half = num_fft // 2
    if waveform.shape[-1] <= half:
        raise AudioError(
            f"{waveform.shape[-1]} samples is too short for the GE2E spectrogram: it needs "
            f"more than {half}"
        )
    signal = waveform.to(torch.float64)
    padded = F.pad(signal[None, None], (half, half), mode="reflect")[0, 0]
    frames = padded.unfold(0, num_fft, config.hop_num_samples)
    # (num_frames, num_fft)
    window = torch.hann_window(num_fft, periodic=True, dtype=torch.float64, device=frames.device)
    power = torch.fft.rfft(frames * window, dim=-1).abs().pow(2)
    # (num_frames, num_fft // 2 + 1)
    filters = torch.from_numpy(
        slaney_mel_filterbank(config.sample_rate, num_fft, config.num_mel_bins)
    ).to(power.device)
    return (power @ filters.T).to(torch.float32)


def partial_slices(num_samples: int, config: GE2EConfig) -> list[tuple[int, int]]:
    """Where the partial utterances of an utterance lie, in spectrogram frames.

    Partials of ``partial_num_frames`` frames start every ``partial_step_num_frames`` frames
    until they cover the utterance; the last one is dropped when less than
    ``min_partial_coverage`` of it holds audio, unless it is the only one.

    Returns
    -------
    slices
        ``(start_frame, end_frame)`` pairs; end frames may lie beyond the audio (it is
        zero-padded up to ``slices[-1][1] * hop`` samples).
    """
    hop = config.hop_num_samples
    length = config.partial_num_frames
    step = config.partial_step_num_frames
    num_frames = math.ceil((num_samples + 1) / hop)
    last_start_bound = max(1, num_frames - length + step + 1)
    slices = [(start, start + length) for start in range(0, last_start_bound, step)]
    last_start, last_end = slices[-1]
    coverage = (num_samples - last_start * hop) / ((last_end - last_start) * hop)
    if coverage < config.min_partial_coverage and len(slices) > 1:
        slices.pop()
    return slices


def normalize_volume(waveform: torch.Tensor, target_dbfs: float) -> torch.Tensor:
    """Amplify a quiet waveform to ``target_dbfs`` RMS; louder or silent ones are unchanged.

    Parameters
    ----------
    waveform : (num_samples,) torch.Tensor
    """
    rms = waveform.to(torch.float64).pow(2).mean().sqrt()
    target_rms = 10.0 ** (target_dbfs / 20.0)
    if 0 < rms < target_rms:
        return waveform * (target_rms / rms).to(waveform.dtype)
    return waveform


class GE2EEncoder(nn.Module):
    """LSTM speaker encoder: mel partials to L2-normalised partial embeddings."""

    def __init__(self, config: GE2EConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            config.num_mel_bins, config.hidden_size, config.num_layers, batch_first=True
        )
        self.linear = nn.Linear(config.hidden_size, config.embedding_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """Embed a batch of partial utterances.

        Parameters
        ----------
        mels : (batch, num_frames, num_mel_bins) torch.Tensor

        Returns
        -------
        embeddings : (batch, embedding_dim) torch.Tensor
            Non-negative, unit L2 norm.
        """
        _, (hidden, _) = self.lstm(mels)
        # hidden: (num_layers, batch, hidden_size)
        embeddings = F.relu(self.linear(hidden[-1]))
        return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp(min=NORM_EPSILON)


class GE2EEmbedding(nn.Module):
    """Waveform to utterance embedding with the GE2E encoder.

    With a mask, the embedding of an item is, by definition, the embedding of the samples the
    mask selects, concatenated in order.
    """

    def __init__(self, config: GE2EConfig | None = None):
        super().__init__()
        self.config = config or resemblyzer_ge2e()
        self.encoder = GE2EEncoder(self.config)

    @property
    def dimension(self) -> int:
        """Size of the embedding."""
        return self.config.embedding_dim

    @property
    def sample_rate(self) -> int:
        """Expected sampling rate in Hz."""
        return self.config.sample_rate

    @property
    def min_num_samples(self) -> int:
        """Fewest samples the model takes: one analysis window."""
        return self.config.window_num_samples

    @property
    def compute_dtype(self) -> torch.dtype:
        """Precision of the LSTM encoder."""
        return self.encoder.linear.weight.dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> GE2EEmbedding:
        """Run the LSTM encoder in ``dtype``; the spectrogram and the averaging stay float32."""
        self.encoder.to(dtype)
        return self

    def embed_utterance(self, waveform: torch.Tensor) -> torch.Tensor:
        """Embedding of one utterance.

        Parameters
        ----------
        waveform : (num_samples,) torch.Tensor

        Returns
        -------
        embedding : (embedding_dim,) torch.Tensor
        """
        return self._embed_many([waveform])[0]

    def _embed_many(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        hop = self.config.hop_num_samples
        partials: list[torch.Tensor] = []
        owners: list[int] = []
        for index, waveform in enumerate(waveforms):
            waveform = normalize_volume(waveform, self.config.target_dbfs)
            slices = partial_slices(waveform.shape[-1], self.config)
            padded_num_samples = slices[-1][1] * hop
            if padded_num_samples >= waveform.shape[-1]:
                waveform = F.pad(waveform, (0, padded_num_samples - waveform.shape[-1]))
            mel = mel_power_spectrogram(waveform, self.config)
            # (num_frames, num_mel_bins)
            partials.extend(mel[start:end] for start, end in slices)
            owners.extend([index] * len(slices))
        partial_embeddings = self.encoder(torch.stack(partials).to(self.compute_dtype)).float()
        # (num_partials, embedding_dim)
        owner_index = torch.tensor(owners, device=partial_embeddings.device)
        sums = torch.zeros(
            len(waveforms), self.dimension, device=partial_embeddings.device
        ).index_add_(0, owner_index, partial_embeddings)
        return sums / sums.norm(dim=-1, keepdim=True).clamp(min=NORM_EPSILON)

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of a batch of waveforms, optionally restricted to masked samples.

        Parameters
        ----------
        waveforms : (batch, num_samples) torch.Tensor
            Audio in [-1, 1] at :attr:`sample_rate`.
        weights : (batch, num_weight_frames) torch.Tensor, optional
            Mask at any resolution covering the waveform uniformly (one value per sample, or
            per segmentation frame); it is resampled to samples (nearest) and the samples where
            it exceeds 0.5 are kept.

        Returns
        -------
        embeddings : (batch, dimension) torch.Tensor
            Unit L2 norm; NaN for an item whose selection is shorter than
            :attr:`min_num_samples`.
        """
        if waveforms.ndim != 2:
            raise AudioError(
                f"expected waveforms of shape (batch, num_samples), got {tuple(waveforms.shape)}"
            )
        selections = list(waveforms)
        if weights is not None:
            if weights.ndim != 2 or weights.shape[0] != waveforms.shape[0]:
                raise AudioError(
                    f"weights of shape {tuple(weights.shape)} do not match waveforms of shape "
                    f"{tuple(waveforms.shape)}: expected (batch, num_weight_frames)"
                )
            mask = weights
            if mask.shape[-1] != waveforms.shape[-1]:
                mask = F.interpolate(
                    weights[:, None].float(), size=waveforms.shape[-1], mode="nearest"
                )[:, 0]
            selections = [waveform[keep > 0.5] for waveform, keep in zip(waveforms, mask)]
        embeddings = torch.full(
            (len(selections), self.dimension), float("nan"), device=waveforms.device
        )
        usable = [i for i, s in enumerate(selections) if s.shape[-1] >= self.min_num_samples]
        if len(usable) < len(selections):
            logger.debug(
                "%d of %d selections are shorter than %d samples: NaN embeddings",
                len(selections) - len(usable),
                len(selections),
                self.min_num_samples,
            )
        if usable:
            embeddings[usable] = self._embed_many([selections[i] for i in usable])
        return embeddings

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], source: str = "<state dict>"
    ) -> GE2EEmbedding:
        """Build the encoder a checkpoint describes and load it strictly.

        The GE2E loss parameters (``similarity_weight``, ``similarity_bias``) are dropped.
        """
        weights = {k: v for k, v in state_dict.items() if k not in TRAINING_ONLY_KEYS}
        try:
            num_mel_bins = weights["lstm.weight_ih_l0"].shape[1]
            hidden_size = weights["lstm.weight_hh_l0"].shape[1]
            embedding_dim = weights["linear.weight"].shape[0]
        except KeyError as error:
            raise CheckpointError(
                f"{source}: not a GE2E encoder state dict: key {error.args[0]!r} is missing"
            ) from None
        num_layers = sum(1 for k in weights if k.startswith("lstm.weight_ih_l"))
        config = GE2EConfig(
            num_mel_bins=num_mel_bins,
            hidden_size=hidden_size,
            num_layers=num_layers,
            embedding_dim=embedding_dim,
        )
        model = cls(config)
        load_state_dict_strict(model.encoder, weights, source)
        return model.eval()


def find_pretrained_ge2e() -> Path:
    """Path of Resemblyzer's pretrained weights, found without importing the package.

    Raises
    ------
    CheckpointError
        When the ``resemblyzer`` wheel is not installed or lacks the file; the message says how
        to install it.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise CheckpointError(
        f"the GE2E weights ({WEIGHTS_PACKAGE}/{WEIGHTS_FILE}) are not installed{where}; "
        f"install them with: {INSTALL_HINT}"
    )
