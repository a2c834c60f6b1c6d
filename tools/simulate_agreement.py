#!/usr/bin/env python
"""Measure how well simulated conversations match the configured turn-taking statistics.

Usage::

    .venv/bin/python tools/simulate_agreement.py [--recordings 30] [--duration-s 200]
        [--layouts 300] [--sources TONES TTS] [--cache DIR]

For each source it simulates ``--recordings`` recordings of ``--duration-s`` seconds with the
default turn-taking settings (the default overlap ratio target of 0.12) into a temporary
directory, re-reads the written RTTM, measures it with
``slimdiar.simulate.turn_taking_from_rttm`` and compares with the configuration. As a check of
the calibration itself (free of the sampling noise of a few hours of material) it also lays out
``--layouts`` recordings without making audio and measures their overall overlap ratio. Writes
``docs/simulate-agreement.json`` and the table between the ``agreement`` markers of
``docs/simulate.md``. The tone source runs at 1 kHz (the statistics do not depend on the sample
rate); the voice pool at 16 kHz.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from slimdiar.simulate import (  # noqa: E402
    ConversationSimulator,
    SimulationConfig,
    ToneSource,
    simulate_data_dirs,
    speech_and_overlap_s,
    turn_taking_from_rttm,
)

JSON_PATH = ROOT / "docs" / "simulate-agreement.json"
DOCS_PATH = ROOT / "docs" / "simulate.md"
BEGIN, END = "<!-- agreement:begin -->", "<!-- agreement:end -->"


def measure(name: str, args) -> dict:
    if name == "TONES":
        source, rate = ToneSource(24, 15, 1000), 1000
    else:
        from slimdiar.simulate.tts import TTSVoicePool

        source, rate = TTSVoicePool(args.cache, utterances_per_speaker=15), 16000
        source.prepare(args.workers)
    config = SimulationConfig(duration_s=args.duration_s, sample_rate=rate)
    with tempfile.TemporaryDirectory() as out:
        report = simulate_data_dirs(
            source, out, config, {"train": args.recordings}, seed=0, num_workers=args.workers
        )
        stats = turn_taking_from_rttm(Path(out) / "train" / "rttm")
    simulator = ConversationSimulator(source, config, seed=0)
    speech_s = overlap_s = 0.0
    for index in range(args.layouts):
        plan = simulator.plan(source.speakers(), np.random.default_rng([1, index]))
        speech, overlap = speech_and_overlap_s(plan.segments())
        speech_s, overlap_s = speech_s + speech, overlap_s + overlap
    turns = config.turns
    rows = [
        ("overlap ratio", turns.overlap_ratio, stats.overlap_ratio),
        (
            f"overlap ratio of {args.layouts} layouts without audio (calibration check)",
            turns.overlap_ratio,
            overlap_s / speech_s,
        ),
        (
            "overlap probability at a change of speaker (calibrated)",
            report.overlap_probability,
            stats.overlap_probability,
        ),
        (
            "same-speaker probability",
            turns.same_speaker_probability,
            stats.same_speaker_probability,
        ),
        (
            "same-speaker pause mean (s)",
            turns.pause_same_speaker.expected_s(),
            float(np.mean(stats.pause_same_speaker_s)),
        ),
        (
            "pause between speakers mean (s)",
            turns.pause_other_speaker.expected_s(),
            float(np.mean(stats.pause_other_speaker_s)),
        ),
    ]
    return {
        "source": source.describe(),
        "recordings": args.recordings,
        "speech_min": round(stats.speech_s / 60, 1),
        "turns": stats.num_turns,
        "rows": [
            {
                "quantity": q,
                "configured": round(c, 4),
                "measured": round(m, 4),
                "relative_difference": round((m - c) / c, 4),
            }
            for q, c, m in rows
        ],
    }


def table(results: list[dict]) -> str:
    header = (
        "| quantity | configured | "
        + " | ".join(
            f"measured, {r['source']} ({r['speech_min']} min of speech, {r['turns']} turns)"
            for r in results
        )
        + " |"
    )
    lines = [header, "|---|---|" + "---|" * len(results)]
    for index, row in enumerate(results[0]["rows"]):
        cells = []
        for result in results:
            measured = result["rows"][index]
            cells.append(
                f"{measured['measured']:.3f} ({100 * measured['relative_difference']:+.1f} %)"
            )
        lines.append(f"| {row['quantity']} | {row['configured']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=30)
    parser.add_argument("--duration-s", type=float, default=200.0)
    parser.add_argument("--layouts", type=int, default=300)
    parser.add_argument("--sources", nargs="+", default=["TONES", "TTS"], choices=["TONES", "TTS"])
    parser.add_argument("--cache", type=Path, default=None, help="voice pool cache")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = [measure(name, args) for name in args.sources]
    JSON_PATH.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = DOCS_PATH.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS_PATH.write_text(f"{head}{BEGIN}\n{table(results)}\n{END}{tail}", encoding="utf-8")
    logging.info("wrote %s and the table of %s", JSON_PATH, DOCS_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
