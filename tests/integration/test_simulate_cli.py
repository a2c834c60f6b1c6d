"""Tests of ``slimdiar simulate`` (synthetic tone speakers, no text-to-speech needed)."""

from __future__ import annotations

import argparse
import json

import pytest

from slimdiar.cli import main
from slimdiar.cli.simulate import parse_range, scale_splits
from slimdiar.data import DataDir


def test_parse_range():
    assert parse_range("2-4", int) == (2, 4)
    assert parse_range("3", int) == (3, 3)
    assert parse_range("15-30") == (15.0, 30.0)
    for bad in ("4-2", "a-b", "1-2-3", "-3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_range(bad, int)


def test_scale_splits_keeps_proportions_and_every_split():
    assert scale_splits({"train": 20, "dev": 4, "test": 4}, 28) == {
        "train": 20,
        "dev": 4,
        "test": 4,
    }
    assert scale_splits({"train": 20, "dev": 4, "test": 4}, 7) == {"train": 5, "dev": 1, "test": 1}
    assert scale_splits({"train": 20, "dev": 4, "test": 4}, 3) == {"train": 1, "dev": 1, "test": 1}
    assert sum(scale_splits({"a": 1, "b": 1, "c": 1}, 100).values()) == 100


def test_cli_writes_splits_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "sim"
    status = main(
        [
            "simulate",
            "--out",
            str(out),
            "--speakers-from",
            "TONES",
            "--tts-speakers",
            "12",
            "--utterances-per-speaker",
            "4",
            "--splits",
            "train=2,dev=1,test=1",
            "--duration-s",
            "6",
            "--speakers-per-recording",
            "2-3",
            "--sample-rate",
            "8000",
            "--noise-snr-db",
            "10-20",
            "--noise-types",
            "white",
            "pink",
            "--reverb",
            "--seed",
            "3",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "overlap ratio" in printed and "configured" in printed and "measured" in printed
    for name, count in (("train", 2), ("dev", 1), ("test", 1)):
        data = DataDir.load(out / name)
        assert len(data.recordings) == count
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["config"]["reverb"] is True
    assert summary["config"]["noise_snr_db"] == [10.0, 20.0]


def test_cli_stats_from_rttm(tmp_path, capsys):
    rttm = tmp_path / "real.rttm"
    lines = []
    onset = 0.0
    for index in range(40):  # alternating speakers: 1.5 s turns, 0.2 s pauses, overlaps 0.5 s
        speaker = "AB"[index % 2]
        lines.append(f"SPEAKER meet 1 {onset:.3f} 1.500 <NA> <NA> {speaker} <NA> <NA>")
        onset += 1.0 if index % 4 == 0 else 1.7
    rttm.write_text("\n".join(lines) + "\n")
    status = main(
        [
            "simulate",
            "--out",
            str(tmp_path / "sim"),
            "--speakers-from",
            "TONES",
            "--stats-from",
            str(rttm),
            "--splits",
            "train=1",
            "--duration-s",
            "5",
            "--sample-rate",
            "8000",
            "--speakers-per-recording",
            "2",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert f"statistics of {rttm}" in printed
    summary = json.loads((tmp_path / "sim" / "simulation.json").read_text())
    assert summary["config"]["turns"]["pause_other_speaker"]["kind"] == "empirical"
    assert summary["config"]["turns"]["pause_other_speaker"]["mean_s"] == pytest.approx(0.2)
    assert summary["config"]["turns"]["overlap"]["mean_s"] == pytest.approx(0.5)


def test_cli_errors_are_one_line_messages(tmp_path, capsys):
    status = main(
        ["simulate", "--out", str(tmp_path), "--speakers-from", "TONES", "--splits", "train=2,dev"]
    )
    assert status == 2
    assert "slimdiar: error: bad split 'dev'" in capsys.readouterr().err
    status = main(
        ["simulate", "--out", str(tmp_path), "--speakers-from", str(tmp_path / "nowhere")]
    )
    assert status == 2
    assert "no such corpus directory or list file" in capsys.readouterr().err
