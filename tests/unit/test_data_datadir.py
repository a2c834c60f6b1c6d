import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile

from slimdiar.data import DataDir
from slimdiar.errors import DataFormatError

RTTM = """\
SPEAKER rec1 1 1.0 3.0 <NA> <NA> A <NA> <NA>
SPEAKER rec1 1 3.0 3.0 <NA> <NA> B <NA> <NA>
SPEAKER rec1 1 5.0 2.0 <NA> <NA> A <NA> <NA>
SPEAKER rec2 1 0.5 2.0 <NA> <NA> C <NA> <NA>
"""


def make_datadir(root: Path, rttm: str = RTTM, uem: str | None = "rec1 1 0 10\nrec2 1 0 3\n"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    soundfile.write(root / "audio" / "rec1.wav", np.zeros(160000, dtype=np.float32), 16000)
    soundfile.write(root / "audio" / "rec2.flac", np.zeros((48000, 2), dtype=np.float32), 8000)
    (root / "wav.scp").write_text("rec1 audio/rec1.wav\nrec2 audio/rec2.flac\n")
    (root / "rttm").write_text(rttm)
    if uem is not None:
        (root / "uem").write_text(uem)
    return root


def test_load_and_summary_hand_computed(tmp_path):
    datadir = DataDir.load(make_datadir(tmp_path / "d"))
    assert list(datadir.recordings) == ["rec1", "rec2"]
    rec2 = datadir.recordings["rec2"]
    assert (rec2.sample_rate, rec2.num_channels, rec2.duration_s) == (8000, 2, 6.0)
    assert [t.speaker for t in datadir.turns["rec1"]] == ["A", "B", "A"]
    assert datadir.has_uem
    summary = datadir.summary()
    assert summary.num_recordings == 2
    assert summary.duration_s == pytest.approx(16.0)
    assert summary.hours == pytest.approx(16.0 / 3600)
    assert summary.scored_s == pytest.approx(13.0)
    # rec1: speech [1, 7] = 6 s, overlap [3, 4] + [5, 6] = 2 s; rec2: speech 2 s inside [0, 3]
    assert summary.speech_s == pytest.approx(8.0)
    assert summary.overlap_s == pytest.approx(2.0)
    assert summary.speech_fraction == pytest.approx(8.0 / 13.0)
    assert summary.overlap_fraction == pytest.approx(2.0 / 8.0)
    assert summary.speakers_per_recording == {"rec1": 2, "rec2": 1}
    assert summary.turns_per_speaker == {"A": 2, "B": 1, "C": 1}
    assert summary.sample_rates == {8000: 1, 16000: 1}
    assert summary.channels == {1: 1, 2: 1}
    assert summary.num_turns == 4


def test_speech_is_counted_inside_the_uem_only(tmp_path):
    datadir = DataDir.load(
        make_datadir(
            tmp_path / "d", uem="rec1 1 8 10\nrec1 1 2 6\n", rttm=RTTM.splitlines()[1] + "\n"
        )
    )
    assert datadir.regions_array("rec1").tolist() == [[2.0, 6.0], [8.0, 10.0]]
    assert datadir.uem["rec2"] == []  # not in the UEM: neither trained on nor scored
    summary = datadir.summary()
    assert summary.scored_s == pytest.approx(6.0)
    assert summary.speech_s == pytest.approx(3.0)
    assert summary.speech_fraction == pytest.approx(0.5)
    assert summary.overlap_s == 0.0


def test_missing_uem_means_whole_recordings(tmp_path):
    datadir = DataDir.load(make_datadir(tmp_path / "d", uem=None))
    assert not datadir.has_uem
    assert datadir.regions_array("rec2").tolist() == [[0.0, 6.0]]
    assert datadir.summary().scored_s == pytest.approx(16.0)


def test_summary_needs_the_audio_headers(tmp_path):
    datadir = DataDir.load(make_datadir(tmp_path / "d"))
    unread = dataclasses.replace(datadir.recordings["rec2"], sample_rate=None)
    datadir.recordings["rec2"] = unread
    with pytest.raises(DataFormatError, match="audio header of 'rec2' not read"):
        datadir.summary()


def check_error(root: Path, file: str, line_number, *fragments):
    with pytest.raises(DataFormatError) as info:
        DataDir.load(root)
    message = str(info.value)
    assert message.startswith(f"{root / file}:{line_number}:") if line_number else True
    assert info.value.path == str(root / file)
    assert info.value.line_number == line_number
    for fragment in fragments:
        assert fragment in message, message


def test_rttm_for_unknown_recording(tmp_path):
    root = make_datadir(tmp_path / "d", rttm=RTTM + "SPEAKER rec9 1 0 1 <NA> <NA> A <NA> <NA>\n")
    check_error(root, "rttm", 5, "recording 'rec9' is not in", "wav.scp", "rec9 1 0 1")


def test_turn_after_end_of_audio(tmp_path):
    root = make_datadir(
        tmp_path / "d", uem=None, rttm=RTTM + "SPEAKER rec2 1 5.5 0.6 <NA> <NA> C <NA> <NA>\n"
    )
    check_error(root, "rttm", 5, "turn ends at 6.100 s, after the end of the audio (6.000 s)")


def test_turn_outside_uem(tmp_path):
    root = make_datadir(tmp_path / "d", uem="rec1 1 0 10\nrec2 1 1 3\n")
    check_error(
        root,
        "rttm",
        4,
        "turn [0.500, 2.500] is not inside a UEM region of 'rec2'",
        "(regions: [1, 3])",
    )


def test_uem_for_unknown_recording_and_past_the_audio(tmp_path):
    root = make_datadir(tmp_path / "d", uem="rec1 1 0 10\nrecX 1 0 3\n")
    check_error(root, "uem", 2, "recording 'recX' is not in")
    root = make_datadir(tmp_path / "e", uem="rec1 1 0 10\nrec2 1 0 7\n")
    check_error(root, "uem", 2, "region ends at 7.000 s, after the end of the audio (6.000 s)")


def test_unreadable_audio_is_reported_at_its_wav_scp_line(tmp_path):
    root = make_datadir(tmp_path / "d")
    (root / "audio" / "rec2.flac").write_bytes(b"not audio at all")
    check_error(root, "wav.scp", 2, "unreadable audio", "cannot read audio", "rec2.flac")
    (root / "audio" / "rec2.flac").unlink()
    check_error(root, "wav.scp", 2, "no such audio file")


def test_requested_channel_must_exist(tmp_path):
    root = make_datadir(tmp_path / "d")
    with pytest.raises(DataFormatError, match=r"channel 1 requested but the audio has 1 channel"):
        DataDir.load(root, channel=1)
    assert DataDir.load(root, channel=0).recordings["rec2"].num_channels == 2


def test_missing_files(tmp_path):
    root = make_datadir(tmp_path / "d")
    (root / "rttm").unlink()
    check_error(root, "rttm", None, "missing: a data directory holds wav.scp, rttm")
    with pytest.raises(DataFormatError, match="not a directory"):
        DataDir.load(tmp_path / "nowhere")


def test_malformed_line_inside_a_data_directory(tmp_path):
    root = make_datadir(tmp_path / "d", rttm=RTTM + "SPEAKER rec1 1 2.0 -1 <NA> <NA> A <NA> <NA>\n")
    check_error(root, "rttm", 5, "negative duration")
