"""The demo's report: the measured numbers of a finished demo, and its table (``report.md``)."""

from __future__ import annotations

import json
from pathlib import Path

NO_PRETRAINING = (
    "No pretrained self-supervised weights exist offline: the WavLM of this demo starts from "
    "random initialisation, so its DER says how the method behaves on a small model trained "
    "from scratch on simulated speech, not what a pretrained WavLM reaches."
)


def build_report(out: Path, quick: bool) -> dict:
    """Collect the measured numbers of a finished demo into one dict."""
    bench = json.loads((out / "bench.json").read_text())
    pruning = json.loads((out / "prune" / "report.json").read_text())
    rows = []
    for name, bench_row, label in (
        ("finetune", bench["models"][0], "fine-tuned"),
        ("finetune-pruned", bench["models"][1], "pruned + fine-tuned"),
    ):
        der = json.loads((out / name / "der.json").read_text())
        rows.append(
            {
                "system": label,
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
            }
        )
    return {
        "quick": quick,
        "note": NO_PRETRAINING,
        "target_sparsity": pruning["target_sparsity"],
        "reached_sparsity": pruning["reached_sparsity"],
        "rows": rows,
        "kept": {
            key: {"teacher": pruning[key]["teacher"], "student": pruning[key]["student"]}
            for key in ("conv_channels", "heads", "ffn_units")
        },
        "device": bench["device"],
        "threads": bench["threads"],
        "torch": bench["torch"],
        "plots": [f"prune/{p}" for p in pruning.get("plots", [])],
    }


def render_report(report: dict) -> str:
    """``report.md`` (and the README's demo table) from a report dict."""
    lines = [
        "| system | sparsity | params | MACs/s | CPU speed-up (b=1) | DER % | missed % | "
        "false alarm % | confusion % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(report["rows"]):
        total = row["total_speech"] or float("nan")
        sparsity = "0 %" if i == 0 else f"{report['reached_sparsity'] * 100:.0f} %"
        lines.append(
            f"| {row['system']} | {sparsity} | {row['params'] / 1e6:.3f}M | "
            f"{row['macs_per_second'] / 1e9:.3f}G | {row['cpu_speedup']:.2f}× | "
            f"{row['der'] * 100:.1f} | {row['missed'] / total * 100:.1f} | "
            f"{row['false_alarm'] / total * 100:.1f} | {row['confusion'] / total * 100:.1f} |"
        )
    kind = "quick smoke run (not an accuracy claim)" if report["quick"] else "full demo"
    text = [
        f"Demo report ({kind}); WavLM backbone sizes, CPU speed on {report['device']} with "
        f"{report['threads']} threads (torch {report['torch']}), DER with collar 0 on the "
        "held-out simulated test set (unseen speakers).",
        "",
        *lines,
        "",
        "Clustering threshold tuned on the dev set: "
        + ", ".join(f"{row['system']} {row['clustering_threshold']:.2f}" for row in report["rows"])
        + ".",
        "",
        *_kept_lines(report.get("kept")),
        report["note"],
        "",
        *[f"![{p}]({p})" for p in report["plots"]],
    ]
    return "\n".join(text) + "\n"


def _kept_lines(kept: dict | None) -> list[str]:
    """What the pruned WavLM kept of each part (reports written before it was recorded: none)."""
    if not kept:
        return []
    names = {
        "conv_channels": "conv channels",
        "heads": "attention heads per layer",
        "ffn_units": "FFN units per layer",
    }
    lines = [
        f"- {names[key]}: {value['student']} of {value['teacher']}" for key, value in kept.items()
    ]
    return ["Kept by pruning:", "", *lines, ""]
