import json

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
    status = main(["score", "--ref", str(tmp_path / "ref.rttm"), "--hyp",
                   str(tmp_path / "hyp.rttm"), "--json", str(out_json)])
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
    status = main(["score", "--ref", str(ref_dir), "--hyp", str(hyp_dir), "--collar", "0.25",
                   "--json", str(out_json)])
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
    status = main(["score", "--ref", str(tmp_path / "ref.rttm"), "--hyp",
                   str(tmp_path / "hyp.rttm")])
    assert status == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'hyp.rttm'}:4: expected 10 fields" in err

    assert main(["score", "--ref", str(tmp_path / "nothing"), "--hyp",
                 str(tmp_path / "hyp.rttm")]) == 2
    assert "no such RTTM file or directory" in capsys.readouterr().err

    (tmp_path / "hyp.rttm").write_text(HYP)
    assert main(["score", "--ref", str(tmp_path / "ref.rttm"), "--hyp",
                 str(tmp_path / "hyp.rttm"), "--collar", "-1"]) == 2
    assert "--collar must be >= 0" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert main(["score", "--ref", str(tmp_path / "empty"), "--hyp",
                 str(tmp_path / "hyp.rttm")]) == 2
    assert "neither an 'rttm' file nor any *.rttm file" in capsys.readouterr().err
