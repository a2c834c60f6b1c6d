"""tools/measure_demo_engines.py on a tiny demo directory: every model, engine and precision."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from slimdiar import testing
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.wavlm.config import wavlm_tiny
from slimdiar.pipeline import save_settings

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOOL = Path(__file__).resolve().parents[2] / "tools" / "measure_demo_engines.py"
TINY_HEAD = dict(d_model=32, num_heads=2, ffn_dim=64, num_blocks=1)


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_demo_engines", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_demo(root: Path) -> Path:
    """A demo directory as ``slimdiar demo`` leaves it, with tiny models and a tone test set."""
    for name, wavlm in {
        "finetune": wavlm_tiny(),
        "finetune-pruned": testing.pruned_tiny_wavlm_config(),
    }.items():
        torch.manual_seed(0)
        model = EEND(EENDConfig(wavlm=wavlm, **TINY_HEAD)).eval()
        with torch.no_grad():
            model.classifier.bias[0] -= 3.0  # less silence: turns to score
        checkpoint = model.save_pretrained(root / name / "best")
        save_settings(
            checkpoint,
            {
                "windows": {"duration_s": 2.0, "step_s": 0.4},
                "clustering": {"method": "agglomerative", "threshold": 0.5, "min_cluster_size": 2},
            },
        )
    (root / "finetune" / "der.json").write_text(json.dumps({"total": {"der": 0.25}}))
    testing.write_tone_datadir(root / "data" / "test", num_recordings=2, duration_s=6.0)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_every_model_and_variant_is_scored_and_timed(tool, tmp_path, one_thread):
    demo = write_demo(tmp_path / "demo")
    before = tree(demo)
    out = tmp_path / "demo-engines.json"
    argv = ["--demo", str(demo), "--work", str(tmp_path / "work"), "--json", str(out)]
    assert tool.main([*argv, "--threads", "1", "--repeats", "1"]) == 0
    assert tree(demo) == before  # nothing is written under the demo

    data = json.loads(out.read_text())
    assert data["mode"] == "demo-engines" and data["num_recordings"] == 2
    assert data["audio_s"] == pytest.approx(12.0)
    assert data["step_s"] == 0.4  # the full demo's DemoSettings.pipeline_step_s
    assert [m["name"] for m in data["models"]] == ["finetune", "finetune-pruned"]
    assert [m["pruned"] for m in data["models"]] == [False, True]
    assert [m["demo_der"] for m in data["models"]] == [0.25, None]
    for model in data["models"]:
        variants = {v["variant"]: v for v in model["variants"]}
        assert list(variants) == ["torch float32", "torch bfloat16", "onnx float32"]
        reference = variants["torch float32"]
        assert reference["der"] > 0 and reference["rttm_identical"] is True
        for variant in variants.values():
            assert variant["batch_size"] == 4  # the CPU default
            parts = variant["missed"] + variant["false_alarm"] + variant["confusion"]
            assert parts == pytest.approx(variant["der"])
            assert variant["der_change_points"] == pytest.approx(
                100 * (variant["der"] - reference["der"])
            )
            assert variant["model_s"] > 0 and len(variant["model_s_runs"]) == 1
            assert variant["model_s_ratio"] == pytest.approx(
                variant["model_s"] / reference["model_s"]
            )
        # ONNX Runtime gives the torch log-probabilities within 1e-4: the same decisions
        assert variants["onnx float32"]["rttm_identical"] is True
        assert variants["onnx float32"]["der_change_points"] == 0.0
    work = tmp_path / "work" / "finetune"
    assert (work / "onnx" / "segmentation.onnx").is_file()
    uris = ["rec0", "rec1"]
    seconds = tool.model_seconds(work / "torch-float32" / "round0", uris)
    assert data["models"][0]["variants"][0]["model_s"] == pytest.approx(seconds)


def test_a_directory_that_is_not_a_demo_is_one_line(tool, tmp_path, capsys):
    status = tool.main(["--demo", str(tmp_path), "--json", str(tmp_path / "x.json")])
    assert status == 1
    err = capsys.readouterr().err
    assert "data/test: no wav.scp" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
