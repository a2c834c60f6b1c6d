"""Imports go one way: models -> data -> train -> stages; models -> pipeline -> scoring -> cli.

The paper's stages (:mod:`slimdiar.stages`) stand on the one training loop (:mod:`slimdiar.train`),
which stands on :mod:`slimdiar.models` and :mod:`slimdiar.data`; the loop knows no stage.
``frames`` (the sample rate and the frame grid), ``errors``, ``fileio``, ``config`` and
``interrupts`` (Ctrl-C held while extensions load) are the floor that every part may import;
``data`` stands on ``frames``, ``errors`` and ``fileio`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "slimdiar"
BASE = {"errors", "fileio", "config", "frames", "interrupts"}
# What each part of slimdiar may import from slimdiar (besides itself and BASE).
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "config": set(),
    "frames": set(),
    "interrupts": set(),
    "models": set(),
    "data": set(),
    "train": {"models", "data"},
    "stages": {"models", "data", "train", "pretrain"},
    "scoring": set(),
    "pipeline": {"models", "data", "scoring"},
    "simulate": {"models", "data"},
    "pretrain": {"models", "data", "train"},
    "bench": {"models", "data", "pipeline", "scoring"},
    "demo": {
        "models",
        "data",
        "train",
        "stages",
        "pipeline",
        "scoring",
        "bench",
        "simulate",
        "pretrain",
    },
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


SOURCES = sorted(
    p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py",) or p.parent != PACKAGE
)


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
    for part, forbidden in (
        ("train", {"stages", "pretrain"}),
        ("models", {"train", "stages", "pretrain", "data"}),
    ):
        sources = sorted((PACKAGE / part).rglob("*.py"))
        assert sources, part
        for path in sources:
            targets = {
                name.split(".")[1]
                for name in imported_modules(path)
                if name.startswith("slimdiar.")
            }
            assert not targets & forbidden, f"{path.relative_to(PACKAGE)} imports {targets}"


# What ``data`` may import from slimdiar: nothing of the models, so that reading and labelling
# data needs no model code.
DATA_FLOOR = {"frames", "errors", "fileio"}


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "data").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_data_imports_only_frames_errors_and_fileio(path):
    for name in imported_modules(path):
        parts = name.split(".")
        if parts[0] != "slimdiar" or len(parts) == 1:
            continue
        assert parts[1] != "models", f"{path.name} imports slimdiar.models"
        assert parts[1] in DATA_FLOOR | {"data"}, f"{path.name} imports slimdiar.{parts[1]}"


def test_the_floor_imports_only_errors():
    for name in ("frames", "errors", "fileio"):
        imported = {
            m.split(".")[1]
            for m in imported_modules(PACKAGE / f"{name}.py")
            if m.startswith("slimdiar.")
        }
        assert imported <= {"errors"}, f"{name}.py imports slimdiar.{sorted(imported)}"


@pytest.mark.parametrize("name", ["convert.py", "diarizen_format.py"])
def test_checkpoint_conversion_does_not_import_the_model(name):
    """Reading WavLM checkpoints (every format, DiariZen's included) needs no model code."""
    names = imported_modules(PACKAGE / "models" / "wavlm" / name)
    assert "slimdiar.models.wavlm.model" not in names
    assert "slimdiar.models.wavlm" not in names
    assert not names & {"slimdiar.models.diarizen", "slimdiar.models.eend"}, name


# ---------------------------------------------------------------------- the import graph
def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def slimdiar_imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(module, inside_a_function, line)`` for each slimdiar module that ``path`` imports.

    ``from package import name`` counts as importing ``package.name`` when that is a module, and
    ``package`` otherwise; a name that is not a module is resolved to its longest module prefix.
    """

    def resolve(name: str) -> str | None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name or None

    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import on line {child.lineno}"
                module = child.module or ""
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                    for alias in child.names
                ]
            else:
                visit(
                    child,
                    in_function
                    or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                )
                continue
            for target in targets:
                if target.split(".")[0] == "slimdiar":
                    resolved = resolve(target)
                    assert resolved is not None, f"{path}: imports {target}, not a module"
                    found.append((resolved, in_function, child.lineno))

    visit(ast.parse(path.read_text()), False)
    return found


# Parts where a slimdiar import belongs at the top of the module: an import inside a function
# there hides a circle or a dependency. (The command line, the demo and the benchmarks import
# their heavy parts when a command runs, to start fast; they are outside this rule.)
TOP_LEVEL_IMPORTS_ONLY = ("models", "pipeline")
# (module, imported module) -> why it is imported inside a function.
FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("part", TOP_LEVEL_IMPORTS_ONLY)
def test_models_and_pipeline_import_slimdiar_at_module_top(part):
    assert (PACKAGE / part).is_dir(), part
    hidden = []
    for name, path in sorted(MODULES.items()):
        if not name.startswith(f"slimdiar.{part}"):
            continue
        for target, in_function, line in slimdiar_imports(path):
            if in_function and (name, target) not in FUNCTION_IMPORTS_ALLOWED:
                hidden.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not hidden, "slimdiar imports inside functions: " + "; ".join(hidden)


# Groups of modules known to import each other -> why.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def import_graph() -> dict[str, set[str]]:
    """Every slimdiar module -> the slimdiar modules it imports, at its top or in a function."""
    return {
        name: {target for target, _, _ in slimdiar_imports(path) if target != name}
        for name, path in MODULES.items()
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def a_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """One import cycle through the modules of ``group``, as a path that ends where it starts."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to the start
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & group):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {sorted(group)}")


def test_the_cycle_search_finds_a_hand_made_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    groups = strongly_connected(graph)
    assert groups == [{"a", "b", "c"}]
    assert a_cycle(graph, groups[0]) == ["a", "b", "c", "a"]


def test_slimdiar_imports_have_no_cycle():
    """No module reaches itself through imports, those inside functions included."""
    graph = import_graph()
    assert "slimdiar.models.wavlm.diarizen_format" in graph["slimdiar.models.wavlm.convert"]
    assert "slimdiar.models.wavlm.convert" in graph["slimdiar.models.diarizen"]
    cycles = [
        " -> ".join(a_cycle(graph, group))
        for group in strongly_connected(graph)
        if frozenset(group) not in KNOWN_CYCLES
    ]
    assert not cycles, "import cycles: " + "; ".join(cycles)
