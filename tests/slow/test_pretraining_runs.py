"""Pretraining runs end to end on a tiny corpus: the loss falls, the result is a plain WavLM,
iteration 2 clusters a layer of iteration 1, and a resumed run equals the uninterrupted one."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from slimdiar.config import load_config
from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import load_checkpoint
from slimdiar.models.wavlm import WavLM
from slimdiar.pretrain import expected_mask_fraction
from slimdiar.pretrain.targets import load_centroids
from slimdiar.stages.finetune import ModelSection, build_model
from slimdiar.stages.pretrain import PretrainConfig
from slimdiar.stages.pretrain import run as pretrain

pytestmark = pytest.mark.slow


def tiny_config(**overrides) -> PretrainConfig:
    return load_config(PretrainConfig, "pretrain-tiny", [f"{k}={v}" for k, v in overrides.items()])


SMALL = {
    "trainer.progress": "false",
    "data.crop_duration_s": 1.0,
    "data.shift_s": 0.5,
    "data.val_crop_duration_s": 1.0,
    "data.val_shift_s": 1.0,
    "trainer.batch_size": 6,
}


@pytest.fixture(scope="module")
def pretrained(pretrain_corpus, tmp_path_factory):
    """Iteration 1 on the tiny corpus: 7 steps per epoch, 4 epochs."""
    train, dev = pretrain_corpus
    exp = tmp_path_factory.mktemp("pretrain") / "exp"
    result = pretrain(tiny_config(**SMALL, **{"trainer.max_epochs": 4}), train, dev, exp)
    return exp, result


def test_pretraining_lowers_the_masked_prediction_loss(pretrained):
    exp, result = pretrained
    records = [json.loads(line) for line in (exp / "metrics.jsonl").open()]
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == 4 * (42 // 6) == result.steps  # 6 files x 7 crops of 1 s
    first = np.mean([r["masked_loss"] for r in steps[:3]])
    last = np.mean([r["masked_loss"] for r in steps[-3:]])
    assert last < first - 0.3, (first, last)
    assert last < math.log(50)  # better than guessing among 50 clusters
    expected = expected_mask_fraction(49, 0.08, 10)
    assert abs(np.mean([r["mask_fraction"] for r in steps]) - expected) < 0.06
    epochs = [r for r in records if r["type"] == "epoch"]
    assert epochs[-1]["val/loss"] < epochs[0]["val/loss"]


def test_the_result_is_a_plain_wavlm_that_finetuning_takes(pretrained):
    exp, result = pretrained
    header = json.loads((result.best_dir / "config.json").read_text())
    assert header["kind"] == "wavlm"
    best = WavLM.from_pretrained(result.best_dir)
    assert not any("cluster" in k or "mask_embedding" in k for k in best.state_dict())
    # the heads and the WavLM of the chosen epoch are in its checkpoint; best/ is that WavLM
    epoch = json.loads((result.best_dir / "metadata.json").read_text())["epochs"][0]
    state, _, _ = load_checkpoint(exp / "checkpoints" / f"epoch-{epoch:03d}", "wavlm-pretrain")
    for key, value in best.state_dict().items():
        assert torch.equal(value, state[f"wavlm.{key}"]), key
    model = build_model(
        ModelSection(frontend="wavlm", d_model=32, num_heads=2, ffn_dim=64, num_blocks=1),
        str(result.best_dir),
    )
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, best.state_dict()[key]), key
    log_probs = model(torch.randn(2, 32000), torch.ones(2, 99, dtype=torch.bool))
    assert log_probs.shape == (2, 99, 11)


def test_iteration_two_clusters_a_layer_of_the_first_model(pretrain_corpus, pretrained, tmp_path):
    train, dev = pretrain_corpus
    _, first = pretrained
    config = tiny_config(
        **SMALL,
        **{
            "trainer.max_epochs": 1,
            "trainer.max_steps_per_epoch": 2,
            "targets.num_clusters": 20,
            "targets.kmeans_passes": 1,
        },
    )
    config.targets.source, config.targets.layer = str(first.best_dir), 1
    result = pretrain(config, train, dev, tmp_path / "exp2")
    centroids, info = load_centroids(tmp_path / "exp2" / "targets")
    assert info["layer"] == 1 and info["source"] == str(first.best_dir)
    assert centroids.shape == (20, 64)  # clusters of the 64-wide hidden state
    assert WavLM.from_pretrained(result.best_dir).config.embed_dim == 64


def test_resume_equals_the_uninterrupted_run(pretrain_corpus, tmp_path):
    train, dev = pretrain_corpus
    settings = dict(SMALL, **{"trainer.max_steps_per_epoch": 3, "targets.kmeans_passes": 1})
    whole = pretrain(
        tiny_config(**settings, **{"trainer.max_epochs": 2}), train, dev, tmp_path / "a"
    )
    pretrain(tiny_config(**settings, **{"trainer.max_epochs": 1}), train, dev, tmp_path / "b")
    resumed = pretrain(
        tiny_config(**settings, **{"trainer.max_epochs": 2}),
        train,
        dev,
        tmp_path / "b",
        resume=True,
    )
    assert resumed.steps == whole.steps == 6
    a = WavLM.from_pretrained(whole.best_dir).state_dict()
    b = WavLM.from_pretrained(resumed.best_dir).state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(tiny_config(**settings), train, dev, tmp_path / "a")
