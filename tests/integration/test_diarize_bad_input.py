"""``slimdiar diarize`` on bad or unusual input: a clear one-line message or a correct result.

Every case runs the command line as a user would and checks what the user sees: the exit
status, the message on stderr (naming the file and the reason), which output files exist, and
that no temporary file is left in the output directory.
"""

import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest
import soundfile
import torch

from slimdiar.cli import main
from slimdiar.data import read_rttm
from slimdiar.data.records import Turn
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.wavlm.config import preset
from slimdiar.pipeline.pipeline import default_frame_grid
from slimdiar.pipeline.result import DiarizationResult

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 8 * SAMPLE_RATE  # the pipeline's 8 s windows
FAST = ["--step", "8.0", "--batch-size", "4", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_eend() -> EEND:
    torch.manual_seed(0)
    config = EENDConfig(
        wavlm=preset("wavlm-tiny"), d_model=32, num_heads=2, ffn_dim=64, num_blocks=1
    )
    return EEND(config)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random EEND checkpoint."""
    return tiny_eend().save_pretrained(tmp_path_factory.mktemp("eend"))


@pytest.fixture(scope="module")
def silent_checkpoint(tmp_path_factory):
    """A tiny EEND checkpoint that always decides 'nobody speaks' (powerset class 0)."""
    model = tiny_eend()
    assert not model.powerset.mapping[0].any()  # class 0 is the empty set of speakers
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[0] = 10.0
    return model.save_pretrained(tmp_path_factory.mktemp("silent"))


def noise(num_samples, num_channels=1, sample_rate=SAMPLE_RATE, seed=0):
    """Gaussian noise, ``(num_samples,)`` or ``(num_samples, num_channels)``."""
    rng = np.random.default_rng(seed)
    shape = (num_samples,) if num_channels == 1 else (num_samples, num_channels)
    return (0.1 * rng.normal(size=shape)).astype(np.float32)


def diarize(capsys, inputs, out, *options, model=None):
    """Run ``slimdiar diarize``; returns (exit status, stderr)."""
    argv = ["diarize", *map(str, inputs), "--out", str(out), *FAST, *map(str, options)]
    if model is not None:
        argv += ["--model", str(model)]
    status = main(argv)
    return status, capsys.readouterr().err


def outputs(out):
    """Names of the files in the output directory (empty if it does not exist)."""
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def assert_no_temporary_files(out):
    left = [name for name in outputs(out) if name.startswith(".") or name.endswith(".tmp")]
    assert not left, f"temporary files left in {out}: {left}"


def assert_failed(status, err, out, *words, exit_status=1):
    """A one-line message naming every word, no traceback, no output.

    Exit status 1 when recordings failed, 2 when the command stopped before any work.
    """
    assert status == exit_status
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert not [n for n in outputs(out) if n.endswith((".rttm", ".json"))]
    assert_no_temporary_files(out)


def assert_diarized(status, err, out, uri, duration_s):
    """Exit status 0; RTTM and JSON of ``uri`` written, the JSON with the right duration."""
    assert status == 0, err
    assert "Traceback" not in err
    assert {f"{uri}.rttm", f"{uri}.json"} <= set(outputs(out))
    data = json.loads((out / f"{uri}.json").read_text())
    assert data["uri"] == uri
    assert data["duration_s"] == pytest.approx(duration_s, abs=1e-3)
    for turn in read_rttm(out / f"{uri}.rttm"):
        assert turn.uri == uri
        assert 0 <= turn.onset_s < turn.offset_s <= duration_s + 0.03
    assert_no_temporary_files(out)
    return data


# ------------------------------------------------------------------ unreadable audio
def test_empty_file_is_reported(tmp_path, capsys, checkpoint):
    (tmp_path / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "empty.wav"], out, model=checkpoint)
    assert_failed(status, err, out, "empty.wav", "the file is empty (0 bytes)")


def test_wav_with_zero_samples_is_reported(tmp_path, capsys, checkpoint):
    soundfile.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "zero.wav"], out, model=checkpoint)
    assert_failed(status, err, out, "zero.wav", "0 samples")


def test_corrupt_file_is_reported(tmp_path, capsys, checkpoint):
    rng = np.random.default_rng(0)
    (tmp_path / "noise.wav").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "noise.wav"], out, model=checkpoint)
    assert_failed(status, err, out, "noise.wav", "cannot read audio")


def test_truncated_file_is_diarized_up_to_its_last_sample(tmp_path, capsys, checkpoint):
    """A wav whose header promises 2 s but whose data stops after 0.5 s."""
    path = tmp_path / "cut.wav"
    soundfile.write(path, noise(2 * SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + SAMPLE_RATE])  # header + 0.5 s of 16-bit samples
    out = tmp_path / "out"
    status, err = diarize(capsys, [path], out, "--num-speakers", "1", model=checkpoint)
    assert_diarized(status, err, out, "cut", 0.5)


def test_header_only_wav_is_reported(tmp_path, capsys, checkpoint):
    """A wav header that promises samples which are not in the file at all."""
    path = tmp_path / "header.wav"
    with wave.open(str(path), "wb") as stream:
        stream.setnchannels(1)
        stream.setsampwidth(2)
        stream.setframerate(SAMPLE_RATE)
        stream.writeframes(b"\0\0" * SAMPLE_RATE)
    path.write_bytes(path.read_bytes()[:44])
    out = tmp_path / "out"
    status, err = diarize(capsys, [path], out, model=checkpoint)
    assert_failed(status, err, out, "header.wav", "0 samples")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_reported(tmp_path, capsys, checkpoint, value):
    waveform = noise(SAMPLE_RATE)
    waveform[100:103] = value
    soundfile.write(tmp_path / "bad.wav", waveform, SAMPLE_RATE, subtype="FLOAT")
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "bad.wav"], out, model=checkpoint)
    assert_failed(status, err, out, "bad.wav", "3 NaN/Inf sample(s)")


# ------------------------------------------------------------------ lengths
@pytest.mark.parametrize(
    "num_samples",
    [1, 200, 3 * SAMPLE_RATE, WINDOW_SAMPLES - 1, WINDOW_SAMPLES, WINDOW_SAMPLES + 1],
)
def test_short_and_window_sized_audio_is_diarized_padded(tmp_path, capsys, checkpoint, num_samples):
    soundfile.write(tmp_path / "a.wav", noise(num_samples), SAMPLE_RATE, subtype="FLOAT")
    out = tmp_path / "out"
    status, err = diarize(
        capsys, [tmp_path / "a.wav"], out, "--num-speakers", "1", model=checkpoint
    )
    data = assert_diarized(status, err, out, "a", num_samples / SAMPLE_RATE)
    assert data["num_chunks"] == (2 if num_samples > WINDOW_SAMPLES else 1)


def test_silence_gives_an_empty_rttm_and_a_warning(tmp_path, silent_checkpoint):
    """Run as a separate process: the warning reaches stderr through the command's logging."""
    soundfile.write(tmp_path / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "slimdiar",
        "diarize",
        str(tmp_path / "quiet.wav"),
        "--out",
        str(out),
        "--model",
        str(silent_checkpoint),
        *FAST,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=300)
    data = assert_diarized(done.returncode, done.stderr, out, "quiet", 1.0)
    assert (out / "quiet.rttm").read_text() == ""
    assert data["turns"] == [] and data["num_speakers"] == 0
    assert any("no speech found" in warning for warning in data["warnings"])
    warning = [line for line in done.stderr.splitlines() if "no speech found" in line]
    assert len(warning) == 1 and "WARNING" in warning[0] and "quiet.wav" in warning[0]


# ------------------------------------------------------------------ layouts and rates
@pytest.mark.parametrize("num_channels", [2, 5])
def test_multichannel_audio_is_downmixed(tmp_path, capsys, checkpoint, num_channels):
    waveform = noise(SAMPLE_RATE, num_channels)
    soundfile.write(tmp_path / "multi.wav", waveform, SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = diarize(
        capsys, [tmp_path / "multi.wav"], out, "--num-speakers", "1", model=checkpoint
    )
    assert_diarized(status, err, out, "multi", 1.0)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates_are_resampled(tmp_path, capsys, checkpoint, sample_rate):
    num_samples = int(1.5 * sample_rate) + 1  # not a whole number of 16 kHz samples
    soundfile.write(tmp_path / "rate.wav", noise(num_samples), sample_rate)
    out = tmp_path / "out"
    status, err = diarize(
        capsys, [tmp_path / "rate.wav"], out, "--num-speakers", "1", model=checkpoint
    )
    assert_diarized(status, err, out, "rate", num_samples / sample_rate)


# ------------------------------------------------------------------ inputs and options
def test_missing_path_is_reported_before_any_work(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "absent.wav"], out, model=checkpoint)
    assert_failed(
        status, err, out, "absent.wav", "no such audio file, directory or wav.scp", exit_status=2
    )
    assert not out.exists()


def test_directory_without_audio_is_reported(tmp_path, capsys, checkpoint):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no audio here\n")
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "docs"], out, model=checkpoint)
    assert_failed(status, err, out, "docs", "directory holds no audio file", exit_status=2)
    assert not out.exists()


def test_wav_scp_line_pointing_nowhere_is_skipped(tmp_path, capsys, checkpoint):
    soundfile.write(tmp_path / "good.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    scp = tmp_path / "wav.scp"
    scp.write_text("good good.wav\nlost nowhere/lost.wav\n")
    out = tmp_path / "out"
    status, err = diarize(capsys, [scp], out, "--num-speakers", "1", model=checkpoint)
    assert status == 1
    assert "Traceback" not in err
    assert "lost" in err and "nowhere/lost.wav" in err and "no such audio file" in err
    assert "1 of 2 recordings failed: lost" in err
    assert outputs(out) == ["good.json", "good.rttm"]


def test_malformed_oracle_rttm_line_is_reported_with_its_line(tmp_path, capsys):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    rttm = tmp_path / "ref.rttm"
    rttm.write_text(
        "SPEAKER a 1 0.10 0.50 <NA> <NA> A <NA> <NA>\nSPEAKER a 1 zero 0.50 <NA> <NA> B <NA> <NA>\n"
    )
    out = tmp_path / "out"
    status, err = diarize(
        capsys,
        [tmp_path / "a.wav"],
        out,
        "--oracle-segmentation",
        rttm,
        "--oracle-clustering",
        rttm,
    )
    assert_failed(status, err, out, f"{rttm}:2", "onset", "SPEAKER a 1 zero", exit_status=2)
    assert not out.exists()


def test_malformed_wav_scp_line_is_reported_with_its_line(tmp_path, capsys, checkpoint):
    scp = tmp_path / "wav.scp"
    scp.write_text("good good.wav\nlonely\n")
    out = tmp_path / "out"
    status, err = diarize(capsys, [scp], out, model=checkpoint)
    assert_failed(
        status, err, out, f"{scp}:2", "expected '<recording-id> <path>'", "lonely", exit_status=2
    )
    assert not out.exists()


def test_missing_oracle_rttm_and_non_checkpoint_model_are_reported(tmp_path, capsys):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "out"
    missing = tmp_path / "missing.rttm"
    status, err = diarize(capsys, [tmp_path / "a.wav"], out, "--oracle-segmentation", missing)
    assert_failed(status, err, out, str(missing), "no such file", exit_status=2)
    status, err = diarize(capsys, [tmp_path / "a.wav"], out, model=tmp_path / "a.wav")
    assert_failed(status, err, out, "a.wav", "not a slimdiar checkpoint", exit_status=2)
    assert not out.exists()


def test_impossible_speaker_bounds_are_reported_before_any_work(tmp_path, capsys, checkpoint):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = diarize(
        capsys,
        [tmp_path / "a.wav"],
        out,
        "--min-speakers",
        "3",
        "--max-speakers",
        "2",
        model=checkpoint,
    )
    assert_failed(
        status, err, out, "--min-speakers (3)", "larger than --max-speakers", exit_status=2
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "device, message",
    [
        ("foo", "unknown device 'foo'"),
        pytest.param(
            "cuda",
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_unusable_device_is_reported_before_any_work(tmp_path, capsys, checkpoint, device, message):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = diarize(capsys, [tmp_path / "a.wav"], out, "--device", device, model=checkpoint)
    assert_failed(status, err, out, message, exit_status=2)
    assert not out.exists()


def test_output_path_that_is_a_file_is_reported(tmp_path, capsys, checkpoint):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    (tmp_path / "taken").write_text("not a directory\n")
    status, err = diarize(capsys, [tmp_path / "a.wav"], tmp_path / "taken", model=checkpoint)
    assert status == 2
    assert "Traceback" not in err
    assert "argument --out: " in err and "taken: exists and is not a directory" in err
    assert (tmp_path / "taken").read_text() == "not a directory\n"


# ------------------------------------------------------------------ batches
def test_batch_skips_the_bad_recordings_and_diarizes_the_others(tmp_path, capsys, checkpoint):
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "first.wav", noise(SAMPLE_RATE, seed=1), SAMPLE_RATE)
    soundfile.write(audio / "last.wav", noise(2 * 8000, 2, seed=2), 8000)
    (audio / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    nan = noise(SAMPLE_RATE, seed=3)
    nan[5] = np.nan
    soundfile.write(audio / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    out = tmp_path / "out"
    status, err = diarize(capsys, [audio], out, "--num-speakers", "1", model=checkpoint)
    assert status == 1
    assert "Traceback" not in err
    assert "broken" in err and "cannot read audio" in err
    assert "nan" in err and "NaN/Inf" in err
    assert "2 of 4 recordings failed: broken, nan" in err
    assert outputs(out) == ["first.json", "first.rttm", "last.json", "last.rttm"]
    assert_diarized(0, "", out, "first", 1.0)
    assert_diarized(0, "", out, "last", 2.0)


def test_a_result_that_cannot_be_written_leaves_no_file(tmp_path, capsys, checkpoint, monkeypatch):
    """The JSON cannot be written (disk full): the RTTM written just before is removed."""
    import slimdiar.cli.diarize as command

    write = command.write_text_atomic

    def full_disk(path, text):
        if str(path).endswith(".json"):
            raise OSError(28, "No space left on device")
        write(path, text)

    monkeypatch.setattr(command, "write_text_atomic", full_disk)
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = diarize(
        capsys, [tmp_path / "a.wav"], out, "--num-speakers", "1", model=checkpoint
    )
    assert_failed(status, err, out, "a: ", "No space left on device", "1 of 1 recordings failed")
    assert outputs(out) == []


def test_rttm_turns_that_meet_still_meet_in_the_file(tmp_path):
    """Frame bounds fall on half milliseconds: both ends of every turn round the same way."""
    grid = default_frame_grid()
    turns = []
    for frame in range(300):  # A ends where B starts, at every frame boundary
        _, end_s = grid.frame_bounds_s(frame)
        start_s, _ = grid.frame_bounds_s(frame + 1)
        turns.append(Turn("r", 0.0, float(end_s), "A"))
        turns.append(Turn("r", float(start_s), 1.0, "B"))
    turns.append(Turn("r", 2.0, 0.0004, "C"))  # shorter than the RTTM resolution
    result = DiarizationResult("r", 10.0, turns, turns, ["A", "B", "C"])
    path = tmp_path / "r.rttm"
    path.write_text(result.to_rttm())
    written = read_rttm(path)  # raises on a zero duration
    assert len(written) == 600
    for a, b in zip(written[0::2], written[1::2]):
        assert a.offset_s == pytest.approx(b.onset_s, abs=1e-9)
        assert round(a.offset_s * 1000) == pytest.approx(a.offset_s * 1000, abs=1e-6)
