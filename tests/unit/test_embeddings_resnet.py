"""WeSpeaker ResNet embedding: architecture, masked pooling, both published checkpoint layouts."""

import numpy as np
import pytest
import torch

from slimdiar.errors import AudioError, CheckpointError
from slimdiar.models.embeddings import load_embedding_model
from slimdiar.models.embeddings.registry import InertGlobal, torch_load_inert
from slimdiar.models.embeddings.resnet import (
    ResNetConfig,
    ResNetEmbedding,
    statistics_pooling,
    to_wespeaker_layout,
    wespeaker_resnet34,
)
from slimdiar.testing import tiny_resnet, tiny_resnet_config


class NotATensor:
    """A class whose instances need code from this module to be unpickled."""


def write_marker(path: str) -> None:
    """What the objects below would run if their globals were called on load."""
    with open(path, "w") as stream:
        stream.write("code from the checkpoint ran")


class ExecutesOnLoad:
    """Unpickling it calls ``write_marker`` (its ``__reduce__``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (write_marker, (self.marker,))


class RestoresWithCode:
    """Unpickling it runs its ``__setstate__``, as pyannote's task objects are restored."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        write_marker(state["marker"])


def test_resnet34_has_wespeakers_shapes_and_size():
    config = wespeaker_resnet34()
    model = ResNetEmbedding(config)
    state = model.resnet.state_dict()
    assert config.stats_dim == 5120
    assert tuple(state["seg_1.weight"].shape) == (256, 5120)
    assert tuple(state["conv1.weight"].shape) == (32, 1, 3, 3)
    assert tuple(state["layer4.0.shortcut.0.weight"].shape) == (256, 128, 1, 1)
    assert "layer1.0.shortcut.0.weight" not in state  # no projection where shapes agree
    assert [k for k in state if k.startswith("layer3.5.")][0] == "layer3.5.conv1.weight"
    assert "layer3.6.conv1.weight" not in state
    assert sum(p.numel() for p in model.parameters()) == 6_634_336
    assert (model.dimension, model.sample_rate) == (256, 16000)


def test_min_num_samples_gives_two_pooled_frames():
    model = tiny_resnet()
    num_samples = model.min_num_samples
    assert num_samples == 400 + 8 * 160  # 9 fbank frames -> 2 frames after three halvings
    with torch.no_grad():
        out = model(torch.randn(2, num_samples))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    with pytest.raises(AudioError, match=f"needs at least {num_samples}"):
        model(torch.randn(1, num_samples - 1))


def test_weighted_pooling_with_a_mask_is_pooling_of_the_selected_frames():
    features = torch.randn(3, 5, 11, dtype=torch.float64)
    mask = torch.zeros(3, 11, dtype=torch.float64)
    mask[0, [1, 4, 5, 9]] = 1
    mask[1] = 1
    mask[2, 2:8] = 1
    pooled = statistics_pooling(features, mask)
    for b in range(3):
        selected = features[b][:, mask[b].bool()]
        expected = torch.cat([selected.mean(dim=-1), (selected.var(dim=-1) + 1e-7).sqrt()])
        torch.testing.assert_close(pooled[b], expected)
    torch.testing.assert_close(pooled[1], statistics_pooling(features[1:2])[0])


def test_pooling_with_no_selected_frame_is_nan():
    pooled = statistics_pooling(torch.randn(1, 4, 6), torch.zeros(1, 6))
    assert torch.isnan(pooled).all()


def test_masked_embedding_pools_only_the_masked_frames():
    model = tiny_resnet()
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        unmasked = model(waveforms)
        all_ones = model(waveforms, torch.ones(2, 50))
        torch.testing.assert_close(all_ones, unmasked)
        # a mask at the resolution of the pooled frames, built by hand
        fbank_frames = model.config.fbank.num_frames(16000)
        num_frames = model.config.num_output_frames(fbank_frames)
        mask = torch.zeros(2, num_frames)
        mask[0, : num_frames // 2] = 1
        mask[1, 3:] = 1
        masked = model(waveforms, mask)
        from slimdiar.models.embeddings.fbank import cepstral_mean_normalize, kaldi_fbank

        frames = model.resnet.forward_frames(
            cepstral_mean_normalize(kaldi_fbank(waveforms, model.config.fbank))
        )
        for b in range(2):
            selected = frames[b][:, mask[b].bool()]
            stats = torch.cat([selected.mean(-1), (selected.var(-1) + 1e-7).sqrt()])
            torch.testing.assert_close(masked[b], model.resnet.seg_1(stats))
        assert not torch.allclose(masked[0], unmasked[0])


def save_wespeaker_layout(model, path):
    state = dict(model.resnet.state_dict())
    state["projection.weight"] = torch.randn(5, 8)  # WeSpeaker's training-time classifier
    torch.save(state, path)


def save_pyannote_layout(model, path):
    checkpoint = {
        "state_dict": {f"resnet.{k}": v for k, v in model.resnet.state_dict().items()},
        "pytorch-lightning_version": "2.1.0",
        "pyannote.audio": {"versions": {"torch": str(torch.__version__)}},
    }
    torch.save(checkpoint, path)


def test_both_published_layouts_load_strictly_and_agree(tmp_path):
    model = tiny_resnet(seed=1)
    save_wespeaker_layout(model, tmp_path / "avg_model.pt")
    save_pyannote_layout(model, tmp_path / "pytorch_model.bin")
    wespeaker = load_embedding_model(tmp_path / "avg_model.pt")
    pyannote = load_embedding_model(tmp_path / "pytorch_model.bin")
    assert wespeaker.model.config == pyannote.model.config == model.config
    waveforms = np.random.default_rng(0).uniform(-0.3, 0.3, size=(2, 8000)).astype(np.float32)
    mask = np.zeros((2, 100), dtype=np.float32)
    mask[:, 20:70] = 1
    for weights in (None, mask):
        a, b = wespeaker(waveforms, weights), pyannote(waveforms, weights)
        np.testing.assert_array_equal(a, b)
        with torch.no_grad():
            reference = model(
                torch.from_numpy(waveforms), None if weights is None else torch.from_numpy(weights)
            )
        expected = torch.nn.functional.normalize(reference, dim=-1).numpy()
        np.testing.assert_allclose(a, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)


def test_front_prefixed_layout_loads(tmp_path):
    model = tiny_resnet(seed=2)
    torch.save({f"front.{k}": v for k, v in model.resnet.state_dict().items()}, tmp_path / "m.pt")
    loaded = load_embedding_model(tmp_path / "m.pt")
    waveforms = torch.randn(1, 4000)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(waveforms), dim=-1).numpy()
    np.testing.assert_allclose(loaded(waveforms), expected, atol=1e-6)


def test_layout_conversion_names_the_layout_and_drops_only_the_classifier():
    state = {"resnet.conv1.weight": torch.zeros(1), "resnet.seg_1.weight": torch.zeros(1)}
    renamed, layout = to_wespeaker_layout(state)
    assert layout == "pyannote" and set(renamed) == {"conv1.weight", "seg_1.weight"}
    renamed, layout = to_wespeaker_layout({"conv1.weight": 1, "projection.weight": 2, "x": 3})
    assert layout == "wespeaker" and set(renamed) == {"conv1.weight", "x"}


def test_missing_key_is_a_checkpoint_error_that_lists_it(tmp_path):
    state = dict(tiny_resnet().resnet.state_dict())
    del state["layer2.1.bn2.running_var"]
    torch.save(state, tmp_path / "avg_model.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: layer2\.1\.bn2\.running_var"):
        load_embedding_model(tmp_path / "avg_model.pt")


def test_unexpected_key_is_a_checkpoint_error_that_lists_it(tmp_path):
    state = {f"resnet.{k}": v for k, v in tiny_resnet().resnet.state_dict().items()}
    state["resnet.seg_2.weight"] = torch.zeros(8, 8)
    state["classifier.bias"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"unexpected keys: classifier\.bias, seg_2\.weight"):
        load_embedding_model(tmp_path / "pytorch_model.bin")


def test_pyannote_lightning_checkpoint_loads_its_tensors_and_runs_no_code(tmp_path):
    model = tiny_resnet(seed=3)
    marker = tmp_path / "marker"
    checkpoint = {
        "epoch": 12,
        "global_step": 3400,
        "pytorch-lightning_version": "1.6.5",
        "state_dict": {f"resnet.{k}": v for k, v in model.resnet.state_dict().items()},
        "hyper_parameters": {"sample_rate": 16000, "num_channels": 1, "task": NotATensor()},
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.0"},
            "architecture": {"module": "pyannote.audio.models.embedding", "class": "ResNet34"},
            "specifications": RestoresWithCode(marker),
        },
        "callbacks": [ExecutesOnLoad(marker)],
    }
    torch.save(checkpoint, tmp_path / "pytorch_model.bin")
    assert not marker.exists()
    loaded = load_embedding_model(tmp_path / "pytorch_model.bin")
    assert not marker.exists(), "loading ran code from the checkpoint"
    assert loaded.model.config == model.config
    waveforms = torch.randn(1, 4000)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(waveforms), dim=-1).numpy()
    np.testing.assert_allclose(loaded(waveforms), expected, atol=1e-6)
    # the pickled objects came back as inert placeholders, primitives as themselves
    content = torch_load_inert(tmp_path / "pytorch_model.bin")
    assert not marker.exists()
    assert isinstance(content["pyannote.audio"]["specifications"], InertGlobal)
    assert isinstance(content["callbacks"][0], InertGlobal)
    assert content["callbacks"][0].name.endswith("write_marker")
    assert content["hyper_parameters"]["sample_rate"] == 16000
    # the same objects, unpickled normally, do run their code: the test can fail
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_a_placeholder_inside_the_state_dict_is_an_error(tmp_path):
    state = dict(tiny_resnet().resnet.state_dict())
    state["seg_1.weight"] = NotATensor()
    torch.save({"state_dict": state}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="entries that are not tensors: seg_1.weight"):
        load_embedding_model(tmp_path / "pytorch_model.bin")


def test_inferred_config_round_trips():
    config = tiny_resnet_config()
    state = ResNetEmbedding(config).resnet.state_dict()
    assert ResNetConfig.from_state_dict(state) == config
    full = ResNetEmbedding(wespeaker_resnet34()).resnet.state_dict()
    assert ResNetConfig.from_state_dict(full) == wespeaker_resnet34()
