#!/usr/bin/env python3
"""Time the embedding stage with one ResNet pass per window against one per (window, speaker).

Usage: .venv/bin/python tools/bench_embeddings.py [--seconds 40] [--threads 2] [--repeats 2]
                                                  [--json docs/results/embeddings-windows.json]

A meeting-like recording is simulated at the level the embedding stage sees it: turns of
0.5-4 s among four speakers with pauses and, one time in four, a second speaker talking over
the turn; the pipeline's sliding windows (8 s every 0.8 s, 20 ms frames) and their local
speakers; the frame masks of :func:`slimdiar.pipeline.embeddings.embedding_masks`. The audio is
noise (the network's cost does not depend on it) and WeSpeaker's ResNet34 has random weights.

Both paths run in this process with pinned torch threads, alternating, ``--repeats`` times
each; the speed-up of every repeat and the largest difference between the two paths'
embeddings are recorded (JSON with ``"mode": "embeddings"``, rendered into
docs/benchmarks.md by tools/render_benchmarks.py).
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import statistics
import sys
import time

import numpy as np
import torch

from slimdiar.models.checkpoint import write_json_atomic
from slimdiar.models.embeddings.registry import SpeakerEmbedding
from slimdiar.models.embeddings.resnet import ResNetEmbedding, wespeaker_resnet34
from slimdiar.pipeline.embeddings import embed_speakers, embedding_masks

SAMPLE_RATE = 16000
WINDOW_S, STEP_S, FRAME_S = 8.0, 0.8, 0.02
NUM_SPEAKERS, NUM_LOCAL_SPEAKERS = 4, 4


def meeting_activity(duration_s: float, seed: int = 0) -> np.ndarray:
    """``(num_frames, NUM_SPEAKERS)`` 0/1 speech activity of a simulated meeting."""
    rng = np.random.default_rng(seed)
    num_frames = int(duration_s / FRAME_S)
    activity = np.zeros((num_frames, NUM_SPEAKERS), dtype=np.uint8)
    t_s, speaker = 0.0, 0
    while t_s < duration_s:
        length_s = rng.uniform(0.5, 4.0)
        start, end = int(t_s / FRAME_S), int((t_s + length_s) / FRAME_S)
        activity[start:end, speaker] = 1
        if rng.random() < 0.25:  # someone talks over the second half of the turn
            other = (speaker + int(rng.integers(1, NUM_SPEAKERS))) % NUM_SPEAKERS
            activity[(start + end) // 2 : end, other] = 1
        t_s += length_s + rng.uniform(0.0, 0.7)
        speaker = (speaker + int(rng.integers(1, NUM_SPEAKERS))) % NUM_SPEAKERS
    return activity


def window_activities(activity: np.ndarray) -> np.ndarray:
    """``(num_windows, window_frames, NUM_LOCAL_SPEAKERS)``: local speakers of each window."""
    window_frames, step_frames = int(WINDOW_S / FRAME_S), int(STEP_S / FRAME_S)
    starts = range(0, len(activity) - window_frames + 1, step_frames)
    windows = np.zeros((len(starts), window_frames, NUM_LOCAL_SPEAKERS), dtype=np.uint8)
    for w, start in enumerate(starts):
        chunk = activity[start : start + window_frames]
        talking = np.flatnonzero(chunk.any(axis=0))[:NUM_LOCAL_SPEAKERS]
        windows[w, :, : len(talking)] = chunk[:, talking]
    return windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="recording length")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="pairs (per-pair path) or windows (window path) per call",
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = SpeakerEmbedding(ResNetEmbedding(wespeaker_resnet34()), "wespeaker-resnet34")
    activities = window_activities(meeting_activity(args.seconds))
    num_windows, window_frames, _ = activities.shape
    window_samples = int(WINDOW_S * SAMPLE_RATE)
    min_clean_frames = math.ceil(window_frames * model.min_num_samples / window_samples)
    masks = embedding_masks(activities, min_clean_frames)
    # (num_windows, NUM_LOCAL_SPEAKERS, window_frames)
    rng = np.random.default_rng(1)
    waveforms = rng.normal(0.0, 0.1, (num_windows, window_samples)).astype(np.float32)
    num_pairs = int((masks.sum(axis=-1) > 0).sum())
    num_speaking = int((masks.sum(axis=(1, 2)) > 0).sum())

    def per_pair(w, m):
        return model(w, m)

    paths = {"per_pair": per_pair, "per_window": model}
    times_s: dict[str, list[float]] = {name: [] for name in paths}
    outputs = {}
    for _ in range(args.repeats):
        for name, embed in paths.items():
            start = time.perf_counter()
            outputs[name] = embed_speakers(
                waveforms, masks, embed, args.batch_size, model.dimension
            )
            times_s[name].append(time.perf_counter() - start)
            print(f"{name}: {times_s[name][-1]:.2f} s", file=sys.stderr)
    active = masks.sum(axis=-1) > 0
    max_abs_diff = float(np.abs(outputs["per_pair"][active] - outputs["per_window"][active]).max())
    speedups = [p / w for p, w in zip(times_s["per_pair"], times_s["per_window"], strict=True)]
    result = {
        "mode": "embeddings",
        "model": "wespeaker-resnet34 (random weights)",
        "seconds": args.seconds,
        "window_s": WINDOW_S,
        "step_s": STEP_S,
        "num_windows": num_windows,
        "num_speaking_windows": num_speaking,
        "num_pairs": num_pairs,
        "pairs_per_speaking_window": num_pairs / max(num_speaking, 1),
        "batch_size": args.batch_size,
        "per_pair_s": times_s["per_pair"],
        "per_window_s": times_s["per_window"],
        "speedups": speedups,
        "speedup": statistics.median(speedups),
        "max_abs_diff": max_abs_diff,
        "device": "cpu",
        "device_name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": "float32",
        "command": shlex.join(["python", "tools/bench_embeddings.py", *sys.argv[1:]]),
    }
    print(
        f"{num_windows} windows, {num_pairs} (window, speaker) pairs "
        f"({result['pairs_per_speaking_window']:.2f} per speaking window): per-pair "
        f"{statistics.median(times_s['per_pair']):.2f} s, per-window "
        f"{statistics.median(times_s['per_window']):.2f} s, speed-ups "
        f"{', '.join(f'{s:.2f}x' for s in speedups)}; max |difference| {max_abs_diff:.2e}"
    )
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
