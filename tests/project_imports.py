"""What a project module imports, read with `ast` (nothing is imported or run).

Shared by tests/test_dvc_deps.py (which files a stage runs) and tests/test_imports.py (the layering
rule), so both read an import statement the same way.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_names(node: ast.AST) -> list[str]:
    """The dotted names an import statement brings in; [] for any other node or a relative import."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from stages import io` imports the module stages.io, `from stages.io import x` a name.
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def module_file(name: str) -> Path | None:
    """The project file of the dotted module ``name`` (a module or a package's __init__)."""
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
