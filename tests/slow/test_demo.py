"""The embedded demo's quick mode: every stage runs and the report holds measured numbers."""

from __future__ import annotations

import json
import shutil

import pytest

from slimdiar.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_quick_demo_runs_every_stage_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PBF" in printed and "FBP" in printed
    report = json.loads((out / "report.json").read_text())
    random, ssl, fbp, pbf = report["rows"]
    assert (random["init"], ssl["init"]) == ("random", "self-supervised")
    assert random["params"] == ssl["params"]
    for pruned in (fbp, pbf):
        assert pruned["params"] < ssl["params"] and pruned["sparsity"] > 0.0
        assert pruned["macs_per_second"] < ssl["macs_per_second"]
    # the quick corpus is not the bundled WavLM's: the demo pretrained one and says so
    assert report["pretrained"]["source"] == "pretrained in this run"
    assert "pretrained in this run" in report["note"]
    assert (out / "pretrain" / "best" / "model.safetensors").is_file()
    for row in report["rows"]:
        assert 0.0 <= row["der"] and row["total_speech"] > 0
        assert row["cpu_speedup"] > 0
    assert (out / "report.md").read_text().count("|") > 20
    for plot in report["plots"]:
        assert (out / plot).stat().st_size > 0
    # a second run finds every stage done and only rebuilds the report
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "already done" in capsys.readouterr().out
