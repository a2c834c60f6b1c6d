#!/usr/bin/env python
"""Measure candidate text-to-speech voices and choose the distinct ones for the voice pool.

Usage::

    .venv/bin/python tools/voice_pool.py [--cache DIR] [--workers 2]
        [--min-distance 2.0] [--check-only]

Every candidate voice (engine voice x sox pitch shift, with a tempo) says the same probe
sentences; each utterance is described by its long-term log-mel envelope and median pitch
(slimdiar.simulate.similarity), and voices are compared in within-speaker standard deviations
(the sentence-to-sentence spread of one voice). Voices are chosen greedily so that every pair is
at least ``--min-distance`` such deviations apart (default 2). As checks, the JSON records the
split-half distance of each voice with itself (two halves of its sentences: the noise floor of
the measure), the leave-one-out accuracy of identifying single utterances among the chosen voices
by the nearest mean, and, where the GE2E speaker embedding model is available, GE2E cosine
similarities between the chosen voices.

Writes:

- ``docs/voice-pool.json``: candidates, split-half distances, threshold, the chosen voices, the
  smallest distance among them (and, where the GE2E speaker embedding model is available, its
  cosine similarities as a cross-check);
- ``src/slimdiar/simulate/voice-pool.json`` (package data, read by
  ``slimdiar.simulate.tts.builtin_voices``): the chosen voices, one pitch shift of each engine
  voice per round, so that the first voices of the pool are as varied as possible;
- the table between the ``voice-pool`` markers of ``docs/simulate.md``.

With ``--check-only`` it measures the current pool again and only writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from slimdiar.simulate.sentences import SENTENCES  # noqa: E402
from slimdiar.simulate.similarity import (  # noqa: E402
    select_distinct,
    utterance_features,
    voice_distances,
)
from slimdiar.simulate.sources import read_mono  # noqa: E402
from slimdiar.simulate.tts import (  # noqa: E402
    POOL_FILE,
    VoiceSpec,
    available_engines,
    builtin_voices,
    engine_version,
    pool_json,
    synthesize,
)

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029")
ESPEAK_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt3",
    "croak",
)
# Named espeak-ng variants, tried with the American accent only.
ESPEAK_NAMED_VARIANTS = (
    "Alicia",
    "Andy",
    "annie",
    "boris",
    "david",
    "edward",
    "gustave",
    "linda",
    "max",
    "michel",
    "norbert",
    "pablo",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "zac",
    "Lee",
)
FLITE_VOICES = ("slt", "rms", "awb", "kal16", "kal")
FESTIVAL_VOICES = ("kal_diphone",)
PITCH_SHIFTS_CENTS = (-300, 0, 300)
TEMPOS = (0.92, 1.0, 1.08)
# Probe sentences: varied lengths and sounds; not the whole list, to keep the measurement quick.
PROBE_SENTENCES = (2, 6, 10, 17, 24, 41, 62, 88)

JSON_PATH = ROOT / "docs" / "voice-pool.json"
POOL_PATH = ROOT / "src" / "slimdiar" / "simulate" / POOL_FILE
DOCS_PATH = ROOT / "docs" / "simulate.md"
BEGIN, END = "<!-- voice-pool:begin -->", "<!-- voice-pool:end -->"


def candidates(engines: list[str]) -> list[VoiceSpec]:
    bases = []
    if "espeak-ng" in engines:
        bases += [("espeak-ng", f"{a}+{v}") for v in ESPEAK_VARIANTS for a in ESPEAK_ACCENTS]
    if "flite" in engines:
        bases += [("flite", v) for v in FLITE_VOICES]
    if "festival" in engines:
        bases += [("festival", v) for v in FESTIVAL_VOICES]
    if "espeak-ng" in engines:
        bases += [("espeak-ng", f"en-us+{v}") for v in ESPEAK_NAMED_VARIANTS]
    return [
        VoiceSpec(engine, voice, pitch, TEMPOS[(i + j) % len(TEMPOS)])
        for i, (engine, voice) in enumerate(bases)
        for j, pitch in enumerate(PITCH_SHIFTS_CENTS)
    ]


def measure(specs: list[VoiceSpec], work: Path, workers: int) -> list[np.ndarray]:
    texts = [SENTENCES[i] for i in PROBE_SENTENCES]

    def features(spec: VoiceSpec) -> np.ndarray:
        paths = [work / spec.label / f"{i:03d}.wav" for i in PROBE_SENTENCES]
        if not all(p.is_file() for p in paths):
            synthesize(spec, texts, paths)
        return np.stack([utterance_features(read_mono(p, 16000), 16000) for p in paths])

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(features, specs))


def identification_accuracy(features: list[np.ndarray]) -> float:
    """Leave-one-out accuracy of naming the voice of single utterances by the nearest voice mean.

    Features are scaled by the pooled within-speaker standard deviation, as for the distances.
    """
    deviations = np.concatenate([f - f.mean(axis=0) for f in features])
    dof = sum(f.shape[0] - 1 for f in features)
    scale = np.sqrt((deviations**2).sum(axis=0) / dof) + 1e-6
    scaled = [f / scale for f in features]
    sums = [f.sum(axis=0) for f in scaled]
    correct = total = 0
    for voice, utterances in enumerate(scaled):
        for utterance in utterances:
            means = np.stack(
                [
                    (sums[k] - utterance) / (len(scaled[k]) - 1)
                    if k == voice
                    else sums[k] / len(scaled[k])
                    for k in range(len(scaled))
                ]
            )
            guess = int(np.argmin(np.sum((means - utterance) ** 2, axis=1)))
            correct += guess == voice
            total += 1
    return correct / total


def ge2e_embeddings(specs: list[VoiceSpec], work: Path) -> np.ndarray | None:
    """GE2E embeddings of the probe utterances, shape (num_voices, num_probes, 256), if available.

    Each voice's embeddings are kept in ``work/<label>/ge2e.npy``.
    """
    try:
        from slimdiar.models.embeddings import load_embedding_model

        model = load_embedding_model("ge2e")
    except Exception as error:  # the model and its weights are optional here
        logging.warning("GE2E measurements skipped: %s", error)
        return None
    voices = []
    for spec in specs:
        cached = work / spec.label / "ge2e.npy"
        if cached.is_file():
            voices.append(np.load(cached))
            continue
        waves = [read_mono(work / spec.label / f"{i:03d}.wav", 16000) for i in PROBE_SENTENCES]
        embeddings = np.stack([model(wave)[0] for wave in waves])
        np.save(cached, embeddings)
        voices.append(embeddings)
    return np.stack(voices)


def ge2e_cosines(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of voice means, shape (V, V), and of each voice's two halves, (V,)."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    means = unit(embeddings.mean(axis=1))
    halves = unit(embeddings[:, 0::2].mean(axis=1)) * unit(embeddings[:, 1::2].mean(axis=1))
    return means @ means.T, halves.sum(axis=-1)


def spread_out(specs: list[VoiceSpec]) -> list[VoiceSpec]:
    """Order the pool so that its first voices come from different engine voices.

    Voices are grouped by (engine, voice) in the order chosen and taken round-robin, one pitch
    shift of each group per round, so ``--tts-speakers N`` gets as many base voices as it can.
    """
    groups: dict[tuple[str, str], list[VoiceSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.engine, spec.voice), []).append(spec)
    ordered = []
    for round_index in range(max(len(g) for g in groups.values())):
        ordered += [g[round_index] for g in groups.values() if round_index < len(g)]
    return ordered


def markdown_table(report: dict) -> str:
    chosen = report["chosen"]
    engines: dict[str, int] = {}
    for voice in chosen:
        engines[voice["engine"]] = engines.get(voice["engine"], 0) + 1
    rows = [
        "| quantity | value |",
        "|---|---|",
        f"| candidate voices measured | {report['num_candidates']} |",
        f"| probe sentences per voice | {report['num_probe_sentences']} |",
        f"| split-half distance (same voice), median / max | "
        f"{report['split_half']['median']:.2f} / {report['split_half']['max']:.2f} |",
        f"| threshold: smallest distance allowed between pool voices | {report['threshold']:.2f} |",
        f"| **distinct voices in the pool** | **{len(chosen)}** |",
        "| by engine | " + ", ".join(f"{k} {v}" for k, v in sorted(engines.items())) + " |",
        f"| smallest distance between two pool voices | "
        f"{report['min_distance_between_chosen']:.2f} |",
        f"| median distance between two pool voices | "
        f"{report['median_distance_between_chosen']:.2f} |",
        f"| single-utterance identification among pool voices (leave-one-out, nearest mean) | "
        f"{100 * report['identification_accuracy']:.1f} % |",
    ]
    ge2e = report.get("ge2e")
    if ge2e:
        rows.append(
            f"| GE2E cosine similarity of one voice's two sentence halves, median / min | "
            f"{ge2e['split_half_cosine_median']:.3f} / {ge2e['split_half_cosine_min']:.3f} |"
        )
        if ge2e["max_cosine_allowed"] is not None:
            rows.append(
                f"| GE2E cosine allowed between pool voices, at most | "
                f"{ge2e['max_cosine_allowed']:.2f} |"
            )
        rows.append(
            f"| GE2E cosine similarity between pool voices, max / mean | "
            f"{ge2e['max_cosine_between_chosen']:.3f} / "
            f"{ge2e['mean_cosine_between_chosen']:.3f} |"
        )
        closest = ge2e["most_similar_pairs"][0]
        rows.append(
            f"| most similar pool voices by GE2E | {closest['voices'][0]} and "
            f"{closest['voices'][1]}: cosine {closest['cosine']:.3f}, distance "
            f"{closest['distance']:.2f} |"
        )
    rows.append(f"| engines | {'; '.join(report['engine_versions'])} |")
    return "\n".join(rows)


def update_docs(table: str) -> None:
    text = DOCS_PATH.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS_PATH} lacks the {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS_PATH.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the probe utterances here (default: a temporary directory)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--min-distance",
        type=float,
        default=2.0,
        help="smallest distance between two pool voices, in within-speaker standard deviations",
    )
    parser.add_argument(
        "--max-ge2e-cosine",
        type=float,
        default=None,
        help="also keep apart voices whose GE2E embeddings (mean over the probe "
        "sentences) have at least this cosine similarity",
    )
    parser.add_argument(
        "--check-only", action="store_true", help="measure the current pool and write only the JSON"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    engines = available_engines()
    if not engines:
        raise SystemExit("no text-to-speech engine installed: run tools/setup-env.sh demo")
    if args.check_only:
        specs = [s for s in builtin_voices() if s.engine in engines]
    else:
        specs = candidates(engines)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.cache or Path(temporary)
        logging.info(
            "measuring %d voices with %d probe sentences each", len(specs), len(PROBE_SENTENCES)
        )
        features = measure(specs, work, args.workers)
        distances, split_half = voice_distances(features)
        threshold = args.min_distance
        also_close = None
        if args.max_ge2e_cosine is not None:  # GE2E of every candidate: slow on a CPU
            all_embeddings = ge2e_embeddings(specs, work)
            if all_embeddings is None:
                raise SystemExit("--max-ge2e-cosine needs the GE2E model")
            also_close = ge2e_cosines(all_embeddings)[0] >= args.max_ge2e_cosine
        chosen = (
            list(range(len(specs)))
            if args.check_only
            else select_distinct(distances, threshold, also_close)
        )
        embeddings = ge2e_embeddings([specs[i] for i in chosen], work)
        if embeddings is not None:
            cosines, ge2e_split_half = ge2e_cosines(embeddings)
        sub = distances[np.ix_(chosen, chosen)]
        off = sub[~np.eye(len(chosen), dtype=bool)]
        report = {
            "measure": "RMS difference of mean (24 level-normalised log-mel bands + log2 median "
            "F0) in within-speaker standard deviations",
            "num_candidates": len(specs),
            "num_probe_sentences": len(PROBE_SENTENCES),
            "identification_accuracy": round(
                identification_accuracy([features[i] for i in chosen]), 4
            ),
            "split_half": {
                "median": round(float(np.median(split_half)), 4),
                "max": round(float(split_half.max()), 4),
            },
            "threshold": round(threshold, 4),
            "engine_versions": [f"{e}: {engine_version(e)}" for e in engines],
            "chosen": [
                {
                    "label": specs[i].label,
                    "engine": specs[i].engine,
                    "voice": specs[i].voice,
                    "pitch_cents": specs[i].pitch_cents,
                    "tempo": specs[i].tempo,
                    "nearest_distance": round(float(np.min(np.delete(distances[i], i))), 4),
                }
                for i in chosen
            ],
            "min_distance_between_chosen": round(float(off.min()), 4) if off.size else None,
            "median_distance_between_chosen": round(float(np.median(off)), 4) if off.size else None,
            "candidates": [
                {"label": s.label, "split_half": round(float(split_half[i]), 4)}
                for i, s in enumerate(specs)
            ],
        }
        if embeddings is not None:
            chosen_cosines = cosines[~np.eye(len(chosen), dtype=bool)]
            pairs = sorted(
                (
                    (float(cosines[a, b]), a, b)
                    for a in range(len(chosen))
                    for b in range(a + 1, len(chosen))
                ),
                reverse=True,
            )[:5]
            report["ge2e"] = {
                "most_similar_pairs": [
                    {
                        "voices": [specs[chosen[a]].label, specs[chosen[b]].label],
                        "cosine": round(c, 4),
                        "distance": round(float(distances[chosen[a], chosen[b]]), 4),
                    }
                    for c, a, b in pairs
                ],
                "model": "ge2e",
                "max_cosine_allowed": args.max_ge2e_cosine,
                "split_half_cosine_median": round(float(np.median(ge2e_split_half)), 4),
                "split_half_cosine_min": round(float(ge2e_split_half.min()), 4),
                "max_cosine_between_chosen": round(float(chosen_cosines.max()), 4),
                "mean_cosine_between_chosen": round(float(chosen_cosines.mean()), 4),
            }
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    logging.info(
        "%d of %d voices are distinct (threshold %.2f); wrote %s",
        len(chosen),
        len(specs),
        threshold,
        JSON_PATH,
    )
    if not args.check_only:
        POOL_PATH.write_text(pool_json(spread_out([specs[i] for i in chosen])), encoding="utf-8")
        update_docs(markdown_table(report))
        logging.info("wrote %s and the table of %s", POOL_PATH, DOCS_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
