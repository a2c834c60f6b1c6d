r"""``slimdiar finetune``: train the diarization model (WavLM + Conformer, powerset loss).

Usage::

    slimdiar finetune --config wavlm-base-plus \
        --train data/train --dev data/dev --out exp/base-plus \
        --backbone checkpoints/wavlm-base-plus
    torchrun --nproc_per_node 4 -m slimdiar finetune --config ... --out exp/base-plus
    slimdiar finetune --config ... --out exp/base-plus --resume
"""

from __future__ import annotations

import argparse

from slimdiar.cli._training import add_data_arguments, add_run_arguments, run_stage
from slimdiar.config import load_config
from slimdiar.stages import finetune

DESCRIPTION = """\
Fine-tune WavLM inside the end-to-end diarization model (stage 0; with a pruned backbone and
20 epochs / patience 5 it is also stage 3).

Training chunks come from the UEM regions of --train, validation chunks from --dev. Every epoch
writes OUT/checkpoints/epoch-NNN (a loadable checkpoint plus the training state) and appends to
OUT/metrics.jsonl; at the end OUT/best holds the average of the best checkpoints by validation
loss: the model every later command loads. The same command runs on several GPUs under
'torchrun --nproc_per_node N' or 'accelerate launch' (trainer.batch_size is the global batch).
"""

EPILOG = """\
configuration:
  A TOML file with sections [model], [data], [optim] and [trainer], or the name of a bundled
  one (--config wavlm-base-plus, wavlm-large or tiny: see docs/training.md); any value can be
  overridden with --set SECTION.KEY=VALUE, e.g. --set trainer.batch_size=32,
  --set model.frontend=wavlm-frozen, --set optim.lr_head=5e-4.

front-ends (model.frontend):
  wavlm          WavLM updated with lr optim.lr_backbone (default)
  wavlm-frozen   WavLM fixed, only the head trains
  fbank          log-mel filterbank, no self-supervised model

examples:
  slimdiar finetune --config tiny --train data/toy/train --dev data/toy/dev \\
      --out exp/tiny
  torchrun --nproc_per_node 4 -m slimdiar finetune --config wavlm-large \\
      --train data/compound/train --dev data/compound/dev --out exp/large \\
      --backbone models/wavlm-large
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune WavLM + Conformer for diarization",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--backbone",
        metavar="CKPT_OR_PRESET",
        help="WavLM checkpoint (Hugging Face dir, original .pt, slimdiar dir) or preset name "
        "(random init); overrides model.backbone",
    )
    add_run_arguments(parser, config_required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, then print where the final model is."""
    config = load_config(finetune.FinetuneConfig, args.config, args.overrides)
    ctx, result = run_stage(
        config.trainer.device,
        lambda ctx: finetune.run(
            config,
            args.train,
            args.dev,
            args.out,
            ctx=ctx,
            backbone=args.backbone,
            resume=args.resume,
        ),
    )
    if ctx.is_main:
        how = "stopped early" if result.stopped_early else "done"
        print(f"{how} after {result.epochs_run} epochs ({result.steps} steps)")
        print(f"final model (average of epochs {result.best_epochs}): {result.best_dir}")
        if result.best_metrics:
            print(
                "its validation metrics: "
                + ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.best_metrics.items()))
            )
    return 0
