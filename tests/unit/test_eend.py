import json
import math

import pytest
import torch

from slimdiar.errors import AudioError, CheckpointError, ConfigError
from slimdiar.models.conformer import Conformer
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.frontend import Fbank, FbankConfig, build_backbone, mel_filterbank
from slimdiar.models.powerset import permutation_invariant_powerset_loss
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import wavlm_base_plus, wavlm_tiny
from slimdiar.testing import pruned_tiny_wavlm_config

TINY_HEAD = dict(d_model=32, num_heads=2, ffn_dim=64, num_blocks=2, conv_kernel=7)
ONE_SECOND = 16000


def tiny_eend(**changes) -> EEND:
    torch.manual_seed(0)
    config = dict(wavlm=wavlm_tiny(), **TINY_HEAD)
    config.update(changes)
    return EEND(EENDConfig(**config))


def train_step_loss(model: EEND, num_samples: int = ONE_SECOND // 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    waveforms = torch.randn(1, num_samples, generator=generator)
    num_frames = model.num_frames(num_samples)
    target = (torch.rand(1, num_frames, 3, generator=generator) < 0.3).float()
    loss, _ = permutation_invariant_powerset_loss(model(waveforms), target)
    return loss


# ---------------------------------------------------------------------- front-end


def test_fbank_frame_grid_is_wavlm_grid():
    fbank, wavlm = FbankConfig(), wavlm_base_plus()
    for num_samples in [0, 399, 400, 719, 720, 721, 16000, 128000, *range(1000, 6000, 37)]:
        assert fbank.num_frames(num_samples) == wavlm.num_frames(num_samples)
    assert fbank.num_frames(128000) == 399
    front = Fbank()
    hidden = front(torch.randn(1, 128000))
    assert len(hidden) == 1 and hidden[0].shape == (1, 399, 256)
    assert front.config.num_layers == 0


def test_fbank_tone_lands_in_its_mel_band():
    config = FbankConfig()
    filters = mel_filterbank(config)
    assert filters.shape == (257, 80) and (filters >= 0).all() and (filters.sum(0) > 0).all()
    peak_hz = filters.argmax(dim=0).float() * 16000 / config.fft_size
    assert torch.all(peak_hz[1:] >= peak_hz[:-1])  # bands rise in frequency
    time_s = torch.arange(ONE_SECOND) / 16000
    for tone_hz in [300.0, 1000.0, 3000.0]:
        log_mel = Fbank(config).log_mel(torch.sin(2 * math.pi * tone_hz * time_s)[None])
        assert log_mel.shape == (1, 49, 80)
        band = int(log_mel[0].mean(0).argmax())
        assert abs(peak_hz[band] - tone_hz) <= 2 * 16000 / config.fft_size
    # 10 times the amplitude is 100 times the power: log energies grow by ln(100) everywhere
    tone = torch.sin(2 * math.pi * 1000 * time_s)[None]
    difference = Fbank(config).log_mel(0.1 * tone) - Fbank(config).log_mel(0.01 * tone)
    assert torch.allclose(difference, torch.full_like(difference, math.log(100)), atol=1e-3)


def test_fbank_rejects_short_or_misshaped_audio():
    with pytest.raises(AudioError, match="399 samples, fewer than one analysis window"):
        Fbank()(torch.zeros(1, 399))
    with pytest.raises(AudioError, match=r"shape \(batch, num_samples\)"):
        Fbank()(torch.zeros(400))


def test_build_backbone():
    assert isinstance(build_backbone("fbank"), Fbank)
    assert isinstance(build_backbone("wavlm", wavlm_tiny()), WavLM)
    with pytest.raises(ConfigError, match="needs a WavLM config"):
        build_backbone("wavlm")
    with pytest.raises(ConfigError, match="unknown front-end 'mfcc'; valid front-ends: wavlm"):
        build_backbone("mfcc")


# ---------------------------------------------------------------------- conformer


def test_conformer_padding_does_not_leak_into_valid_frames():
    torch.manual_seed(0)
    conformer = Conformer(num_blocks=2, d_model=32, num_heads=2, ffn_dim=64, conv_kernel=7).eval()
    x = torch.randn(2, 20, 32)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 12:] = False
    out = conformer(x, mask)
    noisy = x.clone()
    noisy[1, 12:] = 100 * torch.randn(8, 32)
    assert torch.allclose(conformer(noisy, mask)[1, :12], out[1, :12], atol=1e-5)
    # the padded chunk computes what the unpadded one computes alone
    assert torch.allclose(conformer(x[1:, :12])[0], out[1, :12], atol=1e-5)
    # a chunk without any valid frame stays finite
    assert torch.isfinite(conformer(x, torch.zeros(2, 20, dtype=torch.bool))).all()


@pytest.mark.parametrize("training", [False, True])
def test_conformer_attention_is_torch_multihead_attention(training):
    from slimdiar.models.conformer import SelfAttention

    torch.manual_seed(0)
    block = SelfAttention(d_model=32, num_heads=4, dropout=0.2).train(training)
    x = torch.randn(3, 17, 32)
    padding = torch.zeros(3, 17, dtype=torch.bool)
    padding[1, 9:] = True
    for key_padding_mask in (None, padding):
        normed = block.norm(x)
        torch.manual_seed(5)
        expected, _ = block.attention(
            normed, normed, normed, key_padding_mask=key_padding_mask, need_weights=False
        )
        torch.manual_seed(5)  # the same attention dropout in training
        ours = block._attend(normed, key_padding_mask)
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_layer_sum_in_bfloat16_weights_accumulates_in_float32():
    model = tiny_eend().eval()
    with torch.no_grad():
        model.weight_sum.weight.copy_(torch.tensor([[0.3, 0.3, 0.4]]))
    states = [torch.full((1, 2, 64), 1.0 + i / 256) for i in range(3)]
    exact = model.combine_layers(states)
    model.to(torch.bfloat16)
    low = model.combine_layers([s.bfloat16() for s in states])
    assert low.dtype == torch.bfloat16
    # one rounding of the float32 sum, not one per term
    assert torch.equal(low, exact.bfloat16())


# ---------------------------------------------------------------------- EEND


def test_eend_output_shape_for_8_seconds():
    model = tiny_eend().eval()
    assert model.num_frames(128000) == 399 and model.frame_step_samples == 320
    with torch.no_grad():
        log_probs = model(torch.randn(1, 128000))
    assert log_probs.shape == (1, 399, 11)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, 399), atol=1e-5)


def test_eend_default_head_with_fbank_front_end():
    model = EEND(EENDConfig(frontend="fbank")).eval()
    assert model.config.fbank == FbankConfig()
    assert len(model.conformer.blocks) == 4 and model.classifier.out_features == 11
    assert model.conformer.blocks[0].conv.depthwise.kernel_size == (31,)
    with torch.no_grad():
        assert model(torch.randn(1, 2 * ONE_SECOND)).shape == (1, 99, 11)


def test_eend_rejects_bad_input():
    model = tiny_eend()
    with pytest.raises(AudioError, match="fewer than one frame"):
        model(torch.zeros(1, 300))
    with pytest.raises(ValueError, match=r"frame_mask must have shape \(batch, num_frames\)"):
        model(torch.zeros(1, ONE_SECOND), torch.ones(1, 50, dtype=torch.bool))


def test_frozen_backbone_gets_no_gradients_and_stays_in_eval_mode():
    model = tiny_eend(freeze_backbone=True)
    model.train()
    assert not model.backbone.training and model.conformer.training
    assert model.backbone_parameters() == []
    train_step_loss(model).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    grad = model.weight_sum.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.projection.weight.grad is not None
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(model.head_parameters()) == len(trainable)


def test_updated_backbone_parameter_groups_and_gradients():
    model = tiny_eend().train()
    backbone = model.backbone_parameters()
    head = model.head_parameters()
    assert len(backbone) == len(list(model.backbone.parameters()))
    assert not {id(p) for p in backbone} & {id(p) for p in head}
    assert len(backbone) + len(head) == len(list(model.parameters()))
    train_step_loss(model).backward()
    assert model.backbone.feature_projection.projection.weight.grad.abs().sum() > 0


def test_fbank_layer_trains_with_the_head():
    model = EEND(EENDConfig(frontend="fbank", **TINY_HEAD))
    assert model.backbone_parameters() == []
    assert any(p is model.backbone.conv.weight for p in model.head_parameters())


def test_config_round_trip_and_errors():
    config = EENDConfig(wavlm=pruned_tiny_wavlm_config(), freeze_backbone=True, num_blocks=3)
    data = json.loads(json.dumps(config.to_dict()))
    assert EENDConfig.from_dict(data) == config
    assert EENDConfig.from_dict(data).wavlm.remaining_heads == [[0, 2], [1, 2, 3]]
    assert EENDConfig.from_dict({"wavlm": "wavlm-tiny"}).wavlm == wavlm_tiny()
    fbank = EENDConfig(frontend="fbank")
    assert EENDConfig.from_dict(json.loads(json.dumps(fbank.to_dict()))) == fbank
    with pytest.raises(ConfigError, match=r"unknown EEND config keys \['heads'\]"):
        EENDConfig.from_dict({"heads": 4})
    with pytest.raises(ConfigError, match="unknown front-end 'mfcc'"):
        EENDConfig(frontend="mfcc")
    with pytest.raises(ConfigError, match="freeze_backbone applies to the pre-trained WavLM"):
        EENDConfig(frontend="fbank", freeze_backbone=True)
    with pytest.raises(ConfigError, match="d_model 30 is not divisible by num_heads 4"):
        EENDConfig(d_model=30)
    with pytest.raises(ConfigError, match="max_speakers_per_frame \\(3\\) exceeds"):
        EENDConfig(max_speakers_per_chunk=2, max_speakers_per_frame=3)


def test_save_load_round_trip_with_pruned_backbone(tmp_path):
    torch.manual_seed(0)
    model = EEND(EENDConfig(wavlm=pruned_tiny_wavlm_config(), **TINY_HEAD))
    model.eval()
    with torch.no_grad():
        model.weight_sum.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    path = model.save_pretrained(tmp_path / "eend", metadata={"stage": "finetune", "epoch": 3})
    stored = json.loads((path / "config.json").read_text())
    assert stored["kind"] == "eend"
    assert stored["config"]["wavlm"]["ffn_dim"] == [40, 0]
    assert json.loads((path / "metadata.json").read_text()) == {"stage": "finetune", "epoch": 3}
    loaded = EEND.from_pretrained(path)
    assert loaded.config == model.config and not loaded.training
    reference, reloaded = model.state_dict(), loaded.state_dict()
    assert set(reference) == set(reloaded)
    assert all(torch.equal(reference[k], reloaded[k]) for k in reference)
    waveforms = torch.randn(1, ONE_SECOND)
    with torch.no_grad():
        assert torch.equal(model(waveforms), loaded(waveforms))


def test_strict_load_reports_mismatched_checkpoints(tmp_path):
    path = tiny_eend().save_pretrained(tmp_path / "eend")
    header = json.loads((path / "config.json").read_text())
    header["config"]["num_blocks"] = 1
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"unexpected keys: conformer\.blocks\.1\."):
        EEND.from_pretrained(path)
    header["config"]["num_blocks"] = 2
    header["config"]["ffn_dim"] = 48
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"shape mismatch: conformer\.blocks\.0\.ffn1"):
        EEND.from_pretrained(path)
    header["config"]["frontend"] = "spectrogram"
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="invalid EEND config.*unknown front-end"):
        EEND.from_pretrained(path)
    wavlm_dir = WavLM(wavlm_tiny()).save_pretrained(tmp_path / "wavlm")
    with pytest.raises(CheckpointError, match="holds a 'wavlm' checkpoint, expected 'eend'"):
        EEND.from_pretrained(wavlm_dir)


def test_fresh_head_on_a_saved_pruned_backbone(tmp_path):
    torch.manual_seed(0)
    backbone = WavLM(pruned_tiny_wavlm_config())
    path = backbone.save_pretrained(tmp_path / "wavlm")
    model = EEND.from_backbone_checkpoint(path, EENDConfig(**TINY_HEAD))
    assert model.config.wavlm == pruned_tiny_wavlm_config()
    saved = backbone.state_dict()
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in saved.items())
    assert model.weight_sum.weight.shape == (1, 3)
    with pytest.raises(ConfigError, match="needs the wavlm front-end"):
        EEND.from_backbone_checkpoint(path, EENDConfig(frontend="fbank"))


# ---------------------------------------------------------------------- layer sum


def test_linear_layer_sum_is_an_unnormalised_linear_over_the_stacked_states():
    model = tiny_eend().eval()
    assert model.config.layer_sum == "linear" and not hasattr(model, "layer_weights")
    weights = torch.tensor([[2.0, -1.0, 0.5]])
    with torch.no_grad():
        model.weight_sum.weight.copy_(weights)
    states = [torch.randn(2, 5, 64) for _ in range(3)]
    expected = 2.0 * states[0] - states[1] + 0.5 * states[2]
    assert torch.allclose(model.combine_layers(states), expected, atol=1e-6)
    assert torch.equal(model.layer_sum_weights(), weights[0])


def test_softmax_layer_sum_normalises_its_weights():
    model = tiny_eend(layer_sum="softmax").eval()
    assert not hasattr(model, "weight_sum")
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([0.0, math.log(2.0), math.log(5.0)]))
    states = [torch.full((1, 2, 64), float(v)) for v in (1.0, 2.0, 3.0)]
    expected = (1.0 * 1 + 2.0 * 2 + 5.0 * 3) / 8
    assert torch.allclose(model.combine_layers(states), torch.full((1, 2, 64), expected))
    with pytest.raises(ConfigError, match="unknown layer_sum 'mean'"):
        EENDConfig(layer_sum="mean")


def test_checkpoint_without_layer_sum_key_loads_as_softmax(tmp_path):
    model = tiny_eend(layer_sum="softmax").eval()
    path = model.save_pretrained(tmp_path / "old")
    header = json.loads((path / "config.json").read_text())
    del header["config"]["layer_sum"]  # as written before the option existed
    (path / "config.json").write_text(json.dumps(header))
    loaded = EEND.from_pretrained(path)
    assert loaded.config.layer_sum == "softmax"
    waveforms = torch.randn(1, ONE_SECOND)
    with torch.no_grad():
        assert torch.equal(model(waveforms), loaded(waveforms))
    linear = tiny_eend().save_pretrained(tmp_path / "new")
    assert EEND.from_pretrained(linear).config.layer_sum == "linear"
