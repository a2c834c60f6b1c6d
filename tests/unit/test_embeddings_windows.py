"""One network pass per window: the same embeddings as one pass per (window, local speaker)."""

import numpy as np
import pytest

from slimdiar.errors import AudioError
from slimdiar.models.embeddings.registry import SpeakerEmbedding
from slimdiar.pipeline.embeddings import embed_speakers, embedding_masks
from slimdiar.testing import tiny_ge2e, tiny_resnet

NUM_FRAMES = 50  # segmentation frames per window (20 ms each: 1 s windows)


def meeting_like_activities(num_chunks=6, num_speakers=3, seed=0):
    """Local speaker activities with turns, overlaps, a silent speaker and a silent window."""
    rng = np.random.default_rng(seed)
    activities = np.zeros((num_chunks, NUM_FRAMES, num_speakers), dtype=np.uint8)
    for c in range(num_chunks - 1):
        for k in range(num_speakers - (c % 2)):
            start = int(rng.integers(0, NUM_FRAMES - 10))
            activities[c, start : start + int(rng.integers(8, NUM_FRAMES - start + 1)), k] = 1
    return activities  # the last window is silent; odd windows have a silent last speaker


@pytest.fixture
def resnet():
    return SpeakerEmbedding(tiny_resnet(seed=3), "tiny-resnet")


def per_pair(model):
    """Today's path: the embedding model called on (window, speaker) pairs."""
    return lambda waveforms, weights: model(waveforms, weights)


def test_resnet_window_path_matches_the_per_pair_path(resnet, one_thread):
    activities = meeting_like_activities()
    masks = embedding_masks(activities, min_clean_frames=10)
    waveforms = np.random.default_rng(1).uniform(-0.5, 0.5, (len(masks), 16000))
    waveforms = waveforms.astype(np.float32)
    assert resnet.shares_windows
    shared = embed_speakers(waveforms, masks, resnet, batch_size=4, dimension=resnet.dimension)
    pairs = embed_speakers(
        waveforms, masks, per_pair(resnet), batch_size=3, dimension=resnet.dimension
    )
    silent = masks.sum(axis=-1) == 0
    assert silent.any() and (~silent).sum() >= 8
    assert np.isnan(shared[silent]).all() and np.isnan(pairs[silent]).all()
    assert np.isfinite(shared[~silent]).all()
    np.testing.assert_allclose(shared[~silent], pairs[~silent], rtol=0, atol=1e-5)


def test_trunk_runs_once_per_window_and_pooling_once_per_active_speaker(resnet, monkeypatch):
    activities = meeting_like_activities()
    masks = embedding_masks(activities, min_clean_frames=10)
    waveforms = np.zeros((len(masks), 16000), dtype=np.float32)
    waveforms[:] = np.sin(np.arange(16000) / 7.0)
    trunk, pooled = [], []
    network = resnet.model.resnet
    forward_frames, pool = network.forward_frames, network.pool
    monkeypatch.setattr(
        network, "forward_frames", lambda fbank: trunk.append(len(fbank)) or forward_frames(fbank)
    )
    monkeypatch.setattr(
        network, "pool", lambda frames, w=None: pooled.append(len(frames)) or pool(frames, w)
    )
    embed_speakers(waveforms, masks, resnet, batch_size=4, dimension=resnet.dimension)
    num_speaking_windows = int((masks.sum(axis=(1, 2)) > 0).sum())
    assert trunk == [4, num_speaking_windows - 4]  # the silent window is not embedded
    assert sum(pooled) == int((masks.sum(axis=-1) > 0).sum())


def test_window_embeddings_are_unit_norm_and_mismatched_weights_are_an_audio_error(resnet):
    waveforms = np.random.default_rng(0).normal(0, 0.1, (2, 8000)).astype(np.float32)
    masks = np.ones((2, 3, 25), dtype=np.float32)
    masks[1, 2] = 0
    out = resnet.embed_windows(waveforms, masks)
    assert out.shape == (2, 3, resnet.dimension)
    np.testing.assert_allclose(np.linalg.norm(out[0], axis=-1), 1.0, atol=1e-5)
    assert np.isnan(out[1, 2]).all()
    with pytest.raises(AudioError, match="num_speakers"):
        resnet.embed_windows(waveforms, masks[:1])


def test_ge2e_cannot_share_and_embeds_each_pair_on_its_own():
    ge2e = SpeakerEmbedding(tiny_ge2e(), "tiny-ge2e")
    assert not ge2e.shares_windows
    activities = meeting_like_activities(num_chunks=3)
    masks = embedding_masks(activities, min_clean_frames=10)
    waveforms = np.random.default_rng(2).normal(0, 0.1, (3, 16000)).astype(np.float32)
    through_windows = ge2e.embed_windows(waveforms, masks)
    pairs = embed_speakers(waveforms, masks, ge2e, batch_size=2, dimension=ge2e.dimension)
    np.testing.assert_allclose(through_windows, pairs, rtol=0, atol=1e-6)
