"""Corpus preparation on tiny synthetic releases of AMI, AISHELL-4 and AliMeeting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from slimdiar.cli import main
from slimdiar.data import DataDir, Turn, read_rttm, read_uem, read_wav_scp
from slimdiar.data.corpora import (
    aishell4,
    ami,
    clip_turns,
    extract_channel,
    merge_turns,
    prepare_corpus,
    read_textgrid,
    speech_turns,
)
from slimdiar.errors import ConfigError, DataFormatError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.testing import (
    ami_words_xml,
    make_aishell4_release,
    make_alimeeting_release,
    make_ami_release,
    praat_textgrid,
    write_pcm_audio,
)


def rttm_rows(path: Path) -> list[tuple[str, float, float, str]]:
    return [(t.uri, t.onset_s, t.duration_s, t.speaker) for t in read_rttm(path)]


# ---------------------------------------------------------------------- TextGrid
TIERS = {
    "SPK 001": [(0.5, 1.25, "你好"), (1.25, 2.0, "再见"), (3.0, 3.5, 'say "hi"')],
    "002": [(1.0, 2.5, "嗯"), (2.75, 2.75, "zero length")],
    "003": [(0.2, 0.4, "   ")],
}


def test_textgrid_long_format_turns(tmp_path):
    path = tmp_path / "a.TextGrid"
    path.write_text(praat_textgrid(4.0, TIERS), encoding="utf-8")
    textgrid = read_textgrid(path)
    assert (textgrid.start_s, textgrid.end_s) == (0.0, 4.0)
    assert [t.name for t in textgrid.tiers] == ["SPK 001", "002", "003"]
    assert textgrid.tiers[0].intervals[4].text == 'say "hi"'
    turns = speech_turns(textgrid, "rec")
    # Blank and zero-length intervals are not speech; whitespace in tier names becomes "_".
    assert [(t.onset_s, t.offset_s, t.speaker) for t in turns] == [
        (0.5, 1.25, "SPK_001"),
        (1.25, 2.0, "SPK_001"),
        (3.0, 3.5, "SPK_001"),
        (1.0, 2.5, "002"),
    ]


def test_textgrid_short_format_and_utf16_read_the_same(tmp_path):
    long_path = tmp_path / "long.TextGrid"
    long_path.write_text(praat_textgrid(4.0, TIERS), encoding="utf-8")
    short = (
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n4\n<exists>\n2\n'
        '"IntervalTier"\n"SPK 001"\n0\n4\n4\n0\n0.5\n""\n0.5\n1.25\n"你好"\n1.25\n2.0\n"再见"\n'
        '2.0\n4\n""\n"TextTier"\n"points"\n0\n4\n1\n1.5\n"click"\n'
    )
    short_path = tmp_path / "short.TextGrid"
    short_path.write_bytes(short.encode("utf-16"))
    short_grid = read_textgrid(short_path)
    assert len(short_grid.tiers) == 1  # the point tier is dropped
    assert speech_turns(short_grid, "r") == speech_turns(read_textgrid(long_path), "r")[:2]


@pytest.mark.parametrize(
    ("edit", "line", "reason"),
    [
        (lambda s: s.replace("xmax = 1.25 ", "xmax = 0.25 ", 1), 21, "ends (0.25) before"),
        (lambda s: s.replace("xmin = 1.25 ", "xmin = 1.0 ", 1), 24, "starts before the previous"),
        (lambda s: s.replace("xmax = 2.0 ", "xmax = abc ", 1), None, "expected xmax"),
        (lambda s: s.replace("xmax = 2.0 ", "xmax = 2.0.1 ", 1), 25, "'2.0.1' is not a number"),
        (lambda s: s.replace('text = "再见" ', 'text = "再见 ', 1), None, "unterminated string"),
        (lambda s: s.replace("size = 3 ", "size = 4 ", 1), None, "unexpected end of file"),
        (lambda s: s.replace('"IntervalTier"', '"Tier"', 1), 10, "unknown tier class"),
        (lambda s: s.replace('"TextGrid"', '"Pitch"', 1), 2, 'is not "TextGrid"'),
    ],
)
def test_textgrid_errors_name_file_and_line(tmp_path, edit, line, reason):
    path = tmp_path / "bad.TextGrid"
    path.write_text(edit(praat_textgrid(4.0, TIERS)), encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        read_textgrid(path)
    assert info.value.path == str(path)
    assert reason in str(info.value)
    if line is not None:
        assert info.value.line_number == line


def test_textgrid_not_text(tmp_path):
    path = tmp_path / "bin.TextGrid"
    path.write_bytes(b"\x00\x9f\xfa garbage")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        read_textgrid(path)
    with pytest.raises(DataFormatError, match="no such file"):
        read_textgrid(tmp_path / "missing.TextGrid")


# ---------------------------------------------------------------------- turn helpers
def test_merge_and_clip_turns():
    turns = [
        Turn("r", 0.0, 1.0, "a"),
        Turn("r", 1.0, 0.5, "a"),
        Turn("r", 1.7, 0.3, "a"),
        Turn("r", 0.5, 2.0, "b"),
        Turn("r", 1.2, 0.1, "b"),
    ]
    merged = merge_turns(turns)
    assert [(t.onset_s, t.offset_s, t.speaker) for t in merged] == [
        (0.0, 1.5, "a"),
        (0.5, 2.5, "b"),
        (1.7, 2.0, "a"),
    ]
    bridged = merge_turns(turns, max_gap_s=0.25)
    assert [(t.onset_s, t.offset_s, t.speaker) for t in bridged] == [
        (0.0, 2.0, "a"),
        (0.5, 2.5, "b"),
    ]
    clipped, changed = clip_turns(merged, 0.6, 1.8)
    assert [(t.onset_s, t.duration_s, t.speaker) for t in clipped] == [
        (0.6, 0.9, "a"),
        (0.6, 1.2, "b"),
        (1.7, 0.1, "a"),
    ]
    assert changed == 3
    # Less than a millisecond left: dropped.
    assert clip_turns([Turn("r", 0.0, 1.0, "a")], 0.9996, 2.0)[0] == []


def test_extract_channel_is_exact_and_atomic(tmp_path):
    source = tmp_path / "in.flac"
    data = write_pcm_audio(source, 0.5, 8, seed=3)
    soundfile.write(source, data, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    out = extract_channel(source, tmp_path / "out" / "x.wav", 3)
    read, rate = soundfile.read(out, dtype="int16")
    assert rate == SAMPLE_RATE and read.ndim == 1
    np.testing.assert_array_equal(read, data[:, 3])
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.wav"]
    stamp = out.stat().st_mtime_ns
    extract_channel(source, out, 3)  # already there with the right length: kept
    assert out.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------- AISHELL-4
def test_aishell4_prepare(tmp_path):
    corpus = tmp_path / "aishell4"
    make_aishell4_release(corpus)
    prepared = prepare_corpus("aishell4", corpus, tmp_path / "data", dev_sessions=1)
    assert [p.path.name for p in prepared] == ["train", "dev", "test"]
    ids = {p.path.name: [r.uri for r in read_wav_scp(p.path / "wav.scp")] for p in prepared}
    # Four training sessions, sorted; the one at int(0.5 * 4 / 1) = 2 is held out.
    assert ids == {
        "train": ["20200707_L_R001S01C01", "20200708_L_R002S01C01", "20200711_S_R001S01C01"],
        "dev": ["20200710_M_R001S01C01"],
        "test": ["L_R003S01C02"],
    }
    # Touching intervals of a tier merge; the turn past the audio end (3.0 s) is clipped.
    assert rttm_rows(tmp_path / "data" / "test" / "rttm") == [
        ("L_R003S01C02", 0.5, 1.0, "001"),
        ("L_R003S01C02", 1.25, 0.75, "002"),
        ("L_R003S01C02", 2.5, 0.5, "003"),
    ]
    regions = read_uem(tmp_path / "data" / "test" / "uem")
    assert [(r.uri, r.start_s, r.end_s) for r in regions] == [("L_R003S01C02", 0.0, 3.0)]
    assert (
        read_wav_scp(tmp_path / "data" / "test" / "wav.scp")[0].path
        == (corpus / "test" / "wav" / "L_R003S01C02.flac").resolve()
    )
    loaded = DataDir.load(tmp_path / "data" / "train", channel=0)
    assert len(loaded.recordings) == 3 and loaded.has_uem


def test_aishell4_extract_channel_and_invalid_textgrid(tmp_path):
    corpus = tmp_path / "aishell4"
    audio = make_aishell4_release(corpus)
    bad = corpus / "test" / "TextGrid" / "L_R003S01C02.TextGrid"
    bad.write_text(
        bad.read_text(encoding="utf-8").replace("xmax = 1.0 ", "xmax = 0.1 ", 1), encoding="utf-8"
    )
    with pytest.raises(DataFormatError) as info:
        prepare_corpus("aishell4", corpus, tmp_path / "data", ["test"])
    assert str(bad) in str(info.value) and "ends (0.1) before it starts (0.5)" in str(info.value)
    assert not (tmp_path / "data" / "test").exists()
    prepared = prepare_corpus(
        "aishell4", corpus, tmp_path / "data", ["dev"], extract_channel=True, dev_sessions=1
    )
    (entry,) = read_wav_scp(prepared[0].path / "wav.scp")
    assert entry.path == (tmp_path / "data" / "audio" / "20200710_M_R001S01C01.wav").resolve()
    np.testing.assert_array_equal(
        soundfile.read(entry.path, dtype="int16")[0], audio["20200710_M_R001S01C01"][:, 0]
    )
    DataDir.load(prepared[0].path, channel=0)
    # --skip-invalid drops the bad session and keeps going: nothing left in test.
    with pytest.raises(DataFormatError, match="no recordings"):
        prepare_corpus("aishell4", corpus, tmp_path / "data", ["test"], skip_invalid=True)


def test_aishell4_dev_split_is_disjoint_and_spread():
    assert aishell4.dev_indices(191, 10) == [9, 28, 47, 66, 85, 105, 124, 143, 162, 181]
    assert aishell4.dev_indices(4, 0) == []
    with pytest.raises(DataFormatError, match="cannot hold out 4 of 4"):
        aishell4.dev_indices(4, 4)


# ---------------------------------------------------------------------- AliMeeting
def test_alimeeting_prepare(tmp_path):
    corpus = tmp_path / "alimeeting"
    make_alimeeting_release(corpus)
    prepared = prepare_corpus("alimeeting", corpus, tmp_path / "data")
    assert [(p.path.name, p.num_recordings) for p in prepared] == [
        ("train", 2),
        ("dev", 1),
        ("test", 1),
    ]
    assert rttm_rows(tmp_path / "data" / "dev" / "rttm") == [
        ("R8001_M8004_MS801", 0.1, 0.8, "R8001_M8004_F_SPK0093"),
        ("R8001_M8004_MS801", 0.5, 0.7, "M_SPK0094"),
        ("R8001_M8004_MS801", 1.5, 0.4, "M_SPK0094"),
    ]
    assert [r.uri for r in read_wav_scp(tmp_path / "data" / "train" / "wav.scp")] == [
        "R0003_M0046_MS801",
        "R0015_M0151_MS802",
    ]
    DataDir.load(tmp_path / "data" / "test", channel=7)


def test_alimeeting_layout_errors(tmp_path):
    corpus = tmp_path / "alimeeting"
    make_alimeeting_release(corpus)
    write_pcm_audio(corpus / "Train_Ali_far" / "audio_dir" / "R0003_M0046_MS999.wav", 1.0, 8)
    with pytest.raises(DataFormatError, match="found R0003_M0046_MS801.wav, R0003_M0046_MS999"):
        prepare_corpus("alimeeting", corpus, tmp_path / "data", ["train"])
    with pytest.raises(DataFormatError, match="no AliMeeting Test_Ali_far directory"):
        prepare_corpus("alimeeting", tmp_path, tmp_path / "out", ["test"])
    with pytest.raises(DataFormatError, match="channel 8 requested but the audio has 8"):
        prepare_corpus("alimeeting", corpus, tmp_path / "data", ["dev"], channel=8)
    with pytest.raises(ConfigError, match="unknown alimeeting subset"):
        prepare_corpus("alimeeting", corpus, tmp_path / "data", ["eval"])


# ---------------------------------------------------------------------- AMI
def test_ami_from_nxt_words(tmp_path):
    annotations = make_ami_release(tmp_path / "ami")
    prepared = prepare_corpus(
        "ami",
        tmp_path / "ami",
        tmp_path / "data",
        ["train", "test"],
        annotations_dir=annotations,
        skip_missing=True,
    )
    assert [(p.path.name, p.num_recordings) for p in prepared] == [("train", 1), ("test", 1)]
    # Words that touch merge; the vocal sound, punctuation and untimed word are not speech;
    # the pause of 0.6 s splits; the last word is clipped to the audio (5 s).
    assert rttm_rows(tmp_path / "data" / "train" / "rttm") == [
        ("ES2002a", 0.5, 0.6, "FEE005"),
        ("ES2002a", 1.0, 0.5, "MEE006"),
        ("ES2002a", 1.7, 0.3, "FEE005"),
        ("ES2002a", 4.9, 0.1, "FEE005"),
    ]
    assert [(r.uri, r.start_s, r.end_s) for r in read_uem(tmp_path / "data" / "train" / "uem")] == [
        ("ES2002a", 0.0, 5.0)
    ]
    DataDir.load(tmp_path / "data" / "test", channel=0)
    bridged = ami.recordings(
        tmp_path / "ami", "train", annotations_dir=annotations, merge_gap_s=0.6, skip_missing=True
    )
    assert [(t.onset_s, round(t.offset_s, 6), t.speaker) for t in bridged[0].turns] == [
        (0.5, 2.0, "FEE005"),
        (1.0, 1.5, "MEE006"),
        (4.9, 5.4, "FEE005"),
    ]


def test_ami_missing_meetings_and_bad_xml(tmp_path):
    annotations = make_ami_release(tmp_path / "ami")
    with pytest.raises(DataFormatError) as info:
        ami.recordings(tmp_path / "ami", "test", annotations_dir=annotations)
    assert "AMI test: 15 meeting(s) incomplete: IS1009a (audio IS1009a.Array1-01.wav)" in str(
        info.value
    ) and "--skip-missing" in str(info.value)
    with pytest.raises(DataFormatError, match="need --rttm-dir"):
        ami.recordings(tmp_path / "ami", "test")
    words = annotations / "words" / "ES2004a.A.words.xml"
    words.write_text(words.read_text().replace("</w>", "</x>"))
    with pytest.raises(DataFormatError) as info:
        ami.recordings(tmp_path / "ami", "test", annotations_dir=annotations, skip_missing=True)
    assert info.value.path == str(words) and info.value.line_number == 3
    assert "malformed XML" in str(info.value)
    words.write_text(
        ami_words_xml("ES2004a", "A", ['<w nite:id="c0" starttime="zero" endtime="0.75">hello</w>'])
    )
    with pytest.raises(DataFormatError, match="<w nite:id='c0'>: starttime 'zero' is not"):
        ami.recordings(tmp_path / "ami", "test", annotations_dir=annotations, skip_missing=True)


def test_ami_from_setup_rttm_and_uem(tmp_path):
    make_ami_release(tmp_path / "ami")
    rttms, uems = tmp_path / "setup" / "rttms", tmp_path / "setup" / "uems"
    (rttms / "test").mkdir(parents=True)
    (uems / "test").mkdir(parents=True)
    (rttms / "test" / "ES2004a.rttm").write_text(
        "SPEAKER ES2004a 1 0.37 1.39 <NA> <NA> MEO015 <NA> <NA>\n"
        "SPEAKER ES2004a 1 1.5 3.54 <NA> <NA> FEE013 <NA> <NA>\n"
    )
    (uems / "test" / "ES2004a.uem").write_text("ES2004a 1 0.000 4.5\n")
    prepare_corpus(
        "ami",
        tmp_path / "ami",
        tmp_path / "data",
        ["test"],
        rttm_dir=rttms,
        uem_dir=uems,
        skip_missing=True,
    )
    assert rttm_rows(tmp_path / "data" / "test" / "rttm") == [
        ("ES2004a", 0.37, 1.39, "MEO015"),
        ("ES2004a", 1.5, 3.0, "FEE013"),
    ]
    assert [(r.start_s, r.end_s) for r in read_uem(tmp_path / "data" / "test" / "uem")] == [
        (0.0, 4.5)
    ]
    (rttms / "test" / "ES2004a.rttm").write_text(
        "SPEAKER ES2004b 1 0.37 1.39 <NA> <NA> MEO015 <NA> <NA>\n"
    )
    with pytest.raises(DataFormatError, match="recording 'ES2004b' in the RTTM file of"):
        ami.recordings(tmp_path / "ami", "test", rttm_dir=rttms, skip_missing=True)


def test_ami_partition_is_the_full_corpus_asr_one():
    sizes = {subset: len(meetings) for subset, meetings in ami.PARTITION.items()}
    assert sizes == {"train": 136, "dev": 18, "test": 16}
    everything = [m for meetings in ami.PARTITION.values() for m in meetings]
    assert len(set(everything)) == len(everything)


# ---------------------------------------------------------------------- CLI
def test_prepare_cli(tmp_path, capsys):
    corpus = tmp_path / "alimeeting"
    make_alimeeting_release(corpus)
    status = main(
        [
            "prepare",
            "alimeeting",
            "--corpus-dir",
            str(corpus),
            "--out",
            str(tmp_path / "data"),
            "--subsets",
            "dev,test",
            "--extract-channel",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert f"{tmp_path / 'data' / 'dev'}: 1 recordings, 3 turns, 0.00 h" in out
    assert (tmp_path / "data" / "audio" / "R8003_M8001_MS801.wav").is_file()
    assert main(["data", "check", str(tmp_path / "data" / "test")]) == 0
    capsys.readouterr()
    status = main(
        [
            "prepare",
            "alimeeting",
            "--corpus-dir",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "does not exist" in err
    status = main(
        [
            "prepare",
            "aishell4",
            "--corpus-dir",
            str(corpus),
            "--out",
            str(tmp_path / "x"),
            "--rttm-dir",
            str(tmp_path),
        ]
    )
    assert status == 2 and "--rttm-dir applies to ami only" in capsys.readouterr().err


def test_annotation_longer_than_audio_is_reported_and_clipped(tmp_path, caplog):
    corpus = tmp_path / "alimeeting"
    make_alimeeting_release(corpus)
    textgrid = corpus / "Eval_Ali" / "Eval_Ali_far" / "textgrid_dir" / "R8001_M8004.TextGrid"
    textgrid.write_text(praat_textgrid(30.0, {"N_SPK1": [(1.5, 25.0, "长")]}), encoding="utf-8")
    with caplog.at_level("WARNING"):
        prepare_corpus("alimeeting", corpus, tmp_path / "data", ["dev"])
    assert "R8001_M8004_MS801: the annotation spans 30.000 s but the audio lasts 2.000 s" in (
        caplog.text
    )
    assert rttm_rows(tmp_path / "data" / "dev" / "rttm") == [
        ("R8001_M8004_MS801", 1.5, 0.5, "N_SPK1")
    ]
    assert [(r.start_s, r.end_s) for r in read_uem(tmp_path / "data" / "dev" / "uem")] == [
        (0.0, 2.0)
    ]
