"""``slimdiar bench --pipeline``: timings and memory of the whole pipeline, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

from slimdiar.bench.pipeline import (
    STAGE_ORDER,
    _stage_peaks,
    benchmark_pipeline,
    write_synthetic_conversation,
)
from slimdiar.cli import main
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.precision import cpu_bf16_support
from slimdiar.pipeline import sliding_windows
from slimdiar.testing import tiny_eend

DOCUMENTED_KEYS = {
    "mode",
    "model",
    "seconds",
    "stages",
    "rtf",
    "peak_rss_mb",
    "rss_increase_mb",
    "device",
    "threads",
    "torch",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_eend().save_pretrained(tmp_path_factory.mktemp("bench") / "eend")


@pytest.fixture(scope="module")
def cli_run(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-json") / "pipeline.json"
    status = main(
        [
            "bench",
            "--pipeline",
            str(checkpoint),
            "--seconds",
            "9",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    return status, json.loads(out.read_text())


def test_pipeline_bench_json_has_documented_keys(cli_run, checkpoint):
    status, data = cli_run
    assert status == 0
    assert DOCUMENTED_KEYS <= set(data)
    assert data["mode"] == "pipeline"
    assert data["model"] == str(checkpoint)
    assert data["seconds"] == pytest.approx(9.0)
    assert data["threads"] == 1
    assert data["torch"] == torch.__version__
    assert data["device"] == "cpu"
    assert data["num_chunks"] == sliding_windows(9 * 16000, 8 * 16000, 12800).num_chunks
    # which bfloat16 hardware the numbers came from (AMX or AVX-512-BF16 change them)
    assert data["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(data["cpu_bf16_flags"]) <= {"avx512_bf16", "amx_bf16"}
    assert data["cpu_native_bf16"] == cpu_bf16_support()[0]


def test_pipeline_bench_values_are_positive_and_consistent(cli_run):
    _, data = cli_run
    # a random-init model still finds speech in the synthetic voices, so every stage runs
    assert list(data["stages"]) == ["segmentation", "embeddings", "clustering", "reconstruction"]
    for name, stage in data["stages"].items():
        assert stage["seconds"] >= 0 and stage["rtf"] >= 0, name
        assert stage["rtf"] == pytest.approx(stage["seconds"] / data["seconds"])
    assert data["stages"]["segmentation"]["seconds"] > 0
    assert data["stages"]["embeddings"]["seconds"] > 0
    assert sum(stage["rtf"] for stage in data["stages"].values()) <= data["rtf"]
    assert data["rtf"] == pytest.approx(data["total_s"] / data["seconds"])
    assert data["peak_rss_mb"] > data["rss_before_mb"] > 0
    assert data["rss_increase_mb"] == pytest.approx(
        data["peak_rss_mb"] - data["rss_before_mb"], abs=0.11
    )
    assert set(data["stage_peak_rss_mb"]) <= set(STAGE_ORDER)
    assert all(0 < peak <= data["peak_rss_mb"] + 1 for peak in data["stage_peak_rss_mb"].values())


def test_pipeline_bench_on_an_audio_file(checkpoint, tmp_path):
    audio = write_synthetic_conversation(tmp_path / "a.wav", 8.5, seed=3)
    result = benchmark_pipeline(checkpoint, seconds=None, audio=audio, threads=1)
    assert result.seconds == pytest.approx(8.5)
    assert result.audio == str(audio)
    assert result.num_chunks == sliding_windows(136000, 8 * 16000, 12800).num_chunks
    assert result.total_s > 0 and result.peak_rss_mb > 0


def test_synthetic_conversation_is_deterministic(tmp_path):
    a = write_synthetic_conversation(tmp_path / "a.wav", 12.3, seed=1)
    b = write_synthetic_conversation(tmp_path / "b.wav", 12.3, seed=1)
    c = write_synthetic_conversation(tmp_path / "c.wav", 12.3, seed=2)
    wave_a, rate = soundfile.read(a, dtype="float32")
    assert rate == 16000
    assert len(wave_a) == round(12.3 * 16000)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "c.wav"]


def test_synthetic_conversation_has_turns_and_pauses(tmp_path):
    path = write_synthetic_conversation(tmp_path / "long.wav", 60.0, seed=0)
    waveform, _ = soundfile.read(path, dtype="float32")
    frame_rms = np.sqrt(np.mean(waveform.reshape(-1, 1600) ** 2, axis=1))  # 0.1 s frames
    assert frame_rms.max() > 0.05  # voices
    assert frame_rms.min() < 0.01  # pauses
    assert np.mean(frame_rms > 0.05) > 0.5  # mostly talk
    assert np.mean(np.abs(waveform) > 0.99) < 0.01  # hardly clipped
    # the voices differ: the dominant frequency of loud frames takes several values
    loud = waveform.reshape(-1, 1600)[frame_rms > 0.05]
    peaks_hz = np.argmax(np.abs(np.fft.rfft(loud, axis=1))[:, 5:], axis=1) * 10 + 50
    assert len(set(np.round(peaks_hz, -1))) >= 3


def test_stage_peaks_attribute_samples_to_stages():
    measured = {
        "start_time": 10.0,
        "stage_end_times": {"segmentation": 12.0, "embeddings": 15.0, "output": 16.0},
    }
    samples = [
        (9.5, 999.0),
        (11.0, 100.0),
        (12.0, 150.0),
        (13.0, 300.0),
        (14.9, 200.0),
        (15.5, 120.0),
    ]
    assert _stage_peaks(measured, samples) == {
        "segmentation": 150.0,
        "embeddings": 300.0,
        "output": 120.0,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pipeline", "{missing}", "--seconds", "5"], "no such segmentation checkpoint"),
        (["--pipeline", "{tmp}", "--seconds", "5"], "not a slimdiar checkpoint directory"),
        (["--pipeline", "{ckpt}", "--seconds", "0"], "the audio duration must be positive"),
        (["--pipeline", "{ckpt}", "--seconds", "-3"], "the audio duration must be positive"),
        (["--pipeline", "{ckpt}", "--audio", "{missing}"], "no such audio file"),
        (["--pipeline", "{ckpt}", "--audio", "{ckpt}/config.json"], "cannot read audio"),
        (["--pipeline", "{ckpt}", "--audio", "{ckpt}/config.json", "--seconds", "4"], "not both"),
        (["--pipeline", "{ckpt}", "wavlm-tiny"], "not both"),
        ([], "give at least one MODEL"),
        (["wavlm-tiny", "--audio", "x.wav"], "--audio is an option of --pipeline mode"),
    ],
)
def test_bad_inputs_give_clear_errors(argv, message, checkpoint, tmp_path, capsys):
    paths = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "ckpt": str(checkpoint)}
    status = main(["bench", *[a.format(**paths) for a in argv]])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("slimdiar: error:")
    assert message in err


def test_library_errors_are_typed(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no such segmentation checkpoint"):
        benchmark_pipeline(tmp_path / "nothing", seconds=5)
    with pytest.raises(ConfigError, match="must be positive"):
        benchmark_pipeline(checkpoint, seconds=0)
    with pytest.raises(ConfigError, match="batch_size"):
        benchmark_pipeline(checkpoint, seconds=5, batch_size=0)
    with pytest.raises(ConfigError, match="must be positive"):
        write_synthetic_conversation(tmp_path / "x.wav", -1)


def test_backbone_mode_keeps_its_json(tmp_path):
    out = tmp_path / "backbones.json"
    status = main(
        [
            "bench",
            "wavlm-tiny",
            "--seconds",
            "0.5",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    data = json.loads(out.read_text())
    assert set(data) == {
        "models",
        "seconds",
        "batch_size",
        "warmup",
        "repeats",
        "device",
        "threads",
        "torch",
        "dtype",
        "device_name",
        "precision_mode",
        "cpu_capability",
        "cpu_native_bf16",
        "cpu_bf16_flags",
        "command",
        "engines",
    }
    assert data["engines"] == ["torch"]
    assert data["seconds"] == 0.5
    assert [m["name"] for m in data["models"]] == ["wavlm-tiny"]
