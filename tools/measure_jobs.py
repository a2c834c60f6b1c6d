#!/usr/bin/env python3
"""Wall time of ``slimdiar diarize --jobs 1`` against ``--jobs 2`` on a few small recordings.

Usage: .venv/bin/python tools/measure_jobs.py [--recordings 4] [--seconds 12] [--repeats 2]
                                              [--json docs/results/diarize-jobs.json]
                                              [--doc docs/pipeline.md]

A tiny random EEND checkpoint (WavLM ``wavlm-tiny``) and the default GE2E embeddings diarize
``--recordings`` files of ``--seconds`` of noise each, with ``--jobs 1`` (one process, all the
cores as torch threads) and ``--jobs 2`` (two processes, half the cores each), alternating,
``--repeats`` times; each run is a fresh ``slimdiar diarize`` command, timed from start to exit
(interpreter start and model loading included). The JSON records the cores, the threads per
process, every wall time, the load average around the runs (the machine may be shared: the
numbers are then noisy) and the ratio of the medians; ``--doc`` rewrites the table between the
``jobs-measurement`` markers of that page from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slimdiar.pipeline.parallel import available_cores, threads_per_job

BEGIN, END = "<!-- begin jobs-measurement -->", "<!-- end jobs-measurement -->"


def make_inputs(root: Path, recordings: int, seconds: float) -> tuple[Path, Path]:
    """A tiny EEND checkpoint and a directory of noise recordings under ``root``."""
    import soundfile

    from slimdiar.frames import SAMPLE_RATE
    from slimdiar.testing import tiny_eend

    checkpoint = tiny_eend().save_pretrained(root / "eend")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(recordings):
        waveform = 0.1 * rng.normal(size=int(seconds * SAMPLE_RATE))
        soundfile.write(audio / f"rec{i}.wav", waveform.astype(np.float32), SAMPLE_RATE)
    return checkpoint, audio


def render(data: dict) -> str:
    """The markdown table of a measurement."""
    rows = [
        "| jobs | torch threads per process | wall time per run (s) | median (s) |",
        "|---:|---:|---|---:|",
    ]
    for run in data["runs"]:
        times = ", ".join(f"{t:.1f}" for t in run["wall_s"])
        rows.append(f"| {run['jobs']} | {run['threads']} | {times} | {run['median_s']:.1f} |")
    load = data["load_average"]
    return "\n".join(
        [
            *rows,
            "",
            f"`--jobs 1` / `--jobs 2` wall time: **{data['ratio']:.2f}×** "
            f"({data['recordings']} recordings of {data['seconds']:g} s, {data['cores']} cores, "
            f"torch {data['torch']}; load average {load['before']:.1f} before and "
            f"{load['after']:.1f} after, on a machine shared with other work, so the ratio is "
            "noisy).",
            "",
            f"Command: `{data['command']}`",
        ]
    )


def rewrite_doc(doc: Path, data: dict) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{render(data)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("docs/results/diarize-jobs.json"))
    parser.add_argument("--doc", type=Path, help="page whose jobs-measurement table to rewrite")
    args = parser.parse_args(argv)
    import torch

    cores = available_cores()
    walls: dict[int, list[float]] = {1: [], 2: []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="measure-jobs-") as tmp:
        root = Path(tmp)
        checkpoint, audio = make_inputs(root, args.recordings, args.seconds)
        for repeat in range(args.repeats):
            for jobs in (1, 2):
                out = root / f"out-{jobs}-{repeat}"
                command = [
                    sys.executable,
                    "-m",
                    "slimdiar",
                    "diarize",
                    "--model",
                    str(checkpoint),
                    str(audio),
                    "--out",
                    str(out),
                    "--quiet",
                    "--jobs",
                    str(jobs),
                ]
                tic = time.perf_counter()
                subprocess.run(command, check=True)
                walls[jobs].append(round(time.perf_counter() - tic, 2))
                print(f"--jobs {jobs}: {walls[jobs][-1]:.1f} s", file=sys.stderr)
    medians = {jobs: statistics.median(times) for jobs, times in walls.items()}
    data = {
        "mode": "diarize-jobs",
        "recordings": args.recordings,
        "seconds": args.seconds,
        "cores": cores,
        "runs": [
            {
                "jobs": jobs,
                "threads": threads_per_job(jobs, cores),
                "wall_s": walls[jobs],
                "median_s": round(medians[jobs], 2),
            }
            for jobs in (1, 2)
        ],
        "ratio": round(medians[1] / medians[2], 3),
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "segmentation_model": "random EEND on wavlm-tiny",
        "embedding_model": "ge2e",
        "torch": torch.__version__,
        "host": platform.processor() or platform.machine(),
        "command": shlex.join(["python", "tools/measure_jobs.py", *(argv or sys.argv[1:])]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.doc:
        rewrite_doc(args.doc, data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
