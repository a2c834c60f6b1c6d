#!/usr/bin/env python3
"""Measure the peak memory and time of clustering against the number of embeddings.

Usage: .venv/bin/python tools/measure_clustering_memory.py [--sizes 1000 2000 4000 8000]
                                                           [--method agglomerative|vbx]
                                                           [--plda DIR] [--json F]

Each size runs in a fresh subprocess: synthetic 256-dimensional embeddings of 8 speakers, one
per (chunk, local speaker) of ``size`` chunks with one local speaker talking alone, clustered by
the method (no subsampling: ``max_embeddings`` is set above the size). The peak resident memory
of the subprocess after the clustering minus its peak before it is the clustering's own peak
(``ru_maxrss``; Linux reports it in KiB). The agglomerative linkage holds every pairwise distance
(8 n²/2 bytes) plus scipy's working copies, so the peak grows as n²; VBx's initialisation is
the same linkage (its own iterations are linear in n).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import resource, sys, time
import numpy as np
from slimdiar.pipeline.clustering import make_clustering

size, method = int(sys.argv[1]), sys.argv[2]
options = {"plda_dir": sys.argv[3]} if len(sys.argv) > 3 else {}
rng = np.random.default_rng(0)
centres = rng.normal(size=(8, 256))
embeddings = centres[rng.integers(0, 8, size)] + 0.3 * rng.normal(size=(size, 256))
embeddings = embeddings.astype(np.float32)[:, None, :]  # (chunks, 1 local speaker, 256)
activities = np.ones((size, 50, 1), dtype=np.uint8)
clustering = make_clustering(method, max_embeddings=size + 1, **options)
if hasattr(clustering, "prepare"):
    clustering.prepare()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tic = time.perf_counter()
hard = clustering(activities, embeddings)
seconds = time.perf_counter() - tic
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(size, (after - before) / 1024, seconds, int(hard.max()) + 1)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--method", default="agglomerative")
    parser.add_argument("--plda", help="PLDA directory (for --method vbx; 256-d embeddings)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    rows = []
    print("| embeddings | clustering peak memory (MiB) | time (s) | clusters |")
    print("|---|---|---|---|")
    for size in args.sizes:
        extra = [args.plda] if args.plda else []
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(size), args.method, *extra],
            capture_output=True,
            text=True,
            check=True,
        )
        n, peak_mib, seconds, clusters = done.stdout.split()
        rows.append(
            {
                "num_embeddings": int(n),
                "peak_mib": float(peak_mib),
                "seconds": float(seconds),
                "num_clusters": int(clusters),
            }
        )
        print(f"| {n} | {float(peak_mib):.0f} | {float(seconds):.2f} | {clusters} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": args.method, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
