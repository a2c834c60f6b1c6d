"""``slimdiar bench`` for backbones: the JSON it writes and its errors."""

from __future__ import annotations

import json
from pathlib import Path

from slimdiar.cli import main

PRESETS = Path(__file__).resolve().parents[2] / "src" / "slimdiar" / "models" / "wavlm" / "presets"


def test_bench_compares_models_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    checkpoint = tmp_path / "ckpt"
    from slimdiar.models import WavLM

    WavLM.from_preset("wavlm-tiny").save_pretrained(checkpoint)
    code = main(
        [
            "bench",
            "wavlm-tiny",
            str(checkpoint),
            "--seconds",
            "1",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
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
    assert (
        main(
            [
                "bench",
                str(PRESETS / "wavlm-base-plus-s80.json"),
                "--seconds",
                "0.5",
                "--batch-size",
                "1",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["models"][0]
    assert abs(row["params"] - 18.88e6) / 18.88e6 < 0.005


def test_bench_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "wavlm-gigantic"]) == 2
    assert "neither a preset" in capsys.readouterr().err


def test_bench_measures_precisions_side_by_side(tmp_path, capsys):
    out = tmp_path / "bench.json"
    from slimdiar.models import WavLM

    WavLM.from_preset("wavlm-tiny").save_pretrained(tmp_path / "tiny")
    assert (
        main(
            [
                "bench",
                "wavlm-tiny",
                str(tmp_path / "tiny"),
                "--seconds",
                "0.5",
                "--batch-size",
                "2",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--dtype",
                "float32",
                "bfloat16",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "bfloat16" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["dtypes"] == ["float32", "bfloat16"] and data["precision_mode"] == "autocast"
    assert isinstance(data["cpu_native_bf16"], bool) and data["cpu_capability"]
    rows = data["models"]
    assert [(Path(r["name"]).name, r["dtype"]) for r in rows] == [
        ("wavlm-tiny", "float32"),
        ("tiny", "float32"),
        ("wavlm-tiny", "bfloat16"),
        ("tiny", "bfloat16"),
    ]
    for fp32, bf16 in zip(rows[:2], rows[2:], strict=True):
        assert bf16["params"] == fp32["params"] and bf16["precision_mode"] == "autocast"
        assert bf16["speedup_vs_float32"] == fp32["latency_s"] / bf16["latency_s"]
        assert fp32["speedup_vs_float32"] == 1.0 and fp32["precision_mode"] is None
    assert rows[2]["speedup_vs_first"] == 1.0  # speed-ups against the first model of each dtype
