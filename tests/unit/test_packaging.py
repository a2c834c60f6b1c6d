"""What an installed slimdiar carries: bundled configs, the demo's sizes, its version, py.typed."""

from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path

import pytest

import slimdiar
from slimdiar.config import bundled_config, bundled_configs, config_source, load_config
from slimdiar.demo.settings import DemoSettings, demo_settings
from slimdiar.errors import ConfigError
from slimdiar.stages.finetune import FinetuneConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_configs_are_package_data_and_found_by_name():
    names = bundled_configs()
    assert {
        "tiny",
        "wavlm-base-plus",
        "wavlm-large",
        "prune-wavlm-base-plus",
        "prune-wavlm-large",
        "pretrain-tiny",
        "demo",
        "demo-quick",
    } <= set(names)
    for name in names:
        assert (resources.files("slimdiar") / "configs" / f"{name}.toml").is_file()
    by_name = load_config(FinetuneConfig, "wavlm-large")
    assert by_name == load_config(FinetuneConfig, "wavlm-large.toml")
    assert by_name.model.backbone == "wavlm-large"


def test_a_file_shadows_a_bundled_name_and_a_path_never_becomes_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text("[trainer]\nmax_epochs = 7\n")
    assert load_config(FinetuneConfig, "tiny.toml").trainer.max_epochs == 7
    assert load_config(FinetuneConfig, "tiny").trainer.max_epochs != 7  # the bundled one
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(FinetuneConfig, "sub/wavlm-large.toml")
    assert str(config_source("sub/wavlm-large.toml")) == "sub/wavlm-large.toml"


def test_an_unknown_name_lists_the_bundled_configs():
    with pytest.raises(
        ConfigError,
        match=r"^wavlm-huge: no such config file, nor a bundled "
        r"config \(bundled: .*wavlm-base-plus",
    ):
        load_config(FinetuneConfig, "wavlm-huge")
    with pytest.raises(ConfigError, match="no such bundled config"):
        bundled_config("wavlm-huge")


def test_the_demo_sizes_are_the_bundled_demo_configs():
    full, quick = demo_settings(), demo_settings(quick=True)
    assert full.splits == {"train": 24, "dev": 3, "test": 5} and full.duration_s == 60.0
    assert (full.finetune_epochs, full.prune_epochs, full.prune_warmup_epochs) == (10, 8, 3)
    assert (full.batch_size, full.max_steps_per_epoch, full.distill_shift_s) == (16, 0, 1.0)
    assert full.thresholds == (0.4, 0.45, 0.5) and full.sparsity == 0.8
    assert quick.splits == {"train": 6, "dev": 2, "test": 2} and quick.tts_speakers == 16
    assert (quick.max_steps_per_epoch, quick.pipeline_step_s, quick.thresholds) == (
        4,
        2.0,
        (0.45, 0.6),
    )
    # each file gives every size the dataclass leaves without a default, and nothing else
    required = {
        f.name
        for f in dataclasses.fields(DemoSettings)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    for name in ("demo", "demo-quick"):
        keys = set(tomllib.loads(bundled_config(name).read_text(encoding="utf-8")))
        assert required <= keys <= {f.name for f in dataclasses.fields(DemoSettings)}


def test_a_demo_config_without_a_required_size_is_a_clear_error(tmp_path):
    (tmp_path / "demo.toml").write_text("duration_s = 30.0\n")
    with pytest.raises(
        ConfigError,
        match=r"the configuration lacks the keys splits, "
        r"tts_speakers",
    ):
        load_config(DemoSettings, tmp_path / "demo.toml")


def test_one_version_and_the_typed_marker():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "slimdiar.__version__"}
    assert slimdiar.__version__.count(".") == 2
    data = pyproject["tool"]["setuptools"]["package-data"]["slimdiar"]
    assert {"py.typed", "configs/*.toml", "simulate/voice-pool.json"} <= set(data)
    assert (resources.files("slimdiar") / "py.typed").is_file()
