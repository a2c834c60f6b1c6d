"""How WavLM trains: the conv gradient scale and the dropouts of the reference recipe."""

from __future__ import annotations

import pytest
import torch

from slimdiar.config import load_config
from slimdiar.errors import ConfigError
from slimdiar.models.wavlm import WavLM, scale_gradient
from slimdiar.stages.common import WavLMTrainingSection
from slimdiar.stages.distill import DistillConfig
from slimdiar.stages.finetune import FinetuneConfig
from slimdiar.stages.prune import PruneConfig


def _grads(model: WavLM, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    hidden = model(waveforms)
    sum(h.pow(2).mean() for h in hidden).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_conv_gradient_is_scaled_and_the_rest_is_not():
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny").eval()
    x = torch.randn(2, 8000)
    plain = _grads(model, x)
    model.set_training_options(feature_grad_mult=0.1)
    scaled = _grads(model, x)
    conv = [n for n in plain if n.startswith("feature_extractor.")]
    rest = [n for n in plain if not n.startswith("feature_extractor.")]
    assert conv and rest
    for name in conv:
        torch.testing.assert_close(scaled[name], 0.1 * plain[name], rtol=1e-5, atol=1e-9)
        assert plain[name].abs().max() > 0
    for name in rest:
        torch.testing.assert_close(scaled[name], plain[name], rtol=1e-6, atol=0)


def test_the_lagrangian_gradient_of_the_conv_gates_is_not_scaled():
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny").enable_pruning()
    grads = []
    for mult in (1.0, 0.1):
        model.set_training_options(feature_grad_mult=mult)
        model.zero_grad(set_to_none=True)
        sparsity = 1.0 - model.expected_num_params() / model.num_params()
        (2.0 * (sparsity - 0.8) + 3.0 * (sparsity - 0.8) ** 2).backward()
        layer = model.feature_extractor.conv_layers[2]
        grads.append(layer.gate.log_alpha.grad.clone())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def test_scale_gradient_is_the_identity_forward():
    x = torch.randn(3, 4, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.25))
    with pytest.raises(ValueError, match="feature_grad_mult"):
        WavLM.from_preset("wavlm-tiny").set_training_options(feature_grad_mult=0.0)


def test_dropouts_reach_their_modules():
    model = WavLM.from_preset("wavlm-tiny")
    WavLMTrainingSection().apply(model)
    assert model.feature_grad_mult == 0.1
    assert model.feature_projection.dropout.p == 0.1
    assert model.encoder.dropout.p == 0.1
    for layer in model.encoder.layers:
        assert layer.dropout.p == 0.1
        assert layer.attention.dropout == 0.1
        assert layer.feed_forward.dropout.p == 0.1
        assert layer.feed_forward.intermediate_dropout.p == 0.0
    cfg = model.config
    assert (cfg.feat_proj_dropout, cfg.attention_dropout, cfg.dropout, cfg.activation_dropout) == (
        0.1,
        0.1,
        0.1,
        0.0,
    )
    # The dropouts act in training and vanish in eval.
    x = torch.randn(1, 8000)
    torch.manual_seed(1)
    model.train()
    a = model(x)[-1]
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_intermediate_dropout_acts_inside_the_ffn():
    model = WavLM.from_preset("wavlm-tiny").train()
    model.set_training_options(
        feat_proj_dropout=0.0, attention_dropout=0.0, dropout=0.0, activation_dropout=0.5
    )
    x = torch.randn(1, 8000)
    assert not torch.allclose(model(x)[-1], model(x)[-1])
    model.set_training_options(activation_dropout=0.0)
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


@pytest.mark.parametrize("cls", [FinetuneConfig, PruneConfig, DistillConfig])
def test_every_stage_defaults_to_the_reference_values(cls):
    section = cls().wavlm
    assert section.feature_grad_mult == 0.1
    assert (
        section.feat_proj_dropout,
        section.attention_dropout,
        section.hidden_dropout,
        section.activation_dropout,
    ) == (0.1, 0.1, 0.1, 0.0)
    off = load_config(cls, None, ["wavlm.feature_grad_mult=1.0", "wavlm.hidden_dropout=0"])
    assert off.wavlm.feature_grad_mult == 1.0 and off.wavlm.hidden_dropout == 0.0


def test_bad_training_options_are_config_errors():
    with pytest.raises(ConfigError, match="wavlm.feature_grad_mult"):
        load_config(FinetuneConfig, None, ["wavlm.feature_grad_mult=0"])
    with pytest.raises(ConfigError, match="wavlm.attention_dropout"):
        load_config(PruneConfig, None, ["wavlm.attention_dropout=1.5"])


class _CapturingTrainer:
    """Stands in for the Trainer: keeps the objective it was given and trains nothing."""

    objective = None

    def __init__(self, objective, *args, **kwargs):
        type(self).objective = objective

    def fit(self, resume=False):
        raise _Stop


class _Stop(Exception):
    pass


def test_finetune_and_distill_train_wavlm_with_the_options(tmp_path, monkeypatch):
    import slimdiar.stages.distill as distill_module
    import slimdiar.stages.finetune as finetune_module
    import slimdiar.stages.prune as prune_module

    for module in (finetune_module, distill_module, prune_module):
        monkeypatch.setattr(module, "Trainer", _CapturingTrainer)
        monkeypatch.setattr(module, "chunk_datasets", lambda *a, **k: (None, None))
    config = load_config(FinetuneConfig, None, ["model.backbone=wavlm-tiny"])
    with pytest.raises(_Stop):
        finetune_module.run(config, tmp_path, tmp_path, tmp_path / "ft")
    backbone = _CapturingTrainer.objective.model.backbone
    assert backbone.feature_grad_mult == 0.1 and backbone.config.feat_proj_dropout == 0.1

    teacher = WavLM.from_preset("wavlm-tiny")
    teacher.save_pretrained(tmp_path / "teacher")
    with pytest.raises(_Stop):
        distill_module.run(
            DistillConfig(),
            tmp_path / "teacher",
            tmp_path / "teacher",
            tmp_path,
            tmp_path,
            tmp_path / "distill",
        )
    student = _CapturingTrainer.objective.student
    assert student.feature_grad_mult == 0.1 and student.config.attention_dropout == 0.1
    assert _CapturingTrainer.objective.teacher.feature_grad_mult == 1.0
    with pytest.raises(_Stop):
        prune_module.run(
            PruneConfig(), tmp_path / "teacher", tmp_path, tmp_path, tmp_path / "prune"
        )
    student = _CapturingTrainer.objective.student
    assert student.feature_grad_mult == 0.1 and student.pruning_enabled
    assert student.config.dropout == 0.1


def test_the_conv_output_scale_is_not_trained_by_stage_1(tmp_path, monkeypatch):
    import slimdiar.stages.prune as prune_module

    monkeypatch.setattr(prune_module, "Trainer", _CapturingTrainer)
    monkeypatch.setattr(prune_module, "chunk_datasets", lambda *a, **k: (None, None))
    WavLM.from_preset("wavlm-tiny").save_pretrained(tmp_path / "teacher")
    with pytest.raises(_Stop):
        prune_module.run(
            PruneConfig(), tmp_path / "teacher", tmp_path, tmp_path, tmp_path / "prune"
        )
    student = _CapturingTrainer.objective.student
    assert student.config.conv_output_scale
    assert not student.feature_extractor.output_scale.requires_grad
    assert all(
        p.requires_grad
        for n, p in student.named_parameters()
        if n != "feature_extractor.output_scale"
    )


def test_the_last_conv_gate_gradient_from_the_transformer_is_scaled_too():
    # The reference scales the conv stack's output after the last gate and the output scale:
    # the distillation gradient of every conv gate, the last one included, is 0.1x.
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny").enable_pruning().eval()
    x = torch.randn(1, 8000)
    grads = []
    for mult in (1.0, 0.1):
        model.set_training_options(feature_grad_mult=mult)
        model.zero_grad(set_to_none=True)
        model(x)[-1].pow(2).mean().backward()
        grads.append(model.feature_extractor.conv_layers[-1].gate.log_alpha.grad.clone())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], 0.1 * grads[0], rtol=1e-5, atol=1e-12)
