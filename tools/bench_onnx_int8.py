#!/usr/bin/env python3
"""ONNX Runtime float32 against dynamic int8 (weights quantised) for one backbone, side by side.

Usage: .venv/bin/python tools/bench_onnx_int8.py [MODEL] [--threads T] [--repeats N] [--seconds S]

MODEL is a preset name or architecture JSON (random weights; default wavlm-base-plus-s80). The
backbone is exported to a temporary directory, quantised with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights), and both sessions are timed at
batch 1, interleaved run by run so that other load on the machine hits both alike; the median
latencies and the int8 speed-up are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slimdiar.bench.backbone import load_backbone_for_bench
from slimdiar.pipeline.engines import make_session
from slimdiar.pipeline.export import export_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="wavlm-base-plus-s80")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        export_backbone(load_backbone_for_bench(args.model).eval(), directory / "fp32.onnx")
        quantize_dynamic(
            str(directory / "fp32.onnx"), str(directory / "int8.onnx"), weight_type=QuantType.QInt8
        )
        sessions = {
            name: make_session(directory / f"{name}.onnx", args.threads)
            for name in ("fp32", "int8")
        }
    waveforms = np.random.default_rng(0).standard_normal(
        (1, int(args.seconds * 16000)), dtype=np.float32
    )
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():  # warm-up
        session.run(None, {"waveforms": waveforms})
    for _ in range(args.repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"waveforms": waveforms})
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.model}, {args.seconds:g} s, batch 1, {args.threads} threads: "
        f"fp32 {median['fp32'] * 1000:.1f} ms, int8 {median['int8'] * 1000:.1f} ms, "
        f"int8 speed-up {median['fp32'] / median['int8']:.2f}x"
    )


if __name__ == "__main__":
    main()
