#!/usr/bin/env python3
"""Measure how well speaker embeddings separate espeak-ng voices.

Usage: .venv/bin/python tools/measure_embeddings.py [--out docs/embeddings.json]
                                                    [--docs docs/embeddings.md]

Measures how well speaker embeddings separate voices on audio that can be made offline:
espeak-ng synthesises the same set of English sentences with several clearly different voices
(male and female variants, other languages' voices), each sentence at a slightly different
speaking rate, resampled to 16 kHz. Every pair of utterances is a trial: same voice (target) or
different voices (non-target). The script reports the cosine similarity of both kinds and the
equal error rate, for

- ``ge2e``: Resemblyzer's pretrained GE2E encoder (the offline default), on whole utterances;
- ``ge2e-masked``: the same encoder where each utterance is followed, in one recording, by an
  utterance of another voice (a different one for each sentence), and a frame mask (one value
  per 20 ms, as a segmentation model gives) selects the first utterance back: the way the
  diarization pipeline calls the model;
- ``ge2e-unmasked-mixture``: the same two-voice recordings embedded whole, without the mask,
  to show what the mask is worth;
- ``mean-log-mel``: the per-utterance mean of 80-bin log mel filterbanks (no learning at all),
  as a floor that a speaker embedding has to beat.

TTS voices are not real speech: within-voice variation is far smaller than a person's, so these
numbers say the model works end to end and ranks voices sensibly, not how it does on meetings.

The JSON goes to ``--out``; with ``--docs`` the table between the ``measure_embeddings``
markers of that Markdown file is regenerated from the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from slimdiar.models.embeddings import kaldi_fbank, load_embedding_model
from slimdiar.models.embeddings.fbank import FbankConfig

SAMPLE_RATE = 16000
VOICES = [
    "en-us",
    "en-us+f3",
    "en-gb+m3",
    "en-gb-scotland+f2",
    "de+m4",
    "fr+f4",
    "es+m7",
    "en-us+grandpa",
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again next Tuesday to review the budget for the coming year.",
    "A large fraction of the audience stayed after the talk to ask questions.",
    "Nobody expected the weather to change so quickly in the afternoon.",
]
SPEEDS_WPM = [150, 160, 170, 180, 190]
MASK_FRAME_MS = 20
BEGIN_MARKER = "<!-- measure_embeddings:begin -->"
END_MARKER = "<!-- measure_embeddings:end -->"


def synthesize(voice: str, text: str, speed_wpm: int, workdir: Path) -> np.ndarray:
    """One utterance of ``text`` by espeak-ng ``voice``, as 16 kHz float32 audio."""
    path = workdir / "utterance.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def equal_error_rate(scores: np.ndarray, is_target: np.ndarray) -> float:
    """Equal error rate (fraction) of similarity scores: higher means more likely target."""
    order = np.argsort(-scores, kind="stable")
    is_target = is_target[order]
    num_target, num_nontarget = is_target.sum(), (~is_target).sum()
    # accepting the top k trials, for k = 0 .. n
    false_reject = np.concatenate([[num_target], num_target - np.cumsum(is_target)]) / num_target
    false_accept = np.concatenate([[0], np.cumsum(~is_target)]) / num_nontarget
    k = int(np.argmin(np.abs(false_reject - false_accept)))
    return float((false_reject[k] + false_accept[k]) / 2)


def trial_statistics(embeddings: np.ndarray, voice_index: np.ndarray) -> dict:
    """Cosine similarities of all pairs, split into same-voice and different-voice trials."""
    normalized = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(len(normalized)), 2))
    scores = np.array([normalized[i] @ normalized[j] for i, j in pairs])
    is_target = np.array([voice_index[i] == voice_index[j] for i, j in pairs])
    same, different = scores[is_target], scores[~is_target]
    num_voices = int(voice_index.max()) + 1
    pair_scores = [[[] for _ in range(num_voices)] for _ in range(num_voices)]
    for (i, j), score in zip(pairs, scores):
        a, b = sorted((int(voice_index[i]), int(voice_index[j])))
        pair_scores[a][b].append(score)
        if a != b:
            pair_scores[b][a].append(score)
    return {
        "voice_pair_cosine_mean": [[float(np.mean(c)) for c in row] for row in pair_scores],
        "num_target_trials": int(is_target.sum()),
        "num_nontarget_trials": int((~is_target).sum()),
        "same_voice_cosine_mean": float(same.mean()),
        "same_voice_cosine_std": float(same.std()),
        "same_voice_cosine_min": float(same.min()),
        "different_voice_cosine_mean": float(different.mean()),
        "different_voice_cosine_std": float(different.std()),
        "different_voice_cosine_max": float(different.max()),
        "eer_percent": 100 * equal_error_rate(scores, is_target),
    }


def measure() -> dict:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")
    torch.manual_seed(0)
    utterances, voice_index = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for v, voice in enumerate(VOICES):
            for s, sentence in enumerate(SENTENCES):
                speed = SPEEDS_WPM[(s + v) % len(SPEEDS_WPM)]
                utterances.append(synthesize(voice, sentence, speed, Path(workdir)))
                voice_index.append(v)
    voice_index = np.array(voice_index)

    model = load_embedding_model("ge2e")
    results = {}
    start = time.perf_counter()
    whole = np.concatenate([model(u[None]) for u in utterances])
    results["ge2e"] = trial_statistics(whole, voice_index)
    results["ge2e"]["seconds"] = time.perf_counter() - start

    # each utterance followed by another voice's utterance of the same sentence; the other
    # voice changes with the sentence, so that two utterances of one voice have different company
    start = time.perf_counter()
    masked, mixtures = [], []
    num_sentences, num_voices = len(SENTENCES), len(VOICES)
    frame_num_samples = SAMPLE_RATE * MASK_FRAME_MS // 1000
    for i, utterance in enumerate(utterances):
        voice, sentence = divmod(i, num_sentences)
        other_voice = (voice + 1 + sentence % (num_voices - 1)) % num_voices
        other = utterances[other_voice * num_sentences + sentence]
        recording = np.concatenate([utterance, other])[None]
        num_frames = recording.shape[1] // frame_num_samples
        frame_centres = (np.arange(num_frames) + 0.5) * frame_num_samples
        mask = (frame_centres < len(utterance)).astype(np.float32)[None]
        masked.append(model(recording[:, : num_frames * frame_num_samples], weights=mask))
        mixtures.append(model(recording))
    results["ge2e-masked"] = trial_statistics(np.concatenate(masked), voice_index)
    results["ge2e-masked"]["seconds"] = time.perf_counter() - start
    results["ge2e-unmasked-mixture"] = trial_statistics(np.concatenate(mixtures), voice_index)

    config = FbankConfig(num_mel_bins=80, input_scale=32768.0)
    mean_fbank = np.stack(
        [kaldi_fbank(torch.from_numpy(u)[None], config)[0].mean(dim=0).numpy() for u in utterances]
    )
    results["mean-log-mel"] = trial_statistics(mean_fbank, voice_index)

    durations_s = [len(u) / SAMPLE_RATE for u in utterances]
    espeak_version = (
        subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
        .stdout.split("Data at")[0]
        .strip()
    )
    return {
        "command": "python " + " ".join(["tools/measure_embeddings.py", *sys.argv[1:]]),
        "audio": {
            "synthesizer": espeak_version,
            "voices": VOICES,
            "sentences": SENTENCES,
            "speeds_wpm": SPEEDS_WPM,
            "num_utterances": len(utterances),
            "utterance_duration_s_min": min(durations_s),
            "utterance_duration_s_max": max(durations_s),
            "sample_rate": SAMPLE_RATE,
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": "cpu",
        },
        "results": results,
    }


def markdown_table(report: dict) -> str:
    audio = report["audio"]
    lines = [
        f"{audio['num_utterances']} utterances: {len(audio['voices'])} espeak-ng voices "
        f"({', '.join(audio['voices'])}) x {len(audio['sentences'])} sentences, "
        f"{audio['utterance_duration_s_min']:.1f}-{audio['utterance_duration_s_max']:.1f} s each, "
        f"{audio['synthesizer']}.",
        "",
        "| Embedding | Same-voice cosine (mean ± std, min) | Different-voice cosine "
        "(mean ± std, max) | EER % | Trials (target / non-target) |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['same_voice_cosine_mean']:.3f} ± {r['same_voice_cosine_std']:.3f}, "
            f"{r['same_voice_cosine_min']:.3f} | {r['different_voice_cosine_mean']:.3f} ± "
            f"{r['different_voice_cosine_std']:.3f}, {r['different_voice_cosine_max']:.3f} | "
            f"{r['eer_percent']:.1f} | {r['num_target_trials']} / {r['num_nontarget_trials']} |"
        )
    for name, r in report["results"].items():
        voices = audio["voices"]
        lines += [
            "",
            f"Mean cosine similarity between the utterances of each pair of voices ({name}):",
            "",
            "| | " + " | ".join(voices) + " |",
            "|---" * (len(voices) + 1) + "|",
        ]
        for voice, row in zip(voices, r["voice_pair_cosine_mean"]):
            lines.append(f"| {voice} | " + " | ".join(f"{c:.2f}" for c in row) + " |")
        break
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)


def update_docs(docs: Path, report: dict) -> None:
    text = docs.read_text()
    if BEGIN_MARKER not in text or END_MARKER not in text:
        sys.exit(f"{docs}: lacks the {BEGIN_MARKER} / {END_MARKER} markers")
    head, rest = text.split(BEGIN_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    table = markdown_table(report)
    write_atomic(docs, f"{head}{BEGIN_MARKER}\n{table}\n{END_MARKER}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/embeddings.json"),
        help="where to write the JSON report",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="Markdown file whose measure_embeddings table is regenerated",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="skip the measurement and regenerate the table from this JSON",
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        report = json.loads(args.from_json.read_text())
    else:
        report = measure()
        write_atomic(args.out, json.dumps(report, indent=1) + "\n")
    print(markdown_table(report))
    if args.docs is not None:
        update_docs(args.docs, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
