"""The one front door: `autoops` runs the pipeline, its stages, the service and its tools, each as the
installed console script in a process of its own, and the retrain's PR says what its commit says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from autoops.branch import PROPOSED_TRAILER
from autoops.pr_text import proposal_text
from core.artifacts.comparison import Comparison
from core.compiled_trees import find_compiler
from serve.testing import ROOT, ServerProcess, features_with_target, random_trips, train_model_dir
from tests.conftest import stage_env
from tests.small_project import small_project

AUTOOPS = str(Path(sys.executable).parent / "autoops")
TRIP = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}


def autoops(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTOOPS, *args],
        cwd=cwd,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_lists_every_command_and_imports_no_stage() -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", AUTOOPS, "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    commands = ("repro", "stage", "summary", "serve", "compile", "export-log", "check", "propose", "promote")
    for command in commands:
        assert f" {command} " in run.stdout, command
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    # The stages run in processes of their own; scikit-learn and MLflow wait for the commands that use them.
    assert not {m for m in imported if m.split(".")[0] in ("stages", "sklearn", "mlflow")}


def test_the_pipeline_its_stages_and_the_summary(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    project = small_project(tmp_path_factory, tmp_path / "project")
    env = stage_env(project)
    summary = autoops("summary", cwd=project, env=env)
    assert summary.returncode == 0 and "MAE" in summary.stdout and "drift" in summary.stdout, summary.stderr
    repro = autoops("repro", cwd=project, env=env)
    assert repro.returncode == 0 and "up to date" in repro.stdout, repro.stdout + repro.stderr
    # One stage's own command, outside DVC: it rewrites its output (the same bytes: deterministic).
    metrics = project / "reports/metrics/evaluate.json"
    before = metrics.read_bytes()
    metrics.unlink()
    stage = autoops("stage", "evaluate", cwd=project, env=env)
    assert stage.returncode == 0, stage.stderr[-2000:]
    assert metrics.read_bytes() == before
    # The stage's own options pass through, and its own errors and exit status come back.
    bad = autoops("stage", "drift", "--current", str(tmp_path / "missing.parquet"), cwd=project, env=env)
    assert bad.returncode != 0 and "missing.parquet" in bad.stderr
    unknown = autoops("stage", "summary", cwd=project, env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: no stage 'summary': the stages are data_checks, drift, evaluate, featurize, ingest, train"
    ]
    nothing = autoops("summary", cwd=tmp_path, env=env)
    assert nothing.returncode == 1 and "no complete pipeline run found" in nothing.stdout


def test_serve_compile_and_export_log(tmp_path: Path) -> None:
    frame = features_with_target(random_trips(3000, seed=1))
    models = train_model_dir(tmp_path / "trained", frame.iloc[:2400], frame.iloc[2400:], max_iter=10)
    cache, log = tmp_path / "compiled", tmp_path / "log.sqlite"
    if find_compiler():
        compiled = autoops("compile", "--models-dir", str(models), "--cache", str(cache), "--require")
        assert compiled.returncode == 0 and "compiled:" in compiled.stdout, compiled.stderr[-2000:]
        assert any(cache.rglob("*.so"))
    env = {
        "AUTOOPS_MODELS_DIR": str(models),
        "AUTOOPS_COMPILED_CACHE": str(cache),
        "AUTOOPS_PREDICTION_LOG": str(log),
        "AUTOOPS_LOG_FLUSH_INTERVAL_S": "0.1",
    }
    with ServerProcess(cwd=tmp_path, env=env, args=("--workers", "1"), command=(AUTOOPS, "serve")) as server:
        assert httpx.post(f"{server.url}/predict", json=TRIP).status_code == 200
    exported = autoops("export-log", str(tmp_path / "served.parquet"), "--log", str(log))
    assert exported.returncode == 0 and "1 predictions" in exported.stdout, exported.stderr
    assert pq.read_table(tmp_path / "served.parquet").num_rows == 1


def test_autoops_serve_is_python_m_serve(tmp_path: Path) -> None:
    """The same function behind both: the same options, the same one-line refusal and exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOOPS_MAX_BATCH": "lots", "COLUMNS": "200"}
    runs = [
        subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        for command in ([AUTOOPS, "serve"], [sys.executable, "-m", "serve"])
        for args in (["--port", "1"], ["--help"])
    ]
    (ours, ours_help), (theirs, theirs_help) = runs[:2], runs[2:]
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr == theirs.stderr and "AUTOOPS_MAX_BATCH" in ours.stderr
    # Everything after the usage line (which names the command) is the same.
    assert (
        ours_help.stdout.split("Usage:")[1].split("\n", 1)[1]
        == theirs_help.stdout.split("Usage:")[1].split("\n", 1)[1]
    )


def test_the_pr_and_its_commit_say_the_same() -> None:
    example = Comparison.read(ROOT / "docs" / "example_pr_report" / "comparison.json")
    comparison = example.model_copy(
        update={
            "champion": example.champion.model_copy(
                update={"metrics": example.champion.metrics.model_copy(update={"mae": 3.456})}
            ),
            "challenger": example.challenger.model_copy(
                update={"metrics": example.challenger.metrics.model_copy(update={"mae": 3.012})}
            ),
            "verdict": "the challenger lowers MAE by 12.8% on the new month's holdout",
        }
    )
    reason = "data drift: 5 of 13 columns drifted (share 0.38 >= 0.3: a, b)"
    text = proposal_text("2024-05", "2024-01", reason, comparison)
    assert text.title == "Retrain on 2024-05: MAE 3.46 -> 3.01 on the new month"
    why = f"The serving model was trained on 2024-01: {reason}.\n\n{comparison.verdict}."
    assert why in text.pr_body and text.commit_body.startswith(why)
    assert text.commit_body.endswith(f"{PROPOSED_TRAILER}: 2024-05")
    # drift-watch opens the PR with exactly these words, from `autoops propose`'s outputs.
    workflow = yaml.safe_load((ROOT / ".github/workflows/drift-watch.yml").read_text())
    [step] = [s for s in workflow["jobs"]["watch"]["steps"] if "cml pr create" in s.get("run", "")]
    assert step["env"]["TITLE"] == "${{ steps.propose.outputs.title }}"
    assert step["env"]["BODY"] == "${{ steps.propose.outputs.body }}"
    assert '--title "$TITLE" --body "$BODY"' in step["run"]
