"""One small, fully run copy of the project per test session, shared by several test modules.

A module-scoped fixture would run the pipeline once per module that uses it; this builds it once
per test run (tests/conftest.py, built_once: also across pytest-xdist workers) and hands out
copies, which are cheap at this size.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import built_once, copy_project, set_params, stage_env

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
# A third of a month and a shorter fit: the 2024-05 shift is as strong as at full size, and calm
# months stay calm (at a few thousand rows Evidently's tests call sampling noise in the zone
# columns drift). A stage's run costs about the same at this size as at 3000 rows: its imports,
# not its rows, are most of it.
SMALL = {"synthetic.rows_per_month": 20000, "train.hist_gradient_boosting.max_iter": 100}


def _run(cwd: Path, *args: str) -> None:
    result = subprocess.run(list(args), cwd=cwd, env=stage_env(cwd), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def small_project(factory: pytest.TempPathFactory, dest: Path) -> Path:
    """A copy (in ``dest``) of the project after a person's `dvc repro` on small months, committed.

    That run registered its model in the copy's mlflow.db as version 1, alias champion.
    """

    def build(built: Path) -> None:
        copy_project(built)
        set_params(built, **SMALL)
        _run(built, "dvc", "repro")
        _run(built, *GIT, "add", "-A")
        _run(built, *GIT, "commit", "-qm", "Pipeline run on small months")

    shutil.copytree(built_once(factory, "small-project", build), dest, symlinks=True)
    return dest
