"""The voice-separation measurement tool: its EER, and the docs table generated from JSON."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "measure_embeddings.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_embeddings", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_equal_error_rate_by_hand(tool):
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert tool.equal_error_rate(scores, np.array([True, True, False, False])) == 0.0
    assert tool.equal_error_rate(scores, np.array([False, False, True, True])) == 1.0
    # accepting the top two: one of two targets rejected, one of two non-targets accepted
    assert tool.equal_error_rate(scores, np.array([True, False, True, False])) == 0.5


def test_trial_statistics_split_same_and_different_voices(tool):
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    stats = tool.trial_statistics(embeddings, np.array([0, 0, 1, 1]))
    # target trials: 1.0 and 0.6; non-target: 0, 0.8, 0, 0.8
    assert (stats["num_target_trials"], stats["num_nontarget_trials"]) == (2, 4)
    assert stats["same_voice_cosine_mean"] == pytest.approx(0.8)
    assert stats["different_voice_cosine_max"] == pytest.approx(0.8)
    assert stats["voice_pair_cosine_mean"][0][1] == pytest.approx(0.4)
    assert stats["voice_pair_cosine_mean"][1][1] == pytest.approx(0.6)
    # accepting the top three (1.0, 0.8, 0.8): half the targets missed, half the non-targets in
    assert stats["eer_percent"] == pytest.approx(50.0)


def test_docs_table_is_regenerated_between_the_markers(tool, tmp_path):
    report = json.loads((TOOL.parents[1] / "docs" / "embeddings.json").read_text())
    docs = tmp_path / "embeddings.md"
    docs.write_text(f"intro\n{tool.BEGIN_MARKER}\nstale\n{tool.END_MARKER}\noutro\n")
    tool.update_docs(docs, report)
    text = docs.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    ge2e = report["results"]["ge2e"]
    assert f"| ge2e | {ge2e['same_voice_cosine_mean']:.3f}" in text
    assert f"| {ge2e['eer_percent']:.1f} |" in text
    # the committed docs hold the table generated from the committed JSON
    committed = (TOOL.parents[1] / "docs" / "embeddings.md").read_text()
    assert tool.markdown_table(report) in committed
