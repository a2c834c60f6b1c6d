import io
import logging

import numpy as np
import pytest
import soundfile
import torch

from slimdiar.data import audio_info, load_audio, read_audio, resample
from slimdiar.errors import AudioError


def tone(rate: int, duration_s: float, freq_hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * duration_s))) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * freq_hz * (c + 1) * t) for c in range(channels)], 1)
    return data.astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_any_rate_becomes_16k_with_the_right_length(tmp_path, rate):
    path = tmp_path / f"x{rate}.wav"
    soundfile.write(path, tone(rate, 1.5), rate, subtype="FLOAT")
    info = audio_info(path)
    assert (info.sample_rate, info.num_channels, info.num_frames) == (rate, 1, int(1.5 * rate))
    assert info.duration_s == pytest.approx(1.5)
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.shape == (24000,)
    # The 440 Hz tone survives resampling: compare with the tone generated at 16 kHz.
    expected = tone(16000, 1.5)[:, 0]
    assert np.abs(waveform[200:-200] - expected[200:-200]).max() < 2e-3


@pytest.mark.parametrize("rate", [16000, 44100, 22050, 8000])
def test_offset_read_matches_the_whole_file(tmp_path, rate):
    path = tmp_path / "x.wav"
    rng = np.random.default_rng(0)
    # band-limited noise (below 4 kHz) so that every rate represents it
    noise = resample(rng.standard_normal(8000 * 3).astype(np.float32), 8000, rate) * 0.1
    soundfile.write(path, noise, rate, subtype="FLOAT")
    whole = read_audio(path)
    part = read_audio(path, start_s=1.25, duration_s=0.5)
    assert part.shape == (8000,)
    np.testing.assert_allclose(part, whole[20000:28000], atol=1e-4)
    head = read_audio(path, start_s=0.0, duration_s=0.5)
    np.testing.assert_allclose(head, whole[:8000], atol=1e-4)


def test_resample_is_soxr_with_expected_lengths():
    x = np.zeros(44100, dtype=np.float32)
    assert resample(x, 44100).shape == (16000,)
    assert resample(x, 16000) is not None and resample(x, 16000).shape == (44100,)
    with pytest.raises(AudioError, match="sample rate must be positive"):
        resample(x, 0)


def test_stereo_channel_policy(tmp_path, caplog):
    path = tmp_path / "stereo.wav"
    left = np.full(1600, 0.25, dtype=np.float32)
    right = np.full(1600, -0.75, dtype=np.float32)
    soundfile.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="slimdiar.data.audio"):
        mono = read_audio(path)
    np.testing.assert_allclose(mono, -0.25)
    assert "downmix of 2 channels to mono" in caplog.text
    with caplog.at_level(logging.INFO, logger="slimdiar.data.audio"):
        np.testing.assert_allclose(read_audio(path, channel=0), 0.25)
        np.testing.assert_allclose(read_audio(path, channel=1), -0.75)
    assert "using channel 1 of 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slimdiar.data.audio"):
        read_audio(path, channel=1)
    assert caplog.text == ""  # each policy is logged once per file
    with pytest.raises(AudioError, match=r"channel 2 requested but the audio has 2 channel\(s\)"):
        read_audio(path, channel=2)


def test_five_channel_policy(tmp_path):
    path = tmp_path / "five.wav"
    data = np.stack([np.full(800, c / 10, dtype=np.float32) for c in range(5)], 1)
    soundfile.write(path, data, 16000, subtype="FLOAT")
    assert audio_info(path).num_channels == 5
    np.testing.assert_allclose(read_audio(path), 0.2, atol=1e-6)
    np.testing.assert_allclose(read_audio(path, channel=4), 0.4, atol=1e-6)
    with pytest.raises(AudioError, match="valid: 0..4"):
        read_audio(path, channel=5)


def test_missing_corrupt_empty_and_nan_audio(tmp_path):
    with pytest.raises(AudioError, match="no such audio file") as info:
        read_audio(tmp_path / "missing.wav")
    assert str(tmp_path / "missing.wav") in str(info.value)

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="cannot read audio") as info:
        read_audio(corrupt)
    assert str(corrupt) in str(info.value)
    with pytest.raises(AudioError, match="cannot read audio"):
        audio_info(corrupt)

    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        read_audio(empty)
    with pytest.raises(AudioError, match="empty"):
        audio_info(empty)

    bad = tmp_path / "nan.wav"
    data = np.zeros(1000, dtype=np.float32)
    data[10], data[20] = np.nan, np.inf
    soundfile.write(bad, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="2 NaN/Inf sample"):
        read_audio(bad)


def test_spans_outside_the_audio_are_errors(tmp_path):
    path = tmp_path / "x.wav"
    soundfile.write(path, tone(16000, 1.0), 16000)
    with pytest.raises(AudioError, match="requested \\[0.500, 2.000\\] s but the audio lasts"):
        read_audio(path, 0.5, 1.5)
    with pytest.raises(AudioError, match="at or after the end"):
        read_audio(path, 1.0)
    with pytest.raises(AudioError, match="invalid span"):
        read_audio(path, 0.0, 0.0)
    # a request ending within 10 ms of the end is clipped and zero-padded
    assert read_audio(path, 0.5, 0.505).shape == (8080,)


def test_load_audio_accepts_paths_file_objects_and_tuples(tmp_path):
    data = tone(22050, 0.5, channels=2)
    path = tmp_path / "x.flac"
    soundfile.write(path, data, 22050)
    from_path = load_audio(path)
    buffer = io.BytesIO(path.read_bytes())
    from_buffer = load_audio(buffer)
    np.testing.assert_allclose(from_buffer, from_path)
    from_tuple = load_audio((data.T, 22050))
    from_tensor = load_audio((torch.from_numpy(data.T.copy()), 22050), channel=1)
    assert from_tuple.shape == from_tensor.shape == (8000,)
    np.testing.assert_allclose(from_tensor, resample(data[:, 1], 22050), atol=1e-6)
    mono = data[:, 0].copy()
    loaded = load_audio((mono, 16000))
    np.testing.assert_allclose(loaded, mono)
    loaded[:] = 1.0  # the result never shares memory with the caller's array
    assert not np.allclose(mono, 1.0)
    with pytest.raises(AudioError, match="must be \\(num_samples,\\) or"):
        load_audio((np.zeros((1, 2, 3)), 16000))
    with pytest.raises(AudioError, match="NaN/Inf"):
        load_audio((np.array([0.0, np.nan]), 16000))
    with pytest.raises(AudioError, match="empty"):
        load_audio((np.zeros(0), 16000))
    with pytest.raises(AudioError, match="\\(waveform, sample_rate\\)"):
        load_audio((np.zeros(3), 16000, 1))
