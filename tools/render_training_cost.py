#!/usr/bin/env python3
"""Render the cost tables of docs/training.md from docs/training-cost.json.

Usage: .venv/bin/python tools/render_training_cost.py [--data docs/training-cost.json]
                                                      [--doc docs/training.md]

``docs/training-cost.json`` holds the measured seconds per optimiser step on this machine's CPU
(``time_s`` in ``metrics.jsonl``) and the inputs of the GPU estimate: hours of training audio,
WavLM's analytic MACs per second of audio (``WavLM.macs()``), the cost of the head, and the
throughput assumed. The chunk length, shift, batch, epochs, patience and data workers come from
the bundled recipe config (``slimdiar/configs/wavlm-base-plus.toml``). The tool rewrites what
stands between the ``training-cost:measured`` and ``training-cost:estimate`` markers of the
document; never edit those parts by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from slimdiar.config import bundled_config, read_toml
from slimdiar.fileio import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
GENERATED_BY = "python tools/render_training_cost.py"
SECTIONS = ("measured", "estimate")


class CostError(ValueError):
    """The data file or the document cannot be used."""


def significant(value: float, digits: int = 2) -> str:
    """``value`` rounded to ``digits`` significant digits, written plainly (``130``, ``0.055``)."""
    return f"{float(f'{value:.{digits}g}'):g}"


def hours(value: float, gpu: str) -> str:
    return f"≈ {significant(value)} {gpu}-hour{'' if value <= 1 else 's'}"


def estimate(data: dict, recipe: dict) -> dict:
    """The estimate's derived numbers: chunks and steps per epoch, FLOP per chunk and epoch."""
    chunk_s, shift_s = recipe["data"]["chunk_duration_s"], recipe["data"]["shift_s"]
    chunks = data["training_hours"] * 3600 / shift_s
    models = []
    for model in data["models"]:
        wavlm_gflop = (
            chunk_s
            * model["gmac_per_second"]
            * data["flop_per_mac"]
            * data["forward_backward_factor"]
        )
        chunk_gflop = wavlm_gflop + data["head_gflop_per_chunk"]
        epoch_flop = chunks * chunk_gflop * 1e9
        models.append(
            {
                **model,
                "wavlm_gflop_per_chunk": wavlm_gflop,
                "gflop_per_chunk": chunk_gflop,
                "epoch_flop": epoch_flop,
                **{
                    f"{p}_hours": epoch_flop / (data[p]["assumed_tflops"] * 1e12) / 3600
                    for p in ("fp32", "bf16")
                },
            }
        )
    return {
        "chunk_s": chunk_s,
        "shift_s": shift_s,
        "chunks": chunks,
        "steps": chunks / recipe["trainer"]["batch_size"],
        "models": models,
    }


def _wrap(text: str) -> str:
    """A paragraph or a ``- `` bullet wrapped at 100 columns, as the hand-written text is."""
    return textwrap.fill(
        text,
        100,
        subsequent_indent="  " if text.startswith("- ") else "",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _percent(fraction: float) -> str:
    return f"{round(100 * fraction)} %"


def _power(value: float) -> str:
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa} × 10^{int(exponent)}"


def render_measured(data: dict, derived: dict) -> list[str]:
    m = data["measured_cpu"]
    lines = [
        f"Median and minimum wall time per optimiser step ({m['source']}), "
        f"{m['cores']} cores **shared with other jobs** (load average {m['load_average'][0]} to "
        f"{m['load_average'][1]} during the measurements, so the medians are pessimistic; the "
        "minimum is closer to an idle machine):",
        "",
        "| configuration | batch | median s/step | min s/step |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['configuration']} | {r['batch']} | {r['median_s_per_step']:g} | "
        f"{r['min_s_per_step']:g} |"
        for r in m["rows"]
    ]
    by_name = {model["name"]: model for model in derived["models"]}
    for row in m["rows"]:
        if row.get("model") in by_name:
            gflop = by_name[row["model"]]["gflop_per_chunk"]
            rate = row["chunks"] * gflop / row["min_s_per_step"]
            lines += [
                "",
                f"The {row['model']} row agrees with the arithmetic below: "
                f"{row['chunks']} chunks × ≈ {significant(gflop, 3)} GFLOP in "
                f"{row['min_s_per_step']:g} s is ≈ {significant(rate)} GFLOP/s, what "
                f"{m['cores']} busy CPU cores deliver.",
            ]
    return lines


def render_estimate(data: dict, derived: dict, recipe: dict) -> list[str]:
    e, t = data["gpu_estimate"], recipe["trainer"]
    gpu, (first, *others) = e["gpu"], derived["models"]
    batch, epochs = t["batch_size"], t["max_epochs"]
    lines = [
        f"- One epoch of the {e['training_hours']} h training set is about "
        f"{e['training_hours']} × 3600 s / {derived['shift_s']:g} s ≈ "
        f"{round(derived['chunks'], -3):,.0f} chunks of {derived['chunk_s']:g} s "
        f"(≈ {round(derived['steps'], -2):,.0f} steps of {batch} chunks).",
        "- WavLM costs "
        + " and ".join(
            f"{m['gmac_per_second']:g} GMAC"
            + (" per second of audio" if m is first else "")
            + f" ({m['name']})"
            for m in derived["models"]
        )
        + " (the analytic count of `WavLM.macs()`); a training step costs about "
        f"{e['forward_backward_factor']} × the forward pass (forward + backward), "
        f"{e['flop_per_mac']} FLOP per MAC: {first['name']} ≈ {derived['chunk_s']:g} s × "
        f"{first['gmac_per_second']:g} × {e['flop_per_mac']} × {e['forward_backward_factor']} ≈ "
        f"{first['wavlm_gflop_per_chunk']:.0f} GFLOP per chunk"
        + "".join(f", {m['name']} ≈ {m['wavlm_gflop_per_chunk']:.0f} GFLOP" for m in others)
        + f"; the Conformer head adds ≈ {e['head_gflop_per_chunk']:g} GFLOP per chunk. One "
        "epoch is then "
        + " and ".join(f"≈ {_power(m['epoch_flop'])} FLOP ({m['name']})" for m in derived["models"])
        + ".",
        f"- Assumed throughput: fp32 (PyTorch leaves TF32 off for matrix products by default) "
        f"at {_percent(e['fp32']['assumed_tflops'] / e['fp32']['peak_tflops'])} of an {gpu}'s "
        f"{e['fp32']['peak_tflops']:g} TFLOP/s FP32 peak, ≈ {e['fp32']['assumed_tflops']:g} "
        f'TFLOP/s; `trainer.precision = "bf16"` at roughly '
        f"{_percent(e['bf16']['assumed_tflops'] / e['bf16']['peak_tflops'])} of its ≈ "
        f"{e['bf16']['peak_tflops']:g} TFLOP/s dense BF16 peak, ≈ "
        f"{e['bf16']['assumed_tflops']:g} TFLOP/s, where data loading ({t['num_workers']} "
        f"workers reading {batch} × {derived['chunk_s']:g} s of audio per step) may become the "
        "limit.",
        "",
        f"| model | fp32, per epoch | bf16, per epoch | {epochs} epochs (upper bound), fp32 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m['name']} | {hours(m['fp32_hours'], gpu)} | {hours(m['bf16_hours'], gpu)} | "
        f"{hours(m['fp32_hours'] * epochs, gpu)} |"
        for m in derived["models"]
    ]
    val = recipe["data"]
    lines += [
        "",
        f"Early stopping (patience {t['patience']}) usually ends a run well before "
        f"{epochs} epochs; validation ({val['val_chunk_duration_s']:g} s / "
        f"{val['val_shift_s']:g} s chunks of the development sets, forward only) adds a "
        "few percent.",
    ]
    return lines


def render(data: dict, recipe: dict) -> dict[str, list[str]]:
    """The generated lines of each marked section, by section name."""
    try:
        derived = estimate(data["gpu_estimate"], recipe)
        return {
            "measured": render_measured(data, derived),
            "estimate": render_estimate(data, derived, recipe),
        }
    except (KeyError, TypeError, IndexError) as error:
        raise CostError(f"the cost data lacks or misshapes {error}") from None


def fill(text: str, sections: dict[str, list[str]]) -> str:
    """``text`` with each ``training-cost:NAME`` section replaced by its lines."""
    for name, lines in sections.items():
        begin = f"<!-- training-cost:{name}:begin (generated by `{GENERATED_BY}`) -->"
        end = f"<!-- training-cost:{name}:end -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            raise CostError(f"the document needs exactly one {begin} ... {end} pair")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        body = "\n".join(line if line.startswith("|") else _wrap(line) for line in lines)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "training-cost.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "training.md")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.data.read_text(encoding="utf-8"))
        recipe = read_toml(bundled_config(data["gpu_estimate"]["recipe_config"]))
        text = fill(args.doc.read_text(encoding="utf-8"), render(data, recipe))
    except (OSError, json.JSONDecodeError, KeyError, CostError) as error:
        print(f"render_training_cost: error: {error}", file=sys.stderr)
        return 1
    write_text_atomic(args.doc, text)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
