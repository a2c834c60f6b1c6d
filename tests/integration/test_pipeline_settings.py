"""Pipeline settings: sections, TOML and ``--set``, precedence, and settings saved with a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from slimdiar import testing
from slimdiar.cli import main
from slimdiar.data import read_rttm
from slimdiar.demo.run import Demo
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.models.checkpoint import read_metadata
from slimdiar.pipeline import (
    DiarizationPipeline,
    PipelineConfig,
    merge_settings,
    parse_settings,
    resolve_settings,
    save_settings,
)
from slimdiar.testing import tiny_eend

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_checkpoint(path):
    return tiny_eend().save_pretrained(path, metadata={"stage": "finetune"})


# ---------------------------------------------------------------------- config layers
def test_sections_round_trip_and_defaults():
    config = PipelineConfig()
    assert (config.windows.duration_s, config.windows.step_s) == (8.0, 0.8)
    assert config.clustering.to_dict() == {
        "method": "agglomerative",
        "threshold": 0.70,
        "min_cluster_size": 30,
        "min_active_ratio": 0.1,
        "max_embeddings": config.clustering.options["max_embeddings"],
    }
    assert PipelineConfig.from_dict(config.to_dict()) == config
    vbx = PipelineConfig.from_dict({"clustering": {"method": "vbx", "fb": 1}})
    assert vbx.clustering.options["fb"] == 1.0 and vbx.clustering.options["lda_dim"] == 128


def test_precedence_model_then_file_then_set_then_options(tmp_path):
    model = {
        "windows": {"duration_s": 16.0, "step_s": 1.6},
        "clustering": {"method": "agglomerative", "threshold": 0.45},
    }
    toml = tmp_path / "pipeline.toml"
    toml.write_text("[windows]\nstep_s = 2.0\n[clustering]\nmin_cluster_size = 5\n")
    from slimdiar.pipeline import read_settings

    layers = [
        model,
        read_settings(toml),
        parse_settings(["windows.batch_size=4"]),
        {"clustering": {"threshold": 0.5}},
    ]
    config = resolve_settings(layers)
    assert (config.windows.duration_s, config.windows.step_s, config.windows.batch_size) == (
        16.0,
        2.0,
        4,
    )
    assert config.clustering.options["threshold"] == 0.5
    assert config.clustering.options["min_cluster_size"] == 5
    # without the later layers the model's own settings stand
    assert resolve_settings([model]).clustering.options["threshold"] == 0.45


def test_switching_method_drops_the_options_of_the_other():
    merged = merge_settings(
        {"clustering": {"method": "vbx", "ahc_threshold": 0.5}},
        {"clustering": {"method": "agglomerative", "threshold": 0.6}},
    )
    assert merged["clustering"] == {"method": "agglomerative", "threshold": 0.6}
    kept = merge_settings(
        {"clustering": {"method": "vbx", "ahc_threshold": 0.5}}, {"clustering": {"fb": 2.0}}
    )
    assert kept["clustering"] == {"method": "vbx", "ahc_threshold": 0.5, "fb": 2.0}


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"clustering": {"method": "vbx", "threshold": 0.5}},
            "valid keys of .clustering.: ahc_threshold",
        ),
        ({"clustering": {"method": "kmeans"}}, "unknown clustering method 'kmeans'"),
        ({"windows": {"step": 1.0}}, "unknown key windows.step"),
        ({"window": {}}, "unknown pipeline setting window"),
        ({"windows": {"step_s": "fast"}}, "windows.step_s must be a number"),
        ({"segmentation": {"source": "reference"}}, "segmentation.source must be one of"),
        ({"speakers": {"min_speakers": 3, "max_speakers": 2}}, "larger than max_speakers"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.from_dict(settings)


def test_set_needs_section_and_key():
    assert parse_settings(["clustering.method=vbx", "channel=1"]) == {
        "clustering": {"method": "vbx"},
        "channel": 1,
    }
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_settings(["threshold=0.5"])


def test_relative_plda_dir_is_taken_from_the_model_directory(tmp_path):
    config = resolve_settings([{"clustering": {"method": "vbx"}}], model_dir=tmp_path)
    assert config.clustering.options["plda_dir"] == str(tmp_path / "plda")
    absolute = resolve_settings(
        [{"clustering": {"method": "vbx", "plda_dir": "/x/plda"}}], model_dir=tmp_path
    )
    assert absolute.clustering.options["plda_dir"] == "/x/plda"


def test_model_settings_are_the_pipeline_defaults(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "eend")
    save_settings(
        checkpoint,
        {
            "windows": {"duration_s": 2.0, "step_s": 0.5},
            "clustering": {"method": "agglomerative", "threshold": 0.42},
            "speakers": {"max_speakers": 3},
        },
    )
    assert read_metadata(checkpoint)["stage"] == "finetune"  # the rest of the metadata is kept
    pipeline = DiarizationPipeline.from_pretrained(checkpoint, embedding="ge2e")
    assert pipeline.config.windows.step_s == 0.5
    assert pipeline.clustering.threshold == 0.42
    assert pipeline.config.speakers.max_speakers == 3
    override = DiarizationPipeline.from_pretrained(
        checkpoint, embedding="ge2e", settings={"clustering": {"threshold": 0.9}}
    )
    assert override.clustering.threshold == 0.9 and override.config.windows.step_s == 0.5
    with pytest.raises(ConfigError, match="unknown key"):
        save_settings(checkpoint, {"clustering": {"thresold": 0.4}})
    assert pipeline.clustering.threshold == 0.42


# ---------------------------------------------------------------------- the demo's model
def write_data(directory, recordings: dict[str, list[tuple[float, float, str]]], seed: int):
    """A data directory of noisy two-tone recordings with the given turns."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    scp, rttm, uem = [], [], []
    pitches = {}
    for uri, turns in recordings.items():
        waveform = 0.01 * rng.normal(size=8 * SAMPLE_RATE)
        for onset_s, offset_s, speaker in turns:
            pitch = pitches.setdefault(speaker, 150.0 + 120.0 * len(pitches))
            span = slice(int(onset_s * SAMPLE_RATE), int(offset_s * SAMPLE_RATE))
            t = np.arange(span.stop - span.start) / SAMPLE_RATE
            waveform[span] += 0.3 * np.sin(2 * np.pi * pitch * t) * (1 + np.sin(2 * np.pi * 3 * t))
            rttm.append(
                f"SPEAKER {uri} 1 {onset_s:.3f} {offset_s - onset_s:.3f} <NA> <NA> "
                f"{speaker} <NA> <NA>\n"
            )
        soundfile.write(directory / f"{uri}.wav", waveform.astype(np.float32), SAMPLE_RATE)
        scp.append(f"{uri} {directory / f'{uri}.wav'}\n")
        uem.append(f"{uri} 1 0.000 8.000\n")
    (directory / "wav.scp").write_text("".join(scp))
    (directory / "rttm").write_text("".join(rttm))
    (directory / "uem").write_text("".join(uem))


@pytest.mark.slow
def test_diarize_with_the_demo_model_reproduces_the_demo_der(tmp_path, capsys):
    demo = Demo(tmp_path / "demo", quick=True, say=lambda line: None)
    tiny_checkpoint(demo.out / "finetune" / "best")
    turns = [(0.5, 3.5, "a"), (3.0, 6.0, "b"), (6.2, 7.8, "a")]
    write_data(demo.data / "dev", {"d1": turns}, seed=1)
    write_data(demo.data / "test", {"t1": turns, "t2": turns[::-1]}, seed=2)
    scores = demo.diarize_and_score("finetune")

    tuned = json.loads((demo.out / "finetune" / "threshold.json").read_text())["threshold"]
    saved = read_metadata(demo.out / "finetune" / "best")["pipeline"]
    assert saved["clustering"] == {"method": "agglomerative", "threshold": tuned}
    assert saved["windows"] == {
        "duration_s": demo.settings.chunk_duration_s,
        "step_s": demo.settings.pipeline_step_s,
    }

    out = tmp_path / "rttm"
    status = main(
        [
            "diarize",
            "--model",
            str(demo.out / "finetune" / "best"),
            str(demo.data / "test" / "wav.scp"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0, capsys.readouterr().err
    for uri in ("t1", "t2"):
        assert (out / f"{uri}.rttm").read_text() == (
            demo.out / "finetune" / "rttm" / f"{uri}.rttm"
        ).read_text()
        config = json.loads((out / f"{uri}.json").read_text())["config"]
        assert config["clustering"]["threshold"] == tuned
        assert config["windows"]["step_s"] == demo.settings.pipeline_step_s
    status = main(
        [
            "score",
            "--ref",
            str(demo.data / "test"),
            "--hyp",
            str(out),
            "--json",
            str(tmp_path / "der.json"),
        ]
    )
    assert status == 0, capsys.readouterr().err
    der = json.loads((tmp_path / "der.json").read_text())
    assert der["total"]["der"] == pytest.approx(scores["total"]["der"], abs=1e-9)

    # an explicit threshold overrides the saved one
    status = main(
        [
            "diarize",
            "--model",
            str(demo.out / "finetune" / "best"),
            str(demo.data / "test" / "wav.scp"),
            "--out",
            str(tmp_path / "other"),
            "--quiet",
            "--threshold",
            "1.5",
        ]
    )
    assert status == 0
    config = json.loads((tmp_path / "other" / "t1.json").read_text())["config"]
    assert config["clustering"]["threshold"] == 1.5
    assert read_rttm(tmp_path / "other" / "t1.rttm") is not None


@pytest.mark.slow
def test_diarize_with_vbx_from_the_command_line(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "eend")
    write_data(tmp_path / "data", {"r": [(0.5, 3.5, "a"), (3.0, 7.0, "b")]}, seed=3)
    plda = Path(__file__).resolve().parents[1] / "data" / "diarizen" / "vbx" / "plda"
    toml = tmp_path / "vbx.toml"
    toml.write_text(
        f'[windows]\nduration_s = 2.0\nstep_s = 1.0\n[clustering]\nmethod = "vbx"\n'
        f'plda_dir = "{plda}"\nfb = 1.5\n'
    )
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            "--model",
            str(checkpoint),
            str(tmp_path / "data" / "wav.scp"),
            "--out",
            str(out),
            "--quiet",
            "--config",
            str(toml),
            "--set",
            "clustering.max_iters=5",
        ]
    )
    assert status == 0, capsys.readouterr().err
    config = json.loads((out / "r.json").read_text())["config"]
    assert config["clustering"]["method"] == "vbx"
    assert (config["clustering"]["fb"], config["clustering"]["max_iters"]) == (1.5, 5)
    assert config["windows"]["duration_s"] == 2.0
    # an option of another method is a clear error, before any work
    status = main(
        [
            "diarize",
            "--model",
            str(checkpoint),
            str(tmp_path / "data" / "wav.scp"),
            "--out",
            str(tmp_path / "bad"),
            "--config",
            str(toml),
            "--threshold",
            "0.5",
        ]
    )
    assert status == 2
    assert "unknown key clustering.threshold" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # a missing PLDA is reported before any audio is read
    status = main(
        [
            "diarize",
            "--model",
            str(checkpoint),
            str(tmp_path / "data" / "wav.scp"),
            "--out",
            str(tmp_path / "bad"),
            "--clustering",
            "vbx",
        ]
    )
    assert status == 2
    assert "no such PLDA directory" in capsys.readouterr().err


# ---------------------------------------------------------------------- batch size per device
def test_batch_size_default_depends_on_the_device():
    config = PipelineConfig()
    assert config.windows.batch_size is None  # unset: chosen where the device is known
    assert config.for_device("cpu").windows.batch_size == 4
    assert config.for_device("cuda").windows.batch_size == 32
    assert config.for_device("cuda:1").windows.batch_size == 32
    assert config.windows.batch_size is None  # for_device returns a copy
    explicit = PipelineConfig.from_dict({"windows": {"batch_size": 32}})
    assert explicit.for_device("cpu").windows.batch_size == 32
    assert explicit.for_device("cuda").windows.batch_size == 32
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        config.for_device("gpu")


def test_pipeline_resolves_the_batch_size_for_its_device(tmp_path, monkeypatch):
    import torch

    oracle = PipelineConfig.from_dict(
        {"segmentation": {"source": "oracle"}, "clustering": {"method": "oracle"}}
    )
    assert DiarizationPipeline(config=oracle).config.windows.batch_size == 4
    # a CUDA device, declared: the oracle pipeline moves no model there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert DiarizationPipeline(config=oracle, device="cuda").config.windows.batch_size == 32
    monkeypatch.undo()

    checkpoint = tiny_checkpoint(tmp_path / "eend")
    loaded = DiarizationPipeline.from_pretrained(checkpoint, embedding=None, settings=oracle_only())
    assert loaded.config.windows.batch_size == 4
    explicit = DiarizationPipeline.from_pretrained(
        checkpoint, embedding=None, settings=[oracle_only(), {"windows": {"batch_size": 32}}]
    )
    assert explicit.config.windows.batch_size == 32
    save_settings(checkpoint, {"windows": {"batch_size": 32}})  # the model's own settings
    saved = DiarizationPipeline.from_pretrained(checkpoint, embedding=None, settings=oracle_only())
    assert saved.config.windows.batch_size == 32


def oracle_only() -> dict:
    return {"clustering": {"method": "oracle"}}


def test_batch_4_and_32_write_the_same_rttm(tmp_path, tone_embedding):
    data = testing.write_tone_datadir(tmp_path / "tones", num_recordings=1)
    path = data / "rec0.wav"
    rttms = {}
    for batch_size in (4, 32):
        config = PipelineConfig.from_dict(
            {
                "windows": {"duration_s": 2.0, "step_s": 0.25, "batch_size": batch_size},
                "clustering": {"min_cluster_size": 2},
            }
        )
        pipeline = DiarizationPipeline(tiny_eend(), tone_embedding, config)
        result = pipeline(path)
        assert result.info["num_chunks"] > 32  # more windows than either batch
        assert result.info["config"]["windows"]["batch_size"] == batch_size
        rttms[batch_size] = result.to_rttm()
    assert rttms[4] and rttms[4] == rttms[32]


def test_diarize_records_the_resolved_batch_size(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "eend")
    data = testing.write_tone_datadir(tmp_path / "tones", num_recordings=1, duration_s=6.0)
    common = [
        "diarize",
        "--model",
        str(checkpoint),
        str(data),
        "--oracle-clustering",
        str(data / "rttm"),
        "--set",
        "windows.duration_s=2.0",
        "--step",
        "0.5",
        "--quiet",
    ]
    written = {}
    for name, extra in {"auto": [], "b32": ["--batch-size", "32"]}.items():
        out = tmp_path / name
        assert main([*common, "--out", str(out), *extra]) == 0, capsys.readouterr().err
        written[name] = (out / "rec0.rttm").read_text()
        config = json.loads((out / "rec0.json").read_text())["config"]
        assert config["windows"]["batch_size"] == {"auto": 4, "b32": 32}[name]
    assert written["auto"] == written["b32"]
