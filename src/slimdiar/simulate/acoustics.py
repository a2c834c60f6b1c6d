"""Noise, reverberation and levels for simulated recordings."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def white_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise of unit variance, shape (num_samples,)."""
    return rng.standard_normal(num_samples)


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f power spectrum, normalised to unit variance, shape (num_samples,).

    White Gaussian noise is shaped in the frequency domain by ``1 / sqrt(f)`` (the DC bin is
    set to zero).
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    frequencies = np.arange(spectrum.shape[0], dtype=float)
    frequencies[0] = np.inf
    noise = np.fft.irfft(spectrum / np.sqrt(frequencies), n=num_samples)
    return noise / (np.std(noise) + 1e-12)


def babble_noise(
    utterances: list[np.ndarray], num_samples: int, num_streams: int, rng: np.random.Generator
) -> np.ndarray:
    """Several streams of speech summed into babble, normalised to unit variance.

    Each stream concatenates utterances drawn from ``utterances`` (each brought to unit RMS)
    until it covers ``num_samples``, starting at a random offset.

    Parameters
    ----------
    utterances
        Speech of speakers that are not in the recording, each of shape (length,).
    num_samples
        Length of the babble.
    num_streams
        Number of simultaneous talkers.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        Shape (num_samples,).
    """
    babble = np.zeros(num_samples)
    for _ in range(num_streams):
        pieces, total = [], 0
        while total < num_samples + 1:
            piece = utterances[int(rng.integers(len(utterances)))].astype(np.float64)
            piece = piece / (np.sqrt(np.mean(piece**2)) + 1e-12)
            pieces.append(piece)
            total += piece.shape[0]
        stream = np.concatenate(pieces)
        offset = int(rng.integers(total - num_samples))
        babble += stream[offset : offset + num_samples]
    return babble / (np.std(babble) + 1e-12)


def synthetic_rir(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: a direct path and an exponentially decaying tail.

    The tail is Gaussian noise under an envelope that decays by 60 dB in ``rt60_s``; it starts
    after a short random pre-delay (2-10 ms, the first reflections) at a random
    direct-to-reverberant ratio. The direct path is the first sample, so convolving keeps speech
    aligned with its labels.

    Parameters
    ----------
    rt60_s
        Reverberation time in seconds.
    sample_rate
        Samples per second.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        Impulse response of shape (length,), ``length = rt60_s * sample_rate``, first sample 1.
    """
    num_samples = max(2, round(rt60_s * sample_rate))
    time_s = np.arange(num_samples) / sample_rate
    envelope = 10.0 ** (-3.0 * time_s / rt60_s)  # -60 dB at rt60_s
    tail = rng.standard_normal(num_samples) * envelope
    tail[: max(1, round(rng.uniform(0.002, 0.010) * sample_rate))] = 0.0
    direct_to_reverberant_db = rng.uniform(0.0, 8.0)
    tail *= 10 ** (-direct_to_reverberant_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    response = tail
    response[0] = 1.0
    return response


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Convolve ``audio`` (shape (num_samples,)) with ``response``, keeping its length."""
    return fftconvolve(audio, response, mode="full")[: audio.shape[0]]


def rms(audio: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean square of ``audio`` (shape (num_samples,)), over ``mask`` when given."""
    values = audio if mask is None else audio[mask]
    if values.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))


def scale_noise_to_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_mask: np.ndarray
) -> np.ndarray:
    """Scale ``noise`` so that speech over ``speech_mask`` is ``snr_db`` above it.

    Parameters
    ----------
    speech
        Speech, shape (num_samples,).
    noise
        Noise, shape (num_samples,).
    snr_db
        Wanted signal-to-noise ratio in dB.
    speech_mask
        Boolean mask of shape (num_samples,) of the samples where someone speaks.

    Returns
    -------
    numpy.ndarray
        The scaled noise, shape (num_samples,).
    """
    speech_level = rms(speech, speech_mask)
    noise_level = rms(noise)
    if speech_level == 0 or noise_level == 0:
        return np.zeros_like(noise)
    return noise * (speech_level / noise_level) * 10 ** (-snr_db / 20)
