"""Imports go one way: models -> prune -> data -> train -> pipeline -> scoring/bench -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "slimdiar"
BASE = {"errors", "fileio", "config"}
# What each part of slimdiar may import from slimdiar (besides itself and BASE).
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "config": set(),
    "models": set(),
    "prune": {"models"},
    "data": {"models"},
    "train": {"models", "prune", "data"},
    "scoring": set(),
    "pipeline": {"models", "data", "scoring"},
    "simulate": {"models", "data"},
    "pretrain": {"models", "data", "train"},
    "bench": {"models", "data", "pipeline", "scoring"},
    "demo": {"models", "prune", "data", "train", "pipeline", "scoring", "bench", "simulate",
             "pretrain"},
    "cli": None,  # the command line may import anything; nothing imports it
}
THIRD_PARTY_FORBIDDEN = {
    "models": {"scipy", "pyannote", "soundfile", "soxr"},
    "scoring": {"torch"},
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py",)
                 or p.parent != PACKAGE)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    part = part_of(path)
    if part in ("__main__", "__init__"):
        return
    assert part in ALLOWED, f"{part} is not placed in the layers of this test"
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top == "slimdiar":
            target = name.split(".")[1] if "." in name else "__init__"
            assert target != "cli" or part == "cli", f"{path.name} imports the command line"
            allowed = ALLOWED[part]
            if allowed is not None and target != "__init__":
                assert target in allowed | BASE | {part}, f"{path.name} imports slimdiar.{target}"
        assert top not in THIRD_PARTY_FORBIDDEN.get(part, set()), f"{path.name} imports {top}"


def test_checkpoint_conversion_does_not_import_the_model():
    names = imported_modules(PACKAGE / "models" / "wavlm" / "convert.py")
    assert "slimdiar.models.wavlm.model" not in names
    assert "slimdiar.models.wavlm" not in names
