#!/usr/bin/env python3
"""Render docs/recipe-fidelity.md: the demo and pruning measurements, before and after.

Before and after the reference recipe's training settings became the defaults.

Usage: .venv/bin/python tools/render_recipe_fidelity.py [--docs docs]

Reads (all generated, none typed by hand):

- ``docs/demo-report-before.json`` / ``docs/demo-report-random-init.json``: the demo's report
  with the settings of before / with the reference's, both from the two-row demo that started
  from random initialisation (``tools/update_readme_demo.py`` copied each to docs/; the demo
  now starts from a pretrained WavLM and ``docs/demo-report.json`` holds its four rows);
- ``docs/pruning-targets-before.json`` / ``docs/pruning-targets-reference.json``:
  ``tools/measure_pruning.py`` with the settings of before / ``--setting reference`` (the
  reference recipe's defaults); ``docs/pruning-targets.json`` (optional): the tests' setting now;
- ``docs/demo-stage1-before.json`` (optional): the ``prune/report.json`` of stage 1 run with the
  settings of before on the teacher of the new demo, so that the kept units of both settings
  come from one teacher.

Writes ``docs/recipe-fidelity.json`` (the numbers it shows) and ``docs/recipe-fidelity.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from slimdiar.fileio import write_text_atomic  # noqa: E402

GENERATED_BY = "python tools/render_recipe_fidelity.py"

SETTINGS = [
    ("gradient into the conv layers", "1×", "`wavlm.feature_grad_mult` 0.1", "0.1"),
    (
        "WavLM dropout (feat. proj., attention, hidden, FFN inside)",
        "0, 0, 0, 0",
        "`wavlm.*_dropout` 0.1, 0.1, 0.1, 0.0",
        "0.1, 0.1, 0.1, 0.0",
    ),
    ("distillation loss over the layers", "sum", "mean", "mean"),
    ("global batch, stages 1 and 2 (Base+)", "16", "64 (Large stage 1: 32)", "64 / 32"),
    (
        "stage-1 final model",
        "on target, lowest dev distillation loss",
        "`prune.final_model` average of the 5 lowest total dev losses from the loss peak on",
        "average of 5",
    ),
    ("log-alpha clamp", "`prune.gate_bound` 0.001", "0 (none)", "none"),
    (
        "last conv gate",
        "after the feature-projection LayerNorm",
        "after the last GELU, kept as a per-channel scale",
        "`dummy_weight`",
    ),
    ("layer weighted sum", "softmax", "`Linear(L+1, 1, bias=False)`", "linear"),
]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _demo_rows(before: dict | None, after: dict | None) -> list[dict]:
    rows = []
    for label, report in (("before", before), ("reference settings", after)):
        if report is None:
            continue
        full, small = report["rows"][0], report["rows"][1]
        rows.append(
            {
                "settings": label,
                "reached_sparsity": report["reached_sparsity"],
                "params": small["params"],
                "macs_per_second": small["macs_per_second"],
                "mac_ratio": full["macs_per_second"] / small["macs_per_second"],
                "cpu_speedup": small["cpu_speedup"],
                "der_full": full["der"],
                "der_pruned": small["der"],
                "kept": report.get("kept"),
            }
        )
    return rows


def _target_rows(before: dict | None, after: dict | None, tests: dict | None) -> list[dict]:
    rows = []
    for label, data in (
        ("before", before),
        ("reference settings", after),
        ("tests' setting, now", tests),
    ):
        if data is None:
            continue
        groups: dict[tuple, list[dict]] = {}
        for run in data["runs"]:
            groups.setdefault((run["objective"], run["target"]), []).append(run)
        for (objective, target), runs in groups.items():
            key = "reached_param_sparsity" if objective == "params" else "reached_mac_sparsity"
            reached = [r[key] for r in runs]
            rows.append(
                {
                    "settings": label,
                    "objective": objective,
                    "target": target,
                    "seeds": [r["seed"] for r in runs],
                    "reached": reached,
                    "within": sum(abs(v - target) <= 0.02 for v in reached),
                    "mean_mac_sparsity": statistics.fmean(r["reached_mac_sparsity"] for r in runs),
                    "conv_channels": [r["kept"]["conv_channels"] for r in runs if "kept" in r],
                }
            )
    return rows


def _tests_now(data: dict | None) -> dict | None:
    """The tests' setting measured with today's code (JSON written before then has no name)."""
    return data if data is not None and data.get("setting_name") == "tests" else None


def collect(docs: Path) -> dict:
    stage1 = _load(docs / "demo-stage1-before.json")
    after = _load(docs / "demo-report-random-init.json")
    data = {
        "demo": _demo_rows(_load(docs / "demo-report-before.json"), after),
        "targets": _target_rows(
            _load(docs / "pruning-targets-before.json"),
            _load(docs / "pruning-targets-reference.json"),
            _tests_now(_load(docs / "pruning-targets.json")),
        ),
        "stage1_same_teacher": None,
    }
    if stage1 is not None and after is not None and after.get("kept"):
        data["stage1_same_teacher"] = {
            "before": {
                key: stage1[key]["student"] for key in ("conv_channels", "heads", "ffn_units")
            },
            "before_reached_sparsity": stage1["reached_sparsity"],
            "before_mac_sparsity": stage1["reached_mac_sparsity"],
            "after": {key: value["student"] for key, value in after["kept"].items()},
            "teacher": {key: value["teacher"] for key, value in after["kept"].items()},
        }
    return data


def render(data: dict) -> str:
    lines = [
        f"<!-- generated by `{GENERATED_BY}` from docs/recipe-fidelity.json; do not edit -->",
        "# The reference recipe's training settings: before and after",
        "",
        "The settings that changed (the reference is DiariZen's `recipes/diar_ssl_pruning`):",
        "",
        "| setting | before | now (default) | reference |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in SETTINGS],
        "",
        "A setting of before stays reachable as an option where the table names one.",
        "",
        "## The demo",
        "",
        "`slimdiar demo` (full demo, 2 CPU threads): the pruned + fine-tuned model against the "
        "fine-tuned one of the same run. CPU speed-up: WavLM backbone, batch 1, measured side by "
        "side in one run.",
        "",
        "| settings | sparsity | params | MACs/s | MAC ratio | CPU speed-up | DER fine-tuned % | "
        "DER pruned % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["demo"]:
        lines.append(
            f"| {row['settings']} | {row['reached_sparsity']:.3f} | {row['params'] / 1e6:.3f}M | "
            f"{row['macs_per_second'] / 1e9:.4f}G | {row['mac_ratio']:.2f}× | "
            f"{row['cpu_speedup']:.2f}× | {row['der_full'] * 100:.1f} | "
            f"{row['der_pruned'] * 100:.1f} |"
        )
    same = data.get("stage1_same_teacher")
    if same:
        lines += [
            "",
            "Kept by stage 1 on the same fine-tuned teacher (the new demo's), settings of before "
            f"(sparsity {same['before_reached_sparsity']:.3f}, MAC sparsity "
            f"{same['before_mac_sparsity']:.3f}) against the reference's:",
            "",
            "| part | teacher | before | reference settings |",
            "|---|---|---|---|",
        ]
        names = {
            "conv_channels": "conv channels",
            "heads": "heads per layer",
            "ffn_units": "FFN units per layer",
        }
        for key, name in names.items():
            lines.append(
                f"| {name} | {same['teacher'][key]} | {same['before'][key]} | "
                f"{same['after'][key]} |"
            )
    else:
        kept = [row for row in data["demo"] if row.get("kept")]
        if kept:
            lines += ["", "Kept by stage 1 (reference settings):", ""]
            for row in kept:
                for key, value in row["kept"].items():
                    lines.append(f"- {key}: {value['student']} of {value['teacher']}")
    lines += [
        "",
        "## Reaching the target sparsity (`tools/measure_pruning.py`)",
        "",
        "The tiny `wavlm-mini` teacher of the tests, one prune setting for every target; "
        "*before*: the earlier recipe (log-alpha bound 0.001, on-target final model); "
        "*reference settings*: the same setting on today's defaults (`--setting reference`); "
        "*tests' setting, now*: today's code with the bound and the on-target rule the tests "
        "keep. *Within* counts the seeds that land within ±0.02 of the target.",
        "",
        "| settings | objective | target | reached (per seed) | within ±0.02 | MAC sparsity "
        "(mean) | conv channels kept (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["targets"]:
        reached = ", ".join(f"{v:.4f}" for v in row["reached"])
        channels = "; ".join(str(c) for c in row["conv_channels"]) or "not recorded"
        lines.append(
            f"| {row['settings']} | {row['objective']} | {row['target']} | {reached} | "
            f"{row['within']}/{len(row['reached'])} | {row['mean_mac_sparsity']:.3f} | "
            f"{channels} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    data = collect(args.docs)
    write_text_atomic(args.docs / "recipe-fidelity.json", json.dumps(data, indent=1) + "\n")
    write_text_atomic(args.docs / "recipe-fidelity.md", render(data))
    print(f"wrote {args.docs / 'recipe-fidelity.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
