"""``slimdiar diarize``: inputs, outputs, oracle options, per-recording failures."""

import json

import numpy as np
import pytest
import soundfile

from slimdiar.cli import main
from slimdiar.data import read_rttm
from slimdiar.frames import SAMPLE_RATE
from slimdiar.testing import tiny_eend

# boundaries on the 20 ms frame grid (frame i stands for [0.02 i + 0.0125, ...))
REFERENCE = {
    "one": [(0.5125, 3.0125, "A"), (2.5125, 5.0125, "B")],
    "two": [(1.0125, 2.0125, "C"), (2.2125, 4.4125, "D"), (4.0125, 5.5125, "C")],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_reference(path):
    lines = [
        f"SPEAKER {uri} 1 {on:.4f} {off - on:.4f} <NA> <NA> {spk} <NA> <NA>\n"
        for uri, turns in REFERENCE.items()
        for on, off, spk in turns
    ]
    path.write_text("".join(lines))
    return path


def write_audio(directory, duration_s=6.0):
    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for uri in REFERENCE:
        waveform = 0.1 * rng.normal(size=int(duration_s * SAMPLE_RATE)).astype(np.float32)
        soundfile.write(directory / f"{uri}.wav", waveform, SAMPLE_RATE)
    return directory


def test_oracle_cli_over_a_directory_skips_a_bad_recording(tmp_path, capsys):
    audio = write_audio(tmp_path / "audio")
    (audio / "broken.wav").write_bytes(b"RIFF....not really a wave file")
    reference = write_reference(tmp_path / "ref.rttm")
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            str(audio),
            "--out",
            str(out),
            "--oracle-segmentation",
            str(reference),
            "--oracle-clustering",
            str(reference),
            "--quiet",
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "broken" in err and "1 of 3 recordings failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["one.json", "one.rttm", "two.json", "two.rttm"]
    for uri, turns in REFERENCE.items():
        written = sorted(read_rttm(out / f"{uri}.rttm"), key=lambda t: (t.speaker, t.onset_s))
        expected = sorted(turns, key=lambda t: (t[2], t[0]))
        assert [t.speaker for t in written] == [spk for _, _, spk in expected]
        np.testing.assert_allclose(
            [(t.onset_s, t.offset_s) for t in written],
            [(on, off) for on, off, _ in expected],
            atol=2e-3,
        )
        data = json.loads((out / f"{uri}.json").read_text())
        assert data["uri"] == uri and data["embedding_model"] is None
        assert data["config"]["segmentation"]["source"] == "oracle"
        assert data["config"]["clustering"] == {"method": "oracle"}


def test_model_cli_with_wav_scp_and_exclusive_turns(tmp_path, capsys):
    checkpoint = tiny_eend().save_pretrained(tmp_path / "eend")
    audio = write_audio(tmp_path / "audio", duration_s=9.0)
    scp = tmp_path / "wav.scp"
    scp.write_text("one audio/one.wav\ntwo audio/two.wav\n")
    reference = write_reference(tmp_path / "ref.rttm")
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            "--model",
            str(checkpoint),
            str(scp),
            "--out",
            str(out),
            "--exclusive",
            "--oracle-clustering",
            str(reference),
            "--step",
            "4.0",
            "--batch-size",
            "2",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert audio.is_dir()
    for uri in REFERENCE:
        turns = sorted(read_rttm(out / f"{uri}.rttm"), key=lambda t: t.onset_s)
        for before, after in zip(turns, turns[1:]):
            assert before.offset_s <= after.onset_s + 1e-3  # exclusive: no overlap
        data = json.loads((out / f"{uri}.json").read_text())
        assert data["segmentation_model"] == str(checkpoint)
        assert data["num_chunks"] == 2 and data["config"]["windows"]["step_s"] == 4.0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min-speakers", "3", "--max-speakers", "2"], "larger than --max-speakers"),
        (["--num-speakers", "0"], "at least 1"),
        ([], "--model is required"),
        (["--oracle-segmentation", "a.rttm", "--oracle-clustering", "b.rttm"], "same reference"),
    ],
)
def test_cli_errors_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    status = main(["diarize", str(tmp_path / "nothing.wav"), "--out", str(out), *extra])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_missing_inputs(tmp_path, capsys):
    reference = write_reference(tmp_path / "ref.rttm")
    status = main(
        [
            "diarize",
            str(tmp_path / "nothing.wav"),
            "--out",
            str(tmp_path / "out"),
            "--oracle-segmentation",
            str(reference),
            "--oracle-clustering",
            str(reference),
        ]
    )
    assert status == 2
    assert "no such audio file, directory or wav.scp" in capsys.readouterr().err


def test_cli_rejects_recording_ids_with_spaces(tmp_path, capsys):
    soundfile.write(tmp_path / "my talk.wav", np.zeros(1600, dtype=np.float32), SAMPLE_RATE)
    reference = write_reference(tmp_path / "ref.rttm")
    status = main(
        [
            "diarize",
            str(tmp_path / "my talk.wav"),
            "--out",
            str(tmp_path / "out"),
            "--oracle-segmentation",
            str(reference),
            "--oracle-clustering",
            str(reference),
        ]
    )
    assert status == 1  # reported and skipped like any recording that fails
    assert "cannot be written to RTTM" in capsys.readouterr().err
