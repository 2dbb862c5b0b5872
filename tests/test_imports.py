"""The layering rule, derived from the code: stage entry points are leaves, the library is shared.

Each module's project imports (top-level and inside functions) are read with `ast`, as
tests/test_dvc_deps.py does, so a new shortcut (autoops importing a stage's script, a stage
importing another) fails here instead of hiding inside a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.project_imports import ROOT, imported_names, module_file

PACKAGES = ("core", "stages", "serve", "autoops", "bench")


def project_imports(path: Path) -> set[str]:
    """The project modules (dotted names) that the file at ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        for name in imported_names(node):
            parts = name.split(".")
            if len(parts) > 1 and parts[0] in PACKAGES and module_file(".".join(parts[:2])):
                found.add(".".join(parts[:2]))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


STAGE_ENTRY_POINTS = [p for p in _modules("stages") if p.name != "__init__.py"]


@pytest.mark.parametrize("path", STAGE_ENTRY_POINTS, ids=lambda p: p.stem)
def test_a_stage_entry_point_imports_no_other_stage(path: Path) -> None:
    stages = sorted(m for m in project_imports(path) if m.startswith("stages."))
    assert not stages, f"{path.relative_to(ROOT)} imports {stages}: move what it needs into core/"


@pytest.mark.parametrize("package", ["core", "autoops", "serve", "bench", "scripts"])
def test_library_loop_service_and_benchmarks_never_import_a_stage(package: str) -> None:
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(m for m in project_imports(p) if m.startswith("stages."))
        for p in _modules(package)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"import the library (core/) instead of a stage's entry point: {offenders}"


def test_the_library_imports_only_itself() -> None:
    # core/ sits under everything: an import of the loop, the service or a benchmark would be a cycle.
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(m for m in project_imports(p) if not m.startswith("core."))
        for p in _modules("core")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core/ must not import the layers above it: {offenders}"


def test_the_service_does_not_import_the_loop() -> None:
    # The serving image carries core/ and serve/ only (.dockerignore): an autoops import would fail there.
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(
            m for m in project_imports(p) if m.split(".")[0] in ("autoops", "bench")
        )
        for p in _modules("serve")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"serve/ must import only core/ and itself: {offenders}"


def test_the_derivation_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from stages import drift\n    import core.io\n")
    assert project_imports(module) == {"stages.drift", "core.io"}


def _deferred_imports_without_a_reason(path: Path) -> list[str]:
    """Project imports inside a function with no comment on them or just above their block."""
    lines = path.read_text().split("\n")
    missing = []
    for function in ast.walk(ast.parse("\n".join(lines), str(path))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not any(name.split(".")[0] in PACKAGES for name in imported_names(node)):
                continue
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                above -= 1
            if "#" not in lines[node.lineno - 1] and not lines[above].strip().startswith("#"):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(missing))


def test_an_import_inside_a_function_says_why() -> None:
    # A deferred import hides coupling from a reader; it is kept only where start-up time needs it,
    # and the comment names the cost it saves (measured), so it can be undone when that changes.
    missing = [
        m
        for pkg in ("core", "stages", "autoops", "serve", "bench")
        for p in _modules(pkg)
        for m in _deferred_imports_without_a_reason(p)
    ]
    assert not missing, "import at the top, or say (with the measured cost) why not:\n" + "\n".join(missing)
