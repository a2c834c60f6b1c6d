import numpy as np
import soundfile

from slimdiar.cli import main


def make_datadir(root):
    root.mkdir()
    soundfile.write(root / "a.wav", np.zeros(16000 * 4, dtype=np.float32), 16000)
    soundfile.write(root / "b.wav", np.zeros((8000 * 3, 2), dtype=np.float32), 8000)
    (root / "wav.scp").write_text("a a.wav\nb b.wav\n")
    (root / "rttm").write_text(
        "SPEAKER a 1 0.0 2.0 <NA> <NA> A <NA> <NA>\n"
        "SPEAKER a 1 1.0 2.0 <NA> <NA> B <NA> <NA>\n"
        "SPEAKER b 1 0.5 1.0 <NA> <NA> C <NA> <NA>\n"
    )
    return root


def test_data_check_prints_a_summary(tmp_path, capsys):
    root = make_datadir(tmp_path / "d")
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "recordings" in out and "2" in out
    # speech: a [0, 3] + b [0.5, 1.5] = 4 s of 7 s; overlap a [1, 2] = 1 s of 4 s
    assert "57.1 % of scored time" in out
    assert "25.0 % of speech" in out
    assert "8000 (1 rec.), 16000 (1 rec.)" in out
    assert "downmix to mono" in out


def test_data_check_channel_option(tmp_path, capsys):
    root = make_datadir(tmp_path / "d")
    assert main(["data", "check", str(root), "--channel", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'wav.scp'}:1:" in err
    assert "channel 1 requested but the audio has 1 channel(s)" in err
    assert main(["data", "check", str(root), "--channel", "0"]) == 0
    assert "channel 0" in capsys.readouterr().out


def test_data_check_reports_bad_lines_with_exit_status_2(tmp_path, capsys):
    root = make_datadir(tmp_path / "d")
    (root / "uem").write_text("a 1 0 4\nb 1 0 three\n")
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimdiar: error: ")
    assert f"{root / 'uem'}:2: end 'three' is not a number" in err
    assert "b 1 0 three" in err


def test_data_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().out
