from pathlib import Path

import pytest

from slimdiar.data import (
    Recording,
    Turn,
    UEMRegion,
    read_rttm,
    read_uem,
    read_wav_scp,
    write_rttm,
    write_text_atomic,
    write_uem,
    write_wav_scp,
)
from slimdiar.errors import DataFormatError

GOOD_RTTM = "SPEAKER rec1 1 0.50 1.25 <NA> <NA> spk_a <NA> <NA>\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def expect_error(reader, path: Path, line_number, *fragments):
    with pytest.raises(DataFormatError) as info:
        reader(path)
    error = info.value
    assert error.path == str(path)
    assert error.line_number == line_number
    message = str(error)
    where = f"{path}:{line_number}" if line_number is not None else str(path)
    assert message.startswith(where + ":")
    for fragment in fragments:
        assert fragment in message, message
    return error


# ---------------------------------------------------------------- wav.scp
def test_wav_scp_resolves_relative_paths_and_keeps_order(tmp_path):
    (tmp_path / "audio").mkdir()
    path = write(tmp_path, "wav.scp", "b audio/b.wav\n\na /abs/a.flac\nc my dir/c.wav\n")
    recordings = read_wav_scp(path)
    assert [r.uri for r in recordings] == ["b", "a", "c"]
    assert recordings[0].path == (tmp_path / "audio" / "b.wav").resolve()
    assert recordings[1].path == Path("/abs/a.flac")
    assert recordings[2].path == (tmp_path / "my dir" / "c.wav").resolve()
    assert [r.line_number for r in recordings] == [1, 3, 4]


def test_wav_scp_rejects_pipes(tmp_path):
    path = write(tmp_path, "wav.scp", "a a.wav\nb sox b.sph -t wav - |\n")
    error = expect_error(read_wav_scp, path, 2, "piped commands are not supported")
    assert "sox b.sph" in str(error)


def test_wav_scp_rejects_missing_path(tmp_path):
    path = write(tmp_path, "wav.scp", "a a.wav\nlonely\n")
    expect_error(read_wav_scp, path, 2, "expected '<recording-id> <path>'", "lonely")


def test_wav_scp_rejects_duplicate_ids(tmp_path):
    path = write(tmp_path, "wav.scp", "a a.wav\nb b.wav\na c.wav\n")
    expect_error(read_wav_scp, path, 3, "duplicate recording id 'a' (first on line 1)")


def test_missing_file_is_reported(tmp_path):
    expect_error(read_wav_scp, tmp_path / "wav.scp", None, "no such file")


# ---------------------------------------------------------------- RTTM
def test_rttm_reads_turns(tmp_path):
    path = write(
        tmp_path,
        "rttm",
        ";; comment\n" + GOOD_RTTM + "SPEAKER rec2 1 3 2 <NA> <NA> spk_b <NA> <NA>\n",
    )
    turns = read_rttm(path)
    assert turns == [Turn("rec1", 0.5, 1.25, "spk_a", 1), Turn("rec2", 3.0, 2.0, "spk_b", 1)]
    assert turns[0].offset_s == pytest.approx(1.75)
    assert turns[0].line_number == 2


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("SPEAKER rec1 1 0.5 1.0 <NA> <NA> spk <NA>", "expected 10 fields"),
        ("SPEAKER rec1 1 0.5 1.0 <NA> <NA> spk <NA> <NA> extra", "but found 11"),
        ("SPKR-INFO rec1 1 0.5 1.0 <NA> <NA> spk <NA> <NA>", "type 'SPKR-INFO' is not supported"),
        ("SPEAKER rec1 1 zero 1.0 <NA> <NA> spk <NA> <NA>", "onset 'zero' is not a number"),
        ("SPEAKER rec1 1 0.5 1s <NA> <NA> spk <NA> <NA>", "duration '1s' is not a number"),
        ("SPEAKER rec1 1 0.5 nan <NA> <NA> spk <NA> <NA>", "not a finite number"),
        ("SPEAKER rec1 1 0.5 -1.0 <NA> <NA> spk <NA> <NA>", "negative duration"),
        ("SPEAKER rec1 1 -0.5 1.0 <NA> <NA> spk <NA> <NA>", "negative onset"),
        ("SPEAKER rec1 1 0.5 0 <NA> <NA> spk <NA> <NA>", "zero duration"),
        ("SPEAKER rec1 A 0.5 1.0 <NA> <NA> spk <NA> <NA>", "channel 'A' is not an integer"),
        (GOOD_RTTM.strip(), "duplicate turn (first on line 1)"),
    ],
)
def test_rttm_errors_name_file_line_and_reason(tmp_path, line, fragment):
    path = write(tmp_path, "rttm", GOOD_RTTM + "\n" + line + "\n")
    error = expect_error(read_rttm, path, 3, fragment)
    assert error.line == line


# ---------------------------------------------------------------- UEM
def test_uem_reads_regions(tmp_path):
    path = write(tmp_path, "uem", "rec1 1 0.0 10.5\nrec1 1 12 20\nrec2 1 1 2\n")
    regions = read_uem(path)
    assert regions[1] == UEMRegion("rec1", 12.0, 20.0, 1)
    assert regions[0].duration_s == pytest.approx(10.5)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("rec1 1 3.0", "expected 4 fields"),
        ("rec1 1 a 4", "start 'a' is not a number"),
        ("rec1 1 3 b", "end 'b' is not a number"),
        ("rec1 1 5 5", "end 5.0 is not after start 5.0"),
        ("rec1 1 6 5", "end 5.0 is not after start 6.0"),
        ("rec1 1 -1 5", "negative start"),
        ("rec1 1 1.5 4", "overlaps region [0.0, 2.0] on line 1"),
    ],
)
def test_uem_errors_name_file_line_and_reason(tmp_path, line, fragment):
    path = write(tmp_path, "uem", "rec1 1 0 2\n" + line + "\n")
    error = expect_error(read_uem, path, 2, fragment)
    assert error.line == line


# ---------------------------------------------------------------- writers
def test_writers_round_trip(tmp_path):
    turns = [Turn("r1", 0.25, 1.5, "A"), Turn("r1", 1.0, 2.0, "B"), Turn("r2", 3.0, 0.5, "A")]
    write_rttm(tmp_path / "rttm", turns)
    assert read_rttm(tmp_path / "rttm") == turns
    regions = [UEMRegion("r1", 0.0, 4.0), UEMRegion("r2", 2.5, 3.75)]
    write_uem(tmp_path / "uem", regions)
    assert read_uem(tmp_path / "uem") == regions
    recordings = [Recording("r1", tmp_path / "r1.wav"), Recording("r2", tmp_path / "x" / "r2.wav")]
    write_wav_scp(tmp_path / "wav.scp", recordings)
    assert read_wav_scp(tmp_path / "wav.scp") == [
        Recording("r1", (tmp_path / "r1.wav").resolve()),
        Recording("r2", (tmp_path / "x" / "r2.wav").resolve()),
    ]


def test_write_rttm_rejects_spaces_in_names(tmp_path):
    with pytest.raises(DataFormatError, match="cannot hold spaces"):
        write_rttm(tmp_path / "rttm", [Turn("r 1", 0.0, 1.0, "A")])
    assert not (tmp_path / "rttm").exists()


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"

    with pytest.raises(TypeError):
        write_text_atomic(target, 123)  # not text: the write fails half way
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# ---------------------------------------------------------------- committed edge cases
EDGE_CASES = Path(__file__).resolve().parents[1] / "data" / "formats"


def test_rttm_and_uem_edge_cases_of_real_files(tmp_path):
    """Tabs, runs of spaces, blank and comment lines, exponents, a second channel, non-ASCII
    labels, a 1 ms turn, a speaker overlapping itself, touching UEM regions out of order."""
    import numpy as np

    from slimdiar.data.datadir import merge_intervals

    turns = read_rttm(EDGE_CASES / "edge-cases.rttm")
    assert [
        (t.uri, t.onset_s, t.duration_s, t.speaker, t.channel, t.line_number) for t in turns
    ] == [
        ("ES2002a", 0.5, 1.25, "FEE005", 1, 2),
        ("ES2002a", 1.0, 0.5, "MEE006", 1, 3),
        ("ES2002a", 1.2, 0.1, "FEE005", 1, 5),
        ("ES2002a", 3.0, 2.0, "MEE006", 2, 6),
        ("20200707_L_R001S01C01", 0.0, 0.001, "说话人甲", 1, 7),
        ("ES2002a", 1.75, 0.25, "FEE005", 1, 8),
    ]
    # FEE005's three turns (one inside another, one touching it) are one stretch of speech
    spans = np.asarray([(t.onset_s, t.offset_s) for t in turns if t.speaker == "FEE005"])
    np.testing.assert_allclose(merge_intervals(spans), [[0.5, 2.0]])
    regions = read_uem(EDGE_CASES / "edge-cases.uem")
    assert [(r.uri, r.start_s, r.end_s) for r in regions] == [
        ("ES2002a", 2.5, 6.0),
        ("ES2002a", 0.0, 2.5),
        ("20200707_L_R001S01C01", 0.0, 10.0),
        ("ES2002a", 7.25, 9.0),
    ]
    # written back (millisecond times, one space), they read the same
    write_rttm(tmp_path / "rttm", turns)
    write_uem(tmp_path / "uem", regions)
    again = read_rttm(tmp_path / "rttm")
    assert [(t.uri, t.onset_s, t.duration_s, t.speaker, t.channel) for t in again] == [
        (t.uri, t.onset_s, t.duration_s, t.speaker, t.channel) for t in turns
    ]
    assert read_uem(tmp_path / "uem") == regions
