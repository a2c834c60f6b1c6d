#!/usr/bin/env python3
"""Measure whether the demo's self-supervised WavLM, fine-tuned, beats random init on dev.

Usage: .venv/bin/python tools/measure_ssl_init.py [--work exp/ssl-init] [--seeds 0 1 2]
                                                  [--variants random:1e-3 ssl:2e-4]
                                                  [--json docs/ssl-init.json]
                                                  [--out docs/pretraining.md] [--render-only]

The demo's corpus (simulated under ``--work`` exactly as ``slimdiar demo`` does, seed 0) and
its bundled pretrained WavLM (hash checked). For every seed and variant, the demo's unpruned
fine-tuning: the same epochs, batch, head learning rate and seed for every variant, only the
initialisation (``random``: a random ``wavlm-demo``; ``ssl``: the bundled WavLM) and the
backbone's learning rate (``lr_backbone``) are the variant's. Each model is then scored as the
demo scores it: the clustering threshold tuned on dev (pipeline DER at the demo's thresholds),
the test set diarized with it. A run that has its result is not redone, so an interrupted
measurement continues. ``--render-only`` rewrites the Markdown section from the JSON; never edit
either by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- ssl-init:begin -->", "<!-- ssl-init:end -->"
GENERATED_BY = "python tools/measure_ssl_init.py"
INITS = ("random", "ssl")


def parse_variant(text: str) -> tuple[str, float]:
    """``init:lr_backbone`` -> (init, learning rate)."""
    init, _, lr = text.partition(":")
    if init not in INITS or not lr:
        raise argparse.ArgumentTypeError(f"a variant is INIT:LR with INIT in {INITS}, got {text!r}")
    try:
        return init, float(lr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a learning rate: {lr!r}") from None


def scores(run: Path) -> dict:
    """The run's dev DER, tuned threshold (with the dev DER at each) and test scores."""
    from slimdiar.demo.report import system_scores

    tuned = json.loads((run / "threshold.json").read_text())
    scored = system_scores(run)
    return {
        "threshold": tuned["threshold"],
        "dev_der": scored.pop("dev_der"),
        "dev_der_per_threshold": tuned["dev_der"],
        "test": scored,
    }


def run_one(base, seed: int, init: str, lr: float, say) -> dict:
    """Fine-tune one variant with one seed and score it as the demo does (kept in result.json)."""
    from slimdiar.demo.run import Demo
    from slimdiar.fileio import write_json_atomic

    out = base.out / f"seed-{seed}"
    name = f"{init}-lr{lr:g}"
    result_file = out / name / "result.json"
    if result_file.exists():
        return {**json.loads(result_file.read_text()), **scores(out / name)}
    demo = Demo(out, seed=seed, shared=base, say=say)
    demo.settings.lr_backbone = demo.settings.lr_backbone_pretrained = lr
    start = time.perf_counter()
    demo.finetune(
        name, demo.settings.finetune_epochs, None if init == "random" else base.ssl_backbone
    )
    train_s = time.perf_counter() - start
    demo.diarize_and_score(name)
    result = {
        "seed": seed,
        "init": init,
        "lr_backbone": lr,
        "lr_head": demo.settings.lr_head,
        "epochs": demo.settings.finetune_epochs,
        "finetune_seconds": train_s,
        **scores(out / name),
    }
    write_json_atomic(result_file, result)
    return result


def measure(args) -> dict:
    """Simulate the corpus if needed, then run (or read back) every seed and variant."""
    import torch

    from slimdiar.demo.run import Demo

    torch.set_num_threads(args.threads)
    base = Demo(args.work, seed=0, say=print)
    if not (base.data / "test" / "wav.scp").exists():  # as the demo's simulate stage checks
        base.simulate()
    if not base.pretrained_record.exists():
        base.pretrain()
    record = json.loads(base.pretrained_record.read_text())
    if record["source"] != "bundled":
        raise SystemExit(f"the demo's bundled WavLM does not fit this corpus: {record.get('why')}")
    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for init, lr in args.variants:
            print(f"[ssl-init] seed {seed}: {init} init, lr_backbone {lr:g}")
            runs.append(run_one(base, seed, init, lr, print))
    return {
        "generated_by": GENERATED_BY,
        "command": " ".join([GENERATED_BY, *sys.argv[1:]]),
        "pretrained": {k: record[k] for k in ("sha256", "steps") if k in record},
        "splits": {
            split: len(
                json.loads((base.data / split / "simulation.json").read_text())["recordings"]
            )
            for split in ("train", "dev", "test")
        },
        "runs": runs,
        "seconds": time.perf_counter() - start,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": args.threads,
        },
    }


def _mean_std(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def render(data: dict) -> str:
    """The Markdown section of the measurement."""
    runs = data["runs"]
    variants = list(dict.fromkeys((r["init"], r["lr_backbone"]) for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    label = {"random": "random init", "ssl": "SSL init (bundled WavLM)"}
    splits = data["splits"]
    lines = [
        BEGIN,
        f"<!-- generated by `{data['generated_by']}` from docs/ssl-init.json; do not edit -->",
        "",
        "## Measured: SSL initialisation against random, per backbone learning rate",
        "",
        f"The demo's corpus ({splits['train']} training, {splits['dev']} dev and "
        f"{splits['test']} test conversations of 60 s, disjoint speakers) and its bundled "
        f"pretrained WavLM ({data['pretrained'].get('steps', '?')} steps). Each row fine-tunes "
        f"the demo's unpruned model for the demo's {runs[0]['epochs']} epochs (head learning "
        f"rate {runs[0]['lr_head']:g}, same seeds for every row) and scores it as the demo "
        "does: dev DER at the clustering threshold tuned on dev, test DER at that threshold. "
        f"Seeds {', '.join(map(str, seeds))}; mean ± standard deviation over seeds. Command: "
        f"`{data['command']}`.",
        "",
        "| initialisation | backbone lr | dev DER % | test DER % | missed % | false alarm % | "
        "confusion % | dev DER per seed % | test DER per seed % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for init, lr in variants:
        rows = sorted(
            (r for r in runs if (r["init"], r["lr_backbone"]) == (init, lr)),
            key=lambda r: r["seed"],
        )
        test = [r["test"] for r in rows]
        lines.append(
            f"| {label[init]} | {lr:g} | {_mean_std([r['dev_der'] for r in rows])} | "
            f"{_mean_std([t['der'] for t in test])} | "
            f"{_mean_std([t['missed'] for t in test])} | "
            f"{_mean_std([t['false_alarm'] for t in test])} | "
            f"{_mean_std([t['confusion'] for t in test])} | "
            + ", ".join(f"{100 * r['dev_der']:.1f}" for r in rows)
            + " | "
            + ", ".join(f"{100 * t['der']:.1f}" for t in test)
            + " |"
        )
    lines.append("")

    def per_seed(variant):
        return {r["seed"]: r["dev_der"] for r in runs if (r["init"], r["lr_backbone"]) == variant}

    for ssl in (v for v in variants if v[0] == "ssl"):
        for reference in (v for v in variants if v[0] == "random"):
            ref, mine = per_seed(reference), per_seed(ssl)
            common = sorted(set(ref) & set(mine))
            lower = sum(mine[s] < ref[s] for s in common)
            gap = statistics.mean(100 * (ref[s] - mine[s]) for s in common) if common else 0.0
            same = " (the same learning rate)" if ssl[1] == reference[1] else ""
            lines.append(
                f"- SSL init at backbone lr {ssl[1]:g} against random init at "
                f"{reference[1]:g}{same}: dev DER lower on {lower} of {len(common)} seeds, "
                f"{abs(gap):.1f} points {'lower' if gap > 0 else 'higher'} on average."
            )
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure (or, with --render-only, read the JSON) and write the JSON and the section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("exp/ssl-init"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants",
        type=parse_variant,
        nargs="+",
        default=[("random", 1e-3), ("ssl", 2e-4)],
        help="INIT:LR_BACKBONE pairs, INIT random or ssl (default: random:1e-3 ssl:2e-4)",
    )
    parser.add_argument("--threads", type=int, default=2)
    from slimdiar.fileio import add_publish_arguments, publish_measurement

    add_publish_arguments(parser, ROOT / "docs" / "ssl-init.json", ROOT / "docs" / "pretraining.md")
    args = parser.parse_args()

    run = None if args.render_only else lambda: measure(args)
    print(publish_measurement(args.json, args.out, render, BEGIN, END, run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
