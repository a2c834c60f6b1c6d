"""Self-supervised pretraining: targets, masking, mixing, the objective and the stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slimdiar.cli import main
from slimdiar.config import load_config
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import preset
from slimdiar.pretrain import (
    MFCC,
    ClusterTargets,
    CropDataset,
    expected_mask_fraction,
    fit_kmeans,
    list_audio,
    mix_utterances,
    span_mask,
)
from slimdiar.pretrain.objective import MaskedPredictionObjective, masked_hidden_states
from slimdiar.stages.pretrain import PretrainConfig, fit_targets
from slimdiar.testing import tone_sequence

CONFIG = "pretrain-tiny"


def tiny_config(**overrides) -> PretrainConfig:
    sets = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(PretrainConfig, CONFIG, sets)


# ---------------------------------------------------------------------------------- data
def test_audio_sources_directory_tree_and_wav_scp(pretrain_corpus, tmp_path):
    train, _ = pretrain_corpus
    files = list_audio(train)
    assert len(files) == 6 and all(f.suffix == ".wav" for f in files)
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"u{i} {f}\n" for i, f in enumerate(files[:3])))
    assert list_audio(scp) == files[:3]
    dataset = CropDataset(train, 2.0, 1.0)
    assert len(dataset) == 6 * 3  # starts 0, 1, 2 s in 4 s files
    item = dataset[1]
    assert item["waveform"].shape == (32000,) and item["num_samples"] == 32000
    short = CropDataset(train, 6.0, 6.0)  # longer than the files: one padded crop
    assert len(short) == 6 and short[0]["num_samples"] == 64000
    assert short[0]["waveform"].shape == (96000,) and not short[0]["waveform"][64000:].any()
    with pytest.raises(ConfigError, match="no audio file"):
        list_audio(tmp_path)
    with pytest.raises(ConfigError, match="no such"):
        list_audio(tmp_path / "missing")


# ---------------------------------------------------------------------------------- targets
def test_mfcc_has_one_frame_per_model_frame():
    grid = preset("wavlm-tiny")
    model = WavLM(grid).eval()
    mfcc = MFCC(grid)
    for num_samples in (400, 719, 720, 12345, 16000, 32001):
        x = torch.randn(1, num_samples)
        assert mfcc(x).shape == (1, model(x)[0].shape[1], 39)


def test_mfcc_deltas_vanish_on_a_steady_tone_and_tones_differ():
    grid = preset("wavlm-tiny")
    t = torch.arange(SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    # 450 Hz: a whole number of periods per 20 ms hop, so every frame sees the same samples and
    # deltas and delta-deltas are zero
    steady = MFCC(grid)(torch.sin(2 * math.pi * 450 * t).float()[None])[0]
    assert torch.allclose(steady[:, 13:], torch.zeros_like(steady[:, 13:]), atol=1e-3)
    assert torch.allclose(steady[0, :13], steady[-1, :13], atol=1e-3)
    low = MFCC(grid)(torch.sin(2 * math.pi * 200 * t).float()[None])[0]
    assert not torch.allclose(low[0, :13], steady[0, :13], atol=1.0)


@pytest.mark.slow
def test_kmeans_targets_are_deterministic_for_a_seed(pretrain_corpus):
    train, _ = pretrain_corpus
    config = tiny_config()
    grid = preset("wavlm-tiny")
    dataset = CropDataset(train, 2.0, 1.0)
    device = torch.device("cpu")
    a, info = fit_targets(config.targets, dataset, grid, 7, device)
    b, _ = fit_targets(config.targets, dataset, grid, 7, device)
    c, _ = fit_targets(config.targets, dataset, grid, 8, device)
    assert a.shape == (50, 39) and info["num_clusters"] == 50
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    targets = ClusterTargets(MFCC(grid), torch.from_numpy(a))
    waveforms = torch.stack([dataset[i]["waveform"] for i in range(4)])
    labels = targets(waveforms)
    assert labels.shape == (4, grid.num_frames(32000))
    assert torch.equal(labels, targets(waveforms))
    assert len(labels.unique()) > 10  # the clusters are used, not collapsed


@pytest.mark.slow
def test_nearest_centroid_agrees_with_sklearn_predict():
    rng = np.random.default_rng(0)
    stream = [rng.standard_normal((300, 39)).astype(np.float32) + k for k in range(4)]
    kmeans = fit_kmeans(iter(stream), 8, seed=0, batch_frames=250)
    features = np.concatenate(stream)
    torch_labels = ClusterTargets(_Identity(39), torch.from_numpy(kmeans.cluster_centers_))(
        torch.from_numpy(features)[None]
    )[0]
    np.testing.assert_array_equal(torch_labels.numpy(), kmeans.predict(features.astype(np.float64)))


class _Identity(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x


def test_too_few_frames_for_the_clusters_is_a_clear_error():
    with pytest.raises(ConfigError, match="fewer clusters"):
        fit_kmeans(iter([np.zeros((5, 3), np.float32)]), 10, seed=0)


# ---------------------------------------------------------------------------------- masking
def test_span_mask_fraction_matches_the_analytic_expectation():
    generator = torch.Generator().manual_seed(0)
    valid = torch.ones(400, 199, dtype=torch.bool)
    mask = span_mask(valid, 0.08, 10, generator)
    expected = expected_mask_fraction(199, 0.08, 10)
    assert 0.5 < expected < 0.6  # "about half the frames"
    assert abs(float(mask.float().mean()) - expected) < 0.01
    # spans: every masked run is at least 10 frames long
    row = mask[0].int()
    edges = torch.nonzero(torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)])))
    runs = (edges[1::2] - edges[::2]).flatten()
    assert (runs >= 10).all()


def test_span_mask_stays_inside_the_valid_frames():
    generator = torch.Generator().manual_seed(1)
    valid = torch.arange(100)[None, :] < torch.tensor([[100], [40], [5]])
    mask = span_mask(valid, 0.5, 10, generator)
    assert not (mask & ~valid).any()
    assert not mask[2].any()  # too short for one span


# ---------------------------------------------------------------------------------- denoising
def test_mixing_adds_a_scaled_segment_at_the_drawn_ratio():
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(np.stack([tone_sequence(1.0, rng) for _ in range(64)]))
    num_samples = torch.full((64,), SAMPLE_RATE)
    generator = torch.Generator().manual_seed(3)
    mixed, info = mix_utterances(clean, num_samples, 0.2, 0.25, -5.0, 20.0, 0.5, generator)
    chosen = torch.nonzero(info.mixed).flatten().tolist()
    assert 4 <= len(chosen) <= 25  # about a fifth of 64
    assert torch.equal(mixed[~info.mixed], clean[~info.mixed])
    assert (info.source[info.mixed] >= 0).any() and (info.source[info.mixed] == -1).any()
    for i in chosen:
        first, n = int(info.start[i]), int(info.length[i])
        assert 1 <= n <= SAMPLE_RATE // 2
        added = (mixed[i] - clean[i]).double()
        assert not added[:first].any() and not added[first + n :].any()
        ratio = 10 * torch.log10(
            clean[i].double().square().mean() / added[first : first + n].square().mean()
        )
        assert abs(float(ratio) - float(info.ratio_db[i])) < 0.01
        assert -5.0 <= float(info.ratio_db[i]) <= 20.0
        j = int(info.source[i])
        if j >= 0:  # a scaled piece of another utterance
            assert j != i
            k = int(info.source_start[i])
            piece = clean[j, k : k + n].double()
            segment = added[first : first + n]
            scale = segment.dot(piece) / piece.dot(piece)
            assert scale > 0 and torch.allclose(segment, scale * piece, atol=1e-5)


def test_denoising_keeps_the_targets_of_the_primary(pretrain_corpus):
    train, _ = pretrain_corpus
    config = tiny_config()
    grid = preset("wavlm-tiny")
    dataset = CropDataset(train, 2.0, 1.0)
    centroids = torch.randn(50, 39, generator=torch.Generator().manual_seed(0)).numpy()

    batch = {
        "waveform": torch.stack([dataset[i]["waveform"] for i in range(6)]),
        "num_samples": torch.full((6,), 32000),
    }
    seen = {}

    class Spy(ClusterTargets):
        def forward(self, waveforms):
            seen["input"] = waveforms.clone()
            return super().forward(waveforms)

    denoise = config.denoise
    denoise.prob = 1.0
    objective = MaskedPredictionObjective(
        WavLM(grid),
        Spy(MFCC(grid), torch.from_numpy(centroids)),
        config.masking,
        denoise,
        config.head,
        config.optim,
    )
    objective.loss(batch)
    # the targets are computed on the clean crops, before any mixing
    assert torch.equal(seen["input"], batch["waveform"])


# ---------------------------------------------------------------------------------- objective
def test_masked_frames_take_the_mask_embedding():
    grid = preset("wavlm-tiny")
    model = WavLM(grid).eval()
    x = torch.randn(2, 16000)
    plain = model(x)
    unmasked = masked_hidden_states(model, x, None, None)
    assert all(torch.allclose(a, b) for a, b in zip(plain, unmasked))
    mask = torch.zeros(2, plain[0].shape[1], dtype=torch.bool)
    mask[:, 10:20] = True
    embedding = torch.randn(grid.embed_dim)
    masked = masked_hidden_states(model, x, mask, embedding)
    assert not torch.allclose(masked[-1], plain[-1])
    # the two utterances differ everywhere else, but their masked frames enter equal
    projected = model.feature_projection(model.feature_extractor(x).transpose(1, 2), None)
    projected = torch.where(mask[..., None], embedding, projected)
    assert torch.allclose(model.encoder(projected)[-1], masked[-1], atol=1e-6)
    with pytest.raises(ConfigError, match="need a mask_embedding"):
        masked_hidden_states(model, x, mask, None)


def test_cli_refuses_a_used_directory_and_bad_settings(pretrain_corpus, tmp_path, capsys):
    train, dev = pretrain_corpus
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "metrics.jsonl").write_text("")
    assert (
        main(["pretrain", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "exp")])
        == 2
    )
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                "--train",
                str(train),
                "--dev",
                str(dev),
                "--out",
                str(tmp_path / "x"),
                "--layer",
                "2",
            ]
        )
        == 2
    )
    assert "--targets-from" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain",
                "--train",
                str(train),
                "--dev",
                str(dev),
                "--out",
                str(tmp_path / "y"),
                "--set",
                "masking.prob=1.5",
            ]
        )
        == 2
    )
    assert "masking" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
