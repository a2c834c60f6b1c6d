#!/usr/bin/env python3
"""Interleaved timing of a backbone in float32, bfloat16 under autocast and bfloat16 weights.

Usage: .venv/bin/python tools/bench_precision.py [--model wavlm-base-plus-s80] [--seconds 1]
                                                 [--batch-size 1] [--rounds 5] [--threads 2]
                                                 [--json FILE]

``slimdiar bench --dtype float32 bfloat16`` measures one precision after the other; on a
machine whose load changes from minute to minute that moves the ratio between them. Here the
three variants run one forward pass each in turn, ``--rounds`` times (after one untimed round),
in one process with pinned threads, and the ratio of every round is kept: the median ratio and
its spread say how much the load moved it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import torch

from slimdiar.bench.backbone import load_backbone_for_bench
from slimdiar.fileio import write_text_atomic
from slimdiar.models.precision import cpu_bf16_support, with_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wavlm-base-plus-s80")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = load_backbone_for_bench(args.model).eval()
    weights = load_backbone_for_bench(args.model).eval()
    weights.load_state_dict(base.state_dict())
    variants = {
        "float32": (base, torch.float32),
        "bfloat16_autocast": (with_precision(base, torch.bfloat16, "autocast"), torch.float32),
        "bfloat16_weights": (with_precision(weights, torch.bfloat16, "weights"), torch.bfloat16),
    }
    waveforms = torch.randn(args.batch_size, int(args.seconds * 16000))
    times_s: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for round_index in range(args.rounds + 1):
            for name, (model, input_dtype) in variants.items():
                start = time.perf_counter()
                model(waveforms.to(input_dtype))
                if round_index:  # the first round is the warm-up
                    times_s[name].append(time.perf_counter() - start)
    ratios = {
        name: [f / t for f, t in zip(times_s["float32"], times, strict=True)]
        for name, times in times_s.items()
        if name != "float32"
    }
    result = {
        "mode": "precision-probe",
        "model": args.model,
        "seconds": args.seconds,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "times_s": times_s,
        "speedup_vs_float32": ratios,
        "median_speedup_vs_float32": {k: statistics.median(v) for k, v in ratios.items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_bf16_support()[0],
        "command": shlex.join(["python", "tools/bench_precision.py", *sys.argv[1:]]),
    }
    for name, values in ratios.items():
        print(
            f"{name}: speed-up vs float32 per round "
            f"{', '.join(f'{r:.2f}x' for r in values)} (median {statistics.median(values):.2f}x)"
        )
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
