"""``slimdiar demo``: the whole method, offline, on a CPU (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import logging

from slimdiar.cli._args import output_dir, positive_int

DESCRIPTION = """\
The embedded demo: the paper's comparison, offline, on a CPU. With no network, no pretrained
weights and no corpus it:
  1. simulates conversations with an offline text-to-speech voice pool (disjoint speakers
     for train, dev and test),
  2. takes a small self-supervised WavLM: the repository's bundled checkpoint (made by
     'make pretrained-demo-backbone', its hash checked) or, with --pretrain or where the bundled
     one does not fit the corpus, pretrains one on the training speakers' utterances,
  3. fine-tunes EEND models from random initialisation and from the pretrained WavLM,
  4. FBP: prunes the fine-tuned WavLM to the configured sparsity (configs/demo.toml) with
     distillation from the fine-tuned model, distils further, fine-tunes it with a fresh head,
  5. PBF: prunes the pretrained WavLM the same way, distilling the pretrained WavLM, and
     fine-tunes it for diarization,
  6. diarizes the held-out test set with the four models and scores them (DER),
  7. measures size, MACs and CPU speed of the four backbones,
and writes report.json, report.md and the pruning plots under --out. --compare then repeats
the training stages with two more seeds and adds each system's mean and standard deviation.
An interrupted demo continues where it stopped when run again with the same --out.
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole method offline on simulated data (make demo)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=output_dir, default="exp/demo", help="output directory (default %(default)s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: a few minutes, not an accuracy claim",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the whole run (default %(default)s)"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        help="processes for speech synthesis and simulation (default %(default)s)",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain the self-supervised WavLM in this run instead of using the bundled one",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="repeat the comparison over 3 training seeds and report mean ± std "
        "(about three demos' time)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    from slimdiar.demo.report import render_report
    from slimdiar.demo.run import Demo, check_settings

    check_settings()
    if args.verbose == 0:
        logging.getLogger("slimdiar").setLevel(logging.WARNING)
    demo = Demo(args.out, quick=args.quick, seed=args.seed, jobs=args.jobs, pretrain=args.pretrain)
    report = demo.compare() if args.compare else demo.run()
    print()
    print(render_report(report))
    print(f"everything is under {args.out} (report.md, report.json, prune/*.png)")
    print(demo.next_steps())
    return 0
