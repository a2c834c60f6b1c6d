r"""``slimdiar pretrain``: self-supervised pretraining of a WavLM (HuBERT/WavLM masked prediction).

Usage::

    slimdiar pretrain --config pretrain-tiny --train audio/train --dev audio/dev \
        --out exp/pt1
    slimdiar pretrain --config pretrain-tiny --train audio/train --dev audio/dev \
        --targets-from exp/pt1/best --layer 3 --set targets.num_clusters=500 --out exp/pt2
    slimdiar finetune --config tiny --backbone exp/pt2/best ...
"""

from __future__ import annotations

import argparse
import json

from slimdiar.cli._training import add_run_arguments, run_stage
from slimdiar.config import load_config

DESCRIPTION = """\
Pretrain a WavLM without labels, with WavLM's own objective: masked prediction of discrete
targets (k-means clusters of MFCC features in iteration 1, of a hidden layer of the iteration-1
model in iteration 2), span masking (start probability 0.08, span 10), cosine-similarity logits
over learned cluster embeddings (temperature 0.1), and utterance mixing for a fifth of the crops
(a segment of another crop at -5..20 dB, at most half its length; the targets stay those of the
clean crop).

--train and --dev are directory trees of audio files or wav.scp files (speaker labels are not
used); the audio is cut into fixed-length crops. OUT/targets holds the k-means centroids,
OUT/checkpoints/epoch-NNN the WavLM with the pretraining heads and the training state, and
OUT/best the final WavLM alone: the checkpoint 'slimdiar finetune --backbone' and 'slimdiar prune
--teacher' take. The same command runs under 'torchrun --nproc_per_node N'.
"""

EPILOG = """\
configuration (optional TOML; sections [model], [targets], [masking], [denoise], [head],
[wavlm], [data], [optim], [trainer]; the bundled --config pretrain-tiny is one), e.g.
  --set targets.num_clusters=100 --set masking.prob=0.08 --set denoise.prob=0
  --set data.crop_duration_s=4 --set trainer.max_epochs=20

examples:
  slimdiar pretrain --backbone wavlm-demo --train audio/ --dev audio-dev/ --out exp/pt1
  slimdiar pretrain --backbone wavlm-demo --targets-from exp/pt1/best --layer 3 \\
      --set targets.num_clusters=500 --train audio/ --dev audio-dev/ --out exp/pt2
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar pretrain``."""
    parser = subparsers.add_parser(
        "pretrain",
        help="self-supervised pretraining of a WavLM (masked prediction)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--train",
        required=True,
        metavar="AUDIO",
        help="training audio: a directory tree of audio files or a wav.scp",
    )
    parser.add_argument(
        "--dev",
        required=True,
        metavar="AUDIO",
        help="validation audio: a directory tree of audio files or a wav.scp",
    )
    parser.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment directory")
    parser.add_argument(
        "--backbone",
        metavar="CKPT_OR_PRESET",
        help="WavLM preset (random init) or checkpoint to continue; overrides model.backbone",
    )
    parser.add_argument(
        "--targets-from",
        metavar="CKPT",
        help="iteration 2: cluster a hidden layer of this WavLM instead of MFCC",
    )
    parser.add_argument(
        "--layer",
        type=int,
        metavar="N",
        help="the hidden state of --targets-from to cluster (1..num_layers)",
    )
    add_run_arguments(parser, config_required=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Pretrain, then print where the WavLM is."""
    from slimdiar.errors import ConfigError
    from slimdiar.stages import pretrain

    overrides = list(args.overrides)
    if args.backbone:
        overrides.append(f"model.backbone={json.dumps(args.backbone)}")
    if (args.targets_from is None) != (args.layer is None):
        raise ConfigError("--targets-from and --layer go together (iteration 2)")
    if args.targets_from is not None:
        overrides.append(f"targets.source={json.dumps(args.targets_from)}")
        overrides.append(f"targets.layer={args.layer}")
    config = load_config(pretrain.PretrainConfig, args.config, overrides)
    ctx, result = run_stage(
        config.trainer.device,
        lambda ctx: pretrain.run(
            config, args.train, args.dev, args.out, ctx=ctx, resume=args.resume
        ),
    )
    if ctx.is_main:
        print(f"done after {result.epochs_run} epochs ({result.steps} steps)")
        print(f"pretrained WavLM (epochs {result.best_epochs}): {result.best_dir}")
        if result.best_metrics:
            print(
                "its validation metrics: "
                + ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.best_metrics.items()))
            )
    return 0
