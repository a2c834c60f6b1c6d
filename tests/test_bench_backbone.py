"""``slimdiar bench`` for backbones: the JSON it writes and its errors."""

from __future__ import annotations

import json
from pathlib import Path

from slimdiar.cli import main

PRESETS = Path(__file__).resolve().parents[1] / "src" / "slimdiar" / "models" / "presets"


def test_bench_compares_models_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    checkpoint = tmp_path / "ckpt"
    from slimdiar.models import WavLM

    WavLM.from_preset("wavlm-tiny").save_pretrained(checkpoint)
    code = main(["bench", "wavlm-tiny", str(checkpoint), "--seconds", "1", "--batch-size", "2",
                 "--warmup", "0", "--repeats", "1", "--json", str(out)])
    assert code == 0
    assert "wavlm-tiny" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert {"models", "device", "threads", "torch"} <= set(data)
    first, second = data["models"]
    for row in data["models"]:
        assert {"name", "params", "macs_per_second", "rtf", "speedup_vs_first"} <= set(row)
        assert row["rtf"] > 0 and row["latency_batch_s"] > 0
    assert first["speedup_vs_first"] == 1.0
    assert first["params"] == second["params"] == WavLM.from_preset("wavlm-tiny").num_params()


def test_bench_of_an_architecture_file_counts_without_weights(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", str(PRESETS / "wavlm-base-plus-s80.json"), "--seconds", "0.5",
                 "--batch-size", "1", "--warmup", "0", "--repeats", "1", "--json",
                 str(out)]) == 0
    row = json.loads(out.read_text())["models"][0]
    assert abs(row["params"] - 18.88e6) / 18.88e6 < 0.005


def test_bench_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "wavlm-gigantic"]) == 2
    assert "neither a preset" in capsys.readouterr().err
