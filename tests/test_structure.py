"""The code's shape: each DVC stage declares exactly the library modules it runs, and the library has no import cycle.

A stage whose code changed but is missing from its deps is silently skipped by `dvc repro`; hand-kept lists drift,
so the import closure is computed here from the source (``ast``: module- and function-level imports alike).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PACKAGE = "qlora_diff"
SRC = REPO / "src" / PACKAGE
# Files a module reads at run time, which every stage that imports it must list too (a changed page template must
# rerun the report stage).
MODULE_DATA = {
    f"src/{PACKAGE}/render/html_report.py": (
        f"src/{PACKAGE}/render/templates/comparison.html", f"src/{PACKAGE}/render/templates/comparison.css",
        f"src/{PACKAGE}/render/templates/comparison.js", ".dvc/plots/grouped_bars.json", ".dvc/plots/reliability.json"),
    f"src/{PACKAGE}/tools/offline_plots.py": (f"src/{PACKAGE}/tools/templates/dvc_plots.html",),
}
# The layers that must run without torch or transformers (a report or a comparison of two runs needs no model).
TORCH_FREE = ("analysis", "render")
# Developer tools: outside the pipeline's layers, never imported by a stage or by the library.
TOOLS = "tools"


def module_path(dotted: str) -> str | None:
    """``qlora_diff.core.config`` -> ``src/qlora_diff/core/config.py`` when that file exists."""
    path = REPO / "src" / Path(*dotted.split(".")).with_suffix(".py")
    return str(path.relative_to(REPO)) if dotted.startswith(f"{PACKAGE}.") and path.is_file() else None


def imported_names(path: Path) -> list[str]:
    """Every dotted name a file imports anywhere in it (function-level imports too): ``import a.b`` gives a.b, and
    ``from a import b`` gives a and a.b, since b may be a module."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def library_imports(path: Path) -> set[str]:
    """The ``qlora_diff`` modules a file imports anywhere in it, as ``src/qlora_diff/<package>/<name>.py`` paths."""
    return {module for module in map(module_path, imported_names(path)) if module}


def library_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py")


def import_closure(path: Path) -> set[str]:
    todo, seen = list(library_imports(path)), set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(library_imports(REPO / module))
    return seen


def stages() -> dict[str, dict]:
    """Every stage definition; a ``foreach`` stage's template (``do``) or a ``matrix`` stage's body stands for all
    its instances."""
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
    assert {str(p.relative_to(REPO)) for p in SRC.glob("*/templates/*")} <= claimed
    for module, files in MODULE_DATA.items():
        source = (REPO / module).read_text(encoding="utf-8")
        for data in files:
            assert (REPO / data).is_file() and Path(data).stem in source, (module, data)


def test_the_closure_follows_function_level_imports():
    """The stage scripts import their heavy modules inside main(); the closure must still see them."""
    closure = import_closure(REPO / "stages/finetune.py")
    assert {"src/qlora_diff/model/finetune.py", "src/qlora_diff/model/modeling.py", "src/qlora_diff/core/errors.py"} <= closure


def test_library_has_no_import_cycles():
    graph = {str(p.relative_to(REPO)): library_imports(p) for p in library_modules()}
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
    assert library_imports(SRC / "core" / "errors.py") == set()
    assert "src/qlora_diff/core/cli.py" not in set().union(*(library_imports(p) for p in library_modules()))


def test_every_module_lives_in_a_layer():
    assert not [p.name for p in SRC.glob("*.py") if p.name != "__init__.py"], "modules belong in a sub-package"
    assert {p.parent.name for p in library_modules()} == {"core", "data", "model", "analysis", "render", "tools"}


def test_the_pipeline_never_imports_the_developer_tools():
    importers = [str(p.relative_to(REPO)) for p in [*library_modules(), *(REPO / "stages").glob("*.py")]
                 if p.parent.name != TOOLS and any(f"/{TOOLS}/" in m for m in library_imports(p))]
    assert importers == []


def top_level(names: list[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_lm_eval_is_a_benchmark_dependency_only():
    """lm-evaluation-harness checks the scorer from outside (benchmarks/lm_eval_agreement.py): no pipeline module
    imports it and the project's requirements do not name it; the benchmark's own requirements pin it."""
    pipeline = [*library_modules(), *(REPO / "stages").glob("*.py")]
    assert [str(p.relative_to(REPO)) for p in pipeline if "lm_eval" in top_level(imported_names(p))] == []
    assert "lm_eval" in top_level(imported_names(REPO / "benchmarks" / "lm_eval_agreement.py"))
    for requirements in ("requirements.txt", "pyproject.toml"):
        assert "lm-eval" not in (REPO / requirements).read_text(encoding="utf-8").replace("lm_eval", "lm-eval")
    assert re.search(r"^lm-eval==\d", (REPO / "benchmarks" / "requirements-lm-eval.txt").read_text(), re.M)


TORCH_CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
heavy = sorted(name for name in ("torch", "transformers", "peft", "bitsandbytes") if name in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize("module", sorted(str(p.relative_to(SRC.parent).with_suffix("")).replace("/", ".")
                                          for p in library_modules() if p.parent.name in TORCH_FREE))
def test_analysis_and_render_run_without_torch(module):
    """Importing the module (and everything it imports) in a fresh interpreter loads no torch or transformers."""
    result = subprocess.run([sys.executable, "-c", TORCH_CHECK, module], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


def test_torch_check_sees_a_torch_import():
    """The check above is live: a model module does load torch."""
    result = subprocess.run([sys.executable, "-c", TORCH_CHECK, "qlora_diff.model.modeling"], capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert "torch" in result.stdout.split(",")


def declared_outputs(stage: dict) -> set[Path]:
    """A stage's outs, metrics and plots in dvc.yaml (each entry a path or ``{path: options}``)."""
    entries = [e for kind in ("outs", "metrics", "plots") for e in stage.get(kind, [])]
    return {Path(next(iter(e)) if isinstance(e, dict) else e) for e in entries}


@pytest.mark.parametrize("name", sorted(stages()))
def test_dvc_yaml_outputs_are_the_paths_module(name):
    """Output paths are written once in Python (core/paths.py); dvc.yaml, which cannot import it, must agree."""
    from qlora_diff.core import paths

    stage = stages()[name]
    key = "snli" if "${key}" in stage["cmd"] or "${item.set}" in stage["cmd"] else None
    seed = 7 if "${item.seed}" in stage["cmd"] else None
    instance = lambda path: str(path).replace("${key}", "snli").replace("${item.set}", "snli").replace(
        "${item.seed}", "7")
    declared = {Path(instance(p)) for p in declared_outputs(stage)}
    assert declared == paths.stage_outputs(name, key, seed)


OUTPUT_ROOTS = ("models/", "metrics/", "reports/", "dvclive/", "checkpoints/", "data/prepared/")


def string_literals(path: Path) -> list[str]:
    """Every string constant of a file's code (f-string parts included), docstrings excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in
                                        [*library_modules(), *(REPO / "stages").glob("*.py")]
                                        if p.name != "paths.py"))
def test_no_module_spells_an_output_path(path):
    """Stage scripts and the library take every output path from core/paths.py."""
    spelled = [text for text in string_literals(REPO / path) if text.startswith(OUTPUT_ROOTS)]
    assert spelled == []


def test_the_path_check_sees_a_spelled_path(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('"""Writes reports/x.md."""\nOUT = f"reports/{name}.md"\n')
    assert [t for t in string_literals(module) if t.startswith(OUTPUT_ROOTS)] == ["reports/"]


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_every_benchmark_imports(script):
    """The benchmarks run by hand, not in the suite: at least their imports must follow the library's layout."""
    subprocess.run([sys.executable, "-c", f"import {Path(script).stem}"], cwd=REPO / "benchmarks", check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


RUN_CACHE_BLIND_KEYS = ("size", "nfiles")   # DVC leaves keys of these names out of the run-cache key, at any depth
# report lists all of eval_sets to order the sets; every set's size reaches it through its data deps (the sets'
# metrics), which the run-cache key does include.
RUN_CACHE_BLIND_EXEMPT = {"report"}


def blind_paths(value, prefix: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [path for key, item in value.items()
            for path in ([f"{prefix}.{key}"] if key in RUN_CACHE_BLIND_KEYS else blind_paths(item, f"{prefix}.{key}"))]


@pytest.mark.parametrize("name", sorted(set(stages()) - RUN_CACHE_BLIND_EXEMPT))
def test_params_dvc_would_leave_out_of_the_run_cache_key_are_listed_by_full_path(name):
    """iterative/dvc#10296: a param named `size` inside a mapping param (eval_sets.SET.size) is dropped from the
    run-cache key, so changing it restores the old outputs. Listed by its full path it counts."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    declared = [str(p).replace("${key}", "snli").replace("${item.set}", "snli") for p in stages()[name].get("params", [])]
    for entry in declared:
        value = params
        for part in entry.split("."):
            value = value[part]
        missing = [path for path in blind_paths(value, entry) if path not in declared]
        assert not missing, f"stage {name}: list {missing} in its params (iterative/dvc#10296)"


def test_dvc_still_needs_the_full_path_of_a_size_param(tmp_path):
    """The bug the test above guards against, on a one-stage repo: without the full path, changing `size` restores
    the previous output from the run-cache; with it, the stage reruns. When DVC fixes #10296 the first half fails:
    then the full paths in dvc.yaml can go."""
    (tmp_path / "gen.py").write_text("import yaml\nopen('out.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))"
                                     "['sets']['a']['size']))\n")
    dvc = lambda *args: subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, check=True,
                                       capture_output=True, text=True)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q")

    def repro_with(size: int, full_path: bool) -> str:
        (tmp_path / "params.yaml").write_text(f"sets:\n  a:\n    size: {size}\n")
        params = ["sets.a", "sets.a.size"] if full_path else ["sets.a"]
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gen": {
            "cmd": "python gen.py", "deps": ["gen.py"], "params": params, "outs": ["out.txt"]}}}))
        dvc("repro")
        return (tmp_path / "out.txt").read_text()

    assert repro_with(30, full_path=False) == "30"
    assert repro_with(40, full_path=False) == "30", "DVC fixed #10296: drop the `.size` params from dvc.yaml"
    assert repro_with(50, full_path=True) == "50"
    assert repro_with(60, full_path=True) == "60"


def test_the_lock_holds_only_stages_of_the_pipeline():
    """dvc repro never prunes dvc.lock: a stage renamed or a replicate dropped (train.extra_seeds) leaves its entry,
    which then reads as a result of the committed pipeline."""
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert sorted(set(locked) - set(listed)) == []
