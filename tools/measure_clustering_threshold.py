#!/usr/bin/env python3
"""DER of agglomerative clustering per threshold, with oracle segmentation, on unseen voices.

Usage: .venv/bin/python tools/measure_clustering_threshold.py DATA_DIR [DATA_DIR ...]
           [--embedding ge2e] [--thresholds 0.30:0.90:0.05] [--min-cluster-size N]
           [--max-recordings N] [--step S] [--threads 1] [--tie-tolerance 0.001]
           [--json docs/clustering-threshold.json] [--doc docs/clustering-threshold.md]
           [--render-only]

Each data directory (``wav.scp``, ``rttm``, optional ``uem``) is diarized with the pipeline's
default settings except for the segmentation, which is taken from the reference turns
(``segmentation.source = "oracle"``): the DER then measures only the speaker embeddings and
the clustering. The embeddings of every recording are computed once; every threshold of the
grid re-runs only clustering and reconstruction on them. DER is scored with
:func:`slimdiar.scoring.score_diarization` (collar 0, overlap scored, within the UEM).

The chosen threshold is the one with the lowest mean DER over the data directories; thresholds
within ``--tie-tolerance`` of that minimum tie, and the middle of the longest run of adjacent
tied thresholds is chosen. The JSON records every DER, the recordings used and the command;
the markdown page is generated from the JSON (:func:`render`; ``--render-only`` regenerates it
without measuring).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from slimdiar.data.datadir import DataDir
from slimdiar.errors import SlimdiarError
from slimdiar.pipeline import DiarizationPipeline
from slimdiar.pipeline.clustering import AgglomerativeClustering
from slimdiar.pipeline.config import ClusteringSection
from slimdiar.scoring import annotations_from_turns, score_diarization, timelines_from_regions


class CachedEmbeddingPipeline(DiarizationPipeline):
    """A pipeline that embeds each recording once and reuses the embeddings afterwards."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, reader, windows, activities, hook=None) -> np.ndarray:
        if reader.name not in self.cache:
            self.cache[reader.name] = super().embed(reader, windows, activities, hook)
        return self.cache[reader.name]

    def set_clustering(self, threshold: float, min_cluster_size: int) -> None:
        """Use agglomerative clustering with these options from now on."""
        self.config.clustering = ClusteringSection(
            "agglomerative", {"threshold": threshold, "min_cluster_size": min_cluster_size}
        )
        self.clustering = self.config.make_clustering()


def parse_grid(text: str) -> list[float]:
    """``"0.30:0.90:0.05"`` (start:stop:step, stop included) or ``"0.5,0.6"`` as thresholds."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            count = int(round((stop - start) / step)) + 1
            values = [round(start + i * step, 6) for i in range(count)]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP:STEP or a comma list of numbers, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"thresholds must be positive, got {text!r}")
    return values


def choose(thresholds: list[float], mean_der: list[float], tolerance: float) -> float:
    """The middle of the longest run of adjacent thresholds within ``tolerance`` of the best."""
    best = min(mean_der)
    tied = [der <= best + tolerance for der in mean_der]
    runs: list[list[int]] = []
    for i, is_tied in enumerate(tied):
        if is_tied and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        elif is_tied:
            runs.append([i])
    run = max(runs, key=len)  # the first of the longest runs
    return thresholds[run[(len(run) - 1) // 2]]


def measure_dir(
    pipeline: CachedEmbeddingPipeline,
    data_dir: Path,
    thresholds: list[float],
    min_cluster_size: int,
    max_recordings: int | None,
) -> dict:
    """DER (and its parts) of one data directory at every threshold."""
    data = DataDir.load(data_dir)
    uris = list(data.recordings)[:max_recordings]
    reference = annotations_from_turns(t for uri in uris for t in data.turns[uri])
    uem = timelines_from_regions(r for uri in uris for r in data.uem[uri])
    rows = []
    tic = time.perf_counter()
    for threshold in thresholds:
        pipeline.set_clustering(threshold, min_cluster_size)
        turns, found = [], []
        for uri in uris:
            result = pipeline(data.recordings[uri].path, reference=data.turns[uri], uri=uri)
            turns.extend(result.turns)
            found.append(result.num_speakers)
        total = score_diarization(reference, annotations_from_turns(turns), uem, collar_s=0.0).total
        rows.append(
            {
                "threshold": threshold,
                "der": round(total.der, 5),
                "confusion": round(total.confusion_s / total.total_s, 5),
                "num_speakers": found,
            }
        )
        print(f"{data_dir}: threshold {threshold:.2f}: DER {total.der:.4f}", file=sys.stderr)
    speakers = [len({t.speaker for t in data.turns[uri]}) for uri in uris]
    return {
        "data_dir": str(data_dir),
        "recordings": uris,
        "num_recordings_available": len(data.recordings),
        "reference_num_speakers": speakers,
        "duration_s": round(sum(r.end_s - r.start_s for u in uris for r in data.uem[u]), 2),
        "seconds": round(time.perf_counter() - tic, 1),
        "rows": rows,
    }


def render(data: dict) -> str:
    """The markdown page of a measurement."""
    names = [Path(d["data_dir"]).name for d in data["data_dirs"]]
    lines = [
        f"# Clustering threshold of the `{data['embedding']}` embedding",
        "",
        "<!-- generated by tools/measure_clustering_threshold.py from "
        "docs/clustering-threshold.json; do not edit -->",
        "",
        f"DER (collar 0, overlap scored) of agglomerative clustering of `{data['embedding']}` "
        f"embeddings per dendrogram threshold, with oracle segmentation (the reference turns "
        f"give every window's local speakers), so that only the embeddings and the clustering "
        f"make errors; `min_cluster_size` = {data['min_cluster_size']}, the other settings "
        "the pipeline's defaults.",
        "",
        "| threshold | "
        + " | ".join(f"DER {n}" for n in names)
        + " | mean DER | "
        + " | ".join(f"speakers found {n}" for n in names)
        + " |",
        "|---:|" + "---:|" * (len(names) + 1) + "---|" * len(names),
    ]
    for i, threshold in enumerate(data["thresholds"]):
        ders = [f"{d['rows'][i]['der'] * 100:.2f} %" for d in data["data_dirs"]]
        found = [" ".join(str(n) for n in d["rows"][i]["num_speakers"]) for d in data["data_dirs"]]
        mean = f"{data['mean_der'][i] * 100:.2f} %"
        if threshold == data["chosen"]:
            mean = f"**{mean}**"
        lines.append(
            f"| {threshold:.2f} | " + " | ".join(ders) + f" | {mean} | " + " | ".join(found) + " |"
        )
    refs = ", ".join(
        f"{n}: {len(d['recordings'])} of {d['num_recordings_available']} recordings, "
        f"{d['duration_s'] / 60:.1f} min, reference speakers "
        + " ".join(str(k) for k in d["reference_num_speakers"])
        for n, d in zip(names, data["data_dirs"])
    )
    lines += [
        "",
        f"**Chosen: {data['chosen']:.2f}**, the lowest mean DER (thresholds within "
        f"{data['tie_tolerance'] * 100:g} % DER of the lowest tie; the middle of the longest run "
        "of tied thresholds is taken). It is the built-in default threshold of this embedding "
        "(`slimdiar.models.embeddings.DEFAULT_THRESHOLDS`).",
        "",
        f"Data: {refs}. Speakers found: one number per recording, in the order of the data "
        "directory.",
        "",
        f"Command: `{data['command']}` ({data['threads']} torch "
        f"thread{'s' if data['threads'] != 1 else ''}, torch {data['torch']}, "
        f"{data['seconds']:.0f} s in all).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="*", type=Path, metavar="DATA_DIR")
    parser.add_argument("--embedding", default="ge2e")
    parser.add_argument("--thresholds", type=parse_grid, default=parse_grid("0.30:0.90:0.05"))
    parser.add_argument(
        "--min-cluster-size", type=int, default=AgglomerativeClustering.min_cluster_size
    )
    parser.add_argument("--max-recordings", type=int, help="first N recordings of each dir")
    parser.add_argument("--step", type=float, help="windows.step_s (default: the pipeline's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tie-tolerance", type=float, default=0.001)
    parser.add_argument("--json", type=Path, default=Path("docs/clustering-threshold.json"))
    parser.add_argument("--doc", type=Path, default=Path("docs/clustering-threshold.md"))
    parser.add_argument(
        "--render-only", action="store_true", help="only rewrite --doc from an existing --json"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        args.doc.write_text(render(json.loads(args.json.read_text())))
        return 0
    if not args.data_dirs:
        parser.error("give at least one DATA_DIR (wav.scp, rttm and optionally uem)")
    import torch

    torch.set_num_threads(args.threads)
    settings: dict = {"segmentation": {"source": "oracle"}}
    if args.step is not None:
        settings["windows"] = {"step_s": args.step}
    loaded = DiarizationPipeline.from_pretrained(None, embedding=args.embedding, settings=settings)
    pipeline = CachedEmbeddingPipeline(
        loaded.segmentation_model,
        loaded.embedding_model,
        loaded.config,
        embedding_name=args.embedding,
    )
    tic = time.perf_counter()
    try:
        for data_dir in args.data_dirs:  # every directory is checked before any is measured
            DataDir.load(data_dir)
        dirs = [
            measure_dir(pipeline, d, args.thresholds, args.min_cluster_size, args.max_recordings)
            for d in args.data_dirs
        ]
    except SlimdiarError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    mean_der = [
        round(float(np.mean([d["rows"][i]["der"] for d in dirs])), 5)
        for i in range(len(args.thresholds))
    ]
    data = {
        "mode": "clustering-threshold",
        "embedding": args.embedding,
        "segmentation": "oracle",
        "collar_s": 0.0,
        "windows": pipeline.config.to_dict()["windows"],
        "min_cluster_size": args.min_cluster_size,
        "thresholds": args.thresholds,
        "mean_der": mean_der,
        "tie_tolerance": args.tie_tolerance,
        "chosen": choose(args.thresholds, mean_der, args.tie_tolerance),
        "data_dirs": dirs,
        "threads": args.threads,
        "torch": torch.__version__,
        "host": platform.processor() or platform.machine(),
        "seconds": round(time.perf_counter() - tic, 1),
        "command": shlex.join(
            [
                "python",
                "tools/measure_clustering_threshold.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    args.doc.write_text(render(data))
    print(f"chosen threshold: {data['chosen']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
