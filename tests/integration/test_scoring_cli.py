import json
import logging

import pytest

from slimdiar.cli import main

REF = (
    "SPEAKER f1 1 0.0 10.0 <NA> <NA> A <NA> <NA>\n"
    "SPEAKER f2 1 0.0 4.0 <NA> <NA> A <NA> <NA>\n"
    "SPEAKER f2 1 4.0 6.0 <NA> <NA> B <NA> <NA>\n"
    "SPEAKER f3 1 1.0 2.0 <NA> <NA> C <NA> <NA>\n"
)
HYP = (
    "SPEAKER f1 1 1.0 9.0 <NA> <NA> x <NA> <NA>\n"
    "SPEAKER f2 1 0.0 10.0 <NA> <NA> y <NA> <NA>\n"
    "SPEAKER f4 1 0.0 1.0 <NA> <NA> z <NA> <NA>\n"
)


def test_score_prints_table_and_writes_json(tmp_path, capsys):
    (tmp_path / "ref.rttm").write_text(REF)
    (tmp_path / "hyp.rttm").write_text(HYP)
    out_json = tmp_path / "der.json"
    status = main(
        [
            "score",
            "--ref",
            str(tmp_path / "ref.rttm"),
            "--hyp",
            str(tmp_path / "hyp.rttm"),
            "--json",
            str(out_json),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "no UEM, each file scored over the extent of its reference" in out
    assert "not scored: f4 (no reference and no UEM)" in out
    assert "TOTAL" in out
    data = json.loads(out_json.read_text())
    # f1: 1 s missed of 10; f2: 4 s confusion of 10; f3: 2 s missed of 2
    assert data["files"]["f1"]["missed"] == pytest.approx(1.0)
    assert data["files"]["f2"]["confusion"] == pytest.approx(4.0)
    assert data["files"]["f3"]["status"] == "ref_only"
    total = data["total"]
    assert total["total"] == pytest.approx(22.0)
    assert total["der"] == pytest.approx(7.0 / 22.0)
    assert (total["missed"], total["false_alarm"], total["confusion"]) == pytest.approx((3, 0, 4))
    assert data["unscored"] == {"f4": "no reference and no UEM"}
    assert data["uem_file"] is None and data["collar_s"] == 0.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_score_with_collar_uem_and_directories(tmp_path, capsys):
    ref_dir, hyp_dir = tmp_path / "data", tmp_path / "hyp"
    ref_dir.mkdir()
    hyp_dir.mkdir()
    (ref_dir / "rttm").write_text(REF)
    (ref_dir / "uem").write_text("f1 1 0 10\nf2 1 0 10\n")
    (hyp_dir / "f1.rttm").write_text(HYP.splitlines()[0] + "\n")
    (hyp_dir / "f2.rttm").write_text(HYP.splitlines()[1] + "\n")
    out_json = tmp_path / "der.json"
    status = main(
        [
            "score",
            "--ref",
            str(ref_dir),
            "--hyp",
            str(hyp_dir),
            "--collar",
            "0.25",
            "--json",
            str(out_json),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert f"UEM {ref_dir / 'uem'}" in out
    assert "not scored: f3 (no UEM region)" in out
    data = json.loads(out_json.read_text())
    # f1: scored [0.25, 9.75], missed [0.25, 1]; f2: scored [0.25, 3.75] + [4.25, 9.75]
    assert data["files"]["f1"]["total"] == pytest.approx(9.5)
    assert data["files"]["f1"]["missed"] == pytest.approx(0.75)
    assert data["files"]["f2"]["total"] == pytest.approx(9.0)
    assert data["files"]["f2"]["confusion"] == pytest.approx(3.5)
    assert data["uem_file"] == str(ref_dir / "uem")


def test_score_bad_input_exits_2_with_file_and_line(tmp_path, capsys):
    (tmp_path / "ref.rttm").write_text(REF)
    (tmp_path / "hyp.rttm").write_text(HYP + "SPEAKER f1 1 3.0 <NA> <NA> x <NA> <NA>\n")
    status = main(
        ["score", "--ref", str(tmp_path / "ref.rttm"), "--hyp", str(tmp_path / "hyp.rttm")]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'hyp.rttm'}:4: expected 10 fields" in err

    assert (
        main(["score", "--ref", str(tmp_path / "nothing"), "--hyp", str(tmp_path / "hyp.rttm")])
        == 2
    )
    assert "no such RTTM file or directory" in capsys.readouterr().err

    (tmp_path / "hyp.rttm").write_text(HYP)
    assert (
        main(
            [
                "score",
                "--ref",
                str(tmp_path / "ref.rttm"),
                "--hyp",
                str(tmp_path / "hyp.rttm"),
                "--collar",
                "-1",
            ]
        )
        == 2
    )
    assert "--collar must be >= 0" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert (
        main(["score", "--ref", str(tmp_path / "empty"), "--hyp", str(tmp_path / "hyp.rttm")]) == 2
    )
    assert "neither an 'rttm' file nor any *.rttm file" in capsys.readouterr().err


def score_cli(tmp_path, ref_text, hyp_text, *options):
    (tmp_path / "ref.rttm").write_text(ref_text)
    (tmp_path / "hyp.rttm").write_text(hyp_text)
    out_json = tmp_path / "der.json"
    status = main(
        [
            "score",
            "--ref",
            str(tmp_path / "ref.rttm"),
            "--hyp",
            str(tmp_path / "hyp.rttm"),
            "--json",
            str(out_json),
            *options,
        ]
    )
    return status, json.loads(out_json.read_text()) if out_json.exists() else None


def rttm(*turns):
    return "".join(
        f"SPEAKER {uri} 1 {onset} {duration} <NA> <NA> {speaker} <NA> <NA>\n"
        for uri, onset, duration, speaker in turns
    )


def test_score_merges_a_speakers_overlapping_turns(tmp_path, caplog):
    # one speaker 0-10 s and 5-15 s against a perfect hypothesis: DER 0 (not 5 s missed)
    with caplog.at_level(logging.WARNING):
        status, data = score_cli(
            tmp_path, rttm(("f", 0, 10, "A"), ("f", 5, 10, "A")), rttm(("f", 0, 15, "x"))
        )
    assert status == 0
    assert data["total"]["der"] == 0.0 and data["total"]["total"] == pytest.approx(15.0)
    assert data["merged_turns"] == {"reference": 1, "hypothesis": 0}
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1 and "merged 1 reference and 0 hypothesis turns" in logged[0]


def test_score_refuses_a_recording_in_two_files_of_a_directory(tmp_path, capsys):
    ref_dir, hyp_dir = tmp_path / "ref", tmp_path / "hyp"
    ref_dir.mkdir()
    hyp_dir.mkdir()
    (ref_dir / "f1.rttm").write_text(REF.splitlines()[0] + "\n")
    (ref_dir / "f2.rttm").write_text("".join(line + "\n" for line in REF.splitlines()[1:3]))
    (hyp_dir / "all.rttm").write_text(HYP)
    args = [
        "score",
        "--ref",
        str(ref_dir),
        "--hyp",
        str(hyp_dir),
        "--json",
        str(tmp_path / "der.json"),
    ]
    # an identical copy of a recording (all.rttm beside per-recording files) is counted once
    (hyp_dir / "f1.rttm").write_text(HYP.splitlines()[0] + "\n")
    assert main(args) == 0
    data = json.loads((tmp_path / "der.json").read_text())
    assert data["files"]["f1"]["missed"] == pytest.approx(1.0)
    assert data["files"]["f1"]["false_alarm"] == 0.0
    (tmp_path / "der.json").unlink()
    # a recording with other turns in a second file is refused, naming both files
    (hyp_dir / "f2.rttm").write_text(HYP.splitlines()[1].replace("10.0", "9.0") + "\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{hyp_dir / 'f2.rttm'}: recording 'f2' is also in {hyp_dir / 'all.rttm'}" in err
    assert not (tmp_path / "der.json").exists()


def test_score_refuses_nothing_to_score(tmp_path, capsys):
    hyp = rttm(("f", 0, 5, "x"))
    assert score_cli(tmp_path, "", hyp) == (2, None)
    assert "slimdiar: error: nothing to score" in capsys.readouterr().err
    assert score_cli(tmp_path, "", "") == (2, None)
    assert "slimdiar: error: nothing to score" in capsys.readouterr().err
    # a collar that covers all of the reference speech
    for collar in ("100", "5"):
        assert score_cli(tmp_path, rttm(("f", 0, 10, "A")), hyp, "--collar", collar) == (2, None)
        assert "covers all the reference speech" in capsys.readouterr().err
    for collar in ("nan", "inf", "-0.5"):
        assert score_cli(tmp_path, rttm(("f", 0, 10, "A")), hyp, "--collar", collar) == (2, None)
        assert (
            f"--collar must be >= 0 and finite (seconds), got {float(collar)}"
            in capsys.readouterr().err
        )
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".json"] == []


def test_score_reports_a_file_without_scored_speech_as_null(tmp_path, capsys):
    # g's only turn (0.4 s) lies inside its collars; f is scored over [0.25, 9.75]
    status, data = score_cli(
        tmp_path,
        rttm(("f", 0, 10, "A"), ("g", 0, 0.4, "B")),
        rttm(("f", 0, 10, "x"), ("g", 0, 0.4, "y")),
        "--collar",
        "0.25",
    )
    assert status == 0
    assert data["files"]["g"]["der"] is None
    assert data["files"]["g"]["reason"] == "the collar covers all of the reference speech"
    assert data["files"]["f"]["reason"] is None
    assert data["total"]["der"] == 0.0 and data["total"]["total"] == pytest.approx(9.5)
    assert "no DER: g (the collar covers all of the reference speech)" in capsys.readouterr().out


# the skip-overlap case of test_scoring.py: md-eval maps A->y on the whole region, so [0, 4) is
# confused (DER 1.0); pyannote maps on [0, 4) only, A->x (DER 0.0)
OVERLAP_REF = rttm(("f", 0, 10, "A"), ("f", 4, 6, "B"))
OVERLAP_HYP = rttm(("f", 0, 4, "x"), ("f", 4, 6, "y"), ("f", 4, 6, "z"))


@pytest.mark.parametrize(
    ("options", "convention", "der"),
    [
        ([], "md-eval", 1.0),
        (["--convention", "md-eval"], "md-eval", 1.0),
        (["--convention", "pyannote"], "pyannote", 0.0),
    ],
)
def test_score_convention(tmp_path, capsys, options, convention, der):
    status, data = score_cli(tmp_path, OVERLAP_REF, OVERLAP_HYP, "--skip-overlap", *options)
    assert status == 0
    assert data["convention"] == convention
    assert data["total"]["der"] == pytest.approx(der)
    assert data["total"]["total"] == pytest.approx(4.0)
    assert f"speakers mapped with the {convention} convention" in capsys.readouterr().out


def test_score_convention_is_checked(tmp_path, capsys):
    assert score_cli(tmp_path, OVERLAP_REF, OVERLAP_HYP, "--convention", "dscore") == (2, None)
    assert "invalid choice: 'dscore'" in capsys.readouterr().err
