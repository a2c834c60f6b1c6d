"""The diarization pipeline end to end: oracle variants, model glue, streaming, errors."""

import importlib.util
import json

import numpy as np
import pytest
import soundfile
import torch
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

import slimdiar.pipeline.pipeline as pipeline_module
from slimdiar.data import Turn, read_rttm
from slimdiar.errors import AudioError, ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.pipeline import DiarizationPipeline, PipelineConfig
from slimdiar.testing import TONES_HZ, ToneEmbedding, tiny_eend, tone_waveform

FREQUENCIES_HZ = TONES_HZ
# frame i of the WavLM grid stands for [0.02 i + 0.0125, 0.02 (i + 1) + 0.0125) s
REFERENCE = [
    (0.5125, 6.0125, "alice"),
    (5.0125, 11.0125, "bob"),
    (11.5125, 15.0125, "carol"),
    (14.0125, 18.0125, "alice"),
    (20.0125, 23.9125, "bob"),
]
DURATION_S = 24.3


pytestmark = pytest.mark.usefixtures("one_thread")


def synthesize(turns, duration_s=DURATION_S, seed=0):
    """Each speaker is a pure tone; silence is faint noise."""
    return tone_waveform(turns, duration_s, FREQUENCIES_HZ, seed)


class SilentSegmentation(torch.nn.Module):
    """A segmentation model that hears nobody (always the empty class)."""

    def __init__(self):
        super().__init__()
        from slimdiar.models.powerset import Powerset

        self.powerset = Powerset(4, 2)
        self.frame_step_samples = 320
        self.receptive_field_samples = 400
        self.num_calls = 0

    def forward(self, waveforms):
        self.num_calls += 1
        num_frames = (waveforms.shape[1] - 400) // 320 + 1
        log_probs = torch.full((waveforms.shape[0], num_frames, 11), -10.0)
        log_probs[..., 0] = 0.0
        return log_probs


def der(turns, reference_triples, uem_end_s=DURATION_S):
    reference, hypothesis = Annotation(), Annotation()
    for onset_s, offset_s, speaker in reference_triples:
        reference[Segment(onset_s, offset_s), reference.new_track(Segment(onset_s, offset_s))] = (
            speaker
        )
    for turn in turns:
        segment = Segment(turn.onset_s, turn.offset_s)
        hypothesis[segment, hypothesis.new_track(segment)] = turn.speaker
    metric = DiarizationErrorRate(collar=0.0)
    return metric(reference, hypothesis, uem=Timeline([Segment(0, uem_end_s)]))


def make_config(**sections) -> PipelineConfig:
    """A pipeline configuration from nested settings."""
    return PipelineConfig.from_dict(sections)


def oracle_config() -> PipelineConfig:
    return make_config(segmentation={"source": "oracle"}, clustering={"method": "oracle"})


def write_wav(path, waveform, sample_rate=SAMPLE_RATE):
    soundfile.write(path, waveform, sample_rate)
    return path


# ---------------------------------------------------------------------- oracle variants
def test_oracle_segmentation_and_clustering_reproduce_the_reference():
    pipeline = DiarizationPipeline(config=oracle_config())
    waveform = synthesize(REFERENCE)
    result = pipeline((waveform, SAMPLE_RATE), reference=REFERENCE, uri="meeting")
    # reference boundaries on frame boundaries: exact up to float rounding
    assert der(result.turns, REFERENCE) < 1e-6
    assert result.num_speakers == 3
    assert result.speakers == ["alice", "bob", "carol"]  # oracle clustering keeps the labels
    assert {t.uri for t in result.turns} == {"meeting"}
    assert len(result.turns) == len(REFERENCE)


def test_oracle_pipeline_error_is_bounded_by_frame_quantisation():
    rng = np.random.default_rng(1)
    jittered = [
        (on + rng.uniform(0, 0.02), off + rng.uniform(0, 0.02), spk) for on, off, spk in REFERENCE
    ]
    pipeline = DiarizationPipeline(config=oracle_config())
    result = pipeline((synthesize(jittered), SAMPLE_RATE), reference=jittered)
    speech_s = sum(off - on for on, off, _ in jittered)
    # every boundary moves by at most half a frame step (10 ms)
    assert der(result.turns, jittered) <= 2 * len(jittered) * 0.01 / speech_s + 1e-9


def test_oracle_segmentation_with_embedding_clustering_finds_the_speakers(tone_embedding):
    config = make_config(segmentation={"source": "oracle"}, clustering={"min_cluster_size": 5})
    embedding = tone_embedding
    pipeline = DiarizationPipeline(None, embedding, config)
    result = pipeline((synthesize(REFERENCE), SAMPLE_RATE), reference=REFERENCE)
    assert result.num_speakers == 3
    assert result.speakers == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert der(result.turns, REFERENCE) < 1e-6
    assert result.to_dict()["embedding_model"] == "tone-bands"
    assert embedding.num_calls > 0

    forced = pipeline((synthesize(REFERENCE), SAMPLE_RATE), reference=REFERENCE, num_speakers=2)
    assert forced.num_speakers == 2
    bounded = pipeline(
        (synthesize(REFERENCE), SAMPLE_RATE), reference=REFERENCE, min_speakers=4, max_speakers=5
    )
    assert bounded.num_speakers == 4


def test_exclusive_turns_never_overlap_and_cover_the_same_speech():
    pipeline = DiarizationPipeline(config=oracle_config())
    result = pipeline((synthesize(REFERENCE), SAMPLE_RATE), reference=REFERENCE)
    exclusive = sorted(result.exclusive_turns, key=lambda t: t.onset_s)
    for before, after in zip(exclusive, exclusive[1:]):
        assert before.offset_s <= after.onset_s + 1e-9
    speech = Annotation()
    for turn in result.turns:
        speech[Segment(turn.onset_s, turn.offset_s)] = "speech"
    exclusive_speech = sum(t.duration_s for t in exclusive)
    assert exclusive_speech == pytest.approx(speech.get_timeline().support().duration(), abs=1e-6)


# ---------------------------------------------------------------------- silence, errors
def test_silence_gives_an_empty_result_and_a_warning(tmp_path, caplog):
    path = write_wav(tmp_path / "quiet.wav", np.zeros(3 * SAMPLE_RATE, dtype=np.float32))
    model = SilentSegmentation()

    class Unused:
        dimension = 4

        def __call__(self, *args):
            raise AssertionError("no speaker to embed")

    pipeline = DiarizationPipeline(model, Unused(), make_config(windows={"duration_s": 2.0}))
    with caplog.at_level("WARNING"):
        result = pipeline(path)
    assert model.num_calls > 0
    assert result.turns == [] and result.exclusive_turns == [] and result.num_speakers == 0
    assert result.to_rttm() == ""
    assert "no speech" in caplog.text
    assert any("no speech" in w for w in result.info["warnings"])
    # oracle segmentation with an empty reference is silence too
    oracle = DiarizationPipeline(config=oracle_config())
    assert oracle(path, reference=[]).num_speakers == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_speakers": 3, "max_speakers": 2}, "larger than max_speakers"),
        ({"num_speakers": 0}, "at least 1"),
        ({"num_speakers": 2, "max_speakers": 1}, "conflicts"),
        ({"num_speakers": 2, "min_speakers": 3}, "conflicts"),
    ],
)
def test_impossible_speaker_counts_fail_before_any_work(tmp_path, kwargs, message):
    model = SilentSegmentation()
    pipeline = DiarizationPipeline(model, ToneEmbedding())
    # the audio does not exist: a ConfigError (not an AudioError) proves nothing was read
    with pytest.raises(ConfigError, match=message):
        pipeline(tmp_path / "missing.wav", **kwargs)
    assert model.num_calls == 0


def test_oracle_without_reference_fails_before_any_work(tmp_path):
    pipeline = DiarizationPipeline(config=oracle_config())
    with pytest.raises(ConfigError, match="reference turns"):
        pipeline(tmp_path / "missing.wav")


def test_missing_audio_and_models_are_clear_errors(tmp_path):
    pipeline = DiarizationPipeline(SilentSegmentation(), ToneEmbedding())
    with pytest.raises(AudioError, match="no such audio file"):
        pipeline(tmp_path / "missing.wav")
    with pytest.raises(ConfigError, match="needs a segmentation model"):
        DiarizationPipeline(None, ToneEmbedding())
    with pytest.raises(ConfigError, match="needs a speaker embedding model"):
        DiarizationPipeline(SilentSegmentation(), None)
    with pytest.raises(ConfigError, match="step_s"):
        make_config(windows={"step_s": 9.0})


# ---------------------------------------------------------------------- model glue, streaming
def test_model_segmentation_streams_windows_from_the_file(
    tmp_path, monkeypatch, tiny_eend_model, tone_embedding
):
    waveform = synthesize(REFERENCE, duration_s=9.0)
    path = write_wav(tmp_path / "talk.wav", waveform)
    reads = []
    real_read_audio = pipeline_module.read_audio

    def spy(path, start_s=None, duration_s=None, channel=None):
        reads.append((start_s, duration_s))
        return real_read_audio(path, start_s, duration_s, channel)

    monkeypatch.setattr(pipeline_module, "read_audio", spy)
    config = make_config(
        windows={"duration_s": 2.0, "step_s": 0.5, "batch_size": 3},
        clustering={"min_cluster_size": 2},
    )
    pipeline = DiarizationPipeline(tiny_eend_model, tone_embedding, config)
    events = []
    result = pipeline(
        path,
        hook=lambda stage, payload, completed, total: events.append(
            (stage, payload is None, completed, total)
        ),
    )
    num_chunks = result.info["num_chunks"]
    assert num_chunks == 15  # starts 0, 0.5, ..., 7.0 s: the last one reaches 9 s
    # every read is one window at most: the file is never loaded whole
    assert max(duration for _, duration in reads) <= 2.0
    assert reads[:num_chunks] == [(0.5 * i, min(2.0, 9.0 - 0.5 * i)) for i in range(num_chunks)]
    # progress per batch of 3 windows, then the stage output
    segmentation = [e for e in events if e[0] == "segmentation"]
    assert [e[2] for e in segmentation] == [3, 6, 9, 12, 15, 15]
    assert segmentation[-1][1] is False and all(e[3] == num_chunks for e in segmentation)
    stages = [e[0] for e in events]
    assert stages.index("segmentation") < stages.index("speaker_counting")
    # same answer from the waveform in memory
    in_memory = pipeline((waveform, SAMPLE_RATE))
    assert in_memory.turns == [
        Turn("audio", t.onset_s, t.duration_s, t.speaker) for t in result.turns
    ]
    for turn in result.turns:
        assert 0 <= turn.onset_s < turn.offset_s <= 9.0 + 1e-9


def test_from_pretrained_and_result_files(tmp_path):
    checkpoint = tiny_eend().save_pretrained(tmp_path / "eend")
    pipeline = DiarizationPipeline.from_pretrained(
        checkpoint,
        embedding=None,
        settings={
            "windows": {"step_s": 1.0, "batch_size": 4, "duration_s": 2.0},
            "clustering": {"method": "oracle"},
        },
    )
    assert pipeline.embedding_model is None  # oracle clustering needs no embeddings
    path = write_wav(tmp_path / "talk.wav", synthesize(REFERENCE, duration_s=6.0))
    result = pipeline(path, reference=REFERENCE)
    rttm = tmp_path / "talk.rttm"
    rttm.write_text(result.to_rttm())
    written = read_rttm(rttm)
    assert [(t.uri, t.speaker) for t in written] == [(t.uri, t.speaker) for t in result.turns]
    np.testing.assert_allclose(
        [(t.onset_s, t.duration_s) for t in written],
        [(t.onset_s, t.duration_s) for t in result.turns],
        atol=1e-3,
    )
    data = json.loads(result.to_json())
    assert data["uri"] == "talk" and data["segmentation_model"] == str(checkpoint)
    assert data["config"]["clustering"] == {"method": "oracle"}
    assert data["config"]["windows"]["step_s"] == 1.0
    assert data["num_speakers"] == len(data["speakers"]) == result.num_speakers
    renamed = result.to_rttm(uri="other")
    assert all(line.split()[1] == "other" for line in renamed.splitlines())


def test_from_pretrained_with_ge2e(tmp_path):
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("the GE2E weights come with the resemblyzer wheel, which is not installed")
    checkpoint = tiny_eend().save_pretrained(tmp_path / "eend")
    pipeline = DiarizationPipeline.from_pretrained(
        checkpoint, embedding="ge2e", settings={"windows": {"duration_s": 2.0, "step_s": 1.0}}
    )
    result = pipeline((synthesize(REFERENCE, duration_s=4.0), SAMPLE_RATE))
    assert result.to_dict()["embedding_model"] == "ge2e"
    assert pipeline.embedding_model.dimension == 256
