"""load_embedding_model: names, paths, checkpoint reading, and the inference interface."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.embeddings import (
    DEFAULT_EMBEDDING,
    GE2EConfig,
    GE2EEmbedding,
    SpeakerEmbedding,
    load_embedding_model,
    read_state_dict,
)
from slimdiar.models.embeddings import ge2e as ge2e_module


def tiny_ge2e(seed=0):
    torch.manual_seed(seed)
    return GE2EEmbedding(GE2EConfig(hidden_size=8, num_layers=1, embedding_dim=4)).eval()


def test_default_is_ge2e():
    assert DEFAULT_EMBEDDING == "ge2e"


def test_resnet34_by_name_asks_for_a_path():
    with pytest.raises(ConfigError, match="pass the path of its checkpoint"):
        load_embedding_model("wespeaker-resnet34")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ConfigError,
        match="neither a known embedding model nor an existing path.*ge2e.*wespeaker-resnet34",
    ):
        load_embedding_model("xvector")


def test_missing_ge2e_weights_say_how_to_install_them(monkeypatch):
    monkeypatch.setattr(ge2e_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pip install --no-deps resemblyzer"):
        load_embedding_model("ge2e")


def test_ge2e_checkpoint_by_path_and_directory(tmp_path):
    model = tiny_ge2e()
    state = dict(model.encoder.state_dict())
    state["similarity_weight"] = torch.tensor([10.0])
    state["similarity_bias"] = torch.tensor([-5.0])
    torch.save({"step": 3, "model_state": state}, tmp_path / "pretrained.pt")
    waveforms = np.random.default_rng(0).normal(scale=0.1, size=(2, 6000)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(waveforms)).numpy()
    for where in (tmp_path / "pretrained.pt", tmp_path):
        loaded = load_embedding_model(where)
        assert loaded.dimension == 4
        np.testing.assert_allclose(loaded(waveforms), expected, atol=1e-6)


def test_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file

    model = tiny_ge2e()
    save_file(dict(model.encoder.state_dict()), str(tmp_path / "model.safetensors"))
    loaded = load_embedding_model(tmp_path / "model.safetensors")
    assert isinstance(loaded.model, GE2EEmbedding)


def test_unreadable_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_state_dict(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_state_dict(tmp_path / "garbage.pt")
    torch.save({"weight": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="entries that are not tensors: epoch"):
        read_state_dict(tmp_path / "mixed.pt")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match="not a known speaker embedding checkpoint.*found encoder.weight"
    ):
        load_embedding_model(tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="directory holds none of avg_model.pt"):
        load_embedding_model(tmp_path / "empty")


def test_inference_interface_accepts_numpy_torch_and_single_waveforms():
    embedder = SpeakerEmbedding(tiny_ge2e(), "tiny")
    waveform = np.random.default_rng(1).normal(scale=0.1, size=5000).astype(np.float32)
    single = embedder(waveform)
    assert single.shape == (1, 4) and single.dtype == np.float32
    np.testing.assert_array_equal(embedder(torch.from_numpy(waveform)[None]), single)
    np.testing.assert_allclose(np.linalg.norm(single), 1.0, rtol=1e-6)
    assert (embedder.sample_rate, embedder.min_num_samples) == (16000, 400)


def test_inference_interface_rejects_bad_input():
    embedder = SpeakerEmbedding(tiny_ge2e(), "tiny")
    with pytest.raises(AudioError, match="NaN or infinite"):
        embedder(np.full((1, 4000), np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match=r"expected waveforms of shape \(batch, num_samples\)"):
        embedder(np.zeros((1, 1, 4000), dtype=np.float32))
    with pytest.raises(AudioError, match=r"weights of shape \(2, 10\) do not match"):
        embedder(np.zeros((1, 4000), dtype=np.float32), np.ones((2, 10)))


def test_importing_the_package_pulls_in_no_audio_library():
    code = (
        "import sys, slimdiar.models.embeddings as e; e.load_embedding_model; "
        "bad = [m for m in ('resemblyzer', 'librosa', 'torchaudio', 'webrtcvad') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
