#!/usr/bin/env python3
"""Measure how close ``slimdiar prune`` lands to its target, and write docs/pruning-targets.md.

Usage: .venv/bin/python tools/measure_pruning.py [--seeds 3407 1 2] [--targets 0.5 0.8 0.9]
                                                 [--mac-targets 0.5] [--jobs 2]
                                                 [--json docs/pruning-targets.json]
                                                 [--out docs/pruning-targets.md] [--render-only]

The set-up is the one of ``tests/integration/test_prune.py``, from :mod:`slimdiar.testing`: tone "speakers"
(``write_tone_train_dev``), a tiny diarization model with the ``wavlm-mini`` WavLM fine-tuned on
them (``finetune_tiny_teacher``, the teacher), and one prune setting (``TONE_PRUNE_SETTING``)
for every target. Each target and seed is one
``slimdiar prune`` run, ``--jobs`` at a time with one thread each. For each run the JSON holds
the sparsity that the pruned checkpoint reached (counted parameters, and MACs for one second of
audio), the epoch chosen as the final model, and the deterministic sparsity after every epoch.
``--render-only`` rewrites the Markdown from an existing JSON. Both files are written atomically;
never edit them by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from slimdiar.fileio import write_text_atomic
from slimdiar.testing import TONE_PRUNE_SETTING, finetune_tiny_teacher, write_tone_train_dev

ROOT = Path(__file__).resolve().parents[1]

GENERATED_BY = "python tools/measure_pruning.py"


def run_one(
    work: Path, teacher: Path, objective: str, target: float, seed: int, setting: list[str]
) -> dict:
    """One ``slimdiar prune`` run in a fresh process; its outcome as a dict."""
    from slimdiar.models import WavLM

    out = work / f"{objective}-{target}-seed{seed}"
    command = [
        sys.executable,
        "-m",
        "slimdiar",
        "prune",
        "--teacher",
        str(teacher),
        "--sparsity",
        str(target),
        "--train",
        str(work / "train"),
        "--dev",
        str(work / "dev"),
        "--out",
        str(out),
        *setting,
        "--set",
        f"trainer.seed={seed}",
        "--set",
        f'prune.objective="{objective}"',
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    full, pruned = WavLM.from_pretrained(teacher), WavLM.from_pretrained(out / "pruned")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    chosen = json.loads((out / "best" / "metadata.json").read_text())["epochs"]
    return {
        "objective": objective,
        "target": target,
        "seed": seed,
        "reached_param_sparsity": 1 - pruned.num_params() / full.num_params(),
        "reached_mac_sparsity": 1 - pruned.macs(1.0) / full.macs(1.0),
        "chosen_epochs": chosen,
        "chosen_selectable": all(r["selectable"] for r in epochs if r["epoch"] in chosen),
        "epoch_sparsity": [r["val/sparsity"] for r in epochs],
        "kept": {
            "conv_channels": [c for c, _, _ in pruned.config.conv_layers],
            "heads": [len(h) for h in pruned.config.remaining_heads],
            "ffn_units": list(pruned.config.ffn_dim),
        },
        "seconds": seconds,
    }


# The options by which the tests' setting keeps the rule of the earlier recipe (a log-alpha
# bound, the on-target final model, no early stop); ``--setting reference`` drops them, so the
# runs use the reference recipe's defaults.
TEST_ONLY_KEYS = ("prune.gate_bound=", "prune.final_model=", "trainer.patience=")


def reference_setting(setting: list[str]) -> list[str]:
    """``setting`` without the ``--set`` options of :data:`TEST_ONLY_KEYS`."""
    out: list[str] = []
    for flag, value in zip(setting[::2], setting[1::2]):
        if not value.startswith(TEST_ONLY_KEYS):
            out += [flag, value]
    return out


def measure(args) -> dict:
    setting = (
        TONE_PRUNE_SETTING if args.setting == "tests" else reference_setting(TONE_PRUNE_SETTING)
    )

    jobs = [("params", t, s) for t in args.targets for s in args.seeds]
    jobs += [("macs", t, s) for t in args.mac_targets for s in args.seeds]
    with tempfile.TemporaryDirectory(prefix="slimdiar-prune-targets-") as tmp:
        work = Path(tmp)
        write_tone_train_dev(work)
        teacher = finetune_tiny_teacher(work / "train", work / "dev", work / "finetuned")
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, work, teacher, o, t, s, setting) for o, t, s in jobs]
            runs = []
            for future in futures:
                runs.append(future.result())
                run = runs[-1]
                print(
                    f"{run['objective']} {run['target']} seed {run['seed']}: reached "
                    f"{run['reached_param_sparsity']:.4f} params, "
                    f"{run['reached_mac_sparsity']:.4f} MACs",
                    flush=True,
                )
    return {
        "setting": setting,
        "setting_name": args.setting,
        "teacher_backbone": "wavlm-mini",
        "runs": runs,
    }


def render(data: dict) -> str:
    setting = " ".join(a for a in data["setting"] if a != "--set")
    lines = [
        f"<!-- generated by `{GENERATED_BY}` from {_json_name(data)}; do not edit -->",
        "# Reaching the target sparsity: measured",
        "",
        "Teacher: a tiny diarization model whose WavLM is `wavlm-mini` (random init, Base+'s "
        "proportions), fine-tuned on the tone data of the tests. One prune setting for every "
        f"target: `{setting}`. Reached = 1 − size of `EXP_DIR/pruned` / size of the teacher's "
        "WavLM (counted parameters, or MACs for one second of audio), within ±0.02 of the "
        "target is the test's criterion. " + _rule(data) + " *Last epoch* is where the "
        "multipliers had taken the gates by the end of the run.",
        "",
        "| objective | target | seed | reached | within ±0.02 | chosen epoch | last epoch | "
        "range after the warm-up | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in data["runs"]:
        key = "reached_param_sparsity" if run["objective"] == "params" else "reached_mac_sparsity"
        reached, target = run[key], run["target"]
        trajectory = run["epoch_sparsity"]
        warmup = _warmup_epochs(data["setting"])
        after = trajectory[warmup:] or trajectory
        lines.append(
            f"| {run['objective']} | {target} | {run['seed']} | {reached:.4f} | "
            f"{'yes' if abs(reached - target) <= 0.02 else '**no**'} | "
            f"{', '.join(map(str, run['chosen_epochs']))} | {trajectory[-1]:.3f} | "
            f"{min(after):.3f}–{max(after):.3f} | {run['seconds']:.0f} s |"
        )
    kept_runs = [run for run in data["runs"] if "kept" in run]
    if kept_runs:
        lines += [
            "",
            "Kept by each run (conv channels of each layer | heads per layer | FFN "
            "units per layer):",
            "",
        ]
        for run in kept_runs:
            kept = run["kept"]
            lines.append(
                f"- {run['objective']} {run['target']}, seed {run['seed']}: "
                f"{kept['conv_channels']} | {kept['heads']} | {kept['ffn_units']}"
            )
    lines += ["", "Deterministic sparsity after every epoch:", ""]
    for run in data["runs"]:
        values = " ".join(f"{s:.3f}" for s in run["epoch_sparsity"])
        lines.append(f"- {run['objective']} {run['target']}, seed {run['seed']}: {values}")
    return "\n".join(lines) + "\n"


def _json_name(data: dict) -> str:
    return (
        "docs/pruning-targets-reference.json"
        if data.get("setting_name") == "reference"
        else "docs/pruning-targets.json"
    )


def _rule(data: dict) -> str:
    if data.get("setting_name") == "reference":
        return (
            "The setting leaves the final-model rule and the log-alphas at the reference "
            "recipe's defaults: the final model averages (weights and log-alphas) the 5 "
            "epochs with the lowest total dev loss from the loss peak on, no log-alpha "
            "bound, early stop after 5 epochs without a lower loss past the warm-up."
        )
    return (
        "The final model is the on-target checkpoint past the warm-up with the lowest "
        'validation distillation loss (`prune.final_model="on-target"` and '
        "`prune.gate_bound=0.001` in the setting; the defaults are the reference's average "
        "of 5 epochs from the loss peak on, without a bound)."
    )


def _warmup_epochs(setting: list[str]) -> int:
    for item in setting:
        if item.startswith("prune.warmup_epochs="):
            return int(float(item.split("=", 1)[1]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[3407, 1, 2],
        help="trainer seeds (3407, the default of every stage, is the tests')",
    )
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--mac-targets", type=float, nargs="*", default=[0.5])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="default: docs/pruning-targets.json, or "
        "docs/pruning-targets-reference.json with --setting reference",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the --json path with .md")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument(
        "--setting",
        choices=["tests", "reference"],
        default="tests",
        help="tests: the tests' setting (log-alpha bound, on-target final model); "
        "reference: the same without those, i.e. the reference recipe's "
        "defaults (default: tests)",
    )
    args = parser.parse_args()
    stem = "pruning-targets-reference" if args.setting == "reference" else "pruning-targets"
    args.json = args.json or ROOT / "docs" / f"{stem}.json"
    args.out = args.out or args.json.with_suffix(".md")
    if args.render_only:
        data = json.loads(args.json.read_text())
    else:
        data = measure(args)
        write_text_atomic(args.json, json.dumps(data, indent=1) + "\n")
    write_text_atomic(args.out, render(data))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
