#!/usr/bin/env python3
"""The GPU benchmark: the four published shapes and the pipeline on 10 minutes, in one run.

Usage::

    .venv/bin/python tools/gpu_bench.py                  # on a machine with an NVIDIA GPU
    .venv/bin/python tools/gpu_bench.py --dry-run        # print the commands, run nothing
    .venv/bin/python tools/gpu_bench.py --cpu-smoke --out /tmp/gpu-smoke   # tiny, on a CPU

What it runs, each a ``slimdiar bench`` command whose JSON goes under ``--out``
(default ``docs/results/gpu/``):

- backbones: Base+ against Base+ s80 and Large against Large s80 (the published pruned
  shapes, ``src/slimdiar/models/wavlm/presets/*-s80.json``, random weights), 8 s of audio, batch 1
  and 32, float32 and bfloat16 (``backbone-base-plus.json``, ``backbone-large.json``);
- the whole pipeline on 600 s of synthetic audio with the paper's components, random weights:
  an EEND model on Base+ and on Base+ s80, WeSpeaker's ResNet34 embeddings, 8 s windows every
  0.8 s, 32 windows per batch, in float32 and bfloat16 (``pipeline-<shape>-<dtype>.json``).

It ends with ``summary.json`` and ``summary.md``: the measured speed-ups of the pruned shapes
beside the paper's anchor, **4.0x for Base+ and 2.6x for Large** (Han et al., Interspeech 2025,
inference on a GPU), and the environment (GPU, torch, CUDA).

Without CUDA it stops at once with a message, unless ``--cpu-smoke`` is given: then every
command runs on the CPU with tiny presets, short audio and one repeat, to check the commands
themselves (the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The paper's inference speed-up of its 80 %-pruned models on a GPU.
PAPER_SPEEDUP = {"base-plus": 4.0, "large": 2.6}


@dataclass
class Plan:
    """What one run measures: backbones, pipelines, and the sizes of the measurement."""

    device: str
    pairs: dict[str, tuple[str, str]]
    pipelines: dict[str, str]
    dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    seconds: float = 8.0
    batch_size: int = 32
    warmup: int = 3
    repeats: int = 10
    pipeline_seconds: float = 600.0
    pipeline_batch_size: int = 32
    eend: dict = field(default_factory=dict)
    resnet: dict = field(default_factory=dict)


def gpu_plan() -> Plan:
    """The measurement of the published shapes at the paper's settings."""
    return Plan(
        device="cuda",
        pairs={
            "base-plus": ("wavlm-base-plus", "wavlm-base-plus-s80"),
            "large": ("wavlm-large", "wavlm-large-s80"),
        },
        pipelines={"base-plus": "wavlm-base-plus", "base-plus-s80": "wavlm-base-plus-s80"},
    )


def cpu_smoke_plan() -> Plan:
    """The same commands at sizes a CPU runs in seconds."""
    return Plan(
        device="cpu",
        pairs={
            "base-plus": ("wavlm-mini", "wavlm-tiny"),
            "large": ("wavlm-tiny-prenorm", "wavlm-tiny"),
        },
        pipelines={"base-plus": "wavlm-tiny", "base-plus-s80": "wavlm-tiny"},
        seconds=1.0,
        batch_size=2,
        warmup=0,
        repeats=1,
        pipeline_seconds=9.0,
        pipeline_batch_size=4,
        eend={"d_model": 32, "num_heads": 2, "ffn_dim": 64, "num_blocks": 1},
        resnet={"num_blocks": [1, 1, 1, 1], "base_channels": 4, "embedding_dim": 16},
    )


def commands(plan: Plan, out: Path, work: Path) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every ``slimdiar bench`` command of the plan, in order."""
    found = []
    for name, (full, pruned) in plan.pairs.items():
        found.append(
            (
                f"backbone-{name}",
                [
                    "bench",
                    full,
                    pruned,
                    "--seconds",
                    f"{plan.seconds:g}",
                    "--batch-size",
                    str(plan.batch_size),
                    "--dtype",
                    *plan.dtypes,
                    "--warmup",
                    str(plan.warmup),
                    "--repeats",
                    str(plan.repeats),
                    "--device",
                    plan.device,
                    "--json",
                    str(out / f"backbone-{name}.json"),
                ],
            )
        )
    for name in plan.pipelines:
        for dtype in plan.dtypes:
            found.append(
                (
                    f"pipeline-{name}-{dtype}",
                    [
                        "bench",
                        "--pipeline",
                        str(work / f"eend-{name}"),
                        "--embedding",
                        str(work / "resnet34.safetensors"),
                        "--seconds",
                        f"{plan.pipeline_seconds:g}",
                        "--pipeline-batch-size",
                        str(plan.pipeline_batch_size),
                        "--dtype",
                        dtype,
                        "--device",
                        plan.device,
                        "--json",
                        str(out / f"pipeline-{name}-{dtype}.json"),
                    ],
                )
            )
    return found


def write_models(plan: Plan, work: Path) -> None:
    """Random-weight EEND checkpoints of the pipeline shapes and a ResNet34 embedding file."""
    import torch
    from safetensors.torch import save_file

    from slimdiar.models.eend import EEND, EENDConfig
    from slimdiar.models.embeddings.resnet import ResNetConfig, ResNetEmbedding, wespeaker_resnet34
    from slimdiar.models.wavlm.config import preset

    torch.manual_seed(0)
    for name, shape in plan.pipelines.items():
        EEND(EENDConfig(wavlm=preset(shape), **plan.eend)).save_pretrained(work / f"eend-{name}")
    config = ResNetConfig(**plan.resnet) if plan.resnet else wespeaker_resnet34()
    resnet = ResNetEmbedding(config).resnet
    save_file(
        {k: v.contiguous() for k, v in resnet.state_dict().items()},
        str(work / "resnet34.safetensors"),
    )


def check_cuda() -> str | None:
    """Why this machine cannot run the GPU benchmark, or ``None`` when it can."""
    import torch

    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch "
            "on a machine with an NVIDIA GPU"
        )
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device here"
    if not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name()} has no bfloat16 support (needs Ampere or newer)"
    return None


def environment(device: str) -> dict:
    import platform

    import torch

    info = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host_cpu": platform.processor() or platform.machine(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def summarise(plan: Plan, out: Path, runs: list[dict]) -> dict:
    """Speed-ups of the pruned shapes against the paper's anchor, and the pipeline RTFs."""
    backbones = []
    for name in plan.pairs:
        path = out / f"backbone-{name}.json"
        if not path.is_file():
            continue
        models = json.loads(path.read_text())["models"]
        for result in models:
            if result["name"] == models[0]["name"]:
                continue  # the full model, the reference of the speed-ups
            backbones.append(
                {
                    "shape": name,
                    "model": result["name"],
                    "dtype": result["dtype"],
                    "speedup_b1": round(result["speedup_vs_first"], 3),
                    f"speedup_b{plan.batch_size}": round(result["speedup_batch_vs_first"], 3),
                    "paper_speedup": PAPER_SPEEDUP[name],
                }
            )
    pipelines = []
    for name in plan.pipelines:
        for dtype in plan.dtypes:
            path = out / f"pipeline-{name}-{dtype}.json"
            if path.is_file():
                data = json.loads(path.read_text())
                pipelines.append(
                    {
                        "shape": name,
                        "dtype": dtype,
                        "rtf": data["rtf"],
                        "stages_rtf": {k: v["rtf"] for k, v in data["stages"].items()},
                        "peak_rss_mb": data["peak_rss_mb"],
                    }
                )
    return {
        "environment": environment(plan.device),
        "backbones": backbones,
        "pipelines": pipelines,
        "runs": runs,
        "paper_speedup": PAPER_SPEEDUP,
    }


def render(summary: dict, batch_size: int) -> str:
    """``summary.md``: the two tables of the summary."""
    env = summary["environment"]
    lines = [
        f"# GPU benchmark ({env.get('gpu', env['device'])}, torch {env['torch']}, "
        f"CUDA {env['cuda']})",
        "",
        "Generated by `tools/gpu_bench.py` from the JSON files beside it.",
        "",
        f"| shape | pruned model | dtype | speed-up b=1 | speed-up b={batch_size} | paper |",
        "|---|---|---|---:|---:|---:|",
    ]
    for b in summary["backbones"]:
        lines.append(
            f"| {b['shape']} | {b['model']} | {b['dtype']} | {b['speedup_b1']:.2f}x | "
            f"{b[f'speedup_b{batch_size}']:.2f}x | {b['paper_speedup']:.1f}x |"
        )
    lines += [
        "",
        "| pipeline | dtype | RTF | "
        + " | ".join(f"{s} RTF" for s in ("segmentation", "embeddings", "clustering"))
        + " | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in summary["pipelines"]:
        stages = [p["stages_rtf"].get(s) for s in ("segmentation", "embeddings", "clustering")]
        lines.append(
            f"| {p['shape']} | {p['dtype']} | {p['rtf']:.4f} | "
            + " | ".join("" if s is None else f"{s:.4f}" for s in stages)
            + f" | {p['peak_rss_mb']:.0f} MiB |"
        )
    failed = [r for r in summary["runs"] if r["status"] != 0]
    if failed:
        lines += ["", "Failed: " + ", ".join(f"{r['name']} (exit {r['status']})" for r in failed)]
    return "\n".join(lines) + "\n"


def run_slimdiar(argv: list[str]) -> int:
    """Run one ``slimdiar`` command in a fresh interpreter; its exit status."""
    return subprocess.run([sys.executable, "-m", "slimdiar", *argv]).returncode


def main(argv: list[str] | None = None, run_command=run_slimdiar) -> int:
    """Run the plan; 0 when every command succeeded, 1 when one failed, 2 without CUDA."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results/gpu"),
        help="directory of the JSON results (default: docs/results/gpu)",
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="run every command on the CPU with tiny models (checks the script)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands and exit without running them"
    )
    args = parser.parse_args(argv)

    plan = cpu_smoke_plan() if args.cpu_smoke else gpu_plan()
    if not args.cpu_smoke and not args.dry_run:
        reason = check_cuda()
        if reason is not None:
            print(
                f"gpu_bench: {reason}; this script measures a GPU (use --cpu-smoke to check "
                "its commands on a CPU, --dry-run to list them)",
                file=sys.stderr,
            )
            return 2
    out = args.out
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        work = Path(tmp)
        planned = commands(plan, out, work)
        if args.dry_run:
            for _, argv_ in planned:
                print(shlex.join(["slimdiar", *argv_]))
            return 0
        out.mkdir(parents=True, exist_ok=True)
        write_models(plan, work)
        runs = []
        for name, argv_ in planned:
            print(f"gpu_bench: {name}: {shlex.join(['slimdiar', *argv_])}", file=sys.stderr)
            tic = time.perf_counter()
            status = run_command(argv_)
            runs.append(
                {
                    "name": name,
                    "command": shlex.join(["slimdiar", *argv_]),
                    "status": status,
                    "wall_s": round(time.perf_counter() - tic, 1),
                }
            )
    summary = summarise(plan, out, runs)
    summary["cpu_smoke"] = args.cpu_smoke
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(render(summary, plan.batch_size))
    failed = [r["name"] for r in runs if r["status"] != 0]
    if failed:
        print(f"gpu_bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"gpu_bench: results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
