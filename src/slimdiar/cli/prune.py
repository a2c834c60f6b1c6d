r"""``slimdiar prune``: distill and prune WavLM to a target sparsity (stage 1).

Usage::

    slimdiar prune --teacher exp/finetune/best --sparsity 0.8 \
        --train data/train --dev data/dev --out exp/prune80
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slimdiar.cli._args import number
from slimdiar.cli._training import add_data_arguments, add_run_arguments, run_stage
from slimdiar.config import bundled_config, load_config
from slimdiar.stages.prune import PruneConfig

DESCRIPTION = """\
Structured pruning of WavLM with distillation from a teacher (stage 1 of the method).

The student is a copy of the teacher's WavLM with hard-concrete gates on conv channels,
attention heads and FFN units. It learns to match the teacher's hidden states (L1 - cosine)
while a Lagrangian term drives its expected sparsity to a target that rises linearly over the
warm-up epochs. At the end the chosen checkpoints of the gated model are averaged, the
deterministic masks applied, and OUT/pruned holds the plain, smaller WavLM; OUT/report.json,
OUT/report.md and PNG plots describe what was kept.

--teacher is a fine-tuned diarization checkpoint (its WavLM is teacher and student: the
paper's order) or a pre-trained WavLM (the 'prune before fine-tune' baseline): same code.
"""


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{value}"' for value in values) + "]"


def epilog(defaults: PruneConfig, large: PruneConfig) -> str:
    """The help's epilog, its numbers taken from ``defaults`` and the bundled Large config."""
    p, o, t = defaults.prune, defaults.optim, defaults.trainer
    return "\n".join(
        [
            "configuration (optional TOML with sections [prune], [data], [optim], [trainer]):",
            f"  defaults are the reference's: up to {t.max_epochs} epochs (early stop: patience "
            f"{t.patience} past the warm-up),",
            f"  global batch {t.batch_size} (--config prune-wavlm-large: "
            f"{large.trainer.batch_size} for Large), warm-up {number(p.warmup_epochs)}, "
            f"lr {number(o.lr_weights)} weights /",
            f"  {number(o.lr_gates)} gates / {number(o.lr_lambda)} lambda, units = "
            f"{_toml_list(p.units)}, distill_layers = [0, L/3, 2L/3, L],",
            f"  no clamp on the log-alphas (prune.gate_bound = {number(p.gate_bound)}).",
            """  e.g. --set prune.units='["conv","head","ffn","attention_block"]' """
            "--set trainer.batch_size=8",
            f'  The final model (prune.final_model = "{p.final_model}") averages, log-alphas '
            "included, the",
            f"  trainer.average_best ({t.average_best}) epochs with the lowest total validation "
            "loss (distillation +",
            '  Lagrangian) from the epoch where that loss peaks on; "on-target" takes the one '
            "checkpoint past",
            f"  the warm-up within prune.tolerance ({number(p.tolerance)}) of the target with the "
            "lowest validation",
            "  distillation loss. More in docs/pruning.md.",
            "",
            "examples:",
            "  slimdiar prune --teacher exp/ft/best --sparsity 0.8 --train data/train --dev "
            "data/dev \\",
            "      --out exp/prune80",
            "  slimdiar prune --teacher models/wavlm-base-plus --sparsity 0.8 --objective macs ...",
            "  torchrun --nproc_per_node 4 -m slimdiar prune --teacher exp/ft/best "
            "--sparsity 0.9 ...",
            "",
        ]
    )


def add_parser(subparsers) -> None:
    """Register ``slimdiar prune``."""
    parser = subparsers.add_parser(
        "prune",
        help="distill and prune WavLM to a target sparsity (stage 1)",
        description=DESCRIPTION,
        epilog=epilog(PruneConfig(), load_config(PruneConfig, bundled_config("prune-wavlm-large"))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--teacher",
        required=True,
        metavar="CKPT",
        help="fine-tuned diarization checkpoint or pre-trained WavLM",
    )
    parser.add_argument(
        "--sparsity",
        type=float,
        metavar="S",
        help="target fraction of WavLM removed, in (0, 1) (default "
        f"{number(PruneConfig().prune.sparsity)})",
    )
    parser.add_argument(
        "--objective",
        choices=["params", "macs"],
        help=f"what sparsity measures (default: {PruneConfig().prune.objective})",
    )
    add_data_arguments(parser)
    add_run_arguments(parser, config_required=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune, write the pruned model and the report, print a summary."""
    from slimdiar.stages import prune

    overrides = list(args.overrides)
    if args.sparsity is not None:
        overrides.append(f"prune.sparsity={args.sparsity!r}")
    if args.objective is not None:
        overrides.append(f'prune.objective="{args.objective}"')
    config = load_config(prune.PruneConfig, args.config, overrides)
    ctx, (result, _, _) = run_stage(
        config.trainer.device,
        lambda ctx: prune.run(
            config, args.teacher, args.train, args.dev, args.out, ctx=ctx, resume=args.resume
        ),
    )
    if ctx.is_main:
        report = json.loads((Path(args.out) / "report.json").read_text())
        t, s = report["teacher"], report["student"]
        print(f"teacher {t['params'] / 1e6:.2f}M params, {t['macs_per_second'] / 1e9:.2f}G MACs/s")
        print(f"pruned  {s['params'] / 1e6:.2f}M params, {s['macs_per_second'] / 1e9:.2f}G MACs/s")
        print(
            f"sparsity reached {report['reached_sparsity']:.4f} in parameters, "
            f"{report['reached_mac_sparsity']:.4f} in MACs "
            f"(target {report['target_sparsity']:.4f}, {report['objective']})"
        )
        print(f"final model: {config.prune.final_model} of epochs {result.best_epochs}")
        print(f"pruned model: {args.out}/pruned   report: {args.out}/report.md")
    return 0
