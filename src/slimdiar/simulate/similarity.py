"""A simple, deterministic measure of how different two voices sound.

Each utterance is described by its long-term spectral envelope (the mean log-mel energy of its
speech frames, 24 bands up to 7.6 kHz, with the overall level removed) and its median pitch
(log2 of the fundamental frequency from frame autocorrelation). Each feature is divided by its
within-speaker standard deviation, pooled over all voices measured together, so that features that
vary from sentence to sentence count for less. The distance between two voices is the root mean
square difference of their mean feature vectors, in those within-speaker standard deviations.

A voice compared with itself (two disjoint halves of its sentences) gives the *split-half*
distance, the scale of "same speaker"; voices are counted as distinct when they are several times
farther apart than that (see :func:`select_distinct`).
"""

from __future__ import annotations

import numpy as np

from slimdiar.simulate.sources import speech_segments

NUM_MEL_BANDS = 24
FRAME_S = 0.025
HOP_S = 0.010
F0_RANGE_HZ = (60.0, 420.0)


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_filterbank(num_fft: int, sample_rate: int, num_bands: int, max_hz: float) -> np.ndarray:
    """Triangular mel filters, shape (num_bands, num_fft // 2 + 1)."""
    edges_mel = np.linspace(_mel(np.array(50.0)), _mel(np.array(max_hz)), num_bands + 2)
    edges_hz = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins_hz = np.arange(num_fft // 2 + 1) * sample_rate / num_fft
    filters = np.zeros((num_bands, bins_hz.size))
    for band in range(num_bands):
        low, centre, high = edges_hz[band : band + 3]
        rising = (bins_hz - low) / (centre - low)
        falling = (high - bins_hz) / (high - centre)
        filters[band] = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


def _frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Overlapping frames of the speech part of ``audio``, shape (num_frames, frame_length)."""
    length = round(FRAME_S * sample_rate)
    hop = round(HOP_S * sample_rate)
    segments = speech_segments(audio, sample_rate)
    pieces = [audio[start:end] for start, end in segments if end - start >= length]
    if not pieces:
        pieces = [np.pad(audio, (0, max(0, length - audio.shape[0])))]
    frames = [np.lib.stride_tricks.sliding_window_view(piece, length)[::hop] for piece in pieces]
    return np.concatenate(frames).astype(np.float64)


def utterance_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Voice features of one utterance.

    Parameters
    ----------
    audio
        Speech of one speaker, shape (num_samples,).
    sample_rate
        Samples per second (>= :data:`~slimdiar.frames.SAMPLE_RATE` for the full band).

    Returns
    -------
    numpy.ndarray
        Shape (NUM_MEL_BANDS + 1,): level-normalised mean log-mel energies in dB, then the log2
        median fundamental frequency (0 when no frame is voiced).
    """
    frames = _frames(audio, sample_rate)
    window = np.hanning(frames.shape[1])
    num_fft = 1 << int(np.ceil(np.log2(frames.shape[1])))
    power = np.abs(np.fft.rfft(frames * window, n=num_fft)) ** 2
    filters = _mel_filterbank(num_fft, sample_rate, NUM_MEL_BANDS, min(7600.0, 0.475 * sample_rate))
    log_mel = 10 * np.log10(power @ filters.T + 1e-10)
    loudness = log_mel.mean(axis=1)
    loud = loudness > loudness.max() - 30.0  # leave out near-silent frames
    envelope = log_mel[loud].mean(axis=0)
    envelope -= envelope.mean()
    return np.concatenate([envelope, [np.log2(median_f0_hz(frames[loud], sample_rate))]])


def median_f0_hz(frames: np.ndarray, sample_rate: int) -> float:
    """Median fundamental frequency of the voiced frames, in Hz (1 when none is voiced).

    Parameters
    ----------
    frames
        Frames of shape (num_frames, frame_length) covering at least two periods of the
        lowest pitch searched for.
    sample_rate
        Samples per second.
    """
    frames = frames - frames.mean(axis=1, keepdims=True)
    length = frames.shape[1]
    num_fft = 1 << int(np.ceil(np.log2(2 * length)))
    spectrum = np.fft.rfft(frames, n=num_fft)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2, n=num_fft)[:, :length]
    energy = autocorrelation[:, :1] + 1e-12
    low_lag = int(sample_rate / F0_RANGE_HZ[1])
    high_lag = min(int(sample_rate / F0_RANGE_HZ[0]), length - 1)
    window = autocorrelation[:, low_lag:high_lag] / energy
    best = np.argmax(window, axis=1)
    strength = window[np.arange(window.shape[0]), best]
    voiced = strength > 0.5
    if not np.any(voiced):
        return 1.0
    return float(np.median(sample_rate / (best[voiced] + low_lag)))


def voice_distances(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distances between voices and split-half distances of each voice with itself.

    Parameters
    ----------
    features
        Per voice an array of shape (num_utterances, num_features) (at least 2 utterances).

    Returns
    -------
    tuple of numpy.ndarray
        ``(distances, split_half)``: shape (num_voices, num_voices) and (num_voices,), in
        within-speaker standard deviations (root mean square over features).
    """
    deviations = np.concatenate([f - f.mean(axis=0) for f in features])
    dof = sum(f.shape[0] - 1 for f in features)
    scale = np.sqrt((deviations**2).sum(axis=0) / dof) + 1e-6
    means = np.stack([f.mean(axis=0) for f in features]) / scale
    differences = means[:, None, :] - means[None, :, :]
    distances = np.sqrt(np.mean(differences**2, axis=-1))
    split_half = np.array(
        [
            np.sqrt(np.mean(((f[0::2].mean(axis=0) - f[1::2].mean(axis=0)) / scale) ** 2))
            for f in features
        ]
    )
    return distances, split_half


def select_distinct(
    distances: np.ndarray, threshold: float, also_close: np.ndarray | None = None
) -> list[int]:
    """Greedily choose voices that are all farther than ``threshold`` apart.

    Voices with the fewest too-close neighbours are considered first (ties by index), the usual
    greedy heuristic for a large set in which no two members are close.

    Parameters
    ----------
    distances
        Symmetric distances, shape (num_voices, num_voices).
    threshold
        Smallest distance allowed between two chosen voices.
    also_close
        Optional boolean matrix of shape (num_voices, num_voices) marking further pairs that
        must not both be chosen (from a second measure).

    Returns
    -------
    list of int
        Indices of the chosen voices, in the order they were chosen.
    """
    close = distances <= threshold
    if also_close is not None:
        close = close | also_close
    np.fill_diagonal(close, False)
    order = sorted(range(distances.shape[0]), key=lambda i: (int(close[i].sum()), i))
    chosen: list[int] = []
    for index in order:
        if not any(close[index, other] for other in chosen):
            chosen.append(index)
    return chosen
