"""The code's shape: each DVC stage declares exactly the library modules it runs, and the library has no import cycle.

A stage whose code changed but is missing from its deps is silently skipped by `dvc repro`; hand-kept lists drift,
so the import closure is computed here from the source (``ast``: module- and function-level imports alike).
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = "qlora_diff"
SRC = REPO / "src" / PACKAGE
# Files a module reads at run time, which every stage that imports it must list too (a changed page template must
# rerun the report stage).
MODULE_DATA = {
    f"src/{PACKAGE}/html_report.py": (f"src/{PACKAGE}/templates/comparison.html", f"src/{PACKAGE}/templates/comparison.css",
                                     f"src/{PACKAGE}/templates/comparison.js", ".dvc/plots/grouped_bars.json",
                                     ".dvc/plots/reliability.json"),
    f"src/{PACKAGE}/offline_plots.py": (f"src/{PACKAGE}/templates/dvc_plots.html",),
}


def library_imports(path: Path) -> set[str]:
    """The ``qlora_diff`` modules a file imports anywhere in it, as ``src/qlora_diff/<name>.py`` paths."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and (SRC / f"{parts[1]}.py").is_file():
                found.add(f"src/{PACKAGE}/{parts[1]}.py")
    return found


def import_closure(path: Path) -> set[str]:
    todo, seen = list(library_imports(path)), set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(library_imports(REPO / module))
    return seen


def stages() -> dict[str, dict]:
    """Every stage definition; a ``foreach`` stage's template (``do``) stands for all its instances."""
    return {name: stage.get("do", stage) for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}


def stage_script(stage: dict) -> str:
    scripts = [arg for arg in shlex.split(stage["cmd"]) if arg.startswith("stages/") and arg.endswith(".py")]
    assert len(scripts) == 1, stage["cmd"]
    return scripts[0]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_exactly_its_script_and_import_closure(name):
    stage = stages()[name]
    script = stage_script(stage)
    closure = import_closure(REPO / script)
    declared_code = {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}
    data = {path for module in closure for path in MODULE_DATA.get(module, ())}
    expected = {script} | closure | {path for path in data if path.startswith("src/")}
    assert declared_code == expected, (
        f"stage {name}: add {sorted(expected - declared_code)}, remove {sorted(declared_code - expected)}")
    assert data <= set(stage["deps"]), f"stage {name}: add {sorted(data - set(stage['deps']))}"


def test_module_data_is_named_by_the_module_that_reads_it():
    """Every file in the package's templates/ is claimed by a module, and that module's source names it."""
    claimed = {data for files in MODULE_DATA.values() for data in files}
    assert {f"src/{PACKAGE}/templates/{p.name}" for p in (SRC / "templates").iterdir()} <= claimed
    for module, files in MODULE_DATA.items():
        source = (REPO / module).read_text(encoding="utf-8")
        for data in files:
            assert (REPO / data).is_file() and Path(data).stem in source, (module, data)


def test_the_closure_follows_function_level_imports():
    """The stage scripts import their heavy modules inside main(); the closure must still see them."""
    closure = import_closure(REPO / "stages/finetune.py")
    assert {"src/qlora_diff/finetune.py", "src/qlora_diff/modeling.py", "src/qlora_diff/errors.py"} <= closure


def test_library_has_no_import_cycles():
    graph = {f"src/{PACKAGE}/{p.name}": library_imports(p) for p in SRC.glob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(path + [module, dep])
            if dep not in state:
                visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_errors_module_is_the_bottom_of_the_graph():
    assert library_imports(SRC / "errors.py") == set()
    assert "src/qlora_diff/cli.py" not in set().union(*(library_imports(p) for p in SRC.glob("*.py")))
