"""Tests of the text-to-speech voice pool (skipped where espeak-ng or sox is not installed)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from slimdiar.errors import ConfigError
from slimdiar.simulate import SimulationConfig, simulate_data_dirs
from slimdiar.simulate.sentences import SENTENCES
from slimdiar.simulate.similarity import select_distinct, utterance_features, voice_distances
from slimdiar.simulate.sources import ToneSource
from slimdiar.simulate.tts import (
    ENGINES,
    TTSVoicePool,
    VoiceSpec,
    builtin_voices,
    engine_available,
    pool_json,
    sentence_indices,
)

needs_espeak = pytest.mark.skipif(
    not engine_available("espeak-ng"),
    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox, or "
    "tools/setup-env.sh demo)",
)

VOICES = (
    VoiceSpec("espeak-ng", "en-us+m3", 0, 1.0),
    VoiceSpec("espeak-ng", "en-gb+f2", 300, 1.08),
    VoiceSpec("espeak-ng", "en-us+m1", -300, 0.92),
)


def test_voice_labels_are_unique_and_free_of_spaces():
    labels = [spec.label for spec in builtin_voices()]
    assert len(labels) == len(set(labels)) >= 20
    assert not any(c.isspace() for label in labels for c in label)
    assert VoiceSpec("flite", "slt", -300, 0.92).label == "fli-slt-300c-t92"


def test_sentences_are_distinct_and_each_speaker_says_its_own_subset():
    assert len(SENTENCES) == len(set(SENTENCES)) >= 100
    first = sentence_indices(VOICES[0], 15)
    assert len(first) == 15 and first == sorted(set(first))
    assert first == sentence_indices(VOICES[0], 15)
    assert first != sentence_indices(VOICES[1], 15)


def test_select_distinct_keeps_only_far_apart_voices():
    distances = np.array(
        [
            [0.0, 0.5, 3.0, 3.0],
            [0.5, 0.0, 3.0, 2.5],
            [3.0, 3.0, 0.0, 1.0],
            [3.0, 2.5, 1.0, 0.0],
        ]
    )
    chosen = select_distinct(distances, 2.0)
    assert len(chosen) == 2
    assert distances[chosen[0], chosen[1]] > 2.0


def test_voice_distance_separates_pitches_and_not_sentences():
    source = ToneSource(3, 8, 16000, f0_low_hz=100, f0_high_hz=200)
    features = [
        np.stack(
            [utterance_features(source.load(s, u).audio, 16000) for u in source.utterance_ids(s)]
        )
        for s in source.speakers()
    ]
    assert 2 ** features[0][:, -1].mean() == pytest.approx(100, rel=0.05)
    assert 2 ** features[2][:, -1].mean() == pytest.approx(200, rel=0.05)
    distances, split_half = voice_distances(features)
    assert distances[0, 2] > 5 * split_half.max()
    np.testing.assert_allclose(distances, distances.T)


@needs_espeak
def test_pool_synthesises_once_and_caches(tmp_path):
    pool = TTSVoicePool(tmp_path / "cache", utterances_per_speaker=2, voices=VOICES[:2])
    assert pool.speakers() == sorted(v.label for v in VOICES[:2])
    assert pool.prepare(num_workers=2) == 4
    assert pool.missing() == [] and pool.prepare() == 0
    speaker = pool.speakers()[0]
    utterance = pool.load(speaker, pool.utterance_ids(speaker)[0])
    assert utterance.audio.dtype == np.float32 and utterance.num_samples > 0.3 * 16000
    assert utterance.segments[0, 0] == 0 and utterance.segments[-1, 1] == utterance.num_samples
    # synthesis is repeatable: a second cache holds the same bytes
    again = TTSVoicePool(tmp_path / "again", utterances_per_speaker=2, voices=VOICES[:2])
    again.prepare()
    for speaker in pool.speakers():
        for utterance_id in pool.utterance_ids(speaker):
            assert (
                pool.cache_path(speaker, utterance_id).read_bytes()
                == again.cache_path(speaker, utterance_id).read_bytes()
            )


@needs_espeak
def test_pool_voices_conversation_end_to_end(tmp_path):
    pool = TTSVoicePool(tmp_path / "cache", utterances_per_speaker=3, voices=VOICES)
    config = SimulationConfig(duration_s=6.0, min_speakers=2, max_speakers=2)
    report = simulate_data_dirs(pool, tmp_path / "out", config, {"train": 1, "test": 0}, seed=0)
    rttm = (tmp_path / "out" / "train" / "rttm").read_text().split("\n")
    assert {line.split()[7] for line in rttm if line} <= {v.label for v in VOICES}
    assert report.splits[0].duration_s >= 6.0


def test_asking_for_more_pool_speakers_than_available_is_an_error(tmp_path):
    if not engine_available("espeak-ng"):
        with pytest.raises(ConfigError, match="no text-to-speech engine"):
            TTSVoicePool(tmp_path, voices=VOICES)
        return
    with pytest.raises(ConfigError, match="asked for 5 pool speakers but only 3"):
        TTSVoicePool(tmp_path, num_speakers=5, voices=VOICES)


def test_the_builtin_pool_is_package_data_in_the_tools_format():
    voices = builtin_voices()
    assert voices[0] == VoiceSpec("flite", "slt", -300, 0.92) and len(voices) == 67
    assert all(v.engine in ENGINES and isinstance(v.pitch_cents, int) for v in voices)
    # the committed file is exactly what tools/voice_pool.py writes for these voices
    written = (resources.files("slimdiar.simulate") / "voice-pool.json").read_text("utf-8")
    assert pool_json(voices) == written
