"""GE2E encoder: mel features, partial utterances, masking, and Resemblyzer's pretrained weights."""

import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import soxr
import torch

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.embeddings import load_embedding_model, read_state_dict
from slimdiar.models.embeddings.ge2e import (
    GE2EConfig,
    find_pretrained_ge2e,
    hz_to_slaney_mel,
    mel_power_spectrogram,
    normalize_volume,
    partial_slices,
    slaney_mel_filterbank,
    slaney_mel_to_hz,
)
from slimdiar.testing import tiny_ge2e


def test_slaney_mel_scale_values():
    np.testing.assert_allclose(hz_to_slaney_mel([0.0, 200.0, 1000.0, 6400.0]), [0, 3, 15, 42])
    frequencies = np.array([50.0, 999.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(slaney_mel_to_hz(hz_to_slaney_mel(frequencies)), frequencies)


def test_slaney_filters_have_unit_area_and_peak_at_their_centres():
    filters = slaney_mel_filterbank(16000, 400, 40)
    assert filters.shape == (40, 201)
    assert (filters >= 0).all()
    bin_hz = 16000 / 400
    centres_hz = slaney_mel_to_hz(np.linspace(0, hz_to_slaney_mel(8000.0), 42))[1:-1]
    peaks_hz = filters.argmax(axis=1) * bin_hz
    assert np.all(np.abs(peaks_hz - centres_hz) <= bin_hz / 2 + 1e-9)
    # triangles much wider than a bin integrate to 1 (area normalisation of librosa's "slaney")
    widths_hz = slaney_mel_to_hz(np.linspace(0, hz_to_slaney_mel(8000.0), 42))
    wide = (widths_hz[2:] - widths_hz[:-2]) > 20 * bin_hz
    np.testing.assert_allclose(filters[wide].sum(axis=1) * bin_hz, 1.0, rtol=0.02)


def numpy_mel_power(signal, config):
    """Centred STFT with reflect padding and a periodic Hann window, from numpy pieces."""
    n_fft, hop = 400, 160
    padded = np.pad(signal, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    num_frames = 1 + len(signal) // hop
    power = np.stack(
        [
            np.abs(np.fft.rfft(padded[t * hop : t * hop + n_fft] * window)) ** 2
            for t in range(num_frames)
        ]
    )
    return power @ slaney_mel_filterbank(16000, n_fft, config.num_mel_bins).T


def test_mel_power_spectrogram_matches_numpy_and_has_centred_frames():
    config = GE2EConfig()
    signal = np.random.default_rng(0).normal(scale=0.1, size=4321)
    mel = mel_power_spectrogram(torch.from_numpy(signal), config)
    assert mel.shape == (1 + 4321 // 160, 40) and mel.dtype == torch.float32
    np.testing.assert_allclose(mel.numpy(), numpy_mel_power(signal, config), rtol=1e-5)


def test_tone_lands_in_the_band_around_its_frequency():
    config = GE2EConfig()
    time_s = np.arange(16000) / 16000
    mel = mel_power_spectrogram(torch.from_numpy(np.sin(2 * np.pi * 2000.0 * time_s)), config)
    band = int(mel.mean(dim=0).argmax())
    edges_hz = slaney_mel_to_hz(np.linspace(0, hz_to_slaney_mel(8000.0), 42))
    assert edges_hz[band] < 2000.0 < edges_hz[band + 2]


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [
        (16000, [(0, 160)]),  # shorter than one partial: one, zero-padded
        (48000, [(0, 160), (77, 237), (154, 314)]),  # last covers 91 %: kept
        (40000, [(0, 160), (77, 237)]),  # a third would cover 60 % (< 75 %): dropped
    ],
)
def test_partial_slices_by_hand(num_samples, expected):
    assert GE2EConfig().partial_step_num_frames == 77  # round(16000 / 1.3 / 160)
    assert partial_slices(num_samples, GE2EConfig()) == expected


def test_volume_is_raised_to_the_target_but_never_lowered():
    quiet = torch.full((1000,), 0.001)
    raised = normalize_volume(quiet, -30.0)
    assert float(raised.pow(2).mean().sqrt()) == pytest.approx(10 ** (-30 / 20), rel=1e-5)
    loud = torch.full((1000,), 0.5)
    assert torch.equal(normalize_volume(loud, -30.0), loud)
    silence = torch.zeros(1000)
    assert torch.equal(normalize_volume(silence, -30.0), silence)


def test_shapes_and_unit_norm():
    model = tiny_ge2e()
    with torch.no_grad():
        out = model(torch.randn(3, 30000) * 0.1)
    assert out.shape == (3, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert (out >= 0).all()  # ReLU before the normalisation


def test_mask_embeds_the_concatenated_selected_samples():
    model = tiny_ge2e()
    waveforms = torch.randn(2, 24000) * 0.1
    mask = torch.zeros(2, 24000)
    mask[0, 1000:9000] = 1
    mask[0, 15000:21000] = 1
    mask[1, 5000:] = 1
    with torch.no_grad():
        masked = model(waveforms, mask)
        first = model(torch.cat([waveforms[0, 1000:9000], waveforms[0, 15000:21000]])[None])
        second = model(waveforms[1:, 5000:])
    torch.testing.assert_close(masked[0], first[0])
    torch.testing.assert_close(masked[1], second[0])


def test_frame_level_mask_is_spread_uniformly_over_the_samples():
    model = tiny_ge2e()
    waveforms = torch.randn(1, 16000) * 0.1
    frame_mask = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 1, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        masked = model(waveforms, frame_mask)
        selected = torch.cat([waveforms[0, 1600:4800], waveforms[0, 8000:12800]])
        expected = model(selected[None])
    torch.testing.assert_close(masked, expected)


def test_empty_or_too_short_selection_gives_nan():
    model = tiny_ge2e()
    mask = torch.zeros(2, 8000)
    mask[1, :300] = 1  # shorter than one 400-sample window
    with torch.no_grad():
        out = model(torch.randn(2, 8000), mask)
    assert torch.isnan(out).all()


def test_mismatched_mask_is_an_audio_error():
    with pytest.raises(AudioError, match=r"weights of shape \(3, 10\) do not match"):
        tiny_ge2e()(torch.randn(2, 8000), torch.ones(3, 10))


def test_bad_partial_rate_is_a_config_error():
    with pytest.raises(ConfigError, match="partials_per_second 0.1 gives a step of 1000 frames"):
        GE2EConfig(partials_per_second=0.1)


def pretrained_path_or_skip():
    try:
        return find_pretrained_ge2e()
    except CheckpointError as error:
        pytest.skip(f"Resemblyzer's GE2E weights are not installed: {error}")


def test_pretrained_weights_load_strictly():
    path = pretrained_path_or_skip()
    state = read_state_dict(path)
    assert {k.split(".")[0] for k in state} == {
        "lstm",
        "linear",
        "similarity_weight",
        "similarity_bias",
    }
    model = load_embedding_model("ge2e")
    assert (model.dimension, model.sample_rate, model.min_num_samples) == (256, 16000, 400)
    assert model.model.config == GE2EConfig()


def espeak(voice, text, tmp_path):
    path = tmp_path / f"{voice}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True
    )
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


def test_pretrained_ge2e_tells_two_espeak_voices_apart(tmp_path):
    pretrained_path_or_skip()
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    first = espeak("en-us", "We will meet again next Tuesday to review the budget.", tmp_path)
    second = espeak("en-us", "Nobody expected the weather to change so quickly.", tmp_path)
    other = espeak("en-us+f3", "Nobody expected the weather to change so quickly.", tmp_path)
    model = load_embedding_model("ge2e")
    a, b, c = model(first), model(second), model(other)
    same, different = (a @ b.T).item(), (b @ c.T).item()
    assert same > different + 0.1, (same, different)
    assert math.isclose(float(np.linalg.norm(a)), 1.0, rel_tol=1e-5)
