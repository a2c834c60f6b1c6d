"""Fine-tuning: run configs and overrides, front-end variants, and a tiny model that learns."""

from __future__ import annotations

import json

import pytest
import torch

from slimdiar.cli import main
from slimdiar.config import load_config
from slimdiar.data import ChunkDataset, DataDir
from slimdiar.errors import ConfigError
from slimdiar.models.eend import EEND
from slimdiar.models.powerset import chunk_der
from slimdiar.models.wavlm import WavLM
from slimdiar.stages.finetune import FinetuneConfig, FinetuneObjective, ModelSection, build_model
from slimdiar.stages.finetune import run as finetune
from slimdiar.testing import write_tone_datadir


# ---------------------------------------------------------------------- configs
def test_recipe_configs_hold_the_reference_settings():
    for name in ("wavlm-base-plus", "wavlm-large"):
        config = load_config(FinetuneConfig, name)
        assert config.model.backbone == name and config.model.frontend == "wavlm"
        assert (config.optim.lr_backbone, config.optim.lr_head) == (2e-5, 1e-3)
        assert (config.data.chunk_duration_s, config.data.shift_s) == (8.0, 6.0)
        assert (config.data.val_chunk_duration_s, config.data.val_shift_s) == (8.0, 8.0)
        trainer = config.trainer
        assert (trainer.max_epochs, trainer.patience, trainer.batch_size) == (100, 10, 64)
        assert (trainer.seed, trainer.average_best) == (3407, 5)
        assert (trainer.clip_percentile, trainer.clip_history) == (90.0, 1000)
    assert load_config(FinetuneConfig).trainer.seed == 3407


def test_overrides_are_type_checked():
    config = load_config(
        FinetuneConfig,
        "tiny",
        [
            "trainer.batch_size=4",
            "optim.lr_head=5e-4",
            "model.frontend=wavlm-frozen",
            'model.backbone="wavlm-small"',
            "data.channel=0",
            "trainer.progress=false",
        ],
    )
    assert config.trainer.batch_size == 4 and config.optim.lr_head == 5e-4
    assert config.model.frontend == "wavlm-frozen" and config.model.backbone == "wavlm-small"
    assert config.data.channel == 0 and config.trainer.progress is False
    assert load_config(FinetuneConfig, None, ["optim.weight_decay=0"]).optim.weight_decay == 0.0
    assert load_config(FinetuneConfig, None, ["data.channel=none"]).data.channel is None

    with pytest.raises(ConfigError, match=r"unknown key 'trainer.batchsize'.*batch_size"):
        load_config(FinetuneConfig, None, ["trainer.batchsize=4"])
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer'.*data, model, optim, trainer"):
        load_config(FinetuneConfig, None, ["optimizer.lr=4"])
    with pytest.raises(ConfigError, match="trainer.batch_size must be an integer, got 'four'"):
        load_config(FinetuneConfig, None, ["trainer.batch_size=four"])
    with pytest.raises(ConfigError, match="must be an integer, got 2.5"):
        load_config(FinetuneConfig, None, ["trainer.max_epochs=2.5"])
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config(FinetuneConfig, None, ["trainer.progress=1"])
    with pytest.raises(ConfigError, match="model.frontend must be one of wavlm, wavlm-frozen"):
        load_config(FinetuneConfig, None, ["model.frontend=mfcc"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(FinetuneConfig, None, ["trainer=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(FinetuneConfig, None, ["trainer.batch_size"])


def test_config_file_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("[model]\nd_modle = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key model.d_modle; .*d_model"):
        load_config(FinetuneConfig, tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(FinetuneConfig, tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(FinetuneConfig, tmp_path / "missing.toml")
    assert (
        main(
            [
                "finetune",
                "--config",
                str(tmp_path / "bad.toml"),
                "--train",
                "x",
                "--dev",
                "x",
                "--out",
                str(tmp_path / "exp"),
            ]
        )
        == 2
    )


def test_frontend_variants_choose_the_parameter_groups(tmp_path):
    small = dict(d_model=16, num_heads=2, ffn_dim=32, conv_kernel=3, num_blocks=1)
    updated = FinetuneObjective(
        build_model(ModelSection(backbone="wavlm-tiny", **small)), FinetuneConfig().optim
    )
    groups = {g.name: g for g in updated.parameter_groups()}
    assert set(groups) == {"wavlm", "head"}
    assert (groups["wavlm"].lr, groups["head"].lr) == (2e-5, 1e-3)
    assert groups["wavlm"].optimizer != groups["head"].optimizer  # two AdamW optimisers
    backbone_ids = {id(p) for p in updated.model.backbone.parameters()}
    assert {id(p) for p in groups["wavlm"].params} == backbone_ids

    frozen = FinetuneObjective(
        build_model(ModelSection(backbone="wavlm-tiny", frontend="wavlm-frozen", **small)),
        FinetuneConfig().optim,
    )
    assert [g.name for g in frozen.parameter_groups()] == ["head"]
    assert not any(p.requires_grad for p in frozen.model.backbone.parameters())

    fbank = build_model(ModelSection(frontend="fbank", **small))
    assert fbank.config.frontend == "fbank"
    assert updated.model.config.layer_sum == "linear"  # the reference's weight_sum
    assert fbank.config.layer_sum == "softmax"  # the identity on the filterbank's one state
    softmax = build_model(ModelSection(backbone="wavlm-tiny", layer_sum="softmax", **small))
    assert softmax.config.layer_sum == "softmax" and softmax.layer_weights.shape == (3,)
    with pytest.raises(ConfigError, match="neither a WavLM preset"):
        build_model(ModelSection(backbone=str(tmp_path / "nothing")))


# ---------------------------------------------------------------------- training
def test_frozen_pretrained_backbone_is_loaded_and_kept(tmp_path):
    torch.manual_seed(5)
    pretrained = WavLM.from_preset("wavlm-tiny")
    pretrained.save_pretrained(tmp_path / "wavlm")
    data = write_tone_datadir(tmp_path / "data", num_recordings=1, duration_s=6.0)
    status = main(
        [
            "finetune",
            "--config",
            "tiny",
            "--train",
            str(data),
            "--dev",
            str(data),
            "--out",
            str(tmp_path / "exp"),
            "--backbone",
            str(tmp_path / "wavlm"),
            "--set",
            "model.frontend=wavlm-frozen",
            "--set",
            "trainer.max_epochs=2",
            "--set",
            "trainer.batch_size=2",
            "--set",
            "trainer.progress=false",
        ]
    )
    assert status == 0
    best = EEND.from_pretrained(tmp_path / "exp/best")
    for key, value in pretrained.state_dict().items():
        assert torch.equal(best.backbone.state_dict()[key], value), key
    records = [json.loads(x) for x in (tmp_path / "exp/metrics.jsonl").read_text().splitlines()]
    assert {"lr/head"} <= set(records[0]) and "lr/wavlm" not in records[0]
    config = json.loads((tmp_path / "exp/config.json").read_text())
    assert config["model"]["backbone"] == str(tmp_path / "wavlm")
    assert config["model_config"]["freeze_backbone"] is True


@pytest.mark.slow
def test_tiny_model_learns_to_diarize_tones(tmp_path, tone_datadir):
    data = tone_datadir
    exp = tmp_path / "exp"
    status = main(
        [
            "finetune",
            "--config",
            "tiny",
            "--train",
            str(data),
            "--dev",
            str(data),
            "--out",
            str(exp),
            "--set",
            "trainer.max_epochs=12",
            "--set",
            "trainer.progress=false",
        ]
    )
    assert status == 0
    records = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(epochs) == 12
    assert epochs[-1]["train_loss"] < 0.25 * epochs[0]["train_loss"]
    assert epochs[0]["val/der"] > 0.05
    assert min(r["val/der"] for r in epochs) < 0.05
    final = [r for r in records if r["type"] == "best"]
    assert len(final) == 1 and final[0]["val/der"] < 0.05

    # the averaged model, loaded as any command loads it, diarizes the training chunks
    model = EEND.from_pretrained(exp / "best")
    chunks = ChunkDataset(DataDir.load(data), model.backbone.config, 2.0, 2.0)
    batch = torch.utils.data.default_collate([chunks[i] for i in range(len(chunks))])
    with torch.no_grad():
        log_probs = model(batch["waveform"], batch["mask"])
    counts = chunk_der(model.powerset.to_multilabel(log_probs), batch["labels"], batch["mask"])
    assert counts.speech_frames > 0 and counts.der < 0.05


def test_resumed_finetuning_matches_the_uninterrupted_run(tmp_path):
    data = write_tone_datadir(tmp_path / "data", num_recordings=1, duration_s=6.0)
    overrides = [
        "model.dropout=0.2",
        "trainer.batch_size=2",
        "trainer.max_steps_per_epoch=2",
        "trainer.progress=false",
        "trainer.average_best=1",
    ]
    two = load_config(FinetuneConfig, "tiny", overrides + ["trainer.max_epochs=2"])
    one = load_config(FinetuneConfig, "tiny", overrides + ["trainer.max_epochs=1"])
    finetune(two, data, data, tmp_path / "straight")
    finetune(one, data, data, tmp_path / "resumed")
    finetune(two, data, data, tmp_path / "resumed", resume=True)

    def losses(exp):
        lines = (exp / "metrics.jsonl").read_text().splitlines()
        return [(r["type"], r.get("loss", r.get("val/loss"))) for r in map(json.loads, lines)]

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [t for t, _ in straight] == [t for t, _ in resumed]
    assert len(straight) == 2 * 2 + 2 + 1
    for (_, a), (_, b) in zip(straight, resumed):
        assert b == pytest.approx(a, abs=1e-6)
    a = EEND.from_pretrained(tmp_path / "straight/best").state_dict()
    b = EEND.from_pretrained(tmp_path / "resumed/best").state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
