"""``slimdiar diarize`` over several processes: the split, the ranks, and the same files as one.

The split and the launcher variables are checked on hand-computed cases; ``--jobs 2`` and
``torchrun --nproc_per_node 2`` are run as a user would and must write exactly the files one
process writes (the JSON's per-stage timings aside), and fail the same way on a bad recording.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from slimdiar.cli import main
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE
from slimdiar.pipeline.parallel import (
    Rank,
    durations_s,
    launcher_rank,
    rank_device,
    shard,
    thread_environment,
    threads_per_job,
)
from slimdiar.testing import tiny_eend

ROOT = Path(__file__).resolve().parents[2]
DURATIONS_S = {"rec_a": 9.0, "rec_b": 6.0, "rec_c": 12.0, "rec_d": 5.0}
FAST = ["--step", "4.0", "--batch-size", "2", "--quiet", "--threads", "1"]


# -- the split ----------------------------------------------------------------------------------


def test_shard_balances_duration_longest_first():
    """Hand-computed: 10 → 0, 7 → 1, 5 → 1 (7 < 10), 4 → 0 (10 < 12), 1 → 1 (12 < 14)."""
    durations = {"a": 10.0, "b": 7.0, "c": 5.0, "d": 4.0, "e": 1.0}
    recordings = [(uri, Path(f"{uri}.wav")) for uri in "abcde"]
    parts = shard(recordings, 2, durations)
    assert [[uri for uri, _ in part] for part in parts] == [["a", "d"], ["b", "c", "e"]]


def test_shard_depends_only_on_ids_and_durations():
    durations = {f"r{i:02d}": float(i % 5) for i in range(23)}
    recordings = [(uri, Path(f"{uri}.wav")) for uri in durations]
    parts = shard(recordings, 3, durations)
    shuffled = recordings[:]
    random.Random(0).shuffle(shuffled)
    again = shard(shuffled, 3, durations)
    assert [sorted(p) for p in parts] == [sorted(p) for p in again]
    owned = [uri for part in parts for uri, _ in part]
    assert sorted(owned) == sorted(durations)  # each recording exactly once
    # within a part, the given order is kept
    for part in parts:
        assert part == [item for item in recordings if item in part]
    # without durations: by count, 23 = 8 + 8 + 7
    assert sorted(len(p) for p in shard(recordings, 3)) == [7, 8, 8]
    # more ranks than recordings: some ranks have nothing to do
    assert [len(p) for p in shard(recordings[:2], 4, durations)] == [1, 1, 0, 0]


def test_durations_from_headers_and_zero_for_unreadable(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(24000, dtype=np.float32), SAMPLE_RATE)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    found = durations_s(
        [("a", tmp_path / "a.wav"), ("b", tmp_path / "b.wav"), ("c", tmp_path / "missing.wav")]
    )
    assert found == {"a": 1.5, "b": 0.0, "c": 0.0}


# -- launcher variables, devices, threads -------------------------------------------------------


def test_launcher_rank_from_environment():
    assert launcher_rank({}) == Rank(0, 1, 0)
    assert not launcher_rank({}).distributed
    assert launcher_rank({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Rank(3, 4, 1)
    assert launcher_rank({"RANK": "1", "WORLD_SIZE": "2"}) == Rank(1, 2, 1)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 must be in [0, WORLD_SIZE=2)"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "0"}, "WORLD_SIZE is not set"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be at least 1"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK=-1"),
    ],
)
def test_launcher_rank_rejects_bad_variables(environ, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        launcher_rank(environ)


def test_rank_device():
    assert rank_device("cuda", 1, num_gpus=2) == "cuda:1"
    assert rank_device("cuda", 3, num_gpus=2) == "cuda:1"  # more ranks than GPUs: shared
    assert rank_device("cuda:0", 1, num_gpus=2) == "cuda:0"  # an explicit index stays
    assert rank_device("cpu", 1, num_gpus=2) == "cpu"
    assert rank_device("cuda", 1, num_gpus=0) == "cuda"  # the pipeline says CUDA is missing


def test_threads_share_the_cores():
    assert threads_per_job(2, cores=2) == 1
    assert threads_per_job(4, cores=2) == 1  # never zero
    assert threads_per_job(3, cores=16) == 5
    assert threads_per_job(1, cores=8) == 8
    assert thread_environment(3) == {
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
        "OPENBLAS_NUM_THREADS": "3",
    }


def test_jobs_under_a_launcher_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    reference = tmp_path / "ref.rttm"
    reference.write_text("")
    status = main(
        [
            "diarize",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--jobs",
            "2",
            "--oracle-segmentation",
            str(reference),
            "--oracle-clustering",
            str(reference),
        ]
    )
    assert status == 2
    assert "--jobs 2 cannot run under a launcher" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- several processes write what one writes ----------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny EEND checkpoint, four recordings and a broken one, and a reference RTTM."""
    root = tmp_path_factory.mktemp("parallel")
    checkpoint = tiny_eend().save_pretrained(root / "eend")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for uri, duration_s in DURATIONS_S.items():
        waveform = 0.1 * rng.normal(size=int(duration_s * SAMPLE_RATE))
        soundfile.write(audio / f"{uri}.wav", waveform.astype(np.float32), SAMPLE_RATE)
        for k, speaker in enumerate("AB"):  # two speakers taking turns every second
            for start in np.arange(k, duration_s - 1, 2.0):
                lines.append(
                    f"SPEAKER {uri} 1 {start:.3f} 1.200 <NA> <NA> {uri}_{speaker} <NA> <NA>\n"
                )
    (audio / "rec_broken.wav").write_bytes(b"RIFF....not really a wave file")
    reference = root / "ref.rttm"
    reference.write_text("".join(lines))
    return root, checkpoint, audio, reference


def command_args(setup, out):
    root, checkpoint, audio, reference = setup
    return [
        "diarize",
        "--model",
        str(checkpoint),
        str(audio),
        "--out",
        str(out),
        "--oracle-clustering",
        str(reference),
        *FAST,
    ]


def written(out: Path) -> dict[str, object]:
    """Every output file: RTTM text, JSON without its timings."""
    files: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data.pop("timings_s")
            files[path.name] = data
        else:
            files[path.name] = path.read_text()
    return files


@pytest.fixture(scope="module")
def one_process(setup):
    """What one process writes (in a subprocess with one thread, like the workers)."""
    out = setup[0] / "one"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **thread_environment(1)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    run = subprocess.run(
        [sys.executable, "-m", "slimdiar", *command_args(setup, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr[-3000:]  # the broken recording
    assert "1 of 5 recordings failed: rec_broken" in run.stderr
    files = written(out)
    assert sorted(files) == sorted(
        f"{uri}.{ext}" for uri in DURATIONS_S for ext in ("json", "rttm")
    )
    assert all(files[f"{uri}.rttm"] for uri in DURATIONS_S)  # every recording has turns
    return files


@pytest.mark.slow
def test_jobs_write_the_same_files_as_one_process(setup, one_process, capfd):
    out = setup[0] / "jobs"
    status = main([*command_args(setup, out), "--jobs", "2"])
    err = capfd.readouterr().err  # the workers write to the file descriptor
    assert status == 1, err  # the broken recording fails in its worker
    assert "slimdiar: error: " in err and "rec_broken" in err
    assert "rank 0 of 2" in err and "rank 1 of 2" in err
    assert written(out) == one_process
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.slow
def test_torchrun_ranks_write_the_same_files_as_one_process(setup, one_process):
    out = setup[0] / "torchrun"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **thread_environment(1)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29547",
        "-m",
        "slimdiar",
        *command_args(setup, out),
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, run.stderr[-3000:]  # the broken recording
    assert "rank 0 of 2" in run.stderr and "rank 1 of 2" in run.stderr
    assert "all 2 ranks: 1 of 5 recordings failed" in run.stderr, run.stderr[-3000:]
    assert written(out) == one_process


def test_each_rank_writes_only_its_own_recordings(setup, capsys, monkeypatch):
    """Ranks run one after the other in this process (no rendezvous): together, what one writes."""
    root, _, audio, reference = setup
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    oracle = [
        "--oracle-segmentation",
        str(reference),
        "--oracle-clustering",
        str(reference),
        "--quiet",
    ]

    def diarize(out, rank=None, world_size=None):
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world_size))
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        status = main(["diarize", str(audio), "--out", str(out), *oracle])
        return status, capsys.readouterr().err

    status, _ = diarize(root / "oracle-one")
    assert status == 1
    one = written(root / "oracle-one")
    parts = shard(
        sorted((p.stem, p) for p in audio.iterdir()),
        3,
        durations_s(sorted((p.stem, p) for p in audio.iterdir())),
    )
    union: dict[str, object] = {}
    for rank, part in enumerate(parts):
        status, err = diarize(root / f"oracle-rank{rank}", rank, 3)
        mine = {uri for uri, _ in part} - {"rec_broken"}
        files = written(root / f"oracle-rank{rank}")
        assert {name.rsplit(".", 1)[0] for name in files} == mine  # its own, nothing else
        assert status == (1 if "rec_broken" in {uri for uri, _ in part} else 0)
        assert f"rank {rank} of 3: {len(part)} recordings" in err
        union.update(files)
    assert union == one
    # more ranks than recordings: the last has nothing to do, and says so
    status, err = diarize(root / "oracle-rank5", 5, 6)
    assert status == 0 and "rank 5 of 6: 0 recordings, 0 failed" in err
    assert not (root / "oracle-rank5").exists()
