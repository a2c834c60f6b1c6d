"""recipes/run.sh: the stage commands of both orders, stage guards, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from slimdiar.data import DataDir
from slimdiar.data.corpora import prepare_corpus
from slimdiar.models.wavlm import WavLM
from slimdiar.testing import (
    ami_words_xml,
    make_aishell4_release,
    make_alimeeting_release,
    make_ami_release,
    write_pcm_audio,
)

REPO = Path(__file__).resolve().parents[2]
RUN_SH = REPO / "recipes" / "run.sh"
RECIPES = sorted((REPO / "recipes").rglob("*.sh"))
BIN = str(Path(sys.executable).parent)


def run_recipe(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(RUN_SH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def commands(output: str) -> list[list[str]]:
    """The commands a run printed (lines '+ cmd args')."""
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def sets(command: list[str]) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command) if word == "--set"]


BASE = [
    "--wavlm",
    "models/wavlm-base-plus",
    "--train",
    "data/train",
    "--dev",
    "data/dev",
    "--test",
    "data/ami/test",
    "--test",
    "data/aishell4/test",
    "--exp",
    "exp/run",
    "--embedding",
    "models/wespeaker/pytorch_model.bin",
    "--dry-run",
]


def test_every_recipe_starts_with_usage_and_strict_mode():
    assert {p.relative_to(REPO).as_posix() for p in RECIPES} >= {
        "recipes/run.sh",
        "recipes/paper.sh",
        "recipes/ami/run.sh",
        "recipes/aishell4/run.sh",
        "recipes/alimeeting/run.sh",
        "recipes/compound/run.sh",
    }
    for path in RECIPES:
        lines = path.read_text().splitlines()
        assert lines[0] == "#!/usr/bin/env bash", path
        assert lines[1].startswith("# Usage: "), path
        assert "set -euo pipefail" in lines, path
        assert os.access(path, os.X_OK), path
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_finetune_first_commands():
    result = run_recipe(
        *BASE,
        "--sparsity",
        "0.9",
        "--finetune-set",
        "trainer.batch_size=8",
        "--prune-set",
        "trainer.batch_size=4",
    )
    assert result.returncode == 0, result.stderr
    finetune, prune, distill, stage3, diarize1, score1, diarize2, score2 = commands(result.stdout)
    assert finetune[:2] == ["slimdiar", "finetune"]
    assert option(finetune, "--backbone") == "models/wavlm-base-plus"
    assert option(finetune, "--out") == "exp/run/stage0-finetune"
    assert option(finetune, "--config") == "wavlm-base-plus"
    assert sets(finetune) == ["trainer.batch_size=8"]
    assert prune[:2] == ["slimdiar", "prune"]
    assert option(prune, "--teacher") == "exp/run/stage0-finetune/best"
    assert option(prune, "--sparsity") == "0.9"
    assert sets(prune) == ["trainer.batch_size=4"]
    assert distill[:2] == ["slimdiar", "distill"]
    assert option(distill, "--student") == "exp/run/stage1-prune/pruned"
    assert option(distill, "--teacher") == "exp/run/stage0-finetune/best"
    assert sets(distill) == []
    assert option(stage3, "--backbone") == "exp/run/stage2-distill/best"
    # The paper's stage-3 schedule, then the user's overrides (the later --set wins).
    assert sets(stage3) == ["trainer.max_epochs=20", "trainer.patience=5", "trainer.batch_size=8"]
    assert option(diarize1, "--model") == "exp/run/stage3-finetune/best"
    assert diarize1[2] == "data/ami/test/wav.scp"
    assert option(diarize1, "--out") == "exp/run/diarize/ami_test"
    # the paper's embedding, with the clustering settings that belong to it
    assert option(diarize1, "--embedding") == "models/wespeaker/pytorch_model.bin"
    assert option(diarize1, "--threshold") == "0.70"
    assert option(diarize1, "--min-cluster-size") == "30"
    assert option(score1, "--ref") == "data/ami/test"
    assert option(score1, "--hyp") == "exp/run/diarize/ami_test"
    assert option(score1, "--collar") == "0"
    assert option(score2, "--json") == "exp/run/der/aishell4_test.json"
    assert option(diarize2, "--out") == "exp/run/diarize/aishell4_test"


def test_prune_first_commands_and_gpus():
    result = run_recipe(
        *BASE,
        "--order",
        "prune-first",
        "--ngpu",
        "4",
        "--channel",
        "0",
        "--embedding",
        "models/resnet34.pt",
        "--device",
        "cuda",
    )
    assert result.returncode == 0, result.stderr
    assert "stage 0: nothing to do in the prune-first order" in result.stdout
    prune, distill, stage3, diarize, _, _, _ = commands(result.stdout)
    launcher = ["torchrun", "--nproc_per_node", "4", "-m", "slimdiar"]
    assert prune[:6] == launcher + ["prune"]
    assert option(prune, "--teacher") == "models/wavlm-base-plus"
    assert option(distill, "--teacher") == "models/wavlm-base-plus"
    assert stage3[:6] == launcher + ["finetune"]
    assert option(stage3, "--backbone") == "exp/run/stage2-distill/best"
    assert "data.channel=0" in sets(prune) and "data.channel=0" in sets(stage3)
    # Inference is one process.
    assert diarize[:2] == ["slimdiar", "diarize"]
    assert option(diarize, "--embedding") == "models/resnet34.pt"
    assert option(diarize, "--device") == "cuda"


def test_stage_guards_and_reuse_of_a_finetuned_model():
    result = run_recipe(
        *BASE, "--stage", "1", "--stop-stage", "2", "--finetuned", "exp/shared/best"
    )
    assert result.returncode == 0, result.stderr
    prune, distill = commands(result.stdout)
    assert option(prune, "--teacher") == option(distill, "--teacher") == "exp/shared/best"
    result = run_recipe(*BASE, "--stage", "4", "--final-model", "exp/unpruned/best")
    diarize = commands(result.stdout)[0]
    assert len(commands(result.stdout)) == 4
    assert option(diarize, "--model") == "exp/unpruned/best"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--order", "backwards"], "--order must be finetune-first or prune-first"),
        (["--ngpu", "0"], "--ngpu must be a positive integer"),
        (["--stage", "7"], "--stage and --stop-stage must be 0..4"),
        (["--bogus", "1"], "unknown option --bogus"),
        (["--exp"], "option --exp needs a value"),
    ],
)
def test_bad_options(args, message):
    result = run_recipe(*BASE, *args)
    assert result.returncode == 1
    assert message in result.stderr


def test_stage_4_needs_the_resnet_embedding_unless_ge2e_is_allowed():
    no_embedding = [
        a for a in BASE if a not in ("--embedding", "models/wespeaker/pytorch_model.bin")
    ]
    for extra in ([], ["--embedding", "ge2e"]):
        result = run_recipe(*no_embedding, *extra)
        assert result.returncode == 1 and commands(result.stdout) == []
        assert "stage 4 needs the WeSpeaker ResNet34 embedding" in result.stderr
        assert "--allow-ge2e" in result.stderr
    allowed = run_recipe(*no_embedding, "--allow-ge2e")
    assert allowed.returncode == 0, allowed.stderr
    diarize = [c for c in commands(allowed.stdout) if c[:2] == ["slimdiar", "diarize"]]
    assert len(diarize) == 2
    # GE2E runs with the model's own clustering settings, not the ResNet34's
    assert all("--threshold" not in c and "--embedding" not in c for c in diarize)
    # training stages alone need no embedding
    assert run_recipe(*no_embedding, "--stop-stage", "3").returncode == 0


def test_missing_required_options():
    result = run_recipe("--train", "a", "--dev", "b", "--test", "c", "--dry-run")
    assert result.returncode == 1 and "--exp is required" in result.stderr
    result = run_recipe("--exp", "e", "--stop-stage", "3", "--dry-run")
    assert result.returncode == 1 and "--train and --dev are required" in result.stderr
    result = run_recipe("--exp", "e", "--stage", "4", "--dry-run")
    assert result.returncode == 1 and "--test is required" in result.stderr
    result = run_recipe("--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage: recipes/run.sh")


# ---------------------------------------------------------------------- end to end
def toy_data(root: Path) -> dict[str, Path]:
    """Two tone "speakers" over noise: 6 s recordings, a train, dev and test directory."""
    rng = np.random.default_rng(0)
    dirs = {}
    for name, count in (("train", 2), ("dev", 1), ("test", 1)):
        directory = root / "toy" / name
        directory.mkdir(parents=True)
        scp, rttm, uem = [], [], []
        for index in range(count):
            uri = f"{name}{index}"
            time_s = np.arange(6 * 16000) / 16000
            audio = 0.01 * rng.standard_normal(len(time_s))
            audio[:48000] += 0.3 * np.sin(2 * np.pi * 220 * time_s[:48000])
            audio[32000:] += 0.3 * np.sin(2 * np.pi * 600 * time_s[32000:])
            soundfile.write(directory / f"{uri}.wav", audio.astype(np.float32), 16000)
            scp.append(f"{uri} {uri}.wav\n")
            rttm.append(f"SPEAKER {uri} 1 0.000 3.000 <NA> <NA> a <NA> <NA>\n")
            rttm.append(f"SPEAKER {uri} 1 2.000 4.000 <NA> <NA> b <NA> <NA>\n")
            uem.append(f"{uri} 1 0.000 6.000\n")
        (directory / "wav.scp").write_text("".join(scp))
        (directory / "rttm").write_text("".join(rttm))
        (directory / "uem").write_text("".join(uem))
        DataDir.load(directory)
        dirs[name] = directory
    return dirs


TINY = [
    "trainer.max_epochs=1",
    "trainer.max_steps_per_epoch=2",
    "trainer.progress=false",
    "trainer.device=cpu",
]
TINY_DISTILL = TINY + [
    "data.chunk_duration_s=2.0",
    "data.shift_s=1.0",
    "data.val_chunk_duration_s=2.0",
    "data.val_shift_s=2.0",
    "trainer.batch_size=2",
    "trainer.num_workers=0",
]


@pytest.mark.slow
def test_tiny_finetune_first_end_to_end_and_restart(tmp_path):
    data = toy_data(tmp_path / "data")
    wavlm = WavLM.from_preset("wavlm-tiny").save_pretrained(tmp_path / "wavlm-tiny")
    exp = tmp_path / "exp"
    args = [
        "--wavlm",
        str(wavlm),
        "--config",
        "tiny",
        "--train",
        str(data["train"]),
        "--dev",
        str(data["dev"]),
        "--test",
        str(data["test"]),
        "--exp",
        str(exp),
        "--finetune-set",
        'model.frontend="wavlm"',
        "--prune-set",
        "prune.warmup_epochs=1",
        "--allow-ge2e",
    ]
    for value in TINY:
        args += ["--finetune-set", value]
    for value in TINY_DISTILL:
        args += ["--prune-set", value, "--distill-set", value]
    result = run_recipe(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in (
        "stage0-finetune/best",
        "stage1-prune/pruned",
        "stage1-prune/report.json",
        "stage2-distill/best",
        "stage3-finetune/best",
        "diarize/toy_test/test0.rttm",
    ):
        assert (exp / path).exists(), path
    # Stage 3 fine-tuned the distilled, pruned WavLM (not the original one).
    stage3 = json.loads((exp / "stage3-finetune" / "config.json").read_text())
    assert str(exp / "stage2-distill" / "best") in json.dumps(stage3)
    der = json.loads((exp / "der" / "toy_test.json").read_text())
    assert set(der["files"]) == {"test0"} and 0.0 <= der["total"]["der"]
    # A second run skips every finished stage and runs nothing.
    again = run_recipe(*args, "--stop-stage", "3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert commands(again.stdout) == []
    for stage, path in (
        (0, "stage0-finetune/best"),
        (1, "stage1-prune/pruned"),
        (2, "stage2-distill/best"),
        (3, "stage3-finetune/best"),
    ):
        assert f"stage {stage}: {exp / path} exists, skipped" in again.stdout


# ---------------------------------------------------------------------- corpus recipes
def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(REPO / "recipes" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_paper_runs_of_the_compound_recipe(tmp_path):
    result = run_script(
        "compound/run.sh",
        "--dry-run",
        "--ami-dir",
        "/c/ami",
        "--ami-rttm-dir",
        "/s/rttms",
        "--aishell4-dir",
        "/c/a4",
        "--alimeeting-dir",
        "/c/ali",
        "--wavlm-base-plus",
        "m/bp",
        "--wavlm-large",
        "m/l",
        "--ngpu",
        "2",
        "--embedding",
        "m/resnet34.bin",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    prepares = [c for c in printed if c[:2] == ["slimdiar", "prepare"]]
    assert [c[2] for c in prepares] == ["ami", "aishell4", "alimeeting"]
    assert option(prepares[0], "--rttm-dir") == "/s/rttms"
    assert "--extract-channel" in prepares[1] and "--extract-channel" in prepares[2]
    trainings = [c for c in printed if c[0] == "torchrun"]
    runs = {option(c, "--out").removeprefix("exp/compound/") for c in trainings}
    # 2 models x (finetune-first: stage 0 once, then 1-3 for two sparsities;
    #             prune-first: 1-3 for two sparsities)
    assert len(trainings) == 2 * (1 + 3 * 4)
    assert "base-plus/finetune-first-s0.8/stage0-finetune" in runs
    assert "large/prune-first-s0.9/stage3-finetune" in runs
    assert "base-plus/finetune-first-s0.9/stage0-finetune" not in runs
    prunes = {option(c, "--out"): option(c, "--teacher") for c in trainings if "prune" in c}
    shared = "exp/compound/large/finetune-first-s0.8/stage0-finetune/best"
    assert prunes["exp/compound/large/finetune-first-s0.9/stage1-prune"] == shared
    assert prunes["exp/compound/large/prune-first-s0.8/stage1-prune"] == "m/l"
    configs = {option(c, "--config") for c in trainings if "finetune" in c}
    assert configs == {"wavlm-base-plus", "wavlm-large"}
    # stage 1 of each WavLM runs with its own reference setting (Large: global batch 32)
    prune_configs = {
        option(c, "--out").split("/")[2]: option(c, "--config") for c in trainings if "prune" in c
    }
    assert prune_configs == {"base-plus": "prune-wavlm-base-plus", "large": "prune-wavlm-large"}
    diarized = [option(c, "--model") for c in printed if c[:2] == ["slimdiar", "diarize"]]
    # 3 test sets x (8 pruned runs + 2 unpruned models).
    assert len(diarized) == 3 * 10
    assert diarized.count(shared) == 3
    assert all(("data.channel=0" in sets(c)) for c in trainings)


@pytest.mark.parametrize(
    ("script", "args", "prepare"),
    [
        (
            "ami/run.sh",
            ["--corpus-dir", "/c/ami", "--annotations-dir", "/c/nxt"],
            [
                "slimdiar",
                "prepare",
                "ami",
                "--corpus-dir",
                "/c/ami",
                "--out",
                "data/ami",
                "--annotations-dir",
                "/c/nxt",
            ],
        ),
        (
            "aishell4/run.sh",
            ["--corpus-dir", "/c/a4", "--dev-sessions", "5"],
            [
                "slimdiar",
                "prepare",
                "aishell4",
                "--corpus-dir",
                "/c/a4",
                "--out",
                "data/aishell4",
                "--extract-channel",
                "--dev-sessions",
                "5",
            ],
        ),
        (
            "alimeeting/run.sh",
            ["--corpus-dir", "/c/ali"],
            [
                "slimdiar",
                "prepare",
                "alimeeting",
                "--corpus-dir",
                "/c/ali",
                "--out",
                "data/alimeeting",
                "--extract-channel",
            ],
        ),
    ],
)
def test_single_corpus_recipes(tmp_path, script, args, prepare):
    corpus = script.split("/")[0]
    result = run_script(
        script,
        "--dry-run",
        *args,
        "--wavlm-base-plus",
        "m/bp",
        "--models",
        "base-plus",
        "--sparsities",
        "0.9",
        "--orders",
        "prune-first",
        "--allow-ge2e",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    assert printed[0] == prepare
    prune = printed[1]
    assert option(prune, "--train") == f"data/{corpus}/train"
    assert option(prune, "--dev") == f"data/{corpus}/dev"
    assert option(prune, "--out") == f"exp/{corpus}/base-plus/prune-first-s0.9/stage1-prune"
    assert printed[4][2] == f"data/{corpus}/test/wav.scp"
    diarize = printed[4]
    assert diarize[:2] == ["slimdiar", "diarize"] and "--embedding" not in diarize
    missing = run_script(script, "--dry-run", cwd=tmp_path)
    assert missing.returncode == 1 and "--corpus-dir is required" in missing.stderr


def test_compound_data_from_synthetic_releases(tmp_path):
    """Corpora prepared beforehand are reused; the compound sets are their concatenation."""
    annotations = make_ami_release(tmp_path / "ami")
    write_pcm_audio(
        tmp_path / "ami" / "amicorpus" / "IS1008a" / "audio" / "IS1008a.Array1-01.wav", 2.0, 1
    )
    (annotations / "words" / "IS1008a.A.words.xml").write_text(
        ami_words_xml("IS1008a", "A", ['<w nite:id="d0" starttime="0.10" endtime="0.90">hi</w>'])
    )
    make_aishell4_release(tmp_path / "aishell4")
    make_alimeeting_release(tmp_path / "alimeeting")
    data = tmp_path / "data"
    prepare_corpus(
        "ami", tmp_path / "ami", data / "ami", annotations_dir=annotations, skip_missing=True
    )
    prepare_corpus(
        "aishell4", tmp_path / "aishell4", data / "aishell4", extract_channel=True, dev_sessions=1
    )
    prepare_corpus("alimeeting", tmp_path / "alimeeting", data / "alimeeting", extract_channel=True)
    result = run_script("compound/run.sh", "--data-only", "--data", "data", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "+ slimdiar prepare" not in result.stdout
    train = DataDir.load(data / "compound" / "train", channel=0)
    dev = DataDir.load(data / "compound" / "dev", channel=0)
    assert list(train.recordings) == [
        "ES2002a",
        "20200707_L_R001S01C01",
        "20200708_L_R002S01C01",
        "20200711_S_R001S01C01",
        "R0003_M0046_MS801",
        "R0015_M0151_MS802",
    ]
    assert list(dev.recordings) == ["IS1008a", "20200710_M_R001S01C01", "R8001_M8004_MS801"]
    assert all(r.num_channels == 1 for r in train.recordings.values())
    assert len(dev.all_turns()) == 1 + 3 + 3
    assert not (tmp_path / "exp").exists()
