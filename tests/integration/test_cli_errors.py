"""The command line's error boundary and the checks every command makes before any work.

Each case runs the command as a user would and checks what the user sees: the exit status, one
line on stderr naming the path or flag and the reason, no traceback, and no output file left.
"""

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

import slimdiar.cli.score
from slimdiar.cli import build_parser, main
from slimdiar.config import load_config
from slimdiar.data import audio_info, read_audio, read_rttm
from slimdiar.demo.run import Demo
from slimdiar.errors import ConfigError
from slimdiar.fileio import output_path_problem
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.wavlm.config import preset
from slimdiar.stages.finetune import FinetuneConfig
from slimdiar.stages.prune import PruneConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
RTTM = "SPEAKER a 1 0.50 2.00 <NA> <NA> A <NA> <NA>\nSPEAKER a 1 3.00 1.00 <NA> <NA> B <NA> <NA>\n"


def noise(num_samples, seed=0):
    return (0.1 * np.random.default_rng(seed).normal(size=num_samples)).astype(np.float32)


def run_cli(capsys, *argv):
    """``slimdiar ARGV`` in this process; returns (exit status, stderr)."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_line_error(status, err, *words, exit_status=2):
    assert status == exit_status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(("slimdiar", "usage"))]
    assert any(line.startswith("slimdiar") and "error" in line for line in lines), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


def read_only_dir(tmp_path) -> Path:
    """A directory nobody may create files in (chmod for users; /sys for root, where it is so)."""
    if os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir()
        directory.chmod(0o555)
        return directory
    if Path("/sys").is_dir() and output_path_problem("/sys/x.json", directory=False):
        return Path("/sys")
    pytest.skip("running as root, and no directory here refuses root's writes")


@pytest.fixture
def scoring_inputs(tmp_path):
    (tmp_path / "ref.rttm").write_text(RTTM)
    (tmp_path / "hyp.rttm").write_text(RTTM)
    return ["score", "--ref", tmp_path / "ref.rttm", "--hyp", tmp_path / "hyp.rttm"]


# ------------------------------------------------------------------ the error boundary
def test_a_known_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    status, err = run_cli(
        capsys, "score", "--ref", tmp_path / "absent.rttm", "--hyp", tmp_path / "absent.rttm"
    )
    assert_one_line_error(status, err, "absent.rttm", "no such RTTM file or directory")
    assert err.count("\n") == 1


def test_an_os_error_names_the_path_and_the_reason(monkeypatch, capsys, scoring_inputs):
    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/locked.rttm")

    monkeypatch.setattr(slimdiar.cli.score, "run", denied)
    status, err = run_cli(capsys, *scoring_inputs)
    assert status == 2
    assert err == "slimdiar: error: /data/locked.rttm: Permission denied\n"


def test_an_unexpected_error_asks_for_a_report_and_hides_the_traceback(
    monkeypatch, capsys, scoring_inputs
):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(slimdiar.cli.score, "run", broken)
    monkeypatch.delenv("SLIMDIAR_DEBUG", raising=False)
    status, err = run_cli(capsys, *scoring_inputs)
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "ZeroDivisionError: division by zero" in err and "please report this" in err
    assert "--debug" in err

    status, err = run_cli(capsys, "--debug", *scoring_inputs)
    assert status == 1 and "Traceback (most recent call last)" in err and "in broken" in err
    monkeypatch.setenv("SLIMDIAR_DEBUG", "1")
    status, err = run_cli(capsys, *scoring_inputs)
    assert status == 1 and "Traceback (most recent call last)" in err


def test_ctrl_c_is_exit_status_130_without_a_traceback(monkeypatch, capsys, scoring_inputs):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(slimdiar.cli.score, "run", interrupted)
    status, err = run_cli(capsys, *scoring_inputs)
    assert status == 130 and err == "slimdiar: interrupted\n"


def _run_module(*argv, code=None, env=None, cwd=None):
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "slimdiar"]
    return subprocess.run(
        [*command, *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def _on_torch_import(body: str) -> str:
    """A program running ``slimdiar score --help`` with ``body`` hooked into every import."""
    return (
        "import builtins, runpy, signal, sys\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        f"{body}"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "sys.argv = ['slimdiar', 'score', '--help']\n"
        "runpy.run_module('slimdiar', run_name='__main__')\n"
    )


def test_ctrl_c_while_the_commands_are_imported_is_not_a_traceback():
    """Ctrl-C arrives while torch is being imported (the first second of any command)."""
    done = _run_module(
        code=_on_torch_import("    if name == 'torch':\n        raise KeyboardInterrupt\n")
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "slimdiar: interrupted" in done.stderr


def test_a_real_ctrl_c_while_torch_loads_waits_for_the_loading_to_finish():
    """A SIGINT during torch's import is held until the import is done, then ends the command.

    Raised inside the import, Python's KeyboardInterrupt can land in a callback run by torch's
    C++ initialisation, which then aborts the process with a core dump (status -6).
    """
    done = _run_module(
        code=_on_torch_import(
            "    if name == 'torch' and 'torch' not in sys.modules:\n"
            "        signal.raise_signal(signal.SIGINT)\n"
            "        module = real(name, *args, **kwargs)\n"
            "        print('torch finished loading', file=sys.stderr)\n"
            "        return module\n"
        )
    )
    assert done.returncode == 130, done.stderr
    assert "torch finished loading" in done.stderr
    assert "Traceback" not in done.stderr and "slimdiar: interrupted" in done.stderr
    assert "usage:" not in done.stdout  # the command did not go on after the Ctrl-C


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.3, 1.0, 2.0])
def test_a_real_sigint_at_any_moment_leaves_no_traceback_and_no_file(tmp_path, delay_s):
    out = tmp_path / "bench.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slimdiar",
            "bench",
            "wavlm-tiny",
            "--seconds",
            "0.5",
            "--repeats",
            "50",
            "--json",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        # as from a terminal: a background job's shell hands its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ output paths, before work
def output_cases(tmp_path, scoring_inputs):
    (tmp_path / "file.txt").write_text("a file\n")
    (tmp_path / "a-dir").mkdir()
    train = ["--train", tmp_path, "--dev", tmp_path]
    return {
        "score --json onto a directory": [*scoring_inputs, "--json", tmp_path / "a-dir"],
        "score --json under a file": [*scoring_inputs, "--json", tmp_path / "file.txt/x.json"],
        "bench --json onto a directory": ["bench", "wavlm-tiny", "--json", tmp_path / "a-dir"],
        "bench --json under a file": [
            "bench",
            "wavlm-tiny",
            "--json",
            tmp_path / "file.txt/b.json",
        ],
        "simulate --out onto a file": [
            "simulate",
            "--speakers-from",
            "TONES",
            "--out",
            tmp_path / "file.txt",
        ],
        "finetune --out onto a file": ["finetune", *train, "--out", tmp_path / "file.txt"],
        "prune --out under a file": [
            "prune",
            "--teacher",
            tmp_path,
            *train,
            "--out",
            tmp_path / "file.txt/exp",
        ],
        "diarize --out onto a file": ["diarize", tmp_path, "--out", tmp_path / "file.txt"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "score --json onto a directory",
        "score --json under a file",
        "bench --json onto a directory",
        "bench --json under a file",
        "simulate --out onto a file",
        "finetune --out onto a file",
        "prune --out under a file",
        "diarize --out onto a file",
    ],
)
def test_an_unwritable_output_path_is_refused_before_any_work(
    tmp_path, capsys, scoring_inputs, case
):
    argv = output_cases(tmp_path, scoring_inputs)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    status, err = run_cli(capsys, *argv)
    flag = "--json" if "--json" in case else "--out"
    assert_one_line_error(status, err, f"argument {flag}: ")
    assert "is a directory" in err or "not a directory" in err or "is a file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert (tmp_path / "file.txt").read_text() == "a file\n"


def test_an_output_in_a_read_only_directory_is_refused_before_any_work(
    tmp_path, capsys, scoring_inputs
):
    locked = read_only_dir(tmp_path)
    for argv, flag in [
        ([*scoring_inputs, "--json", locked / "der.json"], "--json"),
        (["bench", "wavlm-tiny", "--json", locked / "bench.json"], "--json"),
        (["simulate", "--speakers-from", "TONES", "--out", locked / "sim"], "--out"),
        (["finetune", "--train", tmp_path, "--dev", tmp_path, "--out", locked / "exp"], "--out"),
    ]:
        status, err = run_cli(capsys, *argv)
        assert_one_line_error(status, err, f"argument {flag}: ", f"cannot write in {locked}")
        assert not (locked / "der.json").exists() and not (locked / "sim").exists()


@pytest.mark.parametrize("command", ["diarize", "bench"])
def test_a_text_file_given_as_a_model_is_a_clear_error(tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, this is not a model\n")
    (tmp_path / "ref.rttm").write_text(RTTM)
    soundfile.write(tmp_path / "a.wav", noise(5 * SAMPLE_RATE), SAMPLE_RATE)
    if command == "diarize":
        argv = [
            "diarize",
            tmp_path / "a.wav",
            "--out",
            tmp_path / "out",
            "--quiet",
            "--oracle-segmentation",
            tmp_path / "ref.rttm",
            "--embedding",
            notes,
        ]
    else:
        argv = ["bench", notes, "--seconds", "0.5"]
    status, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, "notes.txt", "not a readable torch checkpoint")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ values in range
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["simulate", "--out", "{tmp}/sim", "--speakers-from", "TONES", "--jobs", "0"], "--jobs"),
        (
            ["simulate", "--out", "{tmp}/sim", "--speakers-from", "TONES", "--tts-speakers", "0"],
            "--tts-speakers",
        ),
        (["bench", "wavlm-tiny", "--threads", "0"], "--threads"),
        (["bench", "wavlm-tiny", "--repeats", "0"], "--repeats"),
        (["data", "check", "{tmp}", "--max-rows", "-1"], "--max-rows"),
        (["diarize", "{tmp}", "--out", "{tmp}/out", "--num-speakers", "0"], "--num-speakers"),
        (["diarize", "{tmp}", "--out", "{tmp}/out", "--batch-size", "0"], "--batch-size"),
        (["diarize", "{tmp}", "--out", "{tmp}/out", "--step", "-1"], "--step"),
    ],
)
def test_meaningless_counts_are_refused_under_the_flag_name(tmp_path, capsys, argv, flag):
    status, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert_one_line_error(status, err, f"argument {flag}: ")
    assert not (tmp_path / "sim").exists() and not (tmp_path / "out").exists()


def test_library_checks_are_reported_with_the_flags_the_user_typed(tmp_path, capsys):
    soundfile.write(tmp_path / "a.wav", noise(SAMPLE_RATE), SAMPLE_RATE)
    status, err = run_cli(
        capsys,
        "diarize",
        tmp_path / "a.wav",
        "--out",
        tmp_path / "out",
        "--min-speakers",
        "3",
        "--max-speakers",
        "2",
    )
    assert_one_line_error(status, err, "--min-speakers (3) is larger than --max-speakers (2)")
    status, err = run_cli(
        capsys,
        "simulate",
        "--out",
        tmp_path / "sim",
        "--speakers-from",
        "TONES",
        "--duration-s",
        "-1",
    )
    assert_one_line_error(status, err, "--duration-s must be > 0")
    assert "duration_s" not in err
    assert not (tmp_path / "sim").exists()


def test_negative_learning_rates_and_counts_in_a_config_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set optim\.lr_head=-1: optim\.lr_head must be > 0"):
        load_config(FinetuneConfig, "tiny", ["optim.lr_head=-1"])
    with pytest.raises(ConfigError, match=r"optim\.lr_gates must be > 0, got -0\.02"):
        load_config(PruneConfig, None, ["optim.lr_gates=-0.02"])
    with pytest.raises(ConfigError, match=r"trainer\.clip_percentile must be > 0 and <= 100"):
        load_config(FinetuneConfig, None, ["trainer.clip_percentile=150"])
    with pytest.raises(ConfigError, match=r"data\.shift_s must be > 0"):
        load_config(FinetuneConfig, None, ["data.shift_s=0"])
    (tmp_path / "neg.toml").write_text("[optim]\nlr_backbone = -2e-5\n")
    with pytest.raises(ConfigError, match=r"neg\.toml: optim\.lr_backbone must be > 0"):
        load_config(FinetuneConfig, tmp_path / "neg.toml")
    assert load_config(FinetuneConfig, None, ["optim.lr_head=5e-4"]).optim.lr_head == 5e-4


def test_a_bad_set_value_is_blamed_on_the_set_not_on_the_file(tmp_path, capsys):
    config = "tiny.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(FinetuneConfig, config, ["trainer.max_epochs=2", "trainer.batch_size=four"])
    message = str(caught.value)
    assert message.startswith("--set trainer.batch_size=four: ") and "tiny.toml" not in message
    status, err = run_cli(
        capsys,
        "finetune",
        "--config",
        config,
        "--set",
        "optim.lr_head=-1",
        "--train",
        tmp_path,
        "--dev",
        tmp_path,
        "--out",
        tmp_path / "exp",
    )
    assert_one_line_error(status, err, "--set optim.lr_head=-1: optim.lr_head must be > 0")
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------------ diarize inputs
def oracle(tmp_path):
    (tmp_path / "ref.rttm").write_text(RTTM.replace(" a ", " b ") + RTTM)
    return [
        "--oracle-segmentation",
        tmp_path / "ref.rttm",
        "--oracle-clustering",
        tmp_path / "ref.rttm",
        "--quiet",
    ]


def test_a_data_directory_is_diarized_from_its_wav_scp_and_cut_to_its_uem(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    soundfile.write(data / "wav" / "a.wav", noise(6 * SAMPLE_RATE), SAMPLE_RATE)
    soundfile.write(data / "stray.wav", noise(SAMPLE_RATE), SAMPLE_RATE)  # not in wav.scp
    (data / "wav.scp").write_text("a wav/a.wav\n")
    (data / "uem").write_text("a 1 1.00 3.50\n")
    out = tmp_path / "out"
    status, err = run_cli(capsys, "diarize", data, "--out", out, *oracle(tmp_path))
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.rttm"]
    turns = sorted(read_rttm(out / "a.rttm"), key=lambda t: t.onset_s)
    assert [t.speaker for t in turns] == ["A", "B"]
    assert turns[0].onset_s == pytest.approx(1.0, abs=0.03)
    assert turns[0].offset_s == pytest.approx(2.5, abs=0.03)
    assert turns[1].onset_s == pytest.approx(3.0, abs=0.03)
    assert turns[1].offset_s == pytest.approx(3.5, abs=0.03)


def test_a_space_in_one_file_name_skips_that_file_only(tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", noise(5 * SAMPLE_RATE), SAMPLE_RATE)
    soundfile.write(audio / "my talk.wav", noise(5 * SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "out"
    status, err = run_cli(capsys, "diarize", audio, "--out", out, *oracle(tmp_path))
    assert status == 1 and "Traceback" not in err
    assert "my talk.wav" in err and "cannot be written to RTTM" in err
    assert "1 of 2 recordings failed: my talk" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.rttm"]


def test_an_empty_wav_scp_is_an_error(tmp_path, capsys):
    (tmp_path / "wav.scp").write_text("")
    status, err = run_cli(
        capsys, "diarize", tmp_path / "wav.scp", "--out", tmp_path / "out", *oracle(tmp_path)
    )
    assert_one_line_error(status, err, "wav.scp", "lists no recording")
    assert not (tmp_path / "out").exists()


def test_the_progress_bar_is_closed_before_an_error_is_printed(tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    argv = [a for a in oracle(tmp_path) if a != "--quiet"]
    status, err = run_cli(
        capsys, "diarize", tmp_path / "broken.wav", "--out", tmp_path / "out", *argv
    )
    assert status == 1
    lines = err.split("\n")
    errors = [line for line in lines if "slimdiar: error: broken" in line]
    assert errors and all(line.startswith("slimdiar: error: broken") for line in errors), err


# ------------------------------------------------------------------ audio warnings
def test_a_truncated_wav_is_read_with_a_warning_saying_how_much_is_missing(tmp_path, caplog):
    path = tmp_path / "cut.wav"
    soundfile.write(path, noise(2 * SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + SAMPLE_RATE])  # 0.5 s of the 2 s are left
    with caplog.at_level(logging.WARNING, logger="slimdiar.data.audio"):
        info = audio_info(path)
    assert info.duration_s == pytest.approx(0.5)
    assert "truncated" in caplog.text and "1.500 s missing" in caplog.text
    caplog.clear()
    soundfile.write(tmp_path / "whole.wav", noise(SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="slimdiar.data.audio"):
        audio_info(tmp_path / "whole.wav")
    assert caplog.text == ""


def test_samples_far_above_full_scale_get_one_warning(tmp_path, caplog):
    soundfile.write(tmp_path / "loud.wav", 40 * noise(SAMPLE_RATE), SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "fine.wav", noise(SAMPLE_RATE), SAMPLE_RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="slimdiar.data.audio"):
        read_audio(tmp_path / "fine.wav")
        assert caplog.text == ""
        read_audio(tmp_path / "loud.wav", 0.0, 0.5)
        read_audio(tmp_path / "loud.wav", 0.5, 0.5)
    assert caplog.text.count("above full scale") == 1 and "loud.wav" in caplog.text


# ------------------------------------------------------------------ checkpoints and demo
def test_model_safetensors_has_the_permissions_of_the_other_checkpoint_files(tmp_path):
    config = EENDConfig(
        wavlm=preset("wavlm-tiny"), d_model=16, num_heads=2, ffn_dim=32, num_blocks=1
    )
    old = os.umask(0o022)
    try:
        directory = EEND(config).save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes["model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}, modes


def test_the_demo_says_which_checkpoints_to_diarize_with_and_how(tmp_path):
    demo = Demo(tmp_path / "demo", quick=True)
    text = demo.next_steps()
    for name in ("finetune", "finetune-pruned"):
        assert str(tmp_path / "demo" / name / "best") in text
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("slimdiar")]
    diarize, score = (c.split()[1:] for c in commands)
    args = build_parser().parse_args(diarize)
    assert args.model == str(tmp_path / "demo" / "finetune-pruned" / "best")
    assert args.step == demo.settings.pipeline_step_s
    assert args.inputs == [str(demo.data / "test")]
    scored = build_parser().parse_args(score)
    assert scored.ref == str(demo.data / "test") and scored.hyp == str(args.out)
