"""Stage 1 and 2: Lagrangian sparsity control, distill-and-prune, further distillation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from slimdiar.cli import main
from slimdiar.config import load_config
from slimdiar.errors import ConfigError
from slimdiar.models import WavLM
from slimdiar.models.checkpoint import load_checkpoint
from slimdiar.models.eend import EEND
from slimdiar.models.wavlm.hardconcrete import HardConcrete
from slimdiar.stages.common import DistillOptimSection
from slimdiar.stages.distill import (
    DistillConfig,
    DistillTrainerConfig,
    default_distill_layers,
    distillation_loss,
)
from slimdiar.stages.prune import (
    PruneConfig,
    PruneObjective,
    PruneSection,
    PruneTrainerConfig,
    SparsityController,
    enable_units,
    expected_sparsity,
    load_gated_student,
)
from slimdiar.testing import (
    tiny_eend,
)
from slimdiar.train.averaging import post_peak_epochs
from slimdiar.train.checkpoints import STATE_NAME

ROOT = Path(__file__).resolve().parents[2]

# Small chunks and many steps per epoch: enough optimiser steps for the multipliers to act.
FAST = [
    "--set",
    "data.chunk_duration_s=1.0",
    "--set",
    "data.shift_s=0.25",
    "--set",
    "data.val_chunk_duration_s=2.0",
    "--set",
    "data.val_shift_s=2.0",
    "--set",
    "trainer.num_workers=0",
    "--set",
    "trainer.progress=false",
    "--set",
    "trainer.batch_size=8",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tone_train_dev):
    root = tmp_path_factory.mktemp("prune")
    train, dev = tone_train_dev
    tiny_eend().save_pretrained(root / "teacher")
    return root, train, dev


def run_prune(root: Path, train, dev, out: str, *extra: str) -> int:
    return main(
        [
            "prune",
            "--teacher",
            str(root / "teacher"),
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--out",
            str(root / out),
            *FAST,
            *extra,
        ]
    )


# ---------------------------------------------------------------------- pieces
def test_default_distill_layers_follow_the_paper():
    assert default_distill_layers(12) == [0, 4, 8, 12]
    assert default_distill_layers(24) == [0, 8, 16, 24]
    assert default_distill_layers(2) == [0, 1, 2]


def test_distillation_loss_is_minus_one_for_identical_states():
    states = [torch.randn(2, 5, 8) for _ in range(3)]
    loss, scalars = distillation_loss(states, states, [0, 2])
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    assert scalars["distill_l1"] == 0.0
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    other = [s.clone() for s in states]
    other[0][1, 2:] += 100.0  # only padded frames differ
    masked, _ = distillation_loss(other, states, [0], mask)
    assert masked.item() == pytest.approx(-1.0, abs=1e-6)


def test_distillation_loss_averages_over_layers():
    """Four identical distilled layers weigh as much as one: the loss is a mean, not a sum."""
    torch.manual_seed(0)
    student_layer, teacher_layer = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    one, one_scalars = distillation_loss([student_layer], [teacher_layer], [0])
    four, four_scalars = distillation_loss([student_layer] * 4, [teacher_layer] * 4, [0, 1, 2, 3])
    assert four.item() == pytest.approx(one.item(), rel=1e-6)
    assert four_scalars == pytest.approx(one_scalars, rel=1e-6)


def test_distillation_loss_is_the_mean_l1_minus_the_mean_cosine_of_the_stacked_states():
    """The reference's form: mean absolute error and mean cosine over (batch, layer, frame)."""
    torch.manual_seed(1)
    student = [torch.randn(3, 6, 10) for _ in range(5)]
    teacher = [torch.randn(3, 6, 10) for _ in range(5)]
    layers = [0, 2, 4]
    s = torch.stack([student[i] for i in layers], dim=1)  # (B, layer, T, E)
    t = torch.stack([teacher[i] for i in layers], dim=1)
    l1 = (s - t).abs().mean()
    cos = ((s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))).mean()
    loss, scalars = distillation_loss(student, teacher, layers)
    assert scalars["distill_l1"] == pytest.approx(l1.item(), rel=1e-5)
    assert scalars["distill_cos"] == pytest.approx(cos.item(), rel=1e-5)
    assert loss.item() == pytest.approx((l1 - cos).item(), rel=1e-5)


def test_target_rises_linearly_over_the_warmup():
    controller = SparsityController(0.8, warmup_epochs=5)
    assert controller.target(0.0) == 0.0
    assert controller.target(2.5) == pytest.approx(0.4)
    assert controller.target(5.0) == pytest.approx(0.8)
    assert controller.target(30.0) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="between 0 and 1|in \\(0, 1\\)"):
        SparsityController(1.0)


def test_gradient_reversal_steps_exactly_as_gradient_ascent_did():
    """λ's AdamW step through the gradient reversal, positive lr, equals the former ascent step.

    The former trainer negated the multipliers' gradients after clipping and gave AdamW |lr|;
    runs, two-process runs and resumed stage-1 runs written before the change depend on the
    steps being the same bit for bit (and on the optimiser state having the same layout).
    """
    from slimdiar.train.clipping import PercentileClipper

    def build():
        torch.manual_seed(0)
        model = WavLM.from_preset("wavlm-tiny").enable_pruning()
        controller = SparsityController(0.5, warmup_epochs=0)
        with torch.no_grad():  # multipliers away from 0, so that both terms have a gradient
            controller.lambda1.fill_(-0.3)
            controller.lambda2.fill_(0.2)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": model.gate_parameters(),
                    "lr": 0.05,
                    "weight_decay": 0.0,
                    "name": "gates",
                },
                {
                    "params": list(controller.parameters()),
                    "lr": abs(-0.02),
                    "weight_decay": 0.0,
                    "name": "lambda",
                },
            ]
        )
        return model, controller, optimizer, PercentileClipper(90.0, 1000)

    reference = float(WavLM.from_preset("wavlm-tiny").num_params())
    old, new = build(), build()
    for _ in range(5):
        for (model, controller, optimizer, clipper), reversed_ in ((old, False), (new, True)):
            sparsity = expected_sparsity(model, reference)
            if reversed_:
                penalty = controller.penalty(sparsity, 0.5)
            else:  # the former loss and the trainer's former negation, after clipping
                gap = sparsity - 0.5
                penalty = controller.lambda1 * gap + controller.lambda2 * gap * gap
            optimizer.zero_grad()
            penalty.backward()
            params = model.gate_parameters() + list(controller.parameters())
            clipper(params)
            if not reversed_:
                for p in controller.parameters():
                    p.grad.neg_()
            optimizer.step()
    for a, b in zip(old[1].parameters(), new[1].parameters()):
        assert torch.equal(a, b)
    assert old[1].lambda1.item() != -0.3 and old[1].lambda2.item() != 0.2
    for a, b in zip(old[0].gate_parameters(), new[0].gate_parameters()):
        assert torch.equal(a, b)
    state_old, state_new = old[2].state_dict(), new[2].state_dict()
    assert state_old["param_groups"] == state_new["param_groups"]
    for key, value in state_old["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, state_new["state"][key][name]), (key, name)


def test_lagrangian_grows_while_sparsity_lags_then_tracks_the_target():
    torch.manual_seed(0)
    model = WavLM.from_preset("wavlm-tiny").enable_pruning()
    reference = float(model.num_params())
    controller = SparsityController(0.5, warmup_epochs=0)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.gate_parameters(), "lr": 0.05, "weight_decay": 0.0},
            {"params": list(controller.parameters()), "lr": 0.05, "weight_decay": 0.0},
        ]
    )
    history = []
    for _ in range(400):
        sparsity = expected_sparsity(model, reference)
        penalty = controller.penalty(sparsity, 0.5)
        optimizer.zero_grad()
        penalty.backward()  # the multipliers climb the penalty through its gradient reversal
        optimizer.step()
        history.append((sparsity.item(), controller.lambda1.item(), controller.lambda2.item()))
    lagging = [h for h in history[:60] if h[0] < 0.4]
    assert len(lagging) > 30
    # while the sparsity lags, the multipliers grow in magnitude (λ1 < 0 pushes it up)
    assert abs(lagging[-1][1]) > abs(lagging[5][1]) > 0
    assert lagging[-1][2] > lagging[5][2] > 0
    # and at the end the expected sparsity tracks the target
    assert all(abs(h[0] - 0.5) < 0.02 for h in history[-30:])


# ---------------------------------------------------------------------- the reference's settings
def test_stage_defaults_are_the_reference_recipe():
    """SPEC 1.4/1.5: stage 1 up to 30 epochs, global batch 64 (Base+), 5 averaged from the loss
    peak on, no log-alpha clamp; stage 2 up to 20 epochs, batch 64, patience 5, 5 averaged."""
    stage1 = PruneConfig()
    assert (stage1.trainer.max_epochs, stage1.trainer.batch_size) == (30, 64)
    assert (stage1.trainer.patience, stage1.trainer.average_best) == (5, 5)
    assert stage1.prune.final_model == "average"
    assert stage1.prune.gate_bound == 0.0
    assert (stage1.prune.warmup_epochs, stage1.prune.sparsity) == (5.0, 0.8)
    assert (
        stage1.optim.lr_weights,
        stage1.optim.lr_gates,
        stage1.optim.lr_lambda,
        stage1.optim.weight_decay,
    ) == (2e-4, 2e-2, 2e-2, 0.0)
    stage2 = DistillConfig()
    assert (stage2.trainer.max_epochs, stage2.trainer.batch_size) == (20, 64)
    assert (stage2.trainer.patience, stage2.trainer.average_best) == (5, 5)
    assert isinstance(stage1.trainer, PruneTrainerConfig)
    assert isinstance(stage2.trainer, DistillTrainerConfig)


@pytest.mark.parametrize(
    "name, batch_size, layers",
    [
        ("prune-wavlm-base-plus.toml", 64, [0, 4, 8, 12]),
        ("prune-wavlm-large.toml", 32, [0, 8, 16, 24]),
    ],
)
def test_stage1_configs_of_the_recipe(name, batch_size, layers):
    config = load_config(PruneConfig, name)
    assert config.trainer.batch_size == batch_size
    assert config.prune.distill_layers == layers
    assert config.prune.final_model == "average" and config.prune.gate_bound == 0.0
    assert (config.trainer.max_epochs, config.trainer.patience) == (30, 5)


def test_final_model_and_gate_bound_are_settings():
    config = load_config(
        PruneConfig, None, ['prune.final_model="on-target"', "prune.gate_bound=0.001"]
    )
    assert (config.prune.final_model, config.prune.gate_bound) == ("on-target", 0.001)
    assert (
        load_config(PruneConfig, None, ["prune.final_model=on-target"]).prune.final_model
        == "on-target"
    )


def test_log_alphas_are_not_clamped_by_default():
    teacher = WavLM.from_preset("wavlm-tiny").eval()
    student = enable_units(WavLM.from_preset("wavlm-tiny"), PruneSection())
    objective = PruneObjective(
        student,
        teacher,
        [0, 2],
        DistillOptimSection(),
        SparsityController(0.5),
        gate_bound=PruneSection().gate_bound,
    )
    with torch.no_grad():
        for gate in student.gates():
            gate.log_alpha.uniform_(-20.0, 20.0)
    before = [gate.log_alpha.detach().clone() for gate in student.gates()]
    objective.after_step()
    for gate, value in zip(student.gates(), before):
        assert torch.equal(gate.log_alpha, value)


def history(totals: dict[int, float]) -> list[dict]:
    return [
        {"epoch": e, "val_loss": 0.0, "selectable": True, "metrics": {"total": t}}
        for e, t in sorted(totals.items())
    ]


def test_final_epochs_are_the_lowest_from_the_loss_peak_on():
    # epoch 1 is low (units have not closed yet) but lies before the peak (epoch 3)
    totals = {1: 0.2, 2: 0.9, 3: 1.5, 4: 1.2, 5: 0.8, 6: 0.7, 7: 1.0, 8: 0.75}
    assert post_peak_epochs(history(totals), 5, "total") == [6, 8, 5, 7, 4]
    # the peak epoch itself is a candidate; fewer than 5 from the peak on: all of them
    assert post_peak_epochs(history({1: 0.1, 2: 0.3, 3: 0.9, 4: 0.5}), 5, "total") == [4, 3]
    # the earliest of equal peaks; equal losses: the earlier epoch first; NaN never chosen first
    tied = history({1: 0.2, 2: 1.0, 3: 0.5, 4: 1.0, 5: 0.5, 6: float("nan")})
    assert post_peak_epochs(tied, 5, "total") == [3, 5, 2, 4, 6]
    assert post_peak_epochs(history({1: float("nan")}), 5, "total") == []


def test_on_target_rule_takes_the_one_best_on_target_checkpoint():
    teacher = WavLM.from_preset("wavlm-tiny").eval()
    student = enable_units(WavLM.from_preset("wavlm-tiny"), PruneSection())
    objective = PruneObjective(
        student,
        teacher,
        [0, 2],
        DistillOptimSection(),
        SparsityController(0.5),
        final_model="on-target",
    )
    runs = [
        {"epoch": 1, "val_loss": 0.1, "selectable": False, "metrics": {"total": 0.5}},
        {"epoch": 2, "val_loss": 0.4, "selectable": True, "metrics": {"total": 0.9}},
        {"epoch": 3, "val_loss": 0.3, "selectable": True, "metrics": {"total": 0.3}},
    ]
    assert objective.final_epochs(runs, 5) == [3]
    objective.final_model = "average"
    assert objective.final_epochs(runs, 5) == [3, 2]


def test_stage1_model_is_the_average_of_the_chosen_epochs_log_alphas_included(setup):
    """Hand-set checkpoints and dev losses of a finished run: rebuilding it (--resume) averages
    the 5 epochs with the lowest total dev loss from the peak on, then prunes that average."""
    root, train, dev = setup
    exp = root / "average"
    args = [
        "--sparsity",
        "0.5",
        "--set",
        "trainer.max_epochs=8",
        "--set",
        "trainer.max_steps_per_epoch=1",
        "--set",
        "prune.warmup_epochs=1",
        "--set",
        "trainer.patience=0",
    ]
    assert run_prune(root, train, dev, "average", *args) == 0
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(epochs) == 8
    for r in epochs:  # the total dev loss is distillation + the Lagrangian term
        assert r["val/total"] == pytest.approx(r["val/loss"] + r["val/penalty"], abs=1e-6)
    # hand-set weights and log-alphas for every epoch, and a loss curve that peaks at epoch 3
    totals = {1: 0.2, 2: 0.9, 3: 1.5, 4: 1.2, 5: 0.8, 6: 0.7, 7: 1.0, 8: 0.75}
    states = {}
    for epoch in totals:
        directory = exp / "checkpoints" / f"epoch-{epoch:03d}"
        state = load_checkpoint(directory)[0]
        generator = torch.Generator().manual_seed(epoch)
        for key, value in state.items():
            if key.endswith("log_alpha"):
                state[key] = torch.empty_like(value).uniform_(-4.0, 4.0, generator=generator)
            elif value.is_floating_point():
                state[key] = value + 0.1 * torch.randn(value.shape, generator=generator)
        save_file(state, str(directory / "model.safetensors"))
        states[epoch] = state
    state_path = exp / "checkpoints" / "epoch-008" / STATE_NAME
    training_state = torch.load(state_path, weights_only=True)
    for entry in training_state["history"]:
        entry["metrics"]["total"] = totals[entry["epoch"]]
    torch.save(training_state, state_path)
    for name in ("best", "pruned"):
        shutil.rmtree(exp / name)
    assert run_prune(root, train, dev, "average", *args, "--resume") == 0

    chosen = [6, 8, 5, 7, 4]
    assert json.loads((exp / "best" / "metadata.json").read_text())["epochs"] == chosen
    best = load_checkpoint(exp / "best")[0]
    log_alphas = [k for k in best if k.endswith("log_alpha")]
    assert log_alphas
    for key, value in best.items():
        if value.is_floating_point():
            expected = torch.stack([states[e][key].double() for e in chosen]).mean(0)
            assert torch.allclose(value.double(), expected, atol=1e-6), key
    # the pruned model is the pruning of that average, and the report says so
    gated = load_gated_student(exp / "best", PruneSection())
    pruned = WavLM.from_pretrained(exp / "pruned")
    assert pruned.config == gated.prune().config
    teacher = WavLM.from_pretrained(root / "teacher")
    report = json.loads((exp / "report.json").read_text())
    assert report["final_model"] == {"rule": "average", "epochs": chosen}
    assert report["reached_sparsity"] == pytest.approx(
        1 - pruned.num_params() / teacher.num_params()
    )
    metadata = json.loads((exp / "pruned" / "metadata.json").read_text())
    assert metadata["reached_sparsity"] == pytest.approx(report["reached_sparsity"])
    assert metadata["final_model"] == "average" and metadata["epochs"] == chosen


# ---------------------------------------------------------------------- errors before work
@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "/nonexistent/teacher", "--sparsity", "0.8"], "does not exist"),
        (["--sparsity", "1.2"], "between 0 and 1"),
        (["--sparsity", "0"], "between 0 and 1"),
        (["--set", "prune.distill_layers=[0, 1, 7]"], "beyond the model's depth"),
        (["--set", 'prune.units=["conv", "neurons"]'], "units must be"),
        (["--set", "prune.gate_bound=0.5"], "gate_bound must be"),
        (["--set", 'prune.final_model="best"'], "final_model must be one of"),
    ],
)
def test_bad_settings_are_clear_errors_before_any_work(setup, capsys, args, message):
    root, train, dev = setup
    teacher = [] if "--teacher" in args else ["--teacher", str(root / "teacher")]
    out = root / "never-written"
    code = main(
        ["prune", *teacher, "--train", str(train), "--dev", str(dev), "--out", str(out), *args]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


# ---------------------------------------------------------------------- the stage end to end
@pytest.fixture(scope="module")
def heads_ffn(setup):
    """A stage-1 run that prunes heads and FFN units to 0.3; its experiment directory."""
    root, train, dev = setup
    code = run_prune(
        root,
        train,
        dev,
        "heads-ffn",
        "--sparsity",
        "0.3",
        "--set",
        'prune.units=["head", "ffn"]',
        "--set",
        "trainer.max_epochs=2",
        "--set",
        "prune.warmup_epochs=1",
        "--set",
        "optim.lr_gates=0.2",
        "--set",
        "optim.lr_lambda=0.5",
    )
    assert code == 0
    return root / "heads-ffn"


def test_prune_writes_a_smaller_exact_model_and_a_report(setup, heads_ffn):
    root, train, dev = setup
    exp = heads_ffn
    teacher = WavLM.from_pretrained(root / "teacher")
    pruned = WavLM.from_pretrained(exp / "pruned")
    assert pruned.num_params() < teacher.num_params()
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(exp / "pruned") < size(root / "teacher")
    # the pruned checkpoint computes what the averaged gated model computed in eval mode
    gated = load_gated_student(exp / "best", PruneSection(units=["head", "ffn"]))
    waveforms = torch.randn(2, 16000)
    with torch.no_grad():
        for a, b in zip(gated(waveforms), pruned(waveforms)):
            assert (a - b).abs().max().item() < 1e-4
    assert pruned.num_params() == gated.deterministic_num_params()
    # it runs in the diarization model with a fresh head
    model = EEND.from_backbone_checkpoint(exp / "pruned")
    assert model(waveforms).shape == (2, 49, 11)
    report = json.loads((exp / "report.json").read_text())
    assert report["student"]["params"] == pruned.num_params()
    assert report["reached_sparsity"] == pytest.approx(
        1 - pruned.num_params() / teacher.num_params()
    )
    for name in ("report.md", "kept_units.png", "training.png"):
        assert (exp / name).stat().st_size > 0
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert {"expected_sparsity", "target_sparsity", "lambda1", "lambda2", "distill"} <= set(
        steps[0]
    )


def test_pretrained_wavlm_teacher_runs_the_same_code(setup):
    """The baseline order: the teacher is a plain (pre-trained) WavLM, not a diarization model."""
    root, train, dev = setup
    WavLM.from_pretrained(root / "teacher").save_pretrained(root / "plain-teacher")
    code = main(
        [
            "prune",
            "--teacher",
            str(root / "plain-teacher"),
            "--sparsity",
            "0.3",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--out",
            str(root / "baseline"),
            *FAST,
            "--set",
            "trainer.max_epochs=1",
            "--set",
            "trainer.max_steps_per_epoch=2",
        ]
    )
    assert code == 0
    assert WavLM.from_pretrained(root / "baseline" / "pruned").num_params() > 0


def test_prune_resume_reproduces_the_uninterrupted_run(setup):
    root, train, dev = setup
    common = [
        "--sparsity",
        "0.5",
        "--set",
        "trainer.max_steps_per_epoch=3",
        "--set",
        "prune.warmup_epochs=1",
    ]
    assert run_prune(root, train, dev, "straight", *common, "--set", "trainer.max_epochs=2") == 0
    assert run_prune(root, train, dev, "resumed", *common, "--set", "trainer.max_epochs=1") == 0
    assert (
        run_prune(root, train, dev, "resumed", *common, "--set", "trainer.max_epochs=2", "--resume")
        == 0
    )

    def losses(name):
        lines = (root / name / "metrics.jsonl").read_text().splitlines()
        return [
            (r["step"], r["loss"], r["lambda1"])
            for r in map(json.loads, lines)
            if r["type"] == "step"
        ]

    straight, resumed = losses("straight"), losses("resumed")
    assert len(straight) == len(resumed) == 6
    for (s1, l1, a1), (s2, l2, a2) in zip(straight, resumed):
        assert s1 == s2 and abs(l1 - l2) < 1e-6 and abs(a1 - a2) < 1e-6


def test_distill_stage_trains_the_pruned_student(setup, heads_ffn):
    root, train, dev = setup
    code = main(
        [
            "distill",
            "--student",
            str(heads_ffn / "pruned"),
            "--teacher",
            str(root / "teacher"),
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--out",
            str(root / "distill"),
            *FAST,
            "--set",
            "trainer.max_epochs=1",
            "--set",
            "trainer.max_steps_per_epoch=3",
            "--set",
            "trainer.average_best=1",
        ]
    )
    assert code == 0
    distilled = WavLM.from_pretrained(root / "distill" / "best")
    assert distilled.config == WavLM.from_pretrained(heads_ffn / "pruned").config


def test_gates_follow_the_units_setting():
    model = enable_units(WavLM.from_preset("wavlm-tiny"), PruneSection(units=["head"]))
    assert all(layer.gate is None for layer in model.feature_extractor.conv_layers)
    assert all(layer.attention.head_gate is not None for layer in model.encoder.layers)
    assert all(layer.feed_forward.unit_gate is None for layer in model.encoder.layers)


def test_the_prune_objective_bounds_its_gates_after_each_step():
    teacher = WavLM.from_preset("wavlm-tiny").eval()
    student = enable_units(WavLM.from_preset("wavlm-tiny"), PruneSection())
    objective = PruneObjective(
        student, teacher, [0, 2], DistillOptimSection(), SparsityController(0.5), gate_bound=0.01
    )
    with torch.no_grad():
        for gate in student.gates():
            gate.log_alpha.uniform_(-20.0, 20.0)
    objective.after_step()
    for gate in student.gates():
        p = gate.open_probability()
        assert bool(((p > 0.00999) & (p < 0.99001)).all())


def test_gate_bound_keeps_open_probabilities_inside():
    gate = HardConcrete(4)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-30.0, -1.0, 2.0, 30.0]))
    gate.constrain_(0.0)  # no bound: unchanged
    assert gate.log_alpha[0].item() == -30.0
    gate.constrain_(0.001)
    p = gate.open_probability()
    assert p[0].item() == pytest.approx(0.001, rel=1e-4)
    assert p[3].item() == pytest.approx(0.999, rel=1e-4)
    assert gate.log_alpha[1:3].tolist() == [-1.0, 2.0]  # inside the bounds: untouched


# ---------------------------------------------------------------------- reaching the target
@pytest.mark.slow
def test_prune_with_two_processes_matches_one_process(setup):
    """torchrun with 2 processes and the same global batch runs the same prune stage.

    WavLM's dropout is off here: each process draws its own dropout masks, as in any
    data-parallel run, so with dropout the two runs agree only in distribution.
    """
    root, train, dev = setup
    common = [
        "--sparsity",
        "0.5",
        "--set",
        "trainer.max_epochs=2",
        "--set",
        "trainer.max_steps_per_epoch=3",
        "--set",
        "prune.warmup_epochs=1",
        "--set",
        "optim.lr_gates=0.2",
        "--set",
        "optim.lr_lambda=0.5",
        "--set",
        "wavlm.feat_proj_dropout=0",
        "--set",
        "wavlm.attention_dropout=0",
        "--set",
        "wavlm.hidden_dropout=0",
    ]
    assert run_prune(root, train, dev, "single", *common) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29541",
        "-m",
        "slimdiar",
        "prune",
        "--teacher",
        str(root / "teacher"),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--out",
        str(root / "ddp"),
        *FAST,
        *common,
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    def records(name):
        lines = (root / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["type"] in ("step", "epoch")]

    single, ddp = records("single"), records("ddp")
    assert len(single) == len(ddp) == 8
    for a, b in zip(single, ddp):
        for key in (
            "loss",
            "distill",
            "expected_sparsity",
            "lambda1",
            "lambda2",
            "val/loss",
            "val/sparsity",
        ):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a, b)
    a = load_checkpoint(root / "single" / "pruned")[0]
    b = load_checkpoint(root / "ddp" / "pruned")[0]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
