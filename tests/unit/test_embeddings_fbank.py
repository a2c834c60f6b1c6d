"""Kaldi filterbank features: hand-computed properties and an independent numpy computation."""

import math

import numpy as np
import pytest
import torch

from slimdiar.errors import AudioError, ConfigError
from slimdiar.models.embeddings.fbank import (
    FbankConfig,
    analysis_window,
    cepstral_mean_normalize,
    kaldi_fbank,
    kaldi_mel_banks,
    wespeaker_fbank,
)

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def numpy_fbank(
    signal,
    *,
    num_mel_bins,
    window,
    preemphasis=0.97,
    low_hz=20.0,
    sample_rate=16000,
    use_energy=False,
    energy_floor=1.0,
):
    """Kaldi's fbank, frame by frame, written from the formulas with numpy loops."""
    frame_length, frame_shift, fft_size = 400, 160, 512
    if window == "povey":
        win = np.hanning(frame_length) ** 0.85
    elif window == "hamming":
        win = np.hamming(frame_length)
    else:
        raise ValueError(window)

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    nyquist = sample_rate / 2
    mel_low, mel_high = mel(low_hz), mel(nyquist)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    banks = np.zeros((num_mel_bins, fft_size // 2 + 1))
    for m in range(num_mel_bins):
        left, center, right = (mel_low + (m + k) * delta for k in range(3))
        for b in range(fft_size // 2):  # the Nyquist bin keeps weight 0
            f_mel = mel(b * sample_rate / fft_size)
            if left < f_mel <= center:
                banks[m, b] = (f_mel - left) / (center - left)
            elif center < f_mel < right:
                banks[m, b] = (right - f_mel) / (right - center)
    rows = []
    num_frames = 1 + (len(signal) - frame_length) // frame_shift
    for t in range(num_frames):
        frame = np.array(signal[t * frame_shift : t * frame_shift + frame_length], dtype=np.float64)
        frame = frame - frame.mean()
        energy = max(float(np.sum(frame**2)), FLOAT32_EPS)
        emphasized = frame.copy()
        for i in range(frame_length - 1, 0, -1):
            emphasized[i] = frame[i] - preemphasis * frame[i - 1]
        emphasized[0] = frame[0] - preemphasis * frame[0]
        spectrum = np.fft.rfft(emphasized * win, n=fft_size)
        energies = banks @ (np.abs(spectrum) ** 2)
        row = np.log(np.maximum(energies, FLOAT32_EPS))
        if use_energy:
            row = np.concatenate([[max(math.log(energy), math.log(energy_floor))], row])
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("window", ["povey", "hamming"])
def test_fbank_matches_independent_numpy_computation(window):
    rng = np.random.default_rng(0)
    signal = rng.normal(scale=3000.0, size=4000) + 500.0  # int16-range audio with a DC offset
    config = FbankConfig(num_mel_bins=23, window_type=window, use_energy=True)
    ours = kaldi_fbank(torch.from_numpy(signal)[None], config)[0].numpy()
    reference = numpy_fbank(signal, num_mel_bins=23, window=window, use_energy=True)
    assert ours.shape == reference.shape == (1 + (4000 - 400) // 160, 24)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9)


def test_float32_input_is_close_to_float64():
    rng = np.random.default_rng(1)
    signal = rng.uniform(-0.5, 0.5, size=(2, 3200))
    config = wespeaker_fbank()
    high = kaldi_fbank(torch.from_numpy(signal), config)
    low = kaldi_fbank(torch.from_numpy(signal).float(), config)
    assert low.dtype == torch.float32 and high.dtype == torch.float64
    np.testing.assert_allclose(low.numpy(), high.numpy(), rtol=0, atol=2e-3)


def test_frame_count_and_shape():
    config = FbankConfig()
    assert (config.window_num_samples, config.shift_num_samples, config.fft_num_samples) == (
        400,
        160,
        512,
    )
    assert [config.num_frames(n) for n in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    features = kaldi_fbank(torch.zeros(3, 16000), config)
    assert features.shape == (3, 98, 80)


def test_too_short_or_misshaped_input_is_an_audio_error():
    with pytest.raises(AudioError, match="399 samples is shorter than one 25.0 ms"):
        kaldi_fbank(torch.zeros(1, 399))
    with pytest.raises(AudioError, match=r"\(batch, num_samples\)"):
        kaldi_fbank(torch.zeros(400))


def test_constant_signal_is_removed_by_dc_removal_and_floored():
    features = kaldi_fbank(torch.full((1, 1000), 0.25, dtype=torch.float64))
    np.testing.assert_allclose(features.numpy(), math.log(FLOAT32_EPS))


def test_energy_floor_applies_to_the_energy_coefficient():
    quiet = torch.full((1, 800), 1e-3, dtype=torch.float64)
    quiet[0, ::2] = -1e-3  # tiny energy after DC removal: 400 * 1e-6
    floored = kaldi_fbank(quiet, FbankConfig(use_energy=True, energy_floor=1.0))
    unfloored = kaldi_fbank(quiet, FbankConfig(use_energy=True, energy_floor=0.0))
    np.testing.assert_allclose(floored[0, :, 0].numpy(), 0.0)
    np.testing.assert_allclose(unfloored[0, :, 0].numpy(), math.log(400 * 1e-6), rtol=1e-6)


def test_scaling_shifts_log_energies_and_cmn_removes_it():
    rng = np.random.default_rng(2)
    signal = torch.from_numpy(rng.normal(size=(1, 2000)))
    base = kaldi_fbank(signal)
    louder = kaldi_fbank(10.0 * signal)
    torch.testing.assert_close(louder - base, torch.full_like(base, 2 * math.log(10.0)))
    torch.testing.assert_close(cepstral_mean_normalize(louder), cepstral_mean_normalize(base))


def test_cmn_gives_zero_mean_over_frames():
    features = torch.randn(2, 7, 5, dtype=torch.float64) + 3.0
    normalized = cepstral_mean_normalize(features)
    torch.testing.assert_close(normalized.mean(dim=1), torch.zeros(2, 5, dtype=torch.float64))
    torch.testing.assert_close(normalized[:, 1] - normalized[:, 0], features[:, 1] - features[:, 0])


def test_sine_peaks_in_the_mel_bin_centred_nearest_its_frequency():
    config = FbankConfig(num_mel_bins=40, window_type="povey")
    time_s = np.arange(8000) / 16000
    for frequency_hz in (300.0, 1000.0, 3500.0):
        signal = torch.from_numpy(np.sin(2 * np.pi * frequency_hz * time_s))[None]
        features = kaldi_fbank(signal, config)[0]
        banks = kaldi_mel_banks(config)
        bin_hz = np.arange(banks.shape[1]) * 16000 / 512
        centres_hz = bin_hz[banks.argmax(dim=1).numpy()]
        expected = int(np.argmin(np.abs(centres_hz - frequency_hz)))
        assert abs(int(features.mean(dim=0).argmax()) - expected) <= 1


def test_mel_banks_are_triangles_on_the_kaldi_mel_scale():
    config = FbankConfig(num_mel_bins=10)
    banks = kaldi_mel_banks(config)
    assert banks.shape == (10, 257)
    assert (banks >= 0).all() and (banks <= 1).all()
    assert (banks[:, -1] == 0).all()  # Nyquist bin
    assert (banks[:, 0] == 0).all()  # 0 Hz is below the 20 Hz lower edge
    peaks = banks.argmax(dim=1)
    assert (peaks[1:] > peaks[:-1]).all()
    # neighbouring triangles cross: each bin between two centres is in at most two filters
    assert ((banks > 0).sum(dim=0) <= 2).all()


def test_windows_have_their_textbook_values():
    povey = analysis_window("povey", 400)
    hamming = analysis_window("hamming", 400)
    assert povey[0] == 0 and povey[-1] == pytest.approx(0.0, abs=1e-12)
    assert float(povey.max()) == pytest.approx(1.0, abs=1e-4)
    assert float(hamming[0]) == pytest.approx(0.08)
    assert float(hamming[-1]) == pytest.approx(0.08)
    torch.testing.assert_close(povey, povey.flip(0))


def test_dither_is_off_by_default_and_reproducible_with_a_generator():
    signal = torch.randn(1, 1200)
    assert torch.equal(kaldi_fbank(signal), kaldi_fbank(signal))
    config = FbankConfig(dither=1.0)
    first = kaldi_fbank(signal, config, generator=torch.Generator().manual_seed(3))
    again = kaldi_fbank(signal, config, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert not torch.equal(first, kaldi_fbank(signal))


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="window_type 'blackmann' is not one of povey"):
        FbankConfig(window_type="blackmann")
    with pytest.raises(ConfigError, match="dither must be >= 0"):
        FbankConfig(dither=-1.0)
    with pytest.raises(ConfigError, match="low_freq_hz"):
        FbankConfig(low_freq_hz=9000.0)


def test_wespeaker_preset():
    config = wespeaker_fbank()
    assert (config.num_mel_bins, config.window_type, config.input_scale, config.dither) == (
        80,
        "hamming",
        32768.0,
        0.0,
    )
