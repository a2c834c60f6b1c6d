"""Stage 1 lands on its target: the counted parameters (or MACs) of the pruned checkpoint.

A tiny diarization model is fine-tuned on tone speakers (the paper's teacher in miniature) and
pruned to 0.5, 0.8 and 0.9 of its WavLM parameters and to 0.5 of its MACs, each within ±0.02.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimdiar.cli import main
from slimdiar.models import WavLM
from slimdiar.models.checkpoint import load_checkpoint
from slimdiar.models.wavlm.hardconcrete import HardConcrete
from slimdiar.testing import (
    TONE_PRUNE_GATE_BOUND,
    TONE_PRUNE_SETTING,
    TONE_PRUNE_WARMUP_EPOCHS,
    finetune_tiny_teacher,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tone_train_dev):
    train, dev = tone_train_dev
    return tmp_path_factory.mktemp("prune-targets"), train, dev


@pytest.fixture(scope="module")
def finetuned(setup):
    """A tiny diarization model fine-tuned on the tone data: the paper's teacher in miniature."""
    root, train, dev = setup
    out = root / "finetuned"
    teacher = finetune_tiny_teacher(train, dev, out)
    best = [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["type"] == "best"
    ]
    assert best[-1]["val/der"] < 0.1  # it has learnt the task
    return teacher


def chosen_epoch_record(exp: Path) -> dict:
    """The epoch record of the checkpoint that became ``exp/best``."""
    epochs = json.loads((exp / "best" / "metadata.json").read_text())["epochs"]
    assert len(epochs) == 1
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["type"] == "epoch" and r["epoch"] == epochs[0])


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_reached_sparsity_of_the_pruned_checkpoint_is_on_target(setup, finetuned, sparsity):
    """Counted parameters of EXP_DIR/pruned, not the expectation, land within ±0.02."""
    root, train, dev = setup
    out = root / f"target{sparsity}"
    code = main(
        [
            "prune",
            "--teacher",
            str(finetuned),
            "--sparsity",
            str(sparsity),
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--out",
            str(out),
            *TONE_PRUNE_SETTING,
        ]
    )
    assert code == 0
    teacher = WavLM.from_pretrained(finetuned)
    pruned = WavLM.from_pretrained(out / "pruned")
    reached = 1 - pruned.num_params() / teacher.num_params()
    print(f"target {sparsity}: reached {reached:.4f}")
    assert abs(reached - sparsity) <= 0.02
    # the final model is a checkpoint past the warm-up that was on target
    record = chosen_epoch_record(out)
    assert record["selectable"] and record["epoch"] >= TONE_PRUNE_WARMUP_EPOCHS
    assert record["val/sparsity"] == pytest.approx(reached, abs=1e-6)
    # and every gate stayed inside the bound of its open probability
    state = load_checkpoint(out / "best")[0]
    bound = TONE_PRUNE_GATE_BOUND
    for key, log_alpha in state.items():
        if key.endswith("log_alpha"):
            gate = HardConcrete(log_alpha.numel())
            gate.log_alpha.data.copy_(log_alpha)
            p = gate.open_probability()
            assert bool(((p >= bound * 0.999) & (p <= 1 - bound * 0.999)).all()), key


def test_mac_objective_lands_on_target_in_macs(setup, finetuned):
    """``--objective macs``: the MACs per second of audio, not the parameters, meet the target."""
    root, train, dev = setup
    out = root / "macs"
    code = main(
        [
            "prune",
            "--teacher",
            str(finetuned),
            "--sparsity",
            "0.5",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--out",
            str(out),
            *TONE_PRUNE_SETTING,
            "--set",
            'prune.objective="macs"',
        ]
    )
    assert code == 0
    teacher = WavLM.from_pretrained(finetuned)
    pruned = WavLM.from_pretrained(out / "pruned")
    reached = 1 - pruned.macs(1.0) / teacher.macs(1.0)
    report = json.loads((out / "report.json").read_text())
    assert report["objective"] == "macs"
    assert report["reached_mac_sparsity"] == pytest.approx(reached)
    print(f"MAC target 0.5: reached {reached:.4f} (parameters: {report['reached_sparsity']:.4f})")
    assert abs(reached - 0.5) <= 0.02
    assert chosen_epoch_record(out)["val/sparsity"] == pytest.approx(reached, abs=1e-6)
