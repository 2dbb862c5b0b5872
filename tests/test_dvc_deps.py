"""dvc.yaml lists every project module a stage runs, so a code change never leaves an output stale.

Each stage's modules are derived from its command's module by following imports (top-level and
inside functions) through the project, with `ast`: nothing is imported or run. The package data
a module loads by name (core/resources/*) counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.project_imports import ROOT, imported_names, module_file

PACKAGES = ("core", "stages", "serve", "autoops")
RESOURCES = ROOT / "core" / "resources"
RESOURCE_NAMES = {p.name for p in RESOURCES.iterdir() if p.is_file()}


def _direct(path: Path) -> tuple[set[str], set[str]]:
    """``(project modules, resource files)`` that the module at ``path`` names."""
    modules: set[str] = set()
    resources: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and node.value in RESOURCE_NAMES:
            resources.add((RESOURCES / node.value).relative_to(ROOT).as_posix())
        for name in imported_names(node):
            parts = name.split(".")
            # A package's modules are imported through its __init__ too.
            for i in range(1, len(parts) + 1):
                if parts[0] in PACKAGES and module_file(".".join(parts[:i])):
                    modules.add(".".join(parts[:i]))
    return modules, resources


def stage_inputs(module: str) -> set[str]:
    """The files (modules and resources) that running ``python -m <module>`` reads from the project."""
    seen: set[str] = set()
    files: set[str] = set()
    # `python -m stages.x` runs the package's __init__ before the module itself.
    todo = [module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path is not None, f"{name}: no such project module"
        files.add(path.relative_to(ROOT).as_posix())
        modules, resources = _direct(path)
        files |= resources
        todo.extend(modules - seen)
    return files


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(_stages()))
def test_stage_deps_name_every_module_it_runs(stage: str) -> None:
    spec = _stages()[stage]
    command = spec["cmd"].split()
    assert command[:3] == ["python", "-m", command[2]], f"{stage}: expected `python -m <module>`"
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]]
    folders = [d.rstrip("/") + "/" for d in deps if (ROOT / d).is_dir()]
    needed = stage_inputs(command[2])
    missing = sorted(f for f in needed if f not in deps and not f.startswith(tuple(folders)))
    assert not missing, f"dvc.yaml: stage {stage} runs {missing} but does not list them under deps"
    # The other way round: a module listed but never imported makes the stage rerun for nothing.
    unused = sorted(d for d in deps if d.endswith(".py") and d not in needed)
    assert not unused, f"dvc.yaml: stage {stage} lists {unused}, which it does not import"


def test_the_derivation_follows_imports_inside_functions() -> None:
    # drift imports the model code lazily (inside a function): it still counts.
    assert "core/model.py" in stage_inputs("stages.drift")
    assert "core/resources/synthetic_calibration.json" in stage_inputs("stages.ingest")
