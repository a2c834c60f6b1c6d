"""The embedding's own clustering threshold, and the measurement that chose GE2E's."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from slimdiar.data.datadir import DataDir
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import read_metadata
from slimdiar.models.embeddings import (
    DEFAULT_THRESHOLDS,
    FbankConfig,
    ResNetConfig,
    ResNetEmbedding,
    wespeaker_fbank,
)
from slimdiar.pipeline import DiarizationPipeline, PipelineConfig, save_settings
from slimdiar.scoring import annotations_from_turns, score_diarization, timelines_from_regions
from slimdiar.testing import ToneEmbedding, tiny_eend, tone_waveform

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "measure_clustering_threshold.py"
MEASUREMENT = ROOT / "docs" / "clustering-threshold.json"
ORACLE = {"segmentation": {"source": "oracle"}}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_clustering_threshold", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def resnet_path(tmp_path):
    """A tiny random WeSpeaker ResNet checkpoint (WeSpeaker's key layout)."""
    torch.manual_seed(0)
    fbank = FbankConfig(**{**wespeaker_fbank().__dict__, "num_mel_bins": 16})
    model = ResNetEmbedding(
        ResNetConfig(num_blocks=[1, 1, 1, 1], base_channels=4, embedding_dim=8, fbank=fbank)
    )
    path = tmp_path / "avg_model.pt"
    torch.save(dict(model.resnet.state_dict()), path)
    return path


def tiny_checkpoint(path):
    return tiny_eend().save_pretrained(path, metadata={"stage": "finetune"})


# ---------------------------------------------------------------------- the default threshold
def test_the_resnet_defaults_to_the_reference_recipes_threshold(resnet_path):
    pipeline = DiarizationPipeline.from_pretrained(None, embedding=resnet_path, settings=ORACLE)
    assert pipeline.embedding_model.default_threshold == DEFAULT_THRESHOLDS["resnet"] == 0.70
    assert pipeline.clustering.threshold == 0.70
    assert pipeline.config.to_dict()["clustering"]["threshold"] == 0.70  # recorded in results


@pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None,
    reason="the GE2E weights (pip install --no-deps resemblyzer) are absent",
)
def test_ge2e_defaults_to_its_measured_threshold():
    chosen = json.loads(MEASUREMENT.read_text())["chosen"]
    pipeline = DiarizationPipeline.from_pretrained(None, embedding="ge2e", settings=ORACLE)
    assert pipeline.embedding_model.default_threshold == DEFAULT_THRESHOLDS["ge2e"] == chosen
    assert pipeline.clustering.threshold == chosen
    explicit = DiarizationPipeline.from_pretrained(
        None, embedding="ge2e", settings=[ORACLE, {"clustering": {"threshold": 0.9}}]
    )
    assert explicit.clustering.threshold == 0.9


@pytest.fixture
def resnet_default(monkeypatch):
    """A ResNet default unlike the built-in 0.70, so that its source is unmistakable."""
    monkeypatch.setitem(DEFAULT_THRESHOLDS, "resnet", 0.33)
    return 0.33


def test_the_embeddings_threshold_applies_when_no_layer_gives_one(resnet_path, resnet_default):
    pipeline = DiarizationPipeline.from_pretrained(None, embedding=resnet_path, settings=ORACLE)
    assert pipeline.clustering.threshold == resnet_default
    oracle = DiarizationPipeline.from_pretrained(
        None, embedding=resnet_path, settings=[ORACLE, {"clustering": {"method": "oracle"}}]
    )
    assert "threshold" not in oracle.config.clustering.options  # other methods are left alone


def test_an_explicit_threshold_wins_over_the_embeddings(resnet_path, resnet_default):
    for layers in (
        [ORACLE, {"clustering": {"threshold": 0.55}}],
        [ORACLE, {"clustering": {"method": "agglomerative", "threshold": 0.55}}],
    ):
        pipeline = DiarizationPipeline.from_pretrained(None, embedding=resnet_path, settings=layers)
        assert pipeline.clustering.threshold == 0.55
    # other clustering options leave the threshold to the embedding
    sized = DiarizationPipeline.from_pretrained(
        None, embedding=resnet_path, settings=[ORACLE, {"clustering": {"min_cluster_size": 5}}]
    )
    assert (sized.clustering.threshold, sized.clustering.min_cluster_size) == (resnet_default, 5)


def test_the_models_saved_threshold_wins_over_the_embeddings(tmp_path, resnet_path, resnet_default):
    checkpoint = tiny_checkpoint(tmp_path / "eend")
    save_settings(checkpoint, {"clustering": {"method": "agglomerative", "threshold": 0.42}})
    pipeline = DiarizationPipeline.from_pretrained(checkpoint, embedding=resnet_path)
    assert pipeline.clustering.threshold == 0.42
    override = DiarizationPipeline.from_pretrained(
        checkpoint, embedding=resnet_path, settings={"clustering": {"threshold": 0.8}}
    )
    assert override.clustering.threshold == 0.8
    # a saved VBx section whose method the caller switches back drops the saved options
    save_settings(checkpoint, {"clustering": {"method": "vbx", "ahc_threshold": 0.3}})
    assert read_metadata(checkpoint)["pipeline"]["clustering"]["method"] == "vbx"
    switched = DiarizationPipeline.from_pretrained(
        checkpoint, embedding=resnet_path, settings={"clustering": {"method": "agglomerative"}}
    )
    assert switched.clustering.threshold == resnet_default


def test_a_pipeline_built_from_a_config_keeps_the_builtin_threshold():
    assert PipelineConfig().make_clustering().threshold == 0.70


# ---------------------------------------------------------------------- the measurement
def test_the_page_shows_the_recorded_measurement_and_its_choice(tool):
    data = json.loads(MEASUREMENT.read_text())
    assert (ROOT / "docs" / "clustering-threshold.md").read_text() == tool.render(data)
    assert data["segmentation"] == "oracle" and data["collar_s"] == 0.0
    assert len(data["data_dirs"]) >= 2
    for i, threshold in enumerate(data["thresholds"]):
        ders = [d["rows"][i]["der"] for d in data["data_dirs"]]
        assert all(d["rows"][i]["threshold"] == threshold for d in data["data_dirs"])
        assert data["mean_der"][i] == pytest.approx(np.mean(ders), abs=1e-5)
    assert data["chosen"] == tool.choose(
        data["thresholds"], data["mean_der"], data["tie_tolerance"]
    )
    assert DEFAULT_THRESHOLDS[data["embedding"]] == data["chosen"]


def test_choose_takes_the_lowest_and_the_middle_of_the_longest_plateau(tool):
    grid = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert tool.choose(grid, [0.5, 0.2, 0.1, 0.3, 0.4, 0.5], 0.0) == 0.5
    assert tool.choose(grid, [0.5, 0.1, 0.3, 0.1, 0.1, 0.1], 0.0) == 0.7  # 3-long beats 1-long
    assert tool.choose(grid, [0.5, 0.1, 0.1, 0.1, 0.1, 0.5], 0.0) == 0.5  # even: lower middle
    assert tool.choose(grid, [0.5, 0.1005, 0.1, 0.3, 0.4, 0.5], 0.001) == 0.4
    assert tool.choose(grid, [0.5, 0.1005, 0.1, 0.3, 0.4, 0.5], 0.0) == 0.5


def test_threshold_grids(tool):
    grid = tool.parse_grid("0.30:0.90:0.05")
    assert len(grid) == 13 and grid[0] == 0.3 and grid[-1] == 0.9 and grid[6] == 0.6
    assert tool.parse_grid("0.5,0.7") == [0.5, 0.7]
    for bad in ("a:b:c", "0.5,x", "0:0.5:0.1"):
        with pytest.raises(Exception, match="START:STOP:STEP|positive"):
            tool.parse_grid(bad)


def band_embedding():
    """Band energies of the selected samples: tells pure tones apart; counts its calls."""
    return ToneEmbedding(dimension=16, fft_size=2048, name="bands")


def write_tone_data(directory: Path) -> Path:
    """A data directory of one 12 s recording, two speakers as two tones."""
    turns = [(0.5, 4.0, "a"), (4.5, 8.0, "b"), (8.5, 11.5, "a")]
    waveform = tone_waveform(turns, 12.0, {"a": 300.0, "b": 2000.0}, seed=0)
    directory.mkdir()
    soundfile.write(directory / "rec.wav", waveform, SAMPLE_RATE)
    (directory / "wav.scp").write_text(f"rec {directory / 'rec.wav'}\n")
    (directory / "rttm").write_text(
        "".join(
            f"SPEAKER rec 1 {on:.3f} {off - on:.3f} <NA> <NA> {spk} <NA> <NA>\n"
            for on, off, spk in turns
        )
    )
    (directory / "uem").write_text("rec 1 0.000 12.000\n")
    return directory


def test_reclustering_cached_embeddings_scores_like_a_fresh_pipeline(tool, tmp_path):
    data_dir = write_tone_data(tmp_path / "data")
    settings = {"segmentation": {"source": "oracle"}, "windows": {"duration_s": 4.0, "step_s": 2.0}}
    config = PipelineConfig.from_dict(settings)
    embedding = band_embedding()
    cached = tool.CachedEmbeddingPipeline(None, embedding, config)
    thresholds = [0.1, 1.5]
    measured = tool.measure_dir(cached, data_dir, thresholds, 2, None)
    calls_once = embedding.num_calls
    assert calls_once > 0
    data = DataDir.load(data_dir)
    for threshold, row in zip(thresholds, measured["rows"]):
        fresh = DiarizationPipeline(
            None,
            band_embedding(),
            PipelineConfig.from_dict(
                {**settings, "clustering": {"threshold": threshold, "min_cluster_size": 2}}
            ),
        )
        result = fresh(data.recordings["rec"].path, reference=data.turns["rec"], uri="rec")
        total = score_diarization(
            annotations_from_turns(data.turns["rec"]),
            annotations_from_turns(result.turns),
            timelines_from_regions(data.uem["rec"]),
        ).total
        assert row["der"] == pytest.approx(total.der, abs=1e-5)
        assert row["num_speakers"] == [result.num_speakers]
    assert embedding.num_calls == calls_once  # no threshold after the first embedded again
    # two tones: a loose cut merges them (one speaker), the default cut keeps them apart
    assert measured["rows"][1]["num_speakers"] == [1]
    assert measured["rows"][0]["num_speakers"] == [2] and measured["rows"][0]["der"] < 0.05
    assert measured["reference_num_speakers"] == [2] and measured["duration_s"] == 12.0


def test_a_bad_data_directory_is_one_line_and_writes_nothing(tool, tmp_path, resnet_path, capsys):
    good = write_tone_data(tmp_path / "good")
    out_json, out_doc = tmp_path / "m.json", tmp_path / "m.md"
    with pytest.raises(SystemExit) as exit_info:
        tool.main(
            [
                str(good),
                str(tmp_path / "missing"),
                "--embedding",
                str(resnet_path),
                "--json",
                str(out_json),
                "--doc",
                str(out_doc),
            ]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "missing: not a directory" in error and len(error.strip().splitlines()) == 1
    assert not out_json.exists() and not out_doc.exists()
