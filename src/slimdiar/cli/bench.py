"""``slimdiar bench``: size and speed of backbones, side by side."""

from __future__ import annotations

import argparse
import sys

import torch

from slimdiar.bench.backbone import benchmark_backbones, environment
from slimdiar.models.checkpoint import write_json_atomic
from slimdiar.models.config import PRESETS

EPILOG = f"""\
MODEL is a preset ({", ".join(sorted(PRESETS))}), an architecture JSON file
(e.g. the published pruned shapes; random weights are fine for speed) or a checkpoint directory.
The first MODEL is the reference of the speed-up columns.

examples:
  slimdiar bench wavlm-base-plus wavlm-base-plus-s80 --seconds 8 --batch-size 4
  slimdiar bench wavlm-large wavlm-large-s80 --json bench.json
  slimdiar bench exp/prune/teacher exp/prune/pruned --device cuda
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="parameters, MACs, latency and real-time factor of WavLM backbones",
        description="Measure parameters, MACs per second of audio, latency and real-time factor "
                    "(RTF = processing time / audio duration) of one or more WavLM backbones, "
                    "at batch 1 and at a chosen batch size, with warm-up runs and medians.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="models to compare")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="audio duration of one input (default: 8)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="batch size measured besides 1 (default: 8)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs (default: 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs; the median is reported (default: 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        results = benchmark_backbones(
            args.models, seconds=args.seconds, batch_size=args.batch_size, device=args.device,
            warmup=args.warmup, repeats=args.repeats, dtype=dtype,
            progress=lambda text: status.update(f"benchmarking {text}"),
        )
    env = environment(args.device, dtype)
    table = Table(title=f"WavLM backbones on {args.seconds:g} s of audio "
                        f"({env['device']}, {env['threads']} threads, {env['dtype']})")
    b = args.batch_size
    for column in ["model", "params", "MACs/s", "latency b=1", "RTF b=1", "speed-up b=1",
                   f"latency b={b}", f"RTF b={b}", f"speed-up b={b}"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(
            r.name, f"{r.params / 1e6:.2f}M", f"{r.macs_per_second / 1e9:.2f}G",
            f"{r.latency_s * 1000:.1f} ms", f"{r.rtf:.4f}", f"{r.speedup_vs_first:.2f}x",
            f"{r.latency_batch_s * 1000:.1f} ms", f"{r.rtf_batch:.4f}",
            f"{r.speedup_batch_vs_first:.2f}x",
        )
    Console(file=sys.stdout).print(table)
    if args.json:
        write_json_atomic(args.json, {
            "models": [r.to_dict() for r in results],
            "seconds": args.seconds,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "repeats": args.repeats,
            **env,
        })
    return 0
