"""Tests of the conversation simulator with synthetic tone speakers (no text-to-speech needed)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from slimdiar.data import DataDir, read_rttm
from slimdiar.errors import AudioError, ConfigError, DataFormatError
from slimdiar.simulate import (
    ConversationSimulator,
    CorpusSource,
    GapDistribution,
    SimulationConfig,
    ToneSource,
    TurnTakingConfig,
    acoustics,
    assign_speakers,
    layout_conversation,
    measure_turn_taking,
    parse_splits,
    simulate_data_dirs,
    speech_and_overlap_s,
    turn_taking_from_rttm,
)
from slimdiar.simulate.sources import speech_segments, trim_to_speech
from slimdiar.simulate.turns import placed_segments

RATE = 1000  # a low sample rate keeps long simulated material cheap


def fixed(value_s: float) -> GapDistribution:
    return GapDistribution(samples_s=(value_s,))


def one_segment(length: int) -> np.ndarray:
    return np.array([[0, length]])


# ---------------------------------------------------------------------- distributions
def test_exponential_gap_has_the_configured_mean_and_bounds():
    gap = GapDistribution(mean_s=0.5, min_s=0.1, max_s=2.0)
    values = gap.sample_s(np.random.default_rng(0), 200_000)
    assert values.min() >= 0.1 and values.max() <= 2.0
    assert abs(values.mean() - 0.5) < 0.005
    assert gap.expected_s() == 0.5


def test_empirical_gap_draws_only_observed_values():
    gap = GapDistribution(samples_s=(0.2, 0.4, 1.0))
    values = gap.sample_s(np.random.default_rng(1), 3000)
    assert set(np.round(values, 6)) == {0.2, 0.4, 1.0}
    assert gap.expected_s() == pytest.approx(1.6 / 3)


@pytest.mark.parametrize(
    ("gap", "message"),
    [
        (GapDistribution(mean_s=0.05, min_s=0.1, max_s=2.0), "min_s < mean_s < max_s"),
        (GapDistribution(mean_s=1.5, min_s=0.0, max_s=2.0), "raise max_s above 3"),
        (GapDistribution(samples_s=(0.1, -0.2)), "finite and >= 0"),
    ],
)
def test_bad_gap_distributions_are_rejected(gap, message):
    with pytest.raises(ConfigError, match=message):
        gap.validate("pause")


def test_turn_taking_needs_exactly_one_overlap_setting():
    with pytest.raises(ConfigError, match="exactly one of overlap_ratio"):
        TurnTakingConfig(overlap_ratio=0.1, overlap_probability=0.3).validate()
    with pytest.raises(ConfigError, match="exactly one of overlap_ratio"):
        TurnTakingConfig(overlap_ratio=None).validate()
    with pytest.raises(ConfigError, match="same_speaker_probability"):
        TurnTakingConfig(same_speaker_probability=1.0).validate()


def test_simulation_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="min_speakers <= max_speakers"):
        SimulationConfig(min_speakers=3, max_speakers=2).validate()
    with pytest.raises(ConfigError, match="unknown noise type 'brown'"):
        SimulationConfig(noise_snr_db=(5, 10), noise_types=("brown",)).validate()
    with pytest.raises(ConfigError, match="noise_snr_db"):
        SimulationConfig(noise_snr_db=(20, 10)).validate()


# ---------------------------------------------------------------------- layout
def test_layout_with_pauses_only_is_hand_computable():
    turns = TurnTakingConfig(
        same_speaker_probability=0.0,
        pause_other_speaker=fixed(0.5),
        overlap=fixed(0.3),
        overlap_ratio=None,
        overlap_probability=0.0,
    )
    segments = [[one_segment(1000)] * 3, [one_segment(1000)] * 3]
    placements = layout_conversation(
        segments, turns, 0.0, RATE, np.random.default_rng(0), max_turns=4
    )
    assert [p.onset_sample for p in placements] == [0, 1500, 3000, 4500]
    speakers = [p.speaker_index for p in placements]
    assert all(a != b for a, b in zip(speakers, speakers[1:]))  # two speakers alternate


def test_layout_with_overlaps_only_is_hand_computable():
    turns = TurnTakingConfig(
        same_speaker_probability=0.0,
        pause_other_speaker=fixed(0.5),
        overlap=fixed(0.3),
        overlap_ratio=None,
        overlap_probability=1.0,
    )
    segments = [[one_segment(1000)] * 3, [one_segment(1000)] * 3]
    placements = layout_conversation(
        segments, turns, 1.0, RATE, np.random.default_rng(0), max_turns=3
    )
    assert [p.onset_sample for p in placements] == [0, 700, 1400]


def test_overlap_is_cut_to_the_current_turn_and_never_involves_three_speakers():
    turns = TurnTakingConfig(
        same_speaker_probability=0.0,
        overlap=fixed(5.0),
        overlap_ratio=None,
        overlap_probability=1.0,
    )
    rng = np.random.default_rng(3)
    segments = [[one_segment(int(n)) for n in rng.integers(200, 3000, size=20)] for _ in range(4)]
    placements = layout_conversation(segments, turns, 1.0, RATE, rng, max_turns=60)
    spans = placed_segments(placements, segments)
    grid = np.zeros(max(end for _, _, end in spans) + 1, dtype=int)
    for _, start, end in spans:
        grid[start:end] += 1
    assert grid.max() == 2
    onsets = [p.onset_sample for p in placements]
    assert onsets == sorted(onsets)  # a turn never starts before the one it overlaps
    assert sum(a == b for a, b in zip(onsets, onsets[1:])) > 0  # cut to the current onset


def test_measure_inverts_the_layout():
    turns = TurnTakingConfig(
        same_speaker_probability=0.3, overlap_ratio=None, overlap_probability=0.4
    )
    rng = np.random.default_rng(7)
    segments = [[one_segment(int(n)) for n in rng.integers(500, 2500, size=10)] for _ in range(3)]
    placements = layout_conversation(segments, turns, 0.4, RATE, rng, max_turns=300)
    spans = [(k, s / RATE, e / RATE) for k, s, e in placed_segments(placements, segments)]
    stats = measure_turn_taking(spans)
    assert stats.num_turns == 300
    assert stats.same_speaker_transitions + stats.other_speaker_transitions == 299
    # every gap is a value the distributions can produce (after the cut for overlaps)
    assert min(stats.pause_same_speaker_s) >= 0.1 - 1e-9
    assert max(stats.pause_other_speaker_s) <= 4.0 + 1e-9
    assert 0.3 < stats.overlap_probability < 0.5


def test_speech_and_overlap_hand_cases():
    assert speech_and_overlap_s([("a", 0, 2), ("b", 1, 3)]) == (3.0, 1.0)
    assert speech_and_overlap_s([("a", 0, 2), ("a", 1, 3), ("b", 2.5, 4)]) == (4.0, 0.5)
    assert speech_and_overlap_s([("a", 0, 1), ("b", 1, 2)]) == (2.0, 0.0)
    assert speech_and_overlap_s([]) == (0.0, 0.0)


def test_measure_classifies_transitions_by_hand():
    stats = measure_turn_taking(
        [
            ("a", 0.0, 2.0),
            ("b", 1.5, 3.0),  # overlap 0.5
            ("b", 3.5, 4.0),  # same speaker, pause 0.5
            ("a", 4.25, 5.0),  # other speaker, pause 0.25
            ("c", 4.5, 4.75),  # overlap 0.5, inside a's turn
            ("b", 5.0, 6.0),  # other speaker, touching: pause 0
        ]
    )
    assert stats.same_speaker_transitions == 1
    assert stats.pause_same_speaker_s == [0.5]
    assert stats.pause_other_speaker_s == [0.25, 0.0]
    assert stats.overlap_s == [0.5, 0.5]
    assert stats.overlap_probability == pytest.approx(0.5)


# ---------------------------------------------------------------------- splits
def test_parse_splits():
    assert parse_splits("train=20,dev=4,test=4") == {"train": 20, "dev": 4, "test": 4}
    with pytest.raises(ConfigError, match="expected NAME=COUNT"):
        parse_splits("train=20,dev")
    with pytest.raises(ConfigError, match="given twice"):
        parse_splits("a=1,a=2")


def test_assign_speakers_is_disjoint_and_proportional():
    speakers = [f"s{i:02d}" for i in range(30)]
    sets = assign_speakers(speakers, {"train": 20, "dev": 4, "test": 4}, 2, 4, seed=0)
    assert sum(len(s) for s in sets.values()) == 30
    assert not set(sets["train"]) & set(sets["dev"])
    assert not set(sets["dev"]) & set(sets["test"])
    assert len(sets["train"]) > len(sets["dev"]) >= 4
    assert sets == assign_speakers(speakers, {"train": 20, "dev": 4, "test": 4}, 2, 4, seed=0)
    assert sets != assign_speakers(speakers, {"train": 20, "dev": 4, "test": 4}, 2, 4, seed=1)


def test_assign_speakers_fails_clearly_with_too_few_speakers():
    with pytest.raises(ConfigError, match="5 speakers cannot be divided into 3 disjoint sets"):
        assign_speakers([f"s{i}" for i in range(5)], {"a": 1, "b": 1, "c": 1}, 2, 3, seed=0)


# ---------------------------------------------------------------------- sources
def test_tone_source_is_deterministic_and_speaker_specific():
    source = ToneSource(4, 3, RATE * 16)
    a = source.load("tone000", "tone000-001")
    b = ToneSource(4, 3, RATE * 16).load("tone000", "tone000-001")
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.segments.tolist() == [[0, a.num_samples]]
    assert source.load("tone003", "tone003-001").audio.shape != a.audio.shape or not np.allclose(
        source.load("tone003", "tone003-001").audio[:100], a.audio[:100]
    )


def test_speech_segments_find_bursts_and_trim():
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(rate // 2) / rate)
    audio = np.concatenate(
        [np.zeros(rate // 4), tone, np.zeros(rate), tone, np.zeros(rate // 4)]
    ).astype(np.float32)
    segments = speech_segments(audio, rate)
    assert segments.shape == (2, 2)
    np.testing.assert_allclose(segments / rate, [[0.25, 0.75], [1.75, 2.25]], atol=0.011)
    utterance = trim_to_speech("spk", "u", audio, rate)
    assert utterance.segments[0, 0] == 0 and utterance.segments[-1, 1] == utterance.num_samples
    assert trim_to_speech("spk", "u", np.zeros(rate, np.float32), rate) is None


def test_corpus_source_reads_librispeech_layout_and_lists(tmp_path):
    rate = 16000
    burst = (0.2 * np.sin(2 * np.pi * 150 * np.arange(rate) / rate)).astype(np.float32)
    padded = np.concatenate([np.zeros(800, np.float32), burst, np.zeros(800, np.float32)])
    for speaker in ("19", "26"):
        for index in range(2):
            path = tmp_path / "corpus" / speaker / "100" / f"{speaker}-100-{index:04d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, padded, 8000 if speaker == "26" else rate)
    source = CorpusSource(tmp_path / "corpus", rate)
    assert source.speakers() == ["19", "26"]
    assert source.utterance_ids("19") == ["100/19-100-0000", "100/19-100-0001"]
    utterance = source.load("19", "100/19-100-0000")
    assert abs(utterance.num_samples - rate) < 400  # silence trimmed
    resampled = source.load("26", "100/26-100-0001")  # 8 kHz file, resampled to 16 kHz
    assert abs(resampled.num_samples - 2 * rate) < 800

    listing = tmp_path / "list.txt"
    listing.write_text(
        "# speaker path\nalice corpus/19/100/19-100-0000.flac\nbob corpus/26/100/26-100-0000.flac\n"
    )
    assert CorpusSource(listing, rate).speakers() == ["alice", "bob"]
    listing.write_text("alice corpus/19/100/19-100-0000.flac\nbob\n")
    with pytest.raises(DataFormatError, match=r"list.txt:2: expected '<speaker> <path>'"):
        CorpusSource(listing, rate)
    with pytest.raises(ConfigError, match="no such corpus directory"):
        CorpusSource(tmp_path / "missing", rate)


def test_unreadable_corpus_audio_names_the_file(tmp_path):
    bad = tmp_path / "corpus" / "x" / "a.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not audio")
    with pytest.raises(AudioError, match="a.wav: cannot read audio"):
        CorpusSource(tmp_path / "corpus").load("x", "a")


# ---------------------------------------------------------------------- acoustics
def test_pink_noise_falls_by_3_db_per_octave():
    noise = acoustics.pink_noise(2**16, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(noise)) ** 2
    low = power[1000:2000].mean()
    high = power[2000:4000].mean()
    assert 10 * np.log10(low / high) == pytest.approx(3.0, abs=0.5)
    assert np.std(noise) == pytest.approx(1.0)


def test_noise_is_scaled_to_the_requested_snr():
    rng = np.random.default_rng(1)
    speech = rng.standard_normal(8000) * 0.1
    mask = np.zeros(8000, bool)
    mask[:4000] = True
    noise = acoustics.scale_noise_to_snr(speech, acoustics.white_noise(8000, rng), 12.0, mask)
    snr_db = 20 * np.log10(acoustics.rms(speech, mask) / acoustics.rms(noise))
    assert snr_db == pytest.approx(12.0)


def test_synthetic_rir_decays_by_60_db_in_rt60():
    response = acoustics.synthetic_rir(0.4, 16000, np.random.default_rng(0))
    assert response.shape == (6400,) and response[0] == 1.0
    tail = response[1:]
    early = np.mean(tail[300:1000] ** 2)
    late = np.mean(tail[-700:] ** 2)
    assert 10 * np.log10(early / late) > 40
    impulse = np.zeros(1000)
    impulse[100] = 1.0
    out = acoustics.reverberate(impulse, response)
    assert out.shape == (1000,) and np.argmax(np.abs(out)) == 100


# ---------------------------------------------------------------------- whole simulation
def small_config(**changes) -> SimulationConfig:
    """A short recording with a fixed overlap probability (no calibration, for speed)."""
    turns = TurnTakingConfig(overlap_ratio=None, overlap_probability=0.3)
    config = SimulationConfig(
        duration_s=8.0, min_speakers=2, max_speakers=3, sample_rate=RATE, turns=turns
    )
    return replace(config, **changes)


def test_output_validates_as_a_data_directory(tmp_path):
    source = ToneSource(10, 6, RATE)
    report = simulate_data_dirs(
        source, tmp_path / "out", small_config(), {"train": 3, "dev": 1, "test": 1}, seed=0
    )
    speakers = {}
    for name in ("train", "dev", "test"):
        data = DataDir.load(tmp_path / "out" / name)
        assert (
            len(data.recordings)
            == report.splits[[s.name for s in report.splits].index(name)].num_recordings
        )
        for uri, recording in data.recordings.items():
            assert recording.sample_rate == RATE and recording.num_channels == 1
            assert data.uem[uri][0].end_s == pytest.approx(recording.duration_s, abs=1e-3)
            assert recording.duration_s >= 8.0
            audio, _ = sf.read(recording.path)
            assert np.abs(audio).max() <= 0.99
            assert 2 <= len({t.speaker for t in data.turns[uri]}) <= 3
        speakers[name] = {t.speaker for t in data.all_turns()}
        assert sf.info(next(iter(data.recordings.values())).path).subtype == "PCM_16"
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    summary = json.loads((tmp_path / "out" / "simulation.json").read_text())
    assert set(summary["splits"]) == {"train", "dev", "test"}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_same_seed_gives_byte_identical_output_and_workers_do_not_matter(tmp_path):
    source = ToneSource(8, 5, RATE)
    config = small_config(noise_snr_db=(10.0, 20.0), reverb=True)
    splits = {"train": 2, "dev": 1, "test": 1}
    simulate_data_dirs(source, tmp_path / "a", config, splits, seed=4)
    simulate_data_dirs(source, tmp_path / "b", config, splits, seed=4, num_workers=2)
    simulate_data_dirs(source, tmp_path / "c", config, splits, seed=5)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 1 + 3 * 4 + 4  # summary, 3 x (wav.scp, rttm, uem, json), 4 wavs
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a/train/rttm").read_bytes() != (tmp_path / "c/train/rttm").read_bytes()


def test_level_is_normalised_without_noise(tmp_path):
    config = small_config(level_dbfs=-20.0)
    source = ToneSource(6, 4, RATE)
    simulator = ConversationSimulator(source, config, seed=0)
    recording = simulator.simulate("r", source.speakers(), np.random.default_rng(0))
    mask = np.zeros(recording.num_samples, bool)
    for turn in recording.turns:
        mask[round(turn.onset_s * RATE) : round(turn.offset_s * RATE)] = True
    assert 20 * np.log10(acoustics.rms(recording.audio, mask)) == pytest.approx(-20.0, abs=0.05)


def test_babble_noise_uses_speakers_outside_the_conversation(tmp_path):
    config = small_config(noise_snr_db=(5.0, 5.0), noise_types=("babble",))
    source = ToneSource(8, 4, RATE)
    simulator = ConversationSimulator(source, config, seed=0)
    recording = simulator.simulate(
        "r", source.speakers()[:3], np.random.default_rng(0), babble_speakers=source.speakers()
    )
    assert recording.noise == ("babble", 5.0)
    with pytest.raises(ConfigError, match="babble noise needs speakers outside"):
        simulator.simulate(
            "r",
            source.speakers()[:3],
            np.random.default_rng(0),
            babble_speakers=source.speakers()[:3],
        )


def test_a_failed_run_leaves_no_directory_that_looks_complete(tmp_path, monkeypatch):
    from slimdiar.simulate import simulator as module

    calls = []
    real_write = module.sf.write

    def write_then_fail(*args, **kwargs):  # the disk fills up at the third recording
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(module.sf, "write", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        simulate_data_dirs(
            ToneSource(6, 3, RATE), tmp_path / "out", small_config(), {"train": 2, "dev": 2}, seed=0
        )
    assert len(calls) == 3
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_output_is_kept_unless_overwritten(tmp_path):
    source = ToneSource(6, 3, RATE)
    simulate_data_dirs(source, tmp_path, small_config(), {"train": 1}, seed=0)
    with pytest.raises(ConfigError, match="already exist: choose another --out or pass "):
        simulate_data_dirs(source, tmp_path, small_config(), {"train": 1}, seed=1)
    before = (tmp_path / "train" / "rttm").read_bytes()
    simulate_data_dirs(source, tmp_path, small_config(), {"train": 1}, seed=1, overwrite=True)
    assert (tmp_path / "train" / "rttm").read_bytes() != before


def test_sample_rate_mismatch_is_an_error():
    with pytest.raises(ConfigError, match="delivers 16000 Hz audio"):
        ConversationSimulator(ToneSource(4, 2, 16000), small_config())


# ---------------------------------------------------------------------- statistics
LONG_TURNS = TurnTakingConfig(
    same_speaker_probability=0.3,
    pause_same_speaker=GapDistribution(mean_s=0.6, min_s=0.1, max_s=4.0),
    pause_other_speaker=GapDistribution(mean_s=0.5, min_s=0.0, max_s=4.0),
    overlap=GapDistribution(mean_s=0.7, min_s=0.0, max_s=4.0),
    overlap_ratio=0.12,
)


@pytest.fixture(scope="module")
def long_simulation(tmp_path_factory):
    """About 100 minutes of conversation at 1 kHz, with its report and output directory."""
    out = tmp_path_factory.mktemp("long")
    config = SimulationConfig(
        duration_s=200.0, min_speakers=2, max_speakers=4, sample_rate=RATE, turns=LONG_TURNS
    )
    report = simulate_data_dirs(ToneSource(12, 12, RATE), out, config, {"train": 30}, seed=0)
    return report, out


def test_simulated_statistics_match_the_configuration(long_simulation):
    report, out = long_simulation
    stats = turn_taking_from_rttm(out / "train" / "rttm")  # from the written RTTM
    assert stats.num_turns > 2500
    assert stats.overlap_ratio == pytest.approx(0.12, rel=0.10)
    assert stats.same_speaker_probability == pytest.approx(0.3, rel=0.10)
    assert np.mean(stats.pause_same_speaker_s) == pytest.approx(0.6, rel=0.10)
    assert np.mean(stats.pause_other_speaker_s) == pytest.approx(0.5, rel=0.10)
    assert stats.overlap_probability == pytest.approx(report.overlap_probability, rel=0.10)
    # the report measures the same thing
    assert report.stats.summary()["overlap_ratio"] == pytest.approx(stats.overlap_ratio, abs=1e-3)


def test_stats_from_rttm_round_trip(long_simulation, tmp_path):
    _, out = long_simulation
    estimated = turn_taking_from_rttm(out / "train" / "rttm").to_turn_taking_config()
    estimated.validate()
    assert estimated.overlap_ratio == pytest.approx(0.12, rel=0.10)
    assert estimated.same_speaker_probability == pytest.approx(0.3, rel=0.10)
    assert estimated.pause_same_speaker.expected_s() == pytest.approx(0.6, rel=0.10)
    assert estimated.pause_other_speaker.expected_s() == pytest.approx(0.5, rel=0.10)
    assert estimated.pause_other_speaker.is_empirical
    # simulating again from the estimate reproduces the statistics
    config = SimulationConfig(duration_s=200.0, sample_rate=RATE, turns=estimated)
    report = simulate_data_dirs(ToneSource(12, 12, RATE), tmp_path, config, {"train": 12}, seed=1)
    again = turn_taking_from_rttm(tmp_path / "train" / "rttm")
    assert again.overlap_ratio == pytest.approx(0.12, rel=0.15)
    assert np.mean(again.pause_other_speaker_s) == pytest.approx(0.5, rel=0.15)
    assert report.config.turns is estimated


def test_stats_from_an_empty_rttm_is_an_error(tmp_path):
    path = tmp_path / "empty.rttm"
    path.write_text("")
    with pytest.raises(DataFormatError, match="holds no SPEAKER lines"):
        turn_taking_from_rttm(path)


def test_written_rttm_matches_the_report(long_simulation):
    report, out = long_simulation
    turns = read_rttm(out / "train" / "rttm")
    assert {t.uri for t in turns} == {f"train-{i:04d}" for i in range(30)}
    assert report.splits[0].num_recordings == 30


def test_corpus_utterances_with_pauses_become_separate_turns(tmp_path):
    rate = 16000
    time_s = np.arange(int(0.6 * rate)) / rate
    for speaker, f0_hz in (("a", 120.0), ("b", 180.0), ("c", 240.0)):
        burst = (0.2 * np.sin(2 * np.pi * f0_hz * time_s)).astype(np.float32)
        silence = np.zeros(int(0.5 * rate), np.float32)
        audio = np.concatenate([silence[:1600], burst, silence, burst, silence[:1600]])
        for index in range(3):
            path = tmp_path / "corpus" / speaker / "1" / f"{speaker}-{index}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, rate)
    turns = TurnTakingConfig(
        same_speaker_probability=0.0, overlap_ratio=None, overlap_probability=0.0
    )
    config = SimulationConfig(duration_s=10.0, min_speakers=2, max_speakers=3, turns=turns)
    simulate_data_dirs(
        CorpusSource(tmp_path / "corpus"), tmp_path / "out", config, {"train": 1}, seed=0
    )
    data = DataDir.load(tmp_path / "out" / "train")
    lengths_s = [t.duration_s for t in data.all_turns()]
    assert len(lengths_s) >= 4 and len(lengths_s) % 2 == 0
    np.testing.assert_allclose(lengths_s, 0.6, atol=0.02)  # the 0.5 s pause is not speech
