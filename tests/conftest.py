"""Shared fixtures: the real TLC folder (optional), and throw-away copies of the project."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
# Real TLC months sit beside the project on developer and CI machines, never in a user's clone
# (AUTOOPS_REAL_DIR points elsewhere, e.g. from a git worktree that is not beside them).
REAL_DIR = Path(os.environ.get("AUTOOPS_REAL_DIR") or ROOT.parent / "shared" / "data" / "tlc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (./test.sh runs two workers, each taking one test file at a time) the
    longest files start first (:data:`LONGEST_FIRST`, then any with slow or container tests): a
    long file taken last would leave the other worker idle at the end. Within a file the order
    stays as written (test_loop_e2e's phases)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    long_files = {item.path for item in items if any(item.iter_markers(m) for m in ("slow", "container"))}

    def start(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, item.path not in long_files

    items.sort(key=start)  # stable: file and test order kept


# The longest files, longest first (pytest --durations of a two-worker run): handing them out first
# keeps the last file short, so neither worker idles at the end. Only the order, never a result,
# depends on this list; a file missing from it starts after these.
LONGEST_FIRST = (
    "test_loop_e2e.py",
    "test_workflow_runs.py",
    "test_image.py",
    "test_postgres.py",
    "test_remote.py",
    "test_cli.py",
    "test_serve.py",
    "test_browser.py",
    "test_backtest.py",
)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` made by ``build(folder)`` once per test run and shared, read-only, by
    the callers (who copy it). Under pytest-xdist each worker has a base temp of its own, so the
    folder lives in their common parent: the first worker builds it, the other waits on a lock.
    A build that raised is not marked done, so the next caller tries again (and fails alike)."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder, done = base / name, base / f"{name}.built"
    with FileLock(base / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.write_text("")
    return folder


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not (REAL_DIR / "green_tripdata_2021-01.parquet").exists():
        pytest.skip(f"real TLC data not available at {REAL_DIR}")
    return REAL_DIR


def project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).is_file()]


def copy_project(dest: Path) -> Path:
    """A clean copy of the project's files (what a fresh clone holds) in ``dest``, as a git repo."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


@dataclass(frozen=True)
class PipelineRun:
    project: Path
    repro: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """One `dvc repro` of a fresh copy of the project, shared by the tests that only read its
    outputs (the lock check, the browser tests): a full run costs about a minute. Each worker
    gets a copy of the one run (with its output, kept in repro.json beside it)."""

    def build(folder: Path) -> None:
        project = copy_project(folder / "project")
        repro = run_in(project, "dvc", "repro")
        (folder / "repro.json").write_text(json.dumps([repro.returncode, repro.stdout, repro.stderr]))

    built = built_once(tmp_path_factory, "pipeline-run", build)
    project = tmp_path_factory.mktemp("pipeline") / "project"
    shutil.copytree(built / "project", project, symlinks=True)
    returncode, stdout, stderr = json.loads((built / "repro.json").read_text())
    return PipelineRun(project, subprocess.CompletedProcess(["dvc", "repro"], returncode, stdout, stderr))


def stage_env(project_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(project_dir)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project_dir / 'mlflow.db'}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run_in(project_dir: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command in ``project_dir`` with the test interpreter's environment."""
    return subprocess.run(
        list(args), cwd=project_dir, env=stage_env(project_dir), capture_output=True, text=True, check=check
    )


def set_params(project_dir: Path, **updates: object) -> None:
    """Edit params.yaml in place: ``set_params(p, **{"months.current": "2024-03"})``."""
    import yaml

    path = project_dir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stages(project_dir: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object]) -> dict:
    """Every stage in this process, in order, in ``project_dir`` on the project's params.yaml with
    ``overrides`` (MLflow off); returns the drift stage's verdict, as drift.json holds it."""
    from core.params import load_params
    from core.training import train
    from stages.data_checks import data_checks
    from stages.drift import drift
    from stages.evaluate import evaluate
    from stages.featurize import featurize
    from stages.ingest import ingest

    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    set_params(project_dir, **overrides)
    monkeypatch.chdir(project_dir)
    params = load_params()
    ingest(params)
    data_checks(params)
    featurize(params)
    train(params, use_mlflow=False)
    evaluate(params)
    return drift(params).as_dict()


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server a test started with ``start_new_session=True``: SIGTERM to its whole process
    group (a supervisor and its workers), SIGKILL if it is still up after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
