"""Imports go one way: models -> data -> train -> stages; models -> pipeline -> scoring -> cli.

The paper's stages (:mod:`slimdiar.stages`) stand on the one training loop (:mod:`slimdiar.train`),
which stands on :mod:`slimdiar.models` and :mod:`slimdiar.data`; the loop knows no stage.
``frames`` (the sample rate and the frame grid), ``errors``, ``fileio`` and ``config`` are the
floor that every part may import; ``data`` stands on ``frames``, ``errors`` and ``fileio`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "slimdiar"
BASE = {"errors", "fileio", "config", "frames"}
# What each part of slimdiar may import from slimdiar (besides itself and BASE).
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "config": set(),
    "frames": set(),
    "models": set(),
    "data": set(),
    "train": {"models", "data"},
    "stages": {"models", "data", "train", "pretrain"},
    "scoring": set(),
    "pipeline": {"models", "data", "scoring"},
    "simulate": {"models", "data"},
    "pretrain": {"models", "data", "train"},
    "bench": {"models", "data", "pipeline", "scoring"},
    "demo": {"models", "data", "train", "stages", "pipeline", "scoring", "bench", "simulate",
             "pretrain"},
    "testing": {"models", "data"},
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


def test_the_training_loop_knows_no_stage():
    """``train`` imports neither ``stages`` nor ``pretrain``; ``models`` imports neither layer."""
    for part, forbidden in (("train", {"stages", "pretrain"}),
                            ("models", {"train", "stages", "pretrain", "data"})):
        sources = sorted((PACKAGE / part).rglob("*.py"))
        assert sources, part
        for path in sources:
            targets = {name.split(".")[1] for name in imported_modules(path)
                       if name.startswith("slimdiar.")}
            assert not targets & forbidden, f"{path.relative_to(PACKAGE)} imports {targets}"


# What ``data`` may import from slimdiar: nothing of the models, so that reading and labelling
# data needs no model code.
DATA_FLOOR = {"frames", "errors", "fileio"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "data").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_data_imports_only_frames_errors_and_fileio(path):
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] != "slimdiar" or len(parts) == 1:
            continue
        assert parts[1] != "models", f"{path.name} imports slimdiar.models"
        assert parts[1] in DATA_FLOOR | {"data"}, f"{path.name} imports slimdiar.{parts[1]}"


def test_the_floor_imports_only_errors():
    for name in ("frames", "errors", "fileio"):
        imported = {m.split(".")[1] for m in imported_modules(PACKAGE / f"{name}.py")
                    if m.startswith("slimdiar.")}
        assert imported <= {"errors"}, f"{name}.py imports slimdiar.{sorted(imported)}"


def test_checkpoint_conversion_does_not_import_the_model():
    names = imported_modules(PACKAGE / "models" / "wavlm" / "convert.py")
    assert "slimdiar.models.wavlm.model" not in names
    assert "slimdiar.models.wavlm" not in names
