"""Oracle segmentation with the real (pretrained, offline) GE2E embedding on two TTS voices."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import soxr
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from slimdiar.data import Turn
from slimdiar.pipeline import DiarizationPipeline

SENTENCES = [
    "We will meet again next Tuesday to review the budget for the new building.",
    "Nobody expected the weather to change so quickly during the afternoon.",
    "Please send me the slides before the meeting starts tomorrow morning.",
    "The results of the second experiment look much better than the first ones.",
    "I think we should ask the other team what they found last week.",
    "Could you explain again how the scheduling of the workers is decided?",
]
VOICES = {"man": "en-us", "woman": "en-us+f3"}


def say(voice: str, text: str, directory) -> np.ndarray:
    path = directory / "say.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True
    )
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None,
    reason="the GE2E weights (pip install --no-deps resemblyzer) are absent",
)
def test_oracle_segmentation_and_ge2e_separate_two_clearly_different_voices(tmp_path):
    audio, turns, t = [], [], 0.0
    for i, sentence in enumerate(SENTENCES):
        speaker = "man" if i % 2 == 0 else "woman"
        speech = say(VOICES[speaker], sentence, tmp_path)
        pause = np.zeros(8000, dtype=np.float32)
        audio += [speech, pause]
        turns.append(Turn("talk", round(t, 3), round(len(speech) / 16000, 3), speaker))
        t += (len(speech) + len(pause)) / 16000
    path = tmp_path / "talk.wav"
    soundfile.write(path, np.concatenate(audio), 16000)

    pipeline = DiarizationPipeline.from_pretrained(
        None,
        embedding="ge2e",
        settings={
            "segmentation": {"source": "oracle"},
            "clustering": {"min_cluster_size": 2, "threshold": 0.5},
        },
    )
    result = pipeline(path, reference=turns, uri="talk")
    assert result.num_speakers == 2

    reference, hypothesis = Annotation(uri="talk"), Annotation(uri="talk")
    for turn in turns:
        reference[Segment(turn.onset_s, turn.onset_s + turn.duration_s)] = turn.speaker
    for turn in result.turns:
        hypothesis[Segment(turn.onset_s, turn.onset_s + turn.duration_s)] = turn.speaker
    detail = DiarizationErrorRate()(reference, hypothesis, detailed=True)
    # speech is taken from the reference: what is left is who spoke, up to frame rounding
    assert detail["confusion"] / detail["total"] < 0.02
