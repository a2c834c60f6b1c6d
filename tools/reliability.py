#!/usr/bin/env python
"""Run every bad-input case of the command line and tabulate what a user sees.

Usage::

    PYTHONPATH=src .venv/bin/python tools/reliability.py [--json docs/reliability.json]
        [--markdown docs/reliability.md] [--only SUBSTRING] [--jobs N] [--render-only]

Each case is one real ``python -m slimdiar ...`` process on small inputs generated in a
temporary directory (a tiny random ``wavlm-tiny`` EEND checkpoint, a few seconds of audio, data
directories, RTTMs, configs): the bad inputs of the test suite and those of the reliability
review (output paths, models that are not models, meaningless values, Ctrl-C). For each case the
exit status, the first line of output (usage lines and progress bars skipped) and a verdict are
recorded in ``--json``; ``--markdown`` is rendered from that JSON (``--render-only`` renders it
again without running anything).

Verdicts: ``clear error`` (non-zero exit, a ``slimdiar ... error`` line with the expected
reason, no output written), ``clear error, the others diarized`` (a batch that skips its bad
recordings), ``correct result``, ``correct result, with a warning``, ``correct empty result``,
``interrupted cleanly`` (Ctrl-C: exit 130, nothing written), or a failure: ``FAIL: traceback``,
``FAIL: partial output`` (a file that must not exist, or a temporary file, is left),
``FAIL: accepted`` (a bad input ran as if it were fine), ``FAIL: unclear message``,
``FAIL: missing output``, ``FAIL: exit status N``. The exit status of this tool is 1 when any
case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
FAST = ["--step", "8.0", "--batch-size", "4", "--quiet"]
RTTM = "SPEAKER a 1 0.50 2.00 <NA> <NA> A <NA> <NA>\nSPEAKER a 1 3.00 1.00 <NA> <NA> B <NA> <NA>\n"


@dataclass
class Case:
    """One command and what a user must see.

    Parameters
    ----------
    command
        The subcommand (or ``slimdiar`` for the top level), for grouping.
    what
        What is wrong with (or special about) the input.
    argv
        Arguments after ``python -m slimdiar``, relative to the case's working directory.
    expect
        ``"error"``, ``"batch"`` (some recordings fail, the others are written), ``"result"``,
        ``"warning"`` (a result and a warning), ``"empty"`` (a correct empty result) or
        ``"interrupt"`` (Ctrl-C after ``sigint_after_s``).
    reason
        Text the output must contain (the reason of the error, or the warning).
    present
        Paths that must exist afterwards.
    absent
        Paths that must not exist afterwards (outputs of a failed command).
    check
        Extra test of a result, given the working directory; returns a problem or ``None``.
    """

    command: str
    what: str
    argv: list[str]
    expect: str
    reason: str | None = None
    present: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    check: Callable[[Path], str | None] | None = None
    sigint_after_s: float | None = None


# ------------------------------------------------------------------ inputs
def noise(num_samples: int, channels: int = 1, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (num_samples,) if channels == 1 else (num_samples, channels)
    return (0.1 * rng.normal(size=shape)).astype(np.float32)


def make_inputs(work: Path) -> None:
    """Write every input file of the cases under ``work``."""
    import numpy as np
    import soundfile
    import torch

    from slimdiar.models.eend import EEND, EENDConfig
    from slimdiar.models.wavlm.config import preset

    torch.manual_seed(0)
    config = EENDConfig(
        wavlm=preset("wavlm-tiny"), d_model=32, num_heads=2, ffn_dim=64, num_blocks=1
    )
    EEND(config).save_pretrained(work / "eend")
    silent = EEND(config)
    with torch.no_grad():
        silent.classifier.weight.zero_()
        silent.classifier.bias.fill_(-10.0)
        silent.classifier.bias[0] = 10.0
    silent.save_pretrained(work / "silent-eend")

    audio = work / "audio"
    audio.mkdir()
    soundfile.write(audio / "good.wav", noise(3 * SAMPLE_RATE), SAMPLE_RATE)
    (audio / "empty.wav").write_bytes(b"")
    soundfile.write(audio / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    rng = np.random.default_rng(0)
    (audio / "corrupt.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    soundfile.write(audio / "cut.wav", noise(2 * SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    (audio / "cut.wav").write_bytes((audio / "cut.wav").read_bytes()[: 44 + SAMPLE_RATE])
    with wave.open(str(audio / "header.wav"), "wb") as stream:
        stream.setnchannels(1)
        stream.setsampwidth(2)
        stream.setframerate(SAMPLE_RATE)
        stream.writeframes(b"\0\0" * SAMPLE_RATE)
    (audio / "header.wav").write_bytes((audio / "header.wav").read_bytes()[:44])
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        waveform = noise(SAMPLE_RATE)
        waveform[100:103] = value
        soundfile.write(audio / f"{name}.wav", waveform, SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(audio / "short.wav", noise(200), SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(audio / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    soundfile.write(audio / "stereo.wav", noise(SAMPLE_RATE, 2), SAMPLE_RATE)
    soundfile.write(audio / "rate8k.wav", noise(8000), 8000)
    soundfile.write(audio / "loud.wav", 40 * noise(SAMPLE_RATE), SAMPLE_RATE, subtype="FLOAT")

    batch = work / "batch"
    batch.mkdir()
    soundfile.write(batch / "first.wav", noise(SAMPLE_RATE, seed=1), SAMPLE_RATE)
    soundfile.write(batch / "my talk.wav", noise(SAMPLE_RATE, seed=2), SAMPLE_RATE)
    (batch / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (work / "docs").mkdir()
    (work / "docs" / "notes.txt").write_text("no audio here\n")
    (work / "notes.txt").write_text("hello, this is a text file, not a model\n")
    (work / "a-file").write_text("a file where a directory is expected\n")
    (work / "a-dir").mkdir()

    (work / "ref.rttm").write_text(RTTM.replace(" a ", " good ") + RTTM)
    (work / "hyp.rttm").write_text(RTTM.replace(" a ", " good ") + RTTM)
    (work / "bad.rttm").write_text(RTTM + "SPEAKER a 1 zero 0.50 <NA> <NA> B <NA> <NA>\n")
    (work / "empty.rttm").write_text("")
    (work / "nowhere.scp").write_text("good audio/good.wav\nlost nowhere/lost.wav\n")
    (work / "bad.scp").write_text("good audio/good.wav\nlonely\n")
    (work / "empty.scp").write_text("")
    rttms = work / "rttms"
    rttms.mkdir()
    (rttms / "a.rttm").write_text(RTTM)
    (rttms / "all.rttm").write_text(RTTM + "SPEAKER a 1 5.00 1.00 <NA> <NA> C <NA> <NA>\n")

    data = work / "data"
    (data / "wav").mkdir(parents=True)
    soundfile.write(data / "wav" / "a.wav", noise(6 * SAMPLE_RATE), SAMPLE_RATE)
    (data / "wav.scp").write_text("a wav/a.wav\n")
    (data / "rttm").write_text(RTTM)
    (data / "uem").write_text("a 1 1.00 3.50\n")
    bad_uem = work / "data-bad-uem"
    bad_uem.mkdir()
    soundfile.write(bad_uem / "a.wav", noise(4 * SAMPLE_RATE), SAMPLE_RATE)
    (bad_uem / "wav.scp").write_text("a a.wav\n")
    (bad_uem / "rttm").write_text(RTTM)
    (bad_uem / "uem").write_text("a 1 0 4\nb 1 0 three\n")
    (work / "data-empty").mkdir()
    (work / "data-empty" / "wav.scp").write_text("")
    tiny = ROOT / "src" / "slimdiar" / "configs" / "tiny.toml"
    (work / "tiny.toml").write_text(tiny.read_text())
    (work / "neg.toml").write_text("[optim]\nlr_head = -1e-3\n")
    (work / "typo.toml").write_text("[model]\nd_modle = 3\n")
    (work / "broken.toml").write_text("[model\n")


def read_only_dir(work: Path) -> str | None:
    """A directory this process cannot write in; ``None`` when there is none (root, no /sys)."""
    from slimdiar.fileio import output_path_problem

    if os.geteuid() != 0:
        locked = work / "read-only"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        return "read-only"
    if output_path_problem("/sys/x.json", directory=False):
        return "/sys"
    return None


# ------------------------------------------------------------------ checks of results
def rttm_is_empty(path: str) -> Callable[[Path], str | None]:
    def check(cwd: Path) -> str | None:
        text = (cwd / path).read_text()
        return None if text == "" else f"{path} is not empty"

    return check


def turns_within(path: str, start_s: float, end_s: float) -> Callable[[Path], str | None]:
    def check(cwd: Path) -> str | None:
        for line in (cwd / path).read_text().splitlines():
            onset_s, duration_s = float(line.split()[3]), float(line.split()[4])
            if onset_s < start_s - 1e-3 or onset_s + duration_s > end_s + 1e-3:
                return f"{path}: a turn lies outside [{start_s}, {end_s}]"
        return None

    return check


# ------------------------------------------------------------------ the cases
def cases(locked: str | None) -> list[Case]:
    """Every case, in the order of the table."""
    model = ["--model", "eend"]
    oracle = ["--oracle-segmentation", "ref.rttm", "--oracle-clustering", "ref.rttm"]
    train = ["--train", "data", "--dev", "data"]
    score = ["score", "--ref", "ref.rttm", "--hyp", "hyp.rttm"]
    diarize_errors = [
        ("an empty file (0 bytes)", "audio/empty.wav", "the file is empty (0 bytes)"),
        ("a WAV with 0 samples", "audio/zero.wav", "0 samples"),
        ("random bytes named .wav", "audio/corrupt.wav", "cannot read audio"),
        ("a WAV header without samples", "audio/header.wav", "0 samples"),
        ("NaN samples", "audio/nan.wav", "NaN/Inf sample(s)"),
        ("Inf samples", "audio/inf.wav", "NaN/Inf sample(s)"),
    ]
    found: list[Case] = [
        Case(
            "diarize",
            what,
            ["diarize", path, "--out", "out", *model, *FAST],
            "error",
            reason,
            absent=["out/" + Path(path).stem + ".rttm"],
        )
        for what, path, reason in diarize_errors
    ]
    found += [
        Case(
            "diarize",
            "a truncated WAV (header says 2 s, 0.5 s present)",
            ["diarize", "audio/cut.wav", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "warning",
            "1.500 s missing",
            present=["out/cut.rttm", "out/cut.json"],
        ),
        Case(
            "diarize",
            "samples 24 dB above full scale",
            ["diarize", "audio/loud.wav", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "warning",
            "above full scale",
            present=["out/loud.rttm"],
        ),
        Case(
            "diarize",
            "200 samples of audio (shorter than a window)",
            ["diarize", "audio/short.wav", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "result",
            present=["out/short.rttm", "out/short.json"],
        ),
        Case(
            "diarize",
            "digital silence",
            ["diarize", "audio/quiet.wav", "--out", "out", "--model", "silent-eend", *FAST],
            "empty",
            "no speech found",
            present=["out/quiet.rttm"],
            check=rttm_is_empty("out/quiet.rttm"),
        ),
        Case(
            "diarize",
            "stereo audio (downmixed)",
            ["diarize", "audio/stereo.wav", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "result",
            present=["out/stereo.rttm"],
        ),
        Case(
            "diarize",
            "8 kHz audio (resampled)",
            ["diarize", "audio/rate8k.wav", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "result",
            present=["out/rate8k.rttm"],
        ),
        Case(
            "diarize",
            "a data directory with a uem",
            ["diarize", "data", "--out", "out", *oracle, "--quiet"],
            "result",
            present=["out/a.rttm", "out/a.json"],
            check=turns_within("out/a.rttm", 1.0, 3.5),
        ),
        Case(
            "diarize",
            "a batch with a corrupt file and a space in a name",
            ["diarize", "batch", "--out", "out", *oracle, "--quiet"],
            "batch",
            "2 of 3 recordings failed",
            present=["out/first.rttm"],
            absent=["out/broken.rttm", "out/my talk.rttm"],
        ),
        Case(
            "diarize",
            "a missing input",
            ["diarize", "absent.wav", "--out", "out", *model],
            "error",
            "no such audio file, directory or wav.scp",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a directory without audio",
            ["diarize", "docs", "--out", "out", *model],
            "error",
            "directory holds no audio file",
            absent=["out"],
        ),
        Case(
            "diarize",
            "an empty wav.scp",
            ["diarize", "empty.scp", "--out", "out", *model],
            "error",
            "lists no recording",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a data directory with an empty wav.scp",
            ["diarize", "data-empty", "--out", "out", *model],
            "error",
            "lists no recording",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a wav.scp line pointing nowhere",
            ["diarize", "nowhere.scp", "--out", "out", *model, "--num-speakers", "1", *FAST],
            "batch",
            "no such audio file",
            present=["out/good.rttm"],
            absent=["out/lost.rttm"],
        ),
        Case(
            "diarize",
            "a malformed wav.scp line",
            ["diarize", "bad.scp", "--out", "out", *model],
            "error",
            "bad.scp:2",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a malformed oracle RTTM line",
            [
                "diarize",
                "audio/good.wav",
                "--out",
                "out",
                "--oracle-segmentation",
                "bad.rttm",
                "--oracle-clustering",
                "bad.rttm",
            ],
            "error",
            "bad.rttm:3",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a missing oracle RTTM",
            ["diarize", "audio/good.wav", "--out", "out", "--oracle-segmentation", "missing.rttm"],
            "error",
            "missing.rttm",
            absent=["out"],
        ),
        Case(
            "diarize",
            "an audio file as --model",
            ["diarize", "audio/good.wav", "--out", "out", "--model", "audio/good.wav"],
            "error",
            "not a slimdiar checkpoint",
            absent=["out"],
        ),
        Case(
            "diarize",
            "a text file as --embedding",
            [
                "diarize",
                "audio/good.wav",
                "--out",
                "out",
                "--oracle-segmentation",
                "ref.rttm",
                "--embedding",
                "notes.txt",
            ],
            "error",
            "not a readable torch checkpoint",
            absent=["out"],
        ),
        Case(
            "diarize",
            "--min-speakers above --max-speakers",
            [
                "diarize",
                "audio/good.wav",
                "--out",
                "out",
                *model,
                "--min-speakers",
                "3",
                "--max-speakers",
                "2",
            ],
            "error",
            "--min-speakers (3) is larger",
            absent=["out"],
        ),
        Case(
            "diarize",
            "--num-speakers 0",
            ["diarize", "audio/good.wav", "--out", "out", *model, "--num-speakers", "0"],
            "error",
            "argument --num-speakers",
            absent=["out"],
        ),
        Case(
            "diarize",
            "--step -1",
            ["diarize", "audio/good.wav", "--out", "out", *model, "--step", "-1"],
            "error",
            "argument --step",
            absent=["out"],
        ),
        Case(
            "diarize",
            "an unknown --device",
            ["diarize", "audio/good.wav", "--out", "out", *model, "--device", "foo"],
            "error",
            "unknown device 'foo'",
            absent=["out"],
        ),
        Case(
            "diarize",
            "--out onto a file",
            ["diarize", "audio/good.wav", "--out", "a-file", *model],
            "error",
            "exists and is not a directory",
        ),
        Case(
            "diarize",
            "two oracle RTTMs that differ",
            [
                "diarize",
                "audio/good.wav",
                "--out",
                "out",
                "--oracle-segmentation",
                "ref.rttm",
                "--oracle-clustering",
                "hyp.rttm",
            ],
            "error",
            "same reference",
            absent=["out"],
        ),
        Case(
            "diarize",
            "no --model and no oracle",
            ["diarize", "audio/good.wav", "--out", "out"],
            "error",
            "--model is required",
            absent=["out"],
        ),
        Case(
            "diarize",
            "Ctrl-C after 1 s",
            ["diarize", "audio/good.wav", "audio/stereo.wav", "--out", "out", *model, *FAST],
            "interrupt",
            sigint_after_s=1.0,
        ),
    ]
    found += [
        Case(
            "score",
            "a malformed hypothesis line",
            ["score", "--ref", "ref.rttm", "--hyp", "bad.rttm"],
            "error",
            "bad.rttm:3",
        ),
        Case(
            "score",
            "a missing reference",
            ["score", "--ref", "nothing", "--hyp", "hyp.rttm"],
            "error",
            "no such RTTM file or directory",
        ),
        Case("score", "--collar -1", [*score, "--collar", "-1"], "error", "--collar must be >= 0"),
        Case(
            "score",
            "a directory without RTTMs",
            ["score", "--ref", "docs", "--hyp", "hyp.rttm"],
            "error",
            "neither an 'rttm' file nor any *.rttm file",
        ),
        Case(
            "score",
            "an empty reference",
            ["score", "--ref", "empty.rttm", "--hyp", "hyp.rttm", "--json", "der.json"],
            "error",
            None,
            absent=["der.json"],
        ),
        Case(
            "score",
            "--collar nan",
            [*score, "--collar", "nan", "--json", "der.json"],
            "error",
            None,
            absent=["der.json"],
        ),
        Case(
            "score",
            "a recording in two RTTMs of a directory",
            ["score", "--ref", "rttms", "--hyp", "hyp.rttm", "--json", "der.json"],
            "error",
            None,
            absent=["der.json"],
        ),
        Case(
            "score",
            "--json onto a directory",
            [*score, "--json", "a-dir"],
            "error",
            "argument --json",
            absent=["a-dir/der.json"],
        ),
        Case(
            "score",
            "--json under a file",
            [*score, "--json", "a-file/der.json"],
            "error",
            "is a file, not a directory",
        ),
        Case(
            "score",
            "a data directory as reference",
            ["score", "--ref", "data", "--hyp", "hyp.rttm", "--json", "der.json"],
            "result",
            present=["der.json"],
        ),
    ]
    found += [
        Case(
            "bench", "an unknown preset", ["bench", "wavlm-gigantic"], "error", "neither a preset"
        ),
        Case(
            "bench",
            "a text file as MODEL",
            ["bench", "notes.txt", "--seconds", "0.5"],
            "error",
            "not a readable torch checkpoint",
        ),
        Case(
            "bench",
            "--threads 0",
            ["bench", "wavlm-tiny", "--threads", "0"],
            "error",
            "argument --threads",
        ),
        Case(
            "bench",
            "--json onto a directory",
            ["bench", "wavlm-tiny", "--json", "a-dir"],
            "error",
            "argument --json",
        ),
        Case(
            "bench",
            "--json under a file",
            ["bench", "wavlm-tiny", "--json", "a-file/b.json"],
            "error",
            "is a file, not a directory",
        ),
        Case(
            "bench",
            "--pipeline with a missing checkpoint",
            ["bench", "--pipeline", "missing", "--seconds", "4"],
            "error",
            "missing",
        ),
        Case(
            "bench",
            "--pipeline --seconds 0",
            ["bench", "--pipeline", "eend", "--seconds", "0"],
            "error",
            "must be positive",
        ),
        Case("bench", "no MODEL", ["bench"], "error", "give at least one MODEL"),
        Case(
            "bench",
            "Ctrl-C after 0.5 s",
            ["bench", "wavlm-tiny", "--seconds", "0.5", "--repeats", "50", "--json", "bench.json"],
            "interrupt",
            absent=["bench.json"],
            sigint_after_s=0.5,
        ),
        Case(
            "bench",
            "Ctrl-C after 3 s",
            ["bench", "wavlm-tiny", "--seconds", "0.5", "--repeats", "200", "--json", "bench.json"],
            "interrupt",
            absent=["bench.json"],
            sigint_after_s=3.0,
        ),
    ]
    found += [
        Case(
            "simulate",
            "--out onto a file",
            ["simulate", "--speakers-from", "TONES", "--out", "a-file"],
            "error",
            "exists and is not a directory",
        ),
        Case(
            "simulate",
            "--jobs 0",
            ["simulate", "--speakers-from", "TONES", "--out", "sim", "--jobs", "0"],
            "error",
            "argument --jobs",
            absent=["sim"],
        ),
        Case(
            "simulate",
            "--tts-speakers 0",
            ["simulate", "--speakers-from", "TONES", "--out", "sim", "--tts-speakers", "0"],
            "error",
            "argument --tts-speakers",
            absent=["sim"],
        ),
        Case(
            "simulate",
            "--duration-s -1",
            ["simulate", "--speakers-from", "TONES", "--out", "sim", "--duration-s", "-1"],
            "error",
            "--duration-s must be > 0",
            absent=["sim"],
        ),
        Case(
            "simulate",
            "a missing --speakers-from corpus",
            ["simulate", "--speakers-from", "nowhere", "--out", "sim"],
            "error",
            "nowhere",
            absent=["sim"],
        ),
        Case(
            "simulate",
            "a speaker range LOW above HIGH",
            [
                "simulate",
                "--speakers-from",
                "TONES",
                "--out",
                "sim",
                "--speakers-per-recording",
                "4-2",
            ],
            "error",
            "LOW above HIGH",
            absent=["sim"],
        ),
    ]
    found += [
        Case(
            "finetune",
            "--out onto a file",
            ["finetune", *train, "--out", "a-file"],
            "error",
            "exists and is not a directory",
        ),
        Case(
            "finetune",
            "a negative learning rate in --set",
            [
                "finetune",
                "--config",
                "tiny.toml",
                "--set",
                "optim.lr_head=-1",
                *train,
                "--out",
                "exp",
            ],
            "error",
            "--set optim.lr_head=-1: optim.lr_head must be > 0",
            absent=["exp"],
        ),
        Case(
            "finetune",
            "a negative learning rate in the TOML file",
            ["finetune", "--config", "neg.toml", *train, "--out", "exp"],
            "error",
            "neg.toml: optim.lr_head must be > 0",
            absent=["exp"],
        ),
        Case(
            "finetune",
            "a misspelt key in the TOML file",
            ["finetune", "--config", "typo.toml", *train, "--out", "exp"],
            "error",
            "unknown key model.d_modle",
            absent=["exp"],
        ),
        Case(
            "finetune",
            "invalid TOML",
            ["finetune", "--config", "broken.toml", *train, "--out", "exp"],
            "error",
            "invalid TOML",
            absent=["exp"],
        ),
        Case(
            "finetune",
            "a word where a number goes in --set",
            [
                "finetune",
                "--config",
                "tiny.toml",
                "--set",
                "trainer.batch_size=four",
                *train,
                "--out",
                "exp",
            ],
            "error",
            "--set trainer.batch_size=four",
            absent=["exp"],
        ),
        Case(
            "finetune",
            "a missing training directory",
            [
                "finetune",
                "--config",
                "tiny.toml",
                "--train",
                "nowhere",
                "--dev",
                "data",
                "--out",
                "exp",
            ],
            "error",
            "nowhere",
        ),
        Case(
            "prune",
            "--sparsity 1.5",
            ["prune", "--teacher", "eend", "--sparsity", "1.5", *train, "--out", "exp"],
            "error",
            "sparsity",
            absent=["exp"],
        ),
        Case(
            "prune",
            "a missing teacher",
            ["prune", "--teacher", "missing", *train, "--out", "exp"],
            "error",
            "missing",
            absent=["exp"],
        ),
        Case(
            "prune",
            "--out under a file",
            ["prune", "--teacher", "eend", *train, "--out", "a-file/exp"],
            "error",
            "is a file, not a directory",
        ),
        Case(
            "distill",
            "a missing student",
            ["distill", "--student", "missing", "--teacher", "eend", *train, "--out", "exp"],
            "error",
            "missing",
            absent=["exp"],
        ),
    ]
    found += [
        Case(
            "data",
            "a malformed uem line",
            ["data", "check", "data-bad-uem"],
            "error",
            "uem:2: end 'three' is not a number",
        ),
        Case(
            "data",
            "--channel 1 of mono audio",
            ["data", "check", "data", "--channel", "1"],
            "error",
            "channel 1 requested",
        ),
        Case(
            "data",
            "--max-rows -1",
            ["data", "check", "data", "--max-rows", "-1"],
            "error",
            "argument --max-rows",
        ),
        Case("data", "a missing directory", ["data", "check", "nowhere"], "error", "nowhere"),
        Case("data", "an empty wav.scp", ["data", "check", "data-empty"], "error", "wav.scp"),
        Case(
            "prepare",
            "a missing corpus directory",
            ["prepare", "alimeeting", "--corpus-dir", "nowhere", "--out", "prepared"],
            "error",
            "does not exist",
            absent=["prepared"],
        ),
        Case(
            "prepare",
            "--rttm-dir for a corpus other than AMI",
            [
                "prepare",
                "aishell4",
                "--corpus-dir",
                "docs",
                "--out",
                "prepared",
                "--rttm-dir",
                "docs",
            ],
            "error",
            "--rttm-dir applies to ami only",
            absent=["prepared"],
        ),
        Case(
            "demo",
            "--out onto a file",
            ["demo", "--out", "a-file"],
            "error",
            "exists and is not a directory",
        ),
        Case(
            "demo",
            "--jobs 0",
            ["demo", "--out", "demo", "--jobs", "0"],
            "error",
            "argument --jobs",
            absent=["demo"],
        ),
        Case("slimdiar", "an unknown command", ["frobnicate"], "error", "invalid choice"),
    ]
    if locked is not None:
        found += [
            Case(
                "score",
                f"--json in a read-only directory ({locked})",
                [*score, "--json", f"{locked}/der.json"],
                "error",
                "cannot write in",
            ),
            Case(
                "bench",
                f"--json in a read-only directory ({locked})",
                ["bench", "wavlm-tiny", "--json", f"{locked}/bench.json"],
                "error",
                "cannot write in",
            ),
            Case(
                "simulate",
                f"--out in a read-only directory ({locked})",
                ["simulate", "--speakers-from", "TONES", "--out", f"{locked}/sim"],
                "error",
                "cannot write in",
            ),
            Case(
                "finetune",
                f"--out in a read-only directory ({locked})",
                ["finetune", *train, "--out", f"{locked}/exp"],
                "error",
                "cannot write in",
            ),
        ]
    return found


# ------------------------------------------------------------------ running and judging
def first_line(text: str) -> str:
    """The first informative line: usage lines and progress bars are skipped."""
    lines = text.replace("\r", "\n").splitlines()
    in_usage = False
    for line in lines:
        if line.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and line.startswith(" "):
            continue
        in_usage = False
        if not line.strip() or "%|" in line:
            continue
        return line.strip()
    return ""


def leftovers(cwd: Path, before: set[Path]) -> list[str]:
    """Temporary files (``*.tmp``, ``.name.tmp.*``) created by the case."""
    found = []
    for path in cwd.rglob("*"):
        if path in before:
            continue
        if path.name.endswith(".tmp") or ".tmp." in path.name or ".old." in path.name:
            found.append(str(path.relative_to(cwd)))
    return sorted(found)


def judge(case: Case, status: int, text: str, cwd: Path, temporary: list[str]) -> str:
    """The verdict of one finished case."""
    if "Traceback (most recent call last)" in text:
        return "FAIL: traceback"
    if case.expect in ("error", "batch") and status == 0:
        return "FAIL: accepted"
    if case.expect == "interrupt" and status == 0:
        return "FAIL: Ctrl-C ignored, the command ran to its end"
    left = [p for p in case.absent if (cwd / p).exists()]
    if temporary or left:
        return f"FAIL: partial output ({', '.join(temporary + left)})"
    message_lines = [
        line for line in text.splitlines() if line.startswith("slimdiar") and "error" in line
    ]
    if case.expect == "interrupt":
        if status in (130, -signal.SIGINT):
            return "interrupted cleanly"
        return f"FAIL: exit status {status} after Ctrl-C"
    if case.expect in ("error", "batch"):
        if not message_lines or (case.reason is not None and case.reason not in text):
            return "FAIL: unclear message"
        missing = [p for p in case.present if not (cwd / p).exists()]
        if missing:
            return f"FAIL: missing output ({', '.join(missing)})"
        return "clear error" if case.expect == "error" else "clear error, the others diarized"
    if status != 0:
        return f"FAIL: exit status {status}"
    missing = [p for p in case.present if not (cwd / p).exists()]
    if missing:
        return f"FAIL: missing output ({', '.join(missing)})"
    problem = case.check(cwd) if case.check else None
    if problem:
        return f"FAIL: wrong result ({problem})"
    if case.reason is not None and case.reason not in text:
        return "FAIL: no warning" if case.expect == "warning" else "FAIL: no message"
    return {"warning": "correct result, with a warning", "empty": "correct empty result"}.get(
        case.expect, "correct result"
    )


def run_case(case: Case, inputs: Path, scratch: Path, env: dict) -> dict:
    """Run one case in a fresh copy-free working directory (inputs linked in)."""
    cwd = Path(tempfile.mkdtemp(dir=scratch))
    for item in inputs.iterdir():
        (cwd / item.name).symlink_to(item, target_is_directory=item.is_dir())
    before = set(inputs.rglob("*"))
    command = [sys.executable, "-m", "slimdiar", *case.argv]
    start = time.perf_counter()
    if case.sigint_after_s is None:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        # A shell's background job inherits SIGINT ignored; a user's command does not.
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(case.sigint_after_s)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=600)
        status = process.returncode
    seconds = time.perf_counter() - start
    text = stderr + "\n" + stdout
    temporary = leftovers(cwd, set()) + [p for p in leftovers(inputs, before)]
    verdict = judge(case, status, text, cwd, temporary)
    return {
        "command": case.command,
        "what": case.what,
        "argv": ["slimdiar", *case.argv],
        "exit_status": status,
        "first_line": first_line(stderr) or first_line(stdout),
        "verdict": verdict,
        "seconds": round(seconds, 1),
    }


def render_markdown(report: dict) -> str:
    """``docs/reliability.md`` from the report."""
    rows = report["cases"]
    failures = [r for r in rows if r["verdict"].startswith("FAIL")]
    tracebacks = [r for r in rows if r["verdict"] == "FAIL: traceback"]
    lines = [
        "# Reliability: what every command does with bad input",
        "",
        "<!-- generated by tools/reliability.py from docs/reliability.json; do not edit -->",
        "",
        f"{len(rows)} cases, each one `python -m slimdiar ...` process on small generated "
        f"inputs (a tiny random wavlm-tiny EEND checkpoint, seconds of audio): "
        f"{len(rows) - len(failures)} as they should be, {len(failures)} failing, "
        f"{len(tracebacks)} tracebacks. Paths are relative to the case's working directory. "
        "The first line of output skips usage lines and progress bars. Exit status 2: an "
        "error found before any work; 1: some recordings failed (or an internal error); 130: "
        "Ctrl-C (-2: the signal arrived before Python could handle it).",
        "",
        f"Run with {report['environment']}. Regenerate with "
        "`PYTHONPATH=src .venv/bin/python tools/reliability.py`.",
        "",
        "| command | case | command line | exit | first line of output | verdict |",
        "|---|---|---|---|---|---|",
    ]

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    for row in rows:
        shown = " ".join(a if " " not in a else f"'{a}'" for a in row["argv"])
        first = row["first_line"]
        if len(first) > 160:
            first = first[:157] + "..."
        verdict = f"**{row['verdict']}**" if row["verdict"].startswith("FAIL") else row["verdict"]
        lines.append(
            f"| {row['command']} | {cell(row['what'])} | `{cell(shown)}` | "
            f"{row['exit_status']} | {cell(first)} | {cell(verdict)} |"
        )
    if report.get("skipped"):
        lines += ["", "Not run here: " + "; ".join(report["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "reliability.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument(
        "--only",
        help="run only the cases whose command or case holds this, "
        "and replace their rows in an existing --json",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="cases run at the same time (default: 1)"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="render --markdown from --json without running anything",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from slimdiar.fileio import write_json_atomic, write_text_atomic

    if args.render_only:
        write_text_atomic(args.markdown, render_markdown(json.loads(args.json.read_text())))
        return 0
    import torch

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("SLIMDIAR_DEBUG", None)
    with tempfile.TemporaryDirectory(prefix="slimdiar-reliability-") as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        scratch = Path(tmp) / "cases"
        scratch.mkdir()
        make_inputs(inputs)
        locked = read_only_dir(inputs)
        skipped = (
            []
            if locked
            else [
                "output paths in a read-only directory (running as root, "
                "and no directory refuses root's writes)"
            ]
        )
        selected = [
            c
            for c in cases(locked)
            if not args.only or args.only in c.command or args.only in c.what
        ]
        done = [0]

        def run_one(case: Case) -> dict:
            row = run_case(case, inputs, scratch, env)
            done[0] += 1
            print(
                f"[{done[0]}/{len(selected)}] {row['verdict']:34} {case.command}: {case.what}",
                flush=True,
            )
            return row

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows = list(pool.map(run_one, selected))  # in the order of the table
        if locked == "read-only":
            (inputs / locked).chmod(0o755)
    report = {
        "environment": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.machine()}"
        f"{', as root' if os.geteuid() == 0 else ''}",
        "cases": rows,
        "skipped": skipped,
    }
    if args.only and args.json.exists():
        new = {(r["command"], r["what"]): r for r in rows}
        old = json.loads(args.json.read_text())
        kept = [new.pop((r["command"], r["what"]), r) for r in old["cases"]]
        report["cases"] = kept + list(new.values())
    write_json_atomic(args.json, report)
    write_text_atomic(args.markdown, render_markdown(report))
    print(f"wrote {args.json} and {args.markdown}")
    failures = [r for r in rows if r["verdict"].startswith("FAIL")]
    print(f"{len(rows)} cases, {len(failures)} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
