r"""``slimdiar distill``: further distillation of a pruned WavLM (stage 2).

Usage::

    slimdiar distill --student exp/prune80/pruned --teacher exp/finetune/best \
        --train data/train --dev data/dev --out exp/distill80
"""

from __future__ import annotations

import argparse

from slimdiar.cli._args import number
from slimdiar.cli._training import add_data_arguments, add_run_arguments, run_stage
from slimdiar.config import load_config
from slimdiar.stages.distill import DistillConfig

DESCRIPTION = """\
Further distillation of a pruned WavLM from the teacher, without gates (stage 2): the same
L1 - cosine loss on the same hidden states as 'slimdiar prune'. OUT/best is the distilled
student (the average of the best checkpoints by validation loss), a plain WavLM checkpoint that
'slimdiar finetune --backbone' takes for stage 3.
"""


def epilog(defaults: DistillConfig) -> str:
    """The help's epilog, its numbers taken from ``defaults``."""
    o, t = defaults.optim, defaults.trainer
    return f"""\
configuration (optional TOML with [data], [optim], [trainer] and distill_layers):
  defaults are the reference's: up to {t.max_epochs} epochs, global batch {t.batch_size}, \
early stop after {t.patience} epochs
  without a lower validation loss, lr {number(o.lr_weights)}, weight decay \
{number(o.weight_decay)}, the final model averages the {t.average_best} best.

example:
  slimdiar distill --student exp/prune80/pruned --teacher exp/ft/best \\
      --train data/train --dev data/dev --out exp/distill80
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar distill``."""
    parser = subparsers.add_parser(
        "distill",
        help="further distillation of a pruned WavLM (stage 2)",
        description=DESCRIPTION,
        epilog=epilog(DistillConfig()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--student",
        required=True,
        metavar="CKPT",
        help="pruned WavLM (e.g. EXP_DIR/pruned of slimdiar prune)",
    )
    parser.add_argument(
        "--teacher", required=True, metavar="CKPT", help="the teacher used for pruning"
    )
    add_data_arguments(parser)
    add_run_arguments(parser, config_required=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Distil and print where the result is."""
    from slimdiar.stages import distill

    config = load_config(distill.DistillConfig, args.config, args.overrides)
    ctx, result = run_stage(
        config.trainer.device,
        lambda ctx: distill.run(
            config,
            args.student,
            args.teacher,
            args.train,
            args.dev,
            args.out,
            ctx=ctx,
            resume=args.resume,
        ),
    )
    if ctx.is_main:
        print(f"done after {result.epochs_run} epochs ({result.steps} steps)")
        print(f"distilled student (average of epochs {result.best_epochs}): {result.best_dir}")
    return 0
