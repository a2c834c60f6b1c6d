"""The demo's comparison: which pretrained WavLM it takes, and how its four rows are reported."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from slimdiar.demo.pretrained import (
    PretrainSettings,
    bundled_dir,
    check_bundled,
    sha256_of,
    unusable_because,
)
from slimdiar.demo.report import build_comparison, render_comparison, render_report
from slimdiar.demo.run import Demo
from slimdiar.demo.settings import SYSTEMS, demo_settings
from slimdiar.errors import ConfigError
from slimdiar.models.checkpoint import WEIGHTS_NAME
from slimdiar.models.wavlm import WavLM
from slimdiar.models.wavlm.config import preset

SETTINGS = PretrainSettings(
    epochs=2, steps_per_epoch=0, batch_size=4, crop_s=2.0, clusters=20, lr=1e-3,
    utterances_per_speaker=5,
)  # fmt: skip


def write_corpus(data: Path, speakers: dict[str, list[str]]) -> Path:
    for split, names in speakers.items():
        (data / split).mkdir(parents=True, exist_ok=True)
        (data / split / "simulation.json").write_text(json.dumps({"speakers": names}))
    return data


def test_a_bundled_checkpoint_fits_only_its_settings_and_a_corpus_with_unseen_held_out_speakers(
    tmp_path,
):
    data = write_corpus(tmp_path, {"train": ["a", "b"], "dev": ["c"], "test": ["d", "e"]})
    record = {"settings": dataclasses.asdict(SETTINGS), "train_speakers": ["a", "b", "x"]}
    assert unusable_because(record, SETTINGS, data) is None
    other = dataclasses.replace(SETTINGS, epochs=3)
    assert "other pretraining settings" in unusable_because(record, other, data)
    record["train_speakers"].append("d")
    assert "1 of this corpus's dev/test speakers" in unusable_because(record, SETTINGS, data)


def test_a_damaged_or_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="missing under .*make pretrained-demo-backbone"):
        check_bundled(tmp_path, "0" * 64)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"weights")
    (tmp_path / "record.json").write_text(json.dumps({"steps": 3}))
    with pytest.raises(ConfigError, match="damaged or was replaced"):
        check_bundled(tmp_path, "0" * 64)
    record = check_bundled(tmp_path, sha256_of(tmp_path / WEIGHTS_NAME))
    assert record == {"steps": 3, "sha256": sha256_of(tmp_path / WEIGHTS_NAME)}


def test_the_repository_bundles_the_pretrained_demo_wavlm_the_demo_config_names():
    settings = demo_settings()
    record = check_bundled(bundled_dir(), settings.pretrained_sha256)
    assert record["settings"] == dataclasses.asdict(settings.pretraining())
    model = WavLM.from_pretrained(bundled_dir())
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in WavLM(preset("wavlm-demo")).state_dict().items()}
    # what it was pretrained on: the training speakers of the full demo's corpus only
    assert len(record["train_speakers"]) == record["audio"]["train"]["speakers"] > 0
    assert record["train_masked_loss_last"] < record["train_masked_loss_first"]


def test_pretrain_after_a_run_with_the_bundled_wavlm_is_refused_in_the_same_directory(tmp_path):
    demo = Demo(tmp_path / "demo", quick=True, pretrain=True, say=lambda line: None)
    write_corpus(demo.data, {"train": ["a"], "dev": ["b"], "test": ["c"]})
    (demo.data / "test" / "wav.scp").write_text("")
    demo.pretrained_record.write_text(json.dumps({"source": "bundled", "path": "x"}))
    with pytest.raises(ConfigError, match="made with the bundled pretrained WavLM.*another --out"):
        demo.run()


def test_the_comparison_is_the_mean_and_sample_std_over_seeds(tmp_path):
    ders = {0: (0.20, 0.10), 1: (0.30, 0.14), 2: (0.40, 0.12)}
    runs = {}
    for seed, (a, b) in ders.items():
        runs[seed] = tmp_path / f"seed-{seed}"
        for name, der in (("x", a), ("y", b)):
            (runs[seed] / name).mkdir(parents=True)
            total = {"der": der, "missed": 1.0, "false_alarm": 2.0, "confusion": 3.0, "total": 10.0}
            (runs[seed] / name / "der.json").write_text(json.dumps({"total": total}))
            tuned = {"threshold": 0.5, "dev_der": {"0.5": der + 0.01, "0.6": 0.9}}
            (runs[seed] / name / "threshold.json").write_text(json.dumps(tuned))
    comparison = build_comparison(runs, [("x", "X"), ("y", "Y")])
    x, y = comparison["rows"]
    assert comparison["seeds"] == [0, 1, 2]
    assert math.isclose(x["der"]["mean"], 0.30) and math.isclose(x["der"]["std"], 0.10)
    assert math.isclose(y["der"]["mean"], 0.12) and math.isclose(y["der"]["std"], 0.02)
    # missed, false alarm and confusion are fractions of the reference speech
    assert math.isclose(x["missed"]["mean"], 0.1) and x["missed"]["std"] == 0.0
    assert x["per_seed"] == {"0": 0.20, "1": 0.30, "2": 0.40}
    table = "\n".join(render_comparison(comparison))
    assert math.isclose(x["dev_der"]["mean"], 0.31)  # the dev DER at the tuned threshold
    row = "| X | 31.0 ± 10.0 | 30.0 ± 10.0 | 10.0 ± 0.0 | 20.0 ± 0.0 | 30.0 ± 0.0 |"
    assert row + " 20.0, 30.0, 40.0 |" in table


def test_the_report_has_the_four_systems_of_the_paper_comparison():
    rows = [
        {
            "system": system.label,
            "init": system.init,
            "order": system.order,
            "sparsity": 0.0 if i < 2 else 0.8,
            "params": 1e6,
            "macs_per_second": 1e9,
            "cpu_speedup": 1.0,
            "der": 0.1 * (i + 1),
            "missed": 1.0,
            "false_alarm": 1.0,
            "confusion": 1.0,
            "total_speech": 10.0,
            "clustering_threshold": 0.5,
            "dev_der": 0.5,
        }
        for i, system in enumerate(SYSTEMS)
    ]
    kept = {"conv_channels": {"teacher": [4], "student": [2]}}
    report = {
        "quick": False,
        "device": "cpu",
        "threads": 2,
        "torch": "2",
        "rows": rows,
        "kept": {"FBP": kept, "PBF": kept},
        "note": "the note",
        "budget": "the budget",
        "plots": [],
    }
    text = render_report(report)
    assert [system.name for system in SYSTEMS] == [
        "finetune-random",
        "finetune",
        "finetune-pruned",
        "pbf-finetune",
    ]
    for system, der in zip(SYSTEMS, ("10.0", "20.0", "30.0", "40.0"), strict=True):
        line = next(line for line in text.splitlines() if line.startswith(f"| {system.label} |"))
        assert f"| {der} |" in line
    assert "FBP kept:" in text and "PBF kept:" in text and "the note" in text


def test_a_generated_section_is_replaced_in_place_or_appended(tmp_path):
    from slimdiar.fileio import write_section_atomic

    page = tmp_path / "page.md"
    page.write_text("# Title\n\nby hand\n")
    write_section_atomic(page, "<!-- b -->\none\n<!-- e -->\n", "<!-- b -->", "<!-- e -->")
    assert page.read_text() == "# Title\n\nby hand\n\n<!-- b -->\none\n<!-- e -->\n"
    page.write_text(page.read_text() + "\nafter\n")
    write_section_atomic(page, "<!-- b -->\ntwo\n<!-- e -->\n", "<!-- b -->", "<!-- e -->")
    assert page.read_text() == "# Title\n\nby hand\n\n<!-- b -->\ntwo\n<!-- e -->\n\nafter\n"


def test_a_trained_backbone_is_fine_tuned_at_the_pretrained_learning_rate(tmp_path, monkeypatch):
    import slimdiar.stages.finetune as finetune_stage

    seen = {}
    monkeypatch.setattr(
        finetune_stage, "run", lambda config, *a, **k: seen.setdefault(k["backbone"], config)
    )
    demo = Demo(tmp_path / "demo", say=lambda line: None)
    demo.settings.lr_backbone, demo.settings.lr_backbone_pretrained = 1e-3, 2e-4
    demo.finetune("finetune-random", 1, "wavlm-demo")
    demo.finetune("finetune", 1, bundled_dir())
    assert seen["wavlm-demo"].optim.lr_backbone == 1e-3
    assert seen[str(bundled_dir())].optim.lr_backbone == 2e-4
    assert seen[str(bundled_dir())].optim.lr_head == demo.settings.lr_head
