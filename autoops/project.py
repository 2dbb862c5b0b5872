"""The project `autoops` runs in: its root, its scratch space, and what dvc.yaml declares."""

from __future__ import annotations

from pathlib import Path

import yaml

from autoops.gitops import LoopError
from core.months import MonthError, validate_month
from core.paths import DVC_LOCK, DVC_YAML, PARAMS_FILE, WORK_DIR

# One branch per retrained month.
BRANCH_PREFIX = "retrain/"


def project_root() -> Path:
    root = Path.cwd()
    missing = [p.name for p in (PARAMS_FILE, DVC_YAML) if not (root / p).exists()]
    if missing:
        raise LoopError(f"no {' or '.join(missing)} in {root}: run autoops from the project's root folder")
    return root


def ensure_work_dir(root: Path) -> Path:
    folder = root / WORK_DIR
    folder.mkdir(exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Scratch space of `autoops`; never committed.\n*\n")
    return folder


def to_month(value: str) -> str:
    try:
        return validate_month(value)
    except MonthError as exc:
        raise LoopError(str(exc)) from exc


def dvc_outputs(root: Path) -> tuple[list[str], list[str]]:
    """``(cached, uncached)`` output paths declared in dvc.yaml.

    The uncached ones (``cache: false``: metrics, plot data, the model card) are tracked by git;
    the cached ones are listed in the ``.gitignore`` DVC writes beside them.
    """
    stages = (yaml.safe_load((root / DVC_YAML).read_text()) or {}).get("stages", {})
    cached, uncached = [], []
    for stage in stages.values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            (uncached if isinstance(options, dict) and options.get("cache") is False else cached).append(path)
    return cached, uncached


def pipeline_paths(root: Path) -> list[str]:
    """What `dvc repro` rewrites: dvc.lock and the outputs dvc.yaml declares, nothing else.

    Uncommitted changes to these are the normal state after `autoops check` and are safe to
    discard when switching branches; a hand-edited file beside them (a note in reports/) is not.
    """
    cached, uncached = dvc_outputs(root)
    return [DVC_LOCK.as_posix(), *cached, *uncached]


def lock_outputs(text: str) -> dict[str, str]:
    """``{path: md5}`` of the outputs a dvc.lock (its text) pins."""
    lock = yaml.safe_load(text) or {}
    return {
        out["path"]: str(out.get("md5") or "")
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs", [])
    }
