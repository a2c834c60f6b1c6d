"""tools/gpu_bench.py: the GPU run it plans, its refusal without CUDA, and a CPU smoke run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_bench.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("gpu_bench", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_bench", None)


def test_the_gpu_plan_measures_the_published_shapes(tool, capsys, tmp_path):
    assert tool.main(["--dry-run", "--out", str(tmp_path / "gpu")]) == 0
    lines = capsys.readouterr().out.splitlines()
    backbones = [line for line in lines if "--pipeline" not in line]
    pipelines = [line for line in lines if "--pipeline" in line]
    assert [line.split()[2:4] for line in backbones] == [
        ["wavlm-base-plus", "wavlm-base-plus-s80"],
        ["wavlm-large", "wavlm-large-s80"],
    ]
    for line in lines:
        assert line.startswith("slimdiar bench ") and "--device cuda" in line
        assert f"--json {tmp_path / 'gpu'}/" in line
    for line in backbones:  # batch 1 is always measured, besides --batch-size
        assert "--seconds 8 --batch-size 32 --dtype float32 bfloat16" in line
    assert len(pipelines) == 4
    assert all("--seconds 600 " in line and "resnet34" in line for line in pipelines)
    assert sorted(line.split("--dtype ")[1].split()[0] for line in pipelines) == [
        "bfloat16",
        "bfloat16",
        "float32",
        "float32",
    ]
    assert not (tmp_path / "gpu").exists()  # a dry run writes nothing


def test_without_cuda_it_stops_with_a_message(tool, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tool.main(["--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert "sees no CUDA device here" in err and "--cpu-smoke" in err
    assert not (tmp_path / "gpu").exists()
    monkeypatch.setattr(torch.version, "cuda", None)
    assert tool.main(["--out", str(tmp_path / "gpu")]) == 2
    assert "CPU-only build" in capsys.readouterr().err


def test_the_paper_anchor_is_stated(tool):
    assert tool.PAPER_SPEEDUP == {"base-plus": 4.0, "large": 2.6}
    assert "4.0x for Base+ and 2.6x for Large" in tool.__doc__
    notes = (TOOL.parents[1] / "docs" / "benchmarks-notes.md").read_text()
    assert "4.0× (Base+)" in notes and "2.6× (Large)" in notes and "tools/gpu_bench.py" in notes


@pytest.mark.slow
def test_cpu_smoke_runs_every_command(tool, tmp_path):
    """Every command of the GPU run, at tiny sizes on the CPU, writes its JSON and the summary."""
    from slimdiar.cli import main as slimdiar

    out = tmp_path / "gpu"
    assert tool.main(["--cpu-smoke", "--out", str(out)], run_command=slimdiar) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "backbone-base-plus.json",
            "backbone-large.json",
            "summary.json",
            "summary.md",
            *(
                f"pipeline-{shape}-{dtype}.json"
                for shape in ("base-plus", "base-plus-s80")
                for dtype in ("float32", "bfloat16")
            ),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cpu_smoke"] and all(r["status"] == 0 for r in summary["runs"])
    assert len(summary["runs"]) == 6
    # the pruned model of each pair, in each precision, against the paper's anchor
    assert sorted((b["shape"], b["dtype"], b["paper_speedup"]) for b in summary["backbones"]) == [
        ("base-plus", "bfloat16", 4.0),
        ("base-plus", "float32", 4.0),
        ("large", "bfloat16", 2.6),
        ("large", "float32", 2.6),
    ]
    assert all(b["speedup_b1"] > 0 and b["speedup_b2"] > 0 for b in summary["backbones"])
    assert len(summary["pipelines"]) == 4
    for p in summary["pipelines"]:
        data = json.loads((out / f"pipeline-{p['shape']}-{p['dtype']}.json").read_text())
        assert data["device"] == "cpu" and data["dtype"] == p["dtype"]
        assert data["seconds"] == 9.0 and p["rtf"] > 0
        assert "resnet34" in data["embedding"]
    assert "| base-plus | wavlm-tiny | float32 |" in (out / "summary.md").read_text()
