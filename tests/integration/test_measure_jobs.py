"""tools/measure_jobs.py: the --jobs measurement in docs/pipeline.md is generated from its JSON."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "measure_jobs.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_jobs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_the_recorded_measurement(tool):
    data = json.loads((ROOT / "docs" / "results" / "diarize-jobs.json").read_text())
    assert [run["jobs"] for run in data["runs"]] == [1, 2]
    one, two = data["runs"]
    assert one["threads"] == data["cores"] and two["threads"] == max(1, data["cores"] // 2)
    assert data["ratio"] == pytest.approx(one["median_s"] / two["median_s"], abs=1e-2)
    page = (ROOT / "docs" / "pipeline.md").read_text()
    table = page.split(tool.BEGIN)[1].split(tool.END)[0]
    assert table.strip() == tool.render(data).strip()


def test_rewrite_replaces_only_the_marked_table(tool, tmp_path):
    data = json.loads((ROOT / "docs" / "results" / "diarize-jobs.json").read_text())
    doc = tmp_path / "page.md"
    doc.write_text(f"before\n{tool.BEGIN}\nold table\n{tool.END}\nafter\n")
    tool.rewrite_doc(doc, data)
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith(f"{tool.END}\nafter\n")
    assert "old table" not in text and f"**{data['ratio']:.2f}×**" in text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        tool.rewrite_doc(doc, data)
