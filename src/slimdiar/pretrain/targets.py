"""Discrete targets of masked prediction: k-means clusters of frame features.

Iteration 1 clusters MFCC features (13 cepstra + deltas + delta-deltas, 39 values per frame);
iteration 2 clusters a hidden layer of the iteration-1 model. Both feature kinds are computed on
WavLM's own frame grid — frame ``i`` covers the receptive field of conv output ``i``, samples
``[i * step, i * step + receptive_field)`` — so a waveform of ``num_samples`` samples gets exactly
``config.num_frames(num_samples)`` targets, one per model frame.

k-means is scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans`, fitted by ``partial_fit``
on features streamed crop by crop (in file order) through a bounded buffer: the training audio is
never held in memory. Targets are then the nearest centroid of each frame (squared Euclidean
distance, as ``MiniBatchKMeans.predict``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.checkpoint import load_checkpoint, save_checkpoint
from slimdiar.models.frontend import FbankConfig, mel_filterbank
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import WavLMConfig

logger = logging.getLogger(__name__)

KMEANS_KIND = "kmeans-targets"
NUM_CEPSTRA = 13
NUM_MEL_BINS = 23
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2


def _dct_matrix(num_bins: int, num_cepstra: int) -> torch.Tensor:
    """Orthonormal DCT-II, ``(num_bins, num_cepstra)``."""
    n = torch.arange(num_bins, dtype=torch.float64)
    k = torch.arange(num_cepstra, dtype=torch.float64)
    basis = torch.cos(math.pi / num_bins * (n[:, None] + 0.5) * k[None, :])
    basis *= math.sqrt(2.0 / num_bins)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def deltas(features: torch.Tensor, window: int = DELTA_WINDOW) -> torch.Tensor:
    """Regression deltas over time, edges replicated (as Kaldi's ``add-deltas``).

    ``d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2)`` on ``(batch, frames, dim)``.
    """
    num_frames = features.shape[1]
    index = torch.arange(num_frames, device=features.device)
    out = torch.zeros_like(features)
    for n in range(1, window + 1):
        ahead = features[:, (index + n).clamp(max=num_frames - 1)]
        behind = features[:, (index - n).clamp(min=0)]
        out = out + n * (ahead - behind)
    return out / (2 * sum(n * n for n in range(1, window + 1)))


class MFCC(nn.Module):
    """39-dimensional MFCC features (13 cepstra, deltas, delta-deltas) on WavLM's frame grid.

    Per frame: DC removal, pre-emphasis 0.97, Hamming window over the receptive field (400
    samples for WavLM), 512-point power spectrum, 23 mel bands (20 Hz - 8 kHz), log, orthonormal
    DCT-II to 13 cepstra (c0 included), cepstral lifter 22; then deltas and delta-deltas over a
    window of 2 frames.

    Parameters
    ----------
    grid
        The model whose frames the features follow (its conv layer list fixes window and hop).
    """

    filters: torch.Tensor  # (fft_size // 2 + 1, 23) mel filterbank
    window: torch.Tensor  # (window_samples,) Hamming window
    dct: torch.Tensor  # (23, 13) orthonormal DCT-II
    lifter: torch.Tensor  # (13,) cepstral lifter

    def __init__(self, grid: WavLMConfig):
        super().__init__()
        self.grid = grid
        self.window_samples = grid.receptive_field_samples
        self.hop_samples = grid.frame_step_samples
        fft_size = 1 << max(0, (self.window_samples - 1).bit_length())
        bank = FbankConfig(
            num_mel_bins=NUM_MEL_BINS,
            window_samples=self.window_samples,
            hop_samples=self.hop_samples,
            fft_size=fft_size,
        )
        self.fft_size = fft_size
        self.register_buffer("filters", mel_filterbank(bank), persistent=False)
        self.register_buffer(
            "window", torch.hamming_window(self.window_samples, periodic=False), persistent=False
        )
        self.register_buffer("dct", _dct_matrix(NUM_MEL_BINS, NUM_CEPSTRA), persistent=False)
        lifter = 1.0 + CEPSTRAL_LIFTER / 2 * torch.sin(
            math.pi * torch.arange(NUM_CEPSTRA) / CEPSTRAL_LIFTER
        )
        self.register_buffer("lifter", lifter, persistent=False)

    @property
    def dim(self) -> int:
        """Values per frame (39)."""
        return 3 * NUM_CEPSTRA

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, num_samples)`` audio to ``(batch, grid.num_frames(num_samples), 39)``."""
        num_frames = self.grid.num_frames(waveforms.shape[1])
        if num_frames < 1:
            raise ConfigError(
                f"{waveforms.shape[1]} samples are shorter than one frame "
                f"({self.window_samples} samples)"
            )
        frames = waveforms.float().unfold(1, self.window_samples, self.hop_samples)
        # (batch, frames, window); the conv grid never has more frames than the window fits
        frames = frames[:, :num_frames]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        emphasised = torch.cat(
            [frames[..., :1] * (1 - PREEMPHASIS), frames[..., 1:] - PREEMPHASIS * frames[..., :-1]],
            dim=-1,
        )
        spectrum = torch.fft.rfft(emphasised * self.window, n=self.fft_size)
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = torch.log(torch.clamp(power @ self.filters, min=1e-10))
        cepstra = (log_mel @ self.dct) * self.lifter  # (batch, frames, 13)
        first = deltas(cepstra)
        return torch.cat([cepstra, first, deltas(first)], dim=-1)  # (batch, frames, 39)


class LayerFeatures(nn.Module):
    """Hidden state ``layer`` of a frozen WavLM (the layers above it are dropped).

    Parameters
    ----------
    model
        The WavLM (e.g. the iteration-1 model); it is put in eval mode and frozen.
    layer
        Index into its hidden states (0: transformer input, ``i``: output of layer ``i``).
    """

    def __init__(self, model: WavLM, layer: int):
        super().__init__()
        num_layers = len(model.encoder.layers)
        if not 1 <= layer <= num_layers:
            raise ConfigError(
                f"layer must be between 1 and the model's {num_layers} layers, got {layer}"
            )
        self.model = model
        self.layer = layer
        del self.model.encoder.layers[layer:]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def dim(self) -> int:
        """Values per frame (the model's width)."""
        return self.model.config.embed_dim

    def train(self, mode: bool = True) -> LayerFeatures:
        """Stay in eval mode: the features are those of the frozen model."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, num_samples)`` audio to ``(batch, num_frames, embed_dim)``."""
        return self.model(waveforms)[self.layer].float()


def build_features(source: str, layer: int, grid: WavLMConfig) -> nn.Module:
    """The featurizer of a target source: ``"mfcc"`` or a WavLM checkpoint path and a layer.

    Raises
    ------
    ConfigError
        If a checkpoint's frame grid differs from ``grid`` (its frames would not be the model's).
    """
    if source == "mfcc":
        return MFCC(grid)
    if not Path(source).exists():
        raise ConfigError(
            f"targets source {source!r} is neither 'mfcc' nor an existing WavLM checkpoint"
        )
    model = WavLM.from_pretrained(source)
    if model.pruning_enabled:
        raise CheckpointError(f"{source}: the target model must be a plain WavLM")
    if (model.config.frame_step_samples, model.config.receptive_field_samples) != (
        grid.frame_step_samples,
        grid.receptive_field_samples,
    ):
        raise ConfigError(
            f"{source}: its frame grid differs from the model's; targets need the same frames"
        )
    return LayerFeatures(model, layer)


def frame_valid(grid: WavLMConfig, num_samples: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(batch, num_frames)`` bool: frames that lie within each item's ``num_samples``."""
    counts = torch.tensor(
        [grid.num_frames(int(n)) for n in num_samples.tolist()], device=num_samples.device
    )
    return torch.arange(num_frames, device=num_samples.device)[None, :] < counts[:, None]


def fit_kmeans(
    features: Iterable[np.ndarray],
    num_clusters: int,
    seed: int,
    batch_frames: int = 10000,
    max_frames: int = 0,
):
    """Fit MiniBatchKMeans by ``partial_fit`` on a stream of ``(frames, dim)`` arrays.

    Frames are buffered until ``batch_frames`` (at least ``num_clusters``) are there, so the
    memory used is bounded by the buffer whatever the amount of audio.

    Parameters
    ----------
    features
        Arrays of frame features, e.g. one per crop, in a fixed order.
    num_clusters
        Number of clusters ``K``.
    seed
        ``random_state`` of the k-means: the same stream and seed give the same centroids.
    batch_frames
        Frames per ``partial_fit`` call.
    max_frames
        Stop after this many frames (0: use the whole stream).

    Returns
    -------
    sklearn.cluster.MiniBatchKMeans
        The fitted model.
    """
    from sklearn.cluster import MiniBatchKMeans

    if num_clusters < 2:
        raise ConfigError(f"num_clusters must be >= 2, got {num_clusters}")
    batch_frames = max(int(batch_frames), num_clusters)
    kmeans = MiniBatchKMeans(
        n_clusters=num_clusters,
        random_state=seed,
        batch_size=batch_frames,
        n_init=3,
        compute_labels=False,
    )
    buffer: list[np.ndarray] = []
    buffered = seen = calls = 0

    def flush() -> None:
        nonlocal buffer, buffered, calls
        kmeans.partial_fit(np.concatenate(buffer).astype(np.float64))
        buffer, buffered, calls = [], 0, calls + 1

    for array in features:
        if max_frames:
            array = array[: max_frames - seen]
        if array.shape[0] == 0:
            if max_frames and seen >= max_frames:
                break
            continue
        buffer.append(np.asarray(array, dtype=np.float32))
        buffered += array.shape[0]
        seen += array.shape[0]
        if buffered >= batch_frames:
            flush()
        if max_frames and seen >= max_frames:
            break
    if buffered >= num_clusters or (buffered and calls):
        flush()
    if calls == 0:
        raise ConfigError(
            f"only {seen} frames of features for {num_clusters} clusters; give more audio or "
            "fewer clusters"
        )
    logger.info(
        "k-means: %d clusters fitted on %d frames (%d partial fits)", num_clusters, seen, calls
    )
    return kmeans


class ClusterTargets(nn.Module):
    """Frame targets: the nearest k-means centroid of each frame's features.

    Parameters
    ----------
    features
        The featurizer (:class:`MFCC` or :class:`LayerFeatures`).
    centroids
        ``(num_clusters, dim)`` cluster centres.
    """

    centroids: torch.Tensor  # (num_clusters, dim)

    def __init__(self, features: nn.Module, centroids: torch.Tensor):
        super().__init__()
        if centroids.dim() != 2 or centroids.shape[1] != features.dim:
            raise CheckpointError(
                f"centroids of shape {tuple(centroids.shape)} do not fit features of "
                f"{features.dim} values"
            )
        self.features = features
        self.register_buffer("centroids", centroids.float())

    @property
    def num_clusters(self) -> int:
        """Number of target classes."""
        return int(self.centroids.shape[0])

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, num_samples)`` audio to ``(batch, num_frames)`` cluster indices."""
        with torch.autocast(waveforms.device.type, enabled=False):
            x = self.features(waveforms.float()).float()  # (B, T, D)
            distances = (
                x.square().sum(-1, keepdim=True)
                - 2 * x @ self.centroids.T
                + self.centroids.square().sum(-1)
            )  # (B, T, K)
        return distances.argmin(-1)


def save_centroids(directory: str | Path, centroids: np.ndarray, info: dict) -> Path:
    """Write k-means centroids (and what they were fitted on) as a checkpoint directory."""
    return save_checkpoint(
        directory,
        {"centroids": torch.from_numpy(np.asarray(centroids))},
        KMEANS_KIND,
        info,
        {"stage": "pretrain-targets"},
    )


def load_centroids(directory: str | Path) -> tuple[torch.Tensor, dict]:
    """Read what :func:`save_centroids` wrote: ``(centroids, info)``."""
    state, info, _ = load_checkpoint(directory, kind=KMEANS_KIND)
    if set(state) != {"centroids"}:
        raise CheckpointError(f"{directory}: expected one tensor 'centroids', got {sorted(state)}")
    return state["centroids"], info
