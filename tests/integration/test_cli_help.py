"""The numbers ``--help`` quotes are the defaults of the dataclasses and argparse, not copies."""

from __future__ import annotations

import dataclasses
import re

from slimdiar.cli import main
from slimdiar.cli._args import number
from slimdiar.cli.prune import epilog
from slimdiar.config import bundled_configs, load_config
from slimdiar.pipeline.clustering import AgglomerativeClustering
from slimdiar.pipeline.config import DEFAULT_BATCH_SIZES, WindowsSection
from slimdiar.simulate.config import TurnTakingConfig
from slimdiar.stages.distill import DistillConfig
from slimdiar.stages.prune import PruneConfig


def help_text(capsys, *command: str) -> str:
    assert main([*command, "--help"]) == 0
    # argparse wraps option help, also after hyphens ("built-\n in")
    return re.sub(r"-\s+", "-", re.sub(r"\s+", " ", capsys.readouterr().out))


def test_number_writes_defaults_as_short_as_toml_would():
    assert [number(x) for x in (2e-4, 0.02, 0.8, 5.0, 0.0, 30, 1e-3)] == [
        "2e-4",
        "0.02",
        "0.8",
        "5",
        "0",
        "30",
        "1e-3",
    ]


def test_prune_help_quotes_the_prune_config_defaults(capsys):
    text = help_text(capsys, "prune")
    p, o, t = PruneConfig().prune, PruneConfig().optim, PruneConfig().trainer
    large = load_config(PruneConfig, "prune-wavlm-large").trainer.batch_size
    for quoted in (
        f"up to {t.max_epochs} epochs",
        f"patience {t.patience} past the warm-up",
        f"global batch {t.batch_size} (--config prune-wavlm-large: {large} for Large)",
        f"warm-up {number(p.warmup_epochs)},",
        f"lr {number(o.lr_weights)} weights / {number(o.lr_gates)} gates / "
        f"{number(o.lr_lambda)} lambda",
        f"prune.gate_bound = {number(p.gate_bound)}",
        f"trainer.average_best ({t.average_best})",
        f"prune.tolerance ({number(p.tolerance)})",
        f"(default {number(p.sparsity)})",
        f"(default: {p.objective})",
    ):
        assert quoted in text, quoted
    assert "up to 30 epochs" in text and "lr 2e-4 weights" in text  # the reference's values


def test_the_prune_epilog_follows_a_changed_default():
    defaults = PruneConfig()
    changed = dataclasses.replace(
        defaults,
        trainer=dataclasses.replace(defaults.trainer, max_epochs=12, patience=3),
        optim=dataclasses.replace(defaults.optim, lr_weights=5e-5),
    )
    text = epilog(changed, defaults)
    assert "up to 12 epochs (early stop: patience 3 past" in text and "lr 5e-5 weights" in text


def test_distill_help_quotes_the_distill_config_defaults(capsys):
    text = help_text(capsys, "distill")
    o, t = DistillConfig().optim, DistillConfig().trainer
    assert (
        f"up to {t.max_epochs} epochs, global batch {t.batch_size}, early stop after "
        f"{t.patience} epochs"
    ) in text
    assert f"lr {number(o.lr_weights)}, weight decay {number(o.weight_decay)}" in text
    assert f"averages the {t.average_best} best" in text


def test_diarize_help_quotes_the_pipeline_defaults(capsys):
    text = help_text(capsys, "diarize")
    windows = WindowsSection()
    assert f"windows.step_s; built-in default {windows.step_s:g})" in text
    assert windows.batch_size is None  # chosen per device
    cpu, gpu = DEFAULT_BATCH_SIZES["cpu"], DEFAULT_BATCH_SIZES["cuda"]
    assert f"windows.batch_size; built-in default: {cpu} on a CPU, {gpu} on a GPU," in text
    assert (
        f"({windows.duration_s:g} s windows every {windows.step_s:g} s in batches of {cpu} on a "
        f"CPU and {gpu} on a GPU,"
    ) in text
    assert (
        f"clustering.min_cluster_size; built-in default {AgglomerativeClustering.min_cluster_size})"
    ) in text


def test_simulate_bench_and_training_help_quote_their_defaults(capsys):
    assert f"(default: {TurnTakingConfig().overlap_ratio:g}, or the value measured" in help_text(
        capsys, "simulate"
    )
    bench = help_text(capsys, "bench")
    assert "one input (default: 8)" in bench and "synthetic recording (default: 600)" in bench
    assert "untimed rounds (each runs every model once) (default: 2)" in bench
    finetune = help_text(capsys, "finetune")
    assert "a TOML file or the name of a bundled one (" + ", ".join(bundled_configs()) in finetune
