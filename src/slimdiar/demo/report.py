"""The demo's report: the measured numbers of a finished demo, and its table (``report.md``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from slimdiar.demo.settings import SYSTEMS, demo_settings

PRUNE_DIRS = {"finetune-pruned": "prune", "pbf-finetune": "pbf-prune"}
"""The pruning run of each pruned system (its sparsity and what it kept)."""


def pretraining_note(choice: dict) -> str:
    """One sentence on where the demo's self-supervised WavLM came from."""
    audio = choice["audio"]["train"]
    made = (
        f"`slimdiar pretrain` (masked prediction of {choice['settings']['clusters']} MFCC "
        f"k-means clusters, WavLM's utterance mixing) for {choice['steps']} steps "
        f"({choice['seconds'] / 60:.1f} min) on the clean voice-pool utterances of the "
        f"{audio['speakers']} training speakers ({audio['minutes']:.1f} min; no conversation, "
        "label, dev or test speaker); its masked-prediction loss went from "
        f"{choice['train_masked_loss_first']:.2f} to {choice['train_masked_loss_last']:.2f} "
        f"nats (chance {choice['chance_loss']:.2f})"
    )
    if choice["source"] == "bundled":
        return (
            "No pretrained WavLM exists offline, so the demo's self-supervised WavLM is the "
            f"repository's bundled checkpoint (SHA-256 {choice['sha256'][:16]}…, checked), made by "
            f"`make pretrained-demo-backbone` with {made}."
        )
    return (
        "No pretrained WavLM exists offline; the demo's self-supervised WavLM was pretrained in "
        f"this run ({choice['why']}) by {made}."
    )


def build_report(out: Path, quick: bool) -> dict:
    """Collect the measured numbers of a finished demo into one dict."""
    bench = json.loads((out / "bench.json").read_text())
    choice = json.loads((out / "pretrained.json").read_text())
    prunings = {
        name: json.loads((out / prune / "report.json").read_text())
        for name, prune in PRUNE_DIRS.items()
    }
    rows = []
    for system, bench_row in zip(SYSTEMS, bench["models"], strict=True):
        der = json.loads((out / system.name / "der.json").read_text())
        tuned = json.loads((out / system.name / "threshold.json").read_text())
        pruning = prunings.get(system.name)
        rows.append(
            {
                "system": system.label,
                "name": system.name,
                "init": system.init,
                "order": system.order,
                "sparsity": pruning["reached_sparsity"] if pruning else 0.0,
                "params": bench_row["params"],
                "macs_per_second": bench_row["macs_per_second"],
                "cpu_speedup": bench_row["speedup_vs_first"],
                "cpu_speedup_batch": bench_row["speedup_batch_vs_first"],
                "rtf": bench_row["rtf"],
                "der": der["total"]["der"],
                "missed": der["total"]["missed"],
                "false_alarm": der["total"]["false_alarm"],
                "confusion": der["total"]["confusion"],
                "total_speech": der["total"]["total"],
                "pipeline_rtf": der["pipeline_rtf"],
                "clustering_threshold": der["clustering_threshold"],
                "dev_der": tuned["dev_der"][str(tuned["threshold"])],
            }
        )
    fbp = prunings["finetune-pruned"]
    s = demo_settings(quick)
    budget = (
        f"Training (epochs over the {s.splits['train']} training conversations): the unpruned "
        f"rows fine-tune {s.finetune_epochs}; FBP prunes the SSL-initialised fine-tuned model "
        f"({s.prune_epochs}, distilling it), distils {s.distill_epochs} and fine-tunes "
        f"{s.finetune_pruned_epochs}; PBF prunes the pretrained WavLM ({s.prune_epochs}, "
        f"distilling the pretrained WavLM), distils {s.distill_epochs} and fine-tunes "
        f"{s.pbf_finetune_epochs}. Pruning and distillation use the conversations' audio, not "
        "their labels. Fine-tuning learning rates: the head "
        f"{s.lr_head:g}; the WavLM {s.lr_backbone:g} from random initialisation and "
        f"{s.lr_backbone_pretrained:g} from a trained one (the SSL WavLM, or the pruned and "
        "distilled ones)."
    )
    return {
        "budget": budget,
        "quick": quick,
        "note": pretraining_note(choice),
        "pretrained": {k: v for k, v in choice.items() if k not in ("train_speakers", "path")},
        "target_sparsity": fbp["target_sparsity"],
        "reached_sparsity": fbp["reached_sparsity"],
        "rows": rows,
        "kept": {
            label: {
                key: {"teacher": pruning[key]["teacher"], "student": pruning[key]["student"]}
                for key in ("conv_channels", "heads", "ffn_units")
            }
            for label, pruning in zip(("FBP", "PBF"), prunings.values(), strict=True)
        },
        "device": bench["device"],
        "threads": bench["threads"],
        "torch": bench["torch"],
        "plots": [f"{PRUNE_DIRS['finetune-pruned']}/{p}" for p in fbp.get("plots", [])],
    }


def build_comparison(runs: dict[int, Path], systems: list[tuple[str, str]]) -> dict:
    """Each system's test DER over the runs of several seeds: per seed, mean and std.

    ``runs`` maps a seed to its output directory; ``systems`` are (directory, label) pairs.
    The standard deviation is the sample one (n - 1), 0 for one seed.
    """
    rows = []
    for name, label in systems:
        scores = {seed: system_scores(out / name) for seed, out in runs.items()}
        row: dict = {"system": label, "name": name}
        for key in ("der", "missed", "false_alarm", "confusion", "dev_der"):
            values = [score[key] for score in scores.values()]
            row[key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        row["per_seed"] = {str(seed): score["der"] for seed, score in scores.items()}
        rows.append(row)
    return {"seeds": sorted(runs), "rows": rows}


def system_scores(directory: Path) -> dict:
    """A scored system's test DER, its parts and its dev DER at the tuned threshold.

    ``directory`` holds the ``der.json`` and ``threshold.json`` of
    :meth:`~slimdiar.demo.run.Demo.diarize_and_score`; missed, false alarm and confusion are
    fractions of the reference speech.
    """
    score = json.loads((directory / "der.json").read_text())["total"]
    tuned = json.loads((directory / "threshold.json").read_text())
    total = score["total"] or float("nan")
    parts = {key: score[key] / total for key in ("missed", "false_alarm", "confusion")}
    return {"der": score["der"], **parts, "dev_der": tuned["dev_der"][str(tuned["threshold"])]}


def render_comparison(comparison: dict) -> list[str]:
    """The table of ``build_comparison``: mean ± std per system (percent)."""
    seeds = comparison["seeds"]
    lines = [
        f"Over {len(seeds)} training seeds ({', '.join(map(str, seeds))}; same corpus, same "
        "pretrained WavLM), mean ± standard deviation of the dev DER (at the tuned threshold) "
        "and of the test DER:",
        "",
        "| system | dev DER % | DER % | missed % | false alarm % | confusion % | DER per seed % |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison["rows"]:
        cells = [
            f"{row[key]['mean'] * 100:.1f} ± {row[key]['std'] * 100:.1f}"
            for key in ("dev_der", "der", "missed", "false_alarm", "confusion")
        ]
        per_seed = ", ".join(f"{row['per_seed'][str(s)] * 100:.1f}" for s in seeds)
        lines.append(f"| {row['system']} | " + " | ".join(cells) + f" | {per_seed} |")
    return [*lines, ""]


def render_report(report: dict) -> str:
    """``report.md`` (and the README's demo table) from a report dict."""
    lines = [
        "| system | initialisation | order | sparsity | params | MACs/s | CPU speed-up (b=1) | "
        "dev DER % | DER % | missed % | false alarm % | confusion % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        total = row["total_speech"] or float("nan")
        lines.append(
            f"| {row['system']} | {row['init']} | {row['order']} | "
            f"{row['sparsity'] * 100:.0f} % | {row['params'] / 1e6:.3f}M | "
            f"{row['macs_per_second'] / 1e9:.3f}G | {row['cpu_speedup']:.2f}× | "
            f"{row['dev_der'] * 100:.1f} | {row['der'] * 100:.1f} | "
            f"{row['missed'] / total * 100:.1f} | "
            f"{row['false_alarm'] / total * 100:.1f} | {row['confusion'] / total * 100:.1f} |"
        )
    kind = "quick smoke run (not an accuracy claim)" if report["quick"] else "full demo"
    text = [
        f"Demo report ({kind}); WavLM backbone sizes, CPU speed on {report['device']} with "
        f"{report['threads']} threads (torch {report['torch']}), DER with collar 0 on the "
        "held-out simulated test set (unseen speakers); dev DER: the development set at the "
        "clustering threshold tuned on it.",
        "",
        *lines,
        "",
        "Clustering threshold tuned on the dev set: "
        + ", ".join(f"{row['system']} {row['clustering_threshold']:.2f}" for row in report["rows"])
        + ".",
        "",
        report["budget"],
        "",
        *(render_comparison(report["compare"]) if report.get("compare") else []),
        *_kept_lines(report["kept"]),
        report["note"],
        "",
        *[f"![{p}]({p})" for p in report["plots"]],
    ]
    return "\n".join(text) + "\n"


def _kept_lines(kept: dict) -> list[str]:
    """What each pruned WavLM kept of each part."""
    names = {
        "conv_channels": "conv channels",
        "heads": "attention heads per layer",
        "ffn_units": "FFN units per layer",
    }
    lines = []
    for system, parts in kept.items():
        lines += [f"{system} kept:", ""]
        lines += [
            f"- {names[key]}: {value['student']} of {value['teacher']}"
            for key, value in parts.items()
        ]
        lines.append("")
    return lines
