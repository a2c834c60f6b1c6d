"""``slimdiar bench``: size and speed of backbones, side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from slimdiar.bench.backbone import benchmark_backbones, environment
from slimdiar.cli._args import non_negative_int, output_file, positive_int
from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import write_json_atomic
from slimdiar.models.precision import resolve_dtype
from slimdiar.models.wavlm.config import PRESETS

#: Audio of one backbone input, and of the synthetic recording of --pipeline, in seconds.
BACKBONE_SECONDS = 8.0
PIPELINE_SECONDS = 600.0

EPILOG = f"""\
MODEL is a preset ({", ".join(sorted(PRESETS))}), an architecture JSON file
(e.g. the published pruned shapes; random weights are fine for speed) or a checkpoint directory.
The first MODEL is the reference of the speed-up columns. All MODELs (in every --dtype and
--engine) are loaded at once and timed in turns: each round runs every one of them once, so the
machine's load of the moment reaches all alike; a speed-up is the median of the per-round ratios.

With --pipeline CKPT, the whole diarization pipeline (EEND checkpoint CKPT + embedding model)
runs instead on --seconds of synthetic multi-speaker audio (default: {PIPELINE_SECONDS:g}) or on
--audio FILE, read from disk window by window, in a fresh process: the real-time factor of every
stage and the peak resident memory (ru_maxrss) and its increase over the resident size before the
run.
--device, --threads, --dtype and --json apply to both modes (with --pipeline, one --dtype for
both models); --batch-size, --precision-mode, --warmup and --repeats to backbones only.

examples:
  slimdiar bench wavlm-base-plus wavlm-base-plus-s80 --seconds 8 --batch-size 4
  slimdiar bench wavlm-large wavlm-large-s80 --json bench.json
  slimdiar bench wavlm-base-plus wavlm-base-plus-s80 --dtype float32 bfloat16 --batch-size 32
  slimdiar bench exp/prune/teacher exp/prune/pruned --device cuda
  slimdiar bench --pipeline exp/finetune/final --seconds 3600 --threads 1 --json pipe.json
  slimdiar bench --pipeline exp/prune/pruned --audio meeting.wav --embedding ge2e
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` command to ``subparsers`` and return its parser."""
    parser = subparsers.add_parser(
        "bench",
        help="parameters, MACs, latency and real-time factor of WavLM backbones",
        description="Measure parameters, MACs per second of audio, latency and real-time factor "
        "(RTF = processing time / audio duration) of one or more WavLM backbones, "
        "at batch 1 and at a chosen batch size, with warm-up runs and medians.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models to compare")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"audio duration of one input (default: {BACKBONE_SECONDS:g}), or "
        f"with --pipeline of the synthetic recording (default: "
        f"{PIPELINE_SECONDS:g})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="batch size measured besides 1 (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        nargs="+",
        default=["float32"],
        metavar="DTYPE",
        help="precision(s): float32, bfloat16 (fast on GPUs and on CPUs with "
        "AVX-512-BF16 or AMX), float16 (GPU only); several are measured "
        "side by side, each model in each (default: float32)",
    )
    parser.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        nargs="+",
        default=["torch"],
        help="what runs the backbones (default: torch); several are measured "
        "side by side; onnx exports each model first and runs it in ONNX "
        "Runtime (float32, CPU, --threads intra-op threads)",
    )
    parser.add_argument(
        "--precision-mode",
        choices=["autocast", "weights"],
        default="autocast",
        help="how bfloat16/float16 is applied: autocast (float32 weights, "
        "torch.autocast; the default) or weights (weights and input cast)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=2,
        help="untimed rounds (each runs every model once) (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=5,
        help="timed rounds, at batch 1 and at --batch-size; the median time of each model "
        "and the median of the per-round speed-ups are reported (default: %(default)s)",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="FILE", help="also write the results as JSON"
    )
    pipeline = parser.add_argument_group("pipeline mode")
    pipeline.add_argument(
        "--pipeline",
        metavar="CKPT",
        help="benchmark the whole diarization pipeline with this EEND "
        "checkpoint instead of backbones",
    )
    pipeline.add_argument(
        "--audio", metavar="FILE", help="recording to diarize instead of synthetic audio"
    )
    pipeline.add_argument(
        "--embedding",
        default="ge2e",
        help="speaker embedding model name or checkpoint (default: ge2e)",
    )
    pipeline.add_argument(
        "--onnx",
        metavar="EXPORT_DIR",
        help="with --engine onnx: the directory 'slimdiar export' wrote for the --pipeline "
        "checkpoint (and a ResNet --embedding); the models then run in ONNX Runtime",
    )
    pipeline.add_argument(
        "--pipeline-batch-size",
        type=positive_int,
        default=None,
        help="windows per segmentation and embedding batch (default: the pipeline's default "
        "for --device: 4 on a CPU, 32 on a GPU)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    """Run ``slimdiar bench``: the backbone comparison or, with ``--pipeline``, the pipeline."""
    if args.pipeline is not None:
        if args.models:
            raise ConfigError("give either backbone MODELs or --pipeline CKPT, not both")
        if len(args.engine) != 1:
            raise ConfigError("--pipeline runs one engine: give a single --engine")
        if args.engine == ["onnx"] and args.onnx is None:
            raise ConfigError(
                "--pipeline with --engine onnx needs --onnx EXPORT_DIR (written by "
                "'slimdiar export' for the --pipeline checkpoint and --embedding)"
            )
        if args.onnx is not None and args.engine != ["onnx"]:
            raise ConfigError("--onnx is an option of --engine onnx")
        return run_pipeline(args)
    if not args.models:
        raise ConfigError("give at least one MODEL to compare, or --pipeline CKPT")
    if args.audio is not None:
        raise ConfigError("--audio is an option of --pipeline mode")
    if args.seconds is None:
        args.seconds = BACKBONE_SECONDS
    return run_backbones(args)


def run_backbones(args) -> int:
    """Benchmark the backbones ``args.models``, print the table and write ``--json`` if given."""
    from rich.console import Console
    from rich.table import Table

    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [resolve_dtype(name, args.device) for name in args.dtype]
    console = Console(stderr=True)
    with console.status("benchmarking") as status:
        results = benchmark_backbones(
            args.models,
            seconds=args.seconds,
            batch_size=args.batch_size,
            device=args.device,
            warmup=args.warmup,
            repeats=args.repeats,
            dtype=dtypes,
            progress=lambda text: status.update(f"benchmarking {text}"),
            precision_mode=args.precision_mode,
            engines=args.engine,
        )
    env = environment(args.device, dtypes)
    env["engines"] = list(args.engine)
    several = len(dtypes) > 1
    engines = len(args.engine) > 1
    table = Table(
        title=f"WavLM backbones on {args.seconds:g} s of audio "
        f"({env['device']}, {env['threads']} threads, "
        f"{', '.join(args.dtype)})"
    )
    b = args.batch_size
    columns = [
        "model",
        "params",
        "MACs/s",
        "latency b=1",
        "RTF b=1",
        "speed-up b=1",
        f"latency b={b}",
        f"RTF b={b}",
        f"speed-up b={b}",
    ]
    if several:
        columns[1:1] = ["dtype"]
        columns += ["vs float32 b=1", f"vs float32 b={b}"]
    if engines:
        columns[1:1] = ["engine"]
        columns += ["vs torch b=1", f"vs torch b={b}"]
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("model", "dtype", "engine") else "right"
        )
    for r in results:
        row = [
            r.name,
            f"{r.params / 1e6:.2f}M",
            f"{r.macs_per_second / 1e9:.2f}G",
            f"{r.latency_s * 1000:.1f} ms",
            f"{r.rtf:.4f}",
            f"{r.speedup_vs_first:.2f}x",
            f"{r.latency_batch_s * 1000:.1f} ms",
            f"{r.rtf_batch:.4f}",
            f"{r.speedup_batch_vs_first:.2f}x",
        ]
        if several:
            row[1:1] = [r.dtype]
            row += [
                f"{x:.2f}x" if x is not None else ""
                for x in (r.speedup_vs_float32, r.speedup_batch_vs_float32)
            ]
        if engines:
            row[1:1] = [r.engine]
            row += [
                f"{x:.2f}x" if x is not None else ""
                for x in (r.speedup_vs_torch, r.speedup_batch_vs_torch)
            ]
        table.add_row(*row)
    width = None if sys.stdout.isatty() else 220
    Console(file=sys.stdout, width=width).print(table)
    if args.json:
        write_json_atomic(
            args.json,
            {
                "models": [r.to_dict() for r in results],
                "seconds": args.seconds,
                "batch_size": args.batch_size,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "precision_mode": args.precision_mode,
                **env,
                "command": _command_line(),
            },
        )
    return 0


def _command_line() -> str | None:
    """The command as typed, when it came from the ``slimdiar`` program."""
    if Path(sys.argv[0]).name in ("slimdiar", "__main__.py"):
        return shlex.join(["slimdiar", *sys.argv[1:]])
    return None


def _single_dtype(names: list[str]) -> str:
    if len(names) != 1:
        raise ConfigError("--pipeline runs in one precision: give a single --dtype")
    return names[0]


def run_pipeline(args) -> int:
    """Time each stage of the pipeline ``args.pipeline``; print the table, write ``--json``."""
    from rich.console import Console
    from rich.table import Table

    from slimdiar.bench.pipeline import benchmark_pipeline, validate_pipeline_bench

    seconds = args.seconds if args.seconds is not None or args.audio else PIPELINE_SECONDS
    validate_pipeline_bench(args.pipeline, seconds, args.audio, args.pipeline_batch_size)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    console = Console(stderr=True)
    with console.status(
        f"diarizing {args.audio or f'{seconds:g} s of synthetic audio'} in a fresh process"
    ):
        result = benchmark_pipeline(
            args.pipeline,
            seconds=seconds,
            audio=args.audio,
            embedding=args.embedding,
            device=args.device,
            threads=args.threads,
            batch_size=args.pipeline_batch_size,
            dtype=_single_dtype(args.dtype),
            onnx=args.onnx,
        )
    table = Table(
        title=f"diarization pipeline on {result.seconds:g} s of audio "
        f"({result.device}, {result.threads} threads, {result.engine} {result.dtype}, "
        f"batch {result.batch_size}, torch {result.torch})"
    )
    for column in ["stage", "seconds", "RTF", "peak RSS in stage"]:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, stage in result.stages.items():
        peak = result.stage_peak_rss_mb.get(name)
        table.add_row(
            name,
            f"{stage['seconds']:.2f}",
            f"{stage['rtf']:.4f}",
            "" if peak is None else f"{peak:.0f} MiB",
        )
    table.add_row(
        "total",
        f"{result.total_s:.2f}",
        f"{result.rtf:.4f}",
        f"{result.peak_rss_mb:.0f} MiB",
        style="bold",
    )
    out = Console(file=sys.stdout)
    out.print(table)
    out.print(
        f"peak RSS {result.peak_rss_mb:.0f} MiB, {result.rss_increase_mb:.0f} MiB over the "
        f"{result.rss_before_mb:.0f} MiB before the run (models loaded); "
        f"{result.num_chunks} windows, {result.num_speakers} speakers"
    )
    if args.json:
        write_json_atomic(args.json, {**result.to_dict(), "command": _command_line()})
    return 0
