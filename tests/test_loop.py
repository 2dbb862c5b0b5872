"""The loop's building blocks, fast: params editing, latest month, CLI errors, evidence, release, promotion.

The whole loop (git, DVC and all) runs in tests/test_loop_e2e.py.

Size (~640 lines): the fast tests of every loop module, sharing the mini-project, model and git
helpers at the top; one file per module would copy or import them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from autoops import (
    branch,
    evidence,
    evidence_plots,
    evidence_report,
    github,
    params_edit,
    propose,
    release,
    sources,
)
from autoops.cli import app
from autoops.gitops import Git, LoopError
from core.artifacts.comparison import Comparison
from core.artifacts.drift import Drift
from core.artifacts.evaluation import EvaluationMetrics
from core.artifacts.model_card import ModelCard
from core.bootstrap import percent_with_interval
from core.features import FEATURES, TARGET
from core.io import file_sha256
from core.model import save_model
from core.params import DataParams, ParamsError, load_params
from tests.conftest import ROOT

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _mini_project(folder: Path, *, git: bool = False) -> Path:
    """params.yaml and dvc.yaml only: enough for everything that fails before running DVC."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, folder / name)
    if git:
        _git(folder, "init", "-q", "-b", "main")
        _git(folder, "add", "-A")
        _git(folder, "commit", "-qm", "init")
    return folder


def _cli(folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


# --- params.yaml editing -----------------------------------------------------------------------


def test_set_months_changes_only_the_months(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", path)
    before = path.read_text().splitlines()
    assert params_edit.set_months(path, reference="2024-05", current="2024-05")
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    # Comments, order and quoting survive: only the two month lines differ.
    assert [b.strip() for _, b in changed] == ['reference: "2024-05"', 'current: "2024-05"']
    params = load_params(path)
    assert (params.months.reference, params.months.current) == ("2024-05", "2024-05")
    assert not params_edit.set_months(path, current="2024-05")


def test_set_months_refuses_an_impossible_combination(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", path)
    original = path.read_text()
    with pytest.raises(ParamsError, match=r"before months\.reference"):
        params_edit.set_months(path, current="2020-01")
    assert path.read_text() == original


# --- latest-month ------------------------------------------------------------------------------


def test_latest_month_synthetic_is_the_last_complete_month(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    assert sources.latest_month(tmp_path, params, date(2024, 6, 15)) == "2024-05"
    assert sources.latest_month(tmp_path, params, date(2025, 1, 1)) == "2024-12"


def test_latest_month_dir_is_the_newest_file(tmp_path: Path) -> None:
    folder = tmp_path / "tlc"
    folder.mkdir()
    for name in ("green_tripdata_2023-01.parquet", "green_tripdata_2024-02.parquet", "notes.txt"):
        (folder / name).write_text("x")
    params = load_params(ROOT / "params.yaml").model_copy(
        update={"data": DataParams(source="dir", dir=str(folder))}
    )
    assert sources.latest_month(tmp_path, params, date(2024, 6, 1)) == "2024-02"
    # A file from "the future" (relative to --as-of) is not yet published.
    assert sources.latest_month(tmp_path, params, date(2023, 5, 1)) == "2023-01"
    empty = tmp_path / "empty"
    empty.mkdir()
    params = params.model_copy(update={"data": DataParams(source="dir", dir=str(empty))})
    with pytest.raises(LoopError, match="no green_tripdata"):
        sources.latest_month(tmp_path, params, date(2024, 6, 1))


def test_latest_month_tlc_walks_back_with_head_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[str] = []

    def probe(month: str, params: DataParams) -> bool:
        probed.append(month)
        return month <= "2024-03"

    monkeypatch.setattr("core.sources.tlc.probe_month", probe)
    params = load_params(ROOT / "params.yaml").model_copy(update={"data": DataParams(source="tlc")})
    assert sources.latest_month(tmp_path, params, date(2024, 6, 20)) == "2024-03"
    assert probed == ["2024-06", "2024-05", "2024-04", "2024-03"]
    monkeypatch.setattr("core.sources.tlc.probe_month", lambda month, params: False)
    with pytest.raises(LoopError, match="no month"):
        sources.latest_month(tmp_path, params, date(2024, 6, 20))


def test_latest_month_cli_writes_the_step_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gh_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    code, text = _cli(_mini_project(tmp_path / "p"), monkeypatch, "latest-month", "--as-of", "2024-07-02")
    assert code == 0 and text.strip() == "2024-06"
    assert out.read_text() == "month=2024-06\n"


# --- GitHub Actions side channels --------------------------------------------------------------


def test_step_outputs_single_and_multi_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gh_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    github.write_outputs({"breach": True, "tags": "a:1\na:2", "none": None})
    lines = out.read_text().splitlines()
    assert lines[0] == "breach=true"
    assert lines[1].startswith("tags<<EOF_") and lines[2:4] == ["a:1", "a:2"] and lines[4] == lines[1][6:]
    assert lines[5] == "none="
    monkeypatch.delenv("GITHUB_OUTPUT")
    github.write_outputs({"x": 1})  # outside Actions: a no-op, not an error
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/auto-ops")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    assert github.run_url() == "https://github.com/acme/auto-ops/actions/runs/42"


# --- clear one-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--month", "2024-13"], "invalid month '2024-13'"),
        (["check", "--month", "last-month"], "expected YYYY-MM"),
        (["check", "--month", "2023-12"], "before the model's reference month 2024-01"),
        (["check", "--as-of", "yesterday"], "invalid date 'yesterday'"),
        (["propose"], "pass --month YYYY-MM or run `autoops check` first"),
        (["propose", "--month", "2024-05"], "is not inside a git repository"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    code, text = _cli(_mini_project(tmp_path / "p"), monkeypatch, *args)
    assert code == 1
    assert message in text and "Traceback" not in text
    assert text.startswith("error:")


def test_outside_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = _cli(tmp_path, monkeypatch, "check", "--month", "2024-03")
    assert code == 1 and "run autoops from the project's root folder" in text


def test_propose_refuses_a_dirty_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _mini_project(tmp_path / "p", git=True)
    (project / "notes.md").write_text("mine\n")
    _git(project, "add", "notes.md")
    _git(project, "commit", "-qm", "notes")
    (project / "notes.md").write_text("mine, edited\n")
    code, text = _cli(project, monkeypatch, "propose", "--month", "2024-05", "--no-push")
    assert code == 1 and "uncommitted change to notes.md" in text


def test_pipeline_changes_do_not_count_as_dirty(tmp_path: Path) -> None:
    project = _mini_project(tmp_path / "p", git=True)
    git = Git(project)
    # What `autoops check` leaves behind: months.current moved, plus regenerated outputs.
    params_edit.set_months(project / "params.yaml", current="2024-04")
    branch.ensure_only_pipeline_changes(git)
    params_edit.set_months(project / "params.yaml", reference="2024-02")
    with pytest.raises(LoopError, match=r"uncommitted change to params\.yaml"):
        branch.ensure_only_pipeline_changes(git)


def test_propose_push_needs_a_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _mini_project(tmp_path / "p", git=True)
    code, text = _cli(project, monkeypatch, "propose", "--month", "2024-05")
    assert code == 1 and "no git remote 'origin'" in text


def test_propose_nothing_to_retrain_for_an_old_month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _mini_project(tmp_path / "p", git=True)
    code, text = _cli(project, monkeypatch, "propose", "--month", "2024-01", "--no-push")
    assert code == 1 and "already learned 2024-01" in text


def test_propose_must_run_at_the_repository_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _mini_project(tmp_path / "p", git=True)
    sub = _mini_project(project / "sub")
    code, text = _cli(sub, monkeypatch, "propose", "--month", "2024-05", "--no-push")
    assert code == 1 and "run autoops from the repository root" in text


# --- models, evidence and the report -----------------------------------------------------------


def _fit(seed: int, slope: float) -> object:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(200, len(FEATURES)))
    return LinearRegression().fit(x, slope * x[:, 5] + rng.normal(0, 0.1, 200))


def _models_dir(folder: Path, model: object, month: str) -> Path:
    sha = save_model(model, folder / "model.pkl")
    ModelCard(
        name="green-taxi-duration",
        version=sha[:12],
        model_type="linear_regression",
        model_params={},
        model_file="model.pkl",
        model_sha256=sha,
        training_months=[month],
        reference_month=month,
        features=list(FEATURES),
        categorical_features=[],
        input_columns=[],
        target=TARGET,
        training_rows=200,
        data_source="synthetic",
        train_data_sha256="0" * 64,
        holdout_metrics={"mae": 1.0, "rmse": 1.0, "r2": 0.9, "rows": 10},
    ).write(folder / "model_card.json")
    return folder


def _holdout(path: Path, slope: float, rows: int = 300) -> Path:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.uniform(0, 10, size=(rows, len(FEATURES))), columns=list(FEATURES))
    frame["pickup_hour"] = rng.integers(0, 24, rows)
    frame[TARGET] = slope * frame["trip_distance"]
    frame.to_parquet(path)
    return path


def test_compare_scores_both_models_on_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The world changed: trips now take 3 min per mile instead of 2.
    monkeypatch.chdir(tmp_path)  # the repository root, as for every autoops command
    champion = _models_dir(tmp_path / "champion", _fit(0, 2.0), "2024-01")
    challenger = _models_dir(tmp_path / "challenger", _fit(1, 3.0), "2024-05")
    holdout = _holdout(tmp_path / "holdout.parquet", 3.0)
    baseline = _evaluation(rmse=0.1)
    comparison, scored = evidence.compare(champion, challenger, holdout, baseline)
    assert comparison.holdout.rows == len(scored) == 300
    assert comparison.holdout.sha256 == file_sha256(holdout)
    # Issue 20, point 3: the path as the repository names it, never this runner's absolute path
    # (committed in reports/loop/comparison.json, it made a rerun from another checkout a new commit).
    assert comparison.holdout.path == "holdout.parquet"
    assert comparison.challenger_better
    assert comparison.challenger.metrics.mae < comparison.champion.metrics.mae
    assert comparison.change.mae_relative < -0.5
    assert "beats the champion on the 2024-05 holdout" in comparison.verdict
    # The change with its paired bootstrap interval, in the verdict too; who loses, per segment.
    change, ci = comparison.change.mae_relative, comparison.change.mae_relative_ci95
    assert ci is not None and ci.low <= change <= ci.high and ci.trips == 300
    assert f"({change:+.1%}, 95% CI {ci.low * 100:+.1f} to {ci.high * 100:+.1f})" in comparison.verdict
    assert {s.by for s in comparison.segments} == {"borough", "hour band", "vendor"}
    assert sum(s.trips for s in comparison.segments if s.by == "vendor") == 300
    # The same pair the other way round: the report says so (a fact, not a gate: the trigger decides).
    worse, _ = evidence.compare(challenger, champion, holdout, baseline)
    assert not worse.challenger_better and "does not beat" in worse.verdict


def _evaluation(rmse: float) -> EvaluationMetrics:
    """The champion's evaluate.json from the check (what it scored when it was current)."""
    return EvaluationMetrics(
        model_version="abc",
        reference_month="2024-01",
        current_month="2024-05",
        current_rows="month",
        reference_holdout={"mae": 0.1, "rmse": rmse, "r2": 0.99, "rows": 10},
        current={"mae": 0.5, "rmse": 0.6, "r2": 0.9, "rows": 300},
    )


def _drift_fixture() -> Drift:
    wasserstein, jensen_shannon = "Wasserstein distance (normed)", "Jensen-Shannon distance"
    columns = {
        "trip_distance": {"score": 0.55, "method": wasserstein, "threshold": 0.1, "drifted": True},
        "pu_zone": {"score": 0.15, "method": jensen_shannon, "threshold": 0.1, "drifted": True},
        "pickup_hour": {"score": 0.02, "method": wasserstein, "threshold": 0.1, "drifted": False},
    }
    return Drift.model_validate(
        {
            "reference_month": "2024-01",
            "current_month": "2024-05",
            "model_version": "abc",
            "columns": columns,
            "drifted_columns": ["pu_zone", "trip_distance"],
            "n_columns": 3,
            "drifted_share": 0.666667,
            "drift_share_threshold": 0.5,
            "data_drift": True,
            "prediction_drift": False,
            "reference_mae": 3.0,
            "current_mae": 7.5,
            "mae_change": 1.5,
            "threshold": 0.1,
            "performance_drift": True,
            "expected_gain": 0.31,
            "gain": {
                "month": "2024-05",
                "expected_gain": 0.31,
                "challenger_late_mae": 5.1,
                "champion_late_mae": 7.4,
                "early_rows": 15000,
                "late_rows": 5000,
                "cut": "2024-05-24 10:00",
                "min_retrain_gain": 0.04,
            },
            "retrain_recommended": True,
            "reason": "retrain recommended: data drift: 2 of 3 columns drifted",
        }
    )


def test_report_markdown_reads_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    champion = _models_dir(tmp_path / "champion", _fit(0, 2.0), "2024-01")
    challenger = _models_dir(tmp_path / "challenger", _fit(1, 3.0), "2024-05")
    holdout = _holdout(tmp_path / "holdout.parquet", 3.0)
    comparison, scored = evidence.compare(champion, challenger, holdout, _evaluation(rmse=0.2))
    trigger = {"holdout": scored.assign(prediction=scored["champion"]), "current": scored}
    evidence.write_evidence(comparison, scored, _drift_fixture(), trigger)
    out = tmp_path / ".autoops" / "pr-comment.md"
    out.parent.mkdir()
    markdown = evidence_report.render_markdown(tmp_path, "main", out, run_url="https://ci.example/runs/7")
    # Verdict and reason, champion vs challenger with the change, the drift table, plots, diffs.
    assert "retrain recommended: data drift: 2 of 3 columns drifted" in markdown
    # The trigger's estimate, with what it rests on, where people decide.
    assert "**The trigger's estimate**: a retrain should lower next month's MAE by about 31.0%" in markdown
    assert "before 2024-05-24 10:00, 15,000 trips, vs the champion on the 5,000 trips after it" in markdown
    assert "| champion (`main`) | 2024-01 |" in markdown and "| challenger (this PR) | 2024-05 |" in markdown
    change = comparison.change
    assert change.mae_relative_ci95 is not None
    relative = percent_with_interval(change.mae_relative, change.mae_relative_ci95.as_dict(), inside=True)
    assert f"| change | | | {change.mae:+.3f} ({relative}) |" in markdown
    # Who loses: every segment a row, in the comparison's order (the ones the challenger loses first).
    table = markdown.split("#### Who loses", 1)[1].split("\n\n", 3)[2].splitlines()
    assert table[0] == "| | by | segment | trips | champion MAE | challenger MAE | change (95% CI) |"
    rows = comparison.segments
    assert len(table) == 2 + len(rows)
    for line, row in zip(table[2:], rows, strict=True):
        assert line.startswith(f"| {'❌' if row.challenger_worse else '✅'} | {row.by} | {row.segment} |")
        assert f"| {row.trips:,} | {row.champion_mae:.3f} | {row.challenger_mae:.3f} |" in line
    assert "| `trip_distance` | 0.55 | Wasserstein distance (normed) | 0.1 | **yes** |" in markdown
    assert "| `pickup_hour` | 0.02 | Wasserstein distance (normed) | 0.1 | no |" in markdown
    # Images are referenced relative to the markdown file, which is how CML finds and uploads them.
    for name in ("error_by_hour", "predicted_vs_actual", "duration_distribution"):
        assert f"](../reports/loop/{name}.png)" in markdown
        assert (tmp_path / "reports/loop" / f"{name}.png").stat().st_size > 5000
    assert "dvc params diff main" in markdown and "dvc metrics diff main" in markdown
    assert "[this workflow run](https://ci.example/runs/7)" in markdown
    # Same inputs, same bytes: what makes a rerun of propose a no-op.
    pngs = {p.name: p.read_bytes() for p in (tmp_path / "reports/loop").glob("*.png")}
    evidence_plots.render_plots(tmp_path / "reports/loop")
    assert pngs == {p.name: p.read_bytes() for p in (tmp_path / "reports/loop").glob("*.png")}


# --- release and promotion ---------------------------------------------------------------------


def _released_project(folder: Path) -> Path:
    models = _models_dir(folder / "models", _fit(1, 3.0), "2024-05")
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "python -m stages.train",
                "outs": [
                    {"path": f"models/{name}", "md5": release.file_md5(models / name)}
                    for name in ("model.pkl", "model_card.json")
                ],
            }
        },
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    # The release checks against the lock of the commit it ships, so the project is a git repo.
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "add", "dvc.lock", "models/model_card.json")
    _git(folder, "commit", "-qm", "merge a retrain")
    return folder


def test_release_artifact_is_the_locked_model_with_its_tags(tmp_path: Path) -> None:
    project = _released_project(tmp_path / "p")
    info = release.release_artifact(project, tmp_path / "out", "ghcr.io/acme/auto-ops", "f" * 40)
    card = json.loads((project / "models/model_card.json").read_text())
    assert info["tags"] == [f"ghcr.io/acme/auto-ops:{'f' * 40}", "ghcr.io/acme/auto-ops:model-2024-05"]
    assert info["labels"]["io.auto-ops.model.version"] == card["version"]
    assert info["labels"]["org.opencontainers.image.revision"] == "f" * 40
    assert json.loads((tmp_path / "out/release.json").read_text())["model_version"] == card["version"]
    assert file_sha256(tmp_path / "out/model.pkl") == card["model_sha256"]
    assert release.image_name("Acme/Auto-Ops") == "ghcr.io/acme/auto-ops"


def test_release_refuses_a_model_dvc_lock_does_not_pin(tmp_path: Path) -> None:
    project = _released_project(tmp_path / "p")
    save_model(_fit(9, 1.0), project / "models/model.pkl")
    with pytest.raises(LoopError, match=r"models/model\.pkl .* is not the file the committed dvc\.lock pins"):
        release.verify_model(project)
    _git(project, "rm", "-q", "dvc.lock")
    _git(project, "commit", "-qm", "no lock")
    with pytest.raises(LoopError, match=r"dvc\.lock: missing"):
        release.verify_model(project)


def test_release_checks_the_committed_lock_not_a_rewritten_one(tmp_path: Path) -> None:
    """Defect 1: `dvc repro` rewrites dvc.lock in the working tree; the approved model is the committed."""
    project = _released_project(tmp_path / "p")
    # A retrained model, and the lock `dvc repro train` would write for it (not committed).
    _models_dir(project / "models", _fit(9, 1.0), "2024-05")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for out in lock["stages"]["train"]["outs"]:
        out["md5"] = release.file_md5(project / out["path"])
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(LoopError, match=r"models/model\.pkl .* is not the file the committed dvc\.lock pins"):
        release.release_artifact(project, tmp_path / "out", "ghcr.io/acme/auto-ops", None)
    assert not (tmp_path / "out").exists()


def test_promote_moves_the_champion_alias_to_the_merged_model(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    project = _released_project(tmp_path / "p")
    card = json.loads((project / "models/model_card.json").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(card["name"])
    source = tmp_path / "artifacts"
    source.mkdir()
    old = client.create_model_version(card["name"], str(source), tags={"model_sha256": "0" * 64})
    new = client.create_model_version(card["name"], str(source), tags={"model_sha256": card["model_sha256"]})
    client.set_registered_model_alias(card["name"], "champion", old.version)
    # The card alone names the model: promotion needs no model file from the DVC remote.
    (project / "models/model.pkl").unlink()
    # Versions without a model to compile: shipping the library is test_promote_ships_the_library's.
    result = release.promote(project, uri, compiled=False)
    assert result["version"] == str(new.version) and result["previous"] == str(old.version)
    assert client.get_model_version_by_alias(card["name"], "champion").version == new.version
    client.delete_model_version(card["name"], new.version)
    with pytest.raises(LoopError, match="no version of 'green-taxi-duration'"):
        release.promote(project, uri, compiled=False)


def test_a_persons_training_run_never_moves_the_challenger_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, point 5: `challenger` names a proposed model; a person's `dvc repro` registers a
    version (the first one becomes `champion`, it has nothing to beat) and moves no alias."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from core.training import register

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts beside its store
    params = load_params(ROOT / "params.yaml")
    for seed in (0, 1):
        model = _fit(seed, 2.0)
        folder = _models_dir(tmp_path / f"run{seed}", model, "2024-01")
        register(params, model, ModelCard.read(folder / "model_card.json"), 0.0)
    client = MlflowClient(tracking_uri=uri)
    name = params.mlflow.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "challenger")


def test_promote_without_a_tracking_server_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, text = _cli(_released_project(_mini_project(tmp_path / "p")), monkeypatch, "promote")
    assert code == 0 and "nothing to promote" in text


# --- issue 9: propose's plumbing ---------------------------------------------------------------


def test_propose_keeps_edits_to_tracked_files_dvc_yaml_does_not_declare(tmp_path: Path) -> None:
    """Defect 4: only dvc.lock and the outputs dvc.yaml declares may be reset by a branch switch."""
    project = _mini_project(tmp_path / "p", git=True)
    for name in ("reports/notes.md", "reports/metrics/evaluate.json"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("{}\n")
    _git(project, "add", "reports")
    _git(project, "commit", "-qm", "a hand-written note beside the metrics")
    git = Git(project)
    (project / "reports/metrics/evaluate.json").write_text('{"mae": 1}\n')  # a declared output
    branch.ensure_only_pipeline_changes(git)
    (project / "reports/notes.md").write_text("my analysis, not yet committed\n")
    with pytest.raises(LoopError, match=r"uncommitted change to reports/notes\.md"):
        branch.ensure_only_pipeline_changes(git)


@pytest.mark.parametrize("month", ["2030-01", "2099-12"])
def test_propose_refuses_a_month_the_source_has_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, month: str
) -> None:
    """Defect 10: a retrain on a month that does not exist yet is an error, not a commit."""
    project = _mini_project(tmp_path / "p", git=True)
    code, text = _cli(project, monkeypatch, "propose", "--month", month, "--no-push")
    assert code == 1 and text.startswith("error:")
    assert f"{month} is not published yet" in text and "newest" in text
    assert _git(project, "branch", "--list", "retrain/*") == ""


def test_published_month_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params(ROOT / "params.yaml")
    today = date(2024, 6, 15)
    sources.ensure_published(tmp_path, params, "2024-05", today)  # synthetic: last complete month
    with pytest.raises(LoopError, match=r"2024-06 is not published yet.*newest.*2024-05"):
        sources.ensure_published(tmp_path, params, "2024-06", today)
    folder = tmp_path / "tlc"
    folder.mkdir()
    (folder / "green_tripdata_2024-02.parquet").write_text("x")
    in_dir = params.model_copy(update={"data": DataParams(source="dir", dir=str(folder))})
    sources.ensure_published(tmp_path, in_dir, "2024-02", today)
    with pytest.raises(LoopError, match=r"2024-03 is not published yet.*2024-02"):
        sources.ensure_published(tmp_path, in_dir, "2024-03", today)
    # TLC: one HEAD probe of that very month (the stand-in for TLC's website).
    monkeypatch.setattr("core.sources.tlc.probe_month", lambda month, data: month <= "2024-03")
    tlc = params.model_copy(update={"data": DataParams(source="tlc")})
    sources.ensure_published(tmp_path, tlc, "2024-03", today)
    with pytest.raises(LoopError, match="2024-04 is not published yet"):
        sources.ensure_published(tmp_path, tlc, "2024-04", today)
    with pytest.raises(LoopError, match="2024-07 is not published yet"):  # after today, never probed
        sources.ensure_published(tmp_path, tlc, "2024-07", today)


def _project_with_origin(tmp_path: Path) -> tuple[Path, Path]:
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    project = _mini_project(tmp_path / "p", git=True)
    _git(project, "remote", "add", "origin", str(origin))
    _git(project, "push", "-q", "origin", "main")
    return project, origin


def _retrain_commit(project: Path, month: str, note: str = "") -> str:
    """A commit made by `autoops propose`'s own commit step (``propose._commit``); its sha."""
    loop = project / "reports" / "loop"
    loop.mkdir(parents=True, exist_ok=True)
    (loop / "report.md").write_text(f"Retrain on {month}{note}\n")
    drift = _drift_fixture().model_copy(update={"reason": "retrain recommended: data drift"})
    comparison = Comparison.read(ROOT / "docs" / "example_pr_report" / "comparison.json")
    comparison = comparison.model_copy(update={"verdict": "the challenger beats it"})
    assert propose._commit(Git(project), project, month, drift, comparison)
    return _git(project, "rev-parse", "HEAD").strip()


def _push(project: Path, name: str = "retrain/2024-05") -> None:
    """Push the branch the way `autoops propose` does."""
    branch.push_branch(Git(project), "origin", name, None)


def _clone(origin: Path, dest: Path) -> Path:
    """Another checkout of origin (a reviewer's, or a fresh CI runner's)."""
    _git(dest.parent, "clone", "-q", str(origin), str(dest))
    return dest


def test_propose_never_drops_a_reviewers_commit_when_main_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 3: a commit a person pushed to retrain/<month> survives the next propose."""
    project, origin = _project_with_origin(tmp_path)
    _git(project, "checkout", "-q", "-b", "retrain/2024-05")
    _retrain_commit(project, "2024-05")
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "# reviewed\n")
    _git(project, "commit", "-qam", "Reviewer: a note on the params")
    _push(project)
    reviewed = _git(project, "rev-parse", "HEAD").strip()
    _git(project, "checkout", "-q", "main")
    (project / "README.md").write_text("main moved on\n")
    _git(project, "add", "README.md")
    _git(project, "commit", "-qm", "main moves on")
    _git(project, "push", "-q", "origin", "main")

    code, text = _cli(project, monkeypatch, "propose", "--month", "2024-05")
    assert code == 1 and text.startswith("error:")
    assert "retrain/2024-05 has 1 commit autoops did not make" in text
    assert "Reviewer: a note on the params" in text and "merge main into it" in text
    heads = _git(project, "ls-remote", "--heads", str(origin), "retrain/2024-05").split()
    assert heads[0] == reviewed, "the branch must be left as it is"


def test_propose_may_rebuild_a_branch_only_it_committed_to(tmp_path: Path) -> None:
    project, origin = _project_with_origin(tmp_path)
    _git(project, "checkout", "-q", "-b", "retrain/2024-05")
    _retrain_commit(project, "2024-05")
    _push(project)
    _git(project, "checkout", "-q", "main")
    _git(project, "commit", "-q", "--allow-empty", "-m", "main moves on")
    _git(project, "push", "-q", "origin", "main")
    git = Git(project)
    base = git.rev("main")
    assert base
    start = branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert start.start == base and start.rebuilt and start.remote_sha
    # A fresh runner (another clone) knows the bot's commit from what the remote recorded.
    runner = Git(_clone(origin, tmp_path / "runner"))
    start = branch.branch_start(runner, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert start.start == base and start.rebuilt
    # Unchanged base: continue the branch as it is.
    _git(project, "checkout", "-q", "retrain/2024-05")
    _git(project, "merge", "-q", "main")
    _git(project, "push", "-q", "origin", "retrain/2024-05")
    start = branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert start.start == git.rev("retrain/2024-05") and not start.rebuilt


def test_a_reviewers_amended_commit_is_theirs_whatever_its_trailer(tmp_path: Path) -> None:
    """Issue 20, point 2: ownership is the commit the bot made, not a trailer a person can keep
    while amending it; rebuilding the branch would throw the reviewer's change away."""
    project, origin = _project_with_origin(tmp_path)
    _git(project, "checkout", "-q", "-b", "retrain/2024-05")
    made = _retrain_commit(project, "2024-05")
    _push(project)
    reviewer = _clone(origin, tmp_path / "reviewer")
    _git(reviewer, "checkout", "-q", "retrain/2024-05")
    (reviewer / "params.yaml").write_text((reviewer / "params.yaml").read_text() + "# tuned by hand\n")
    _git(reviewer, "commit", "-q", "-a", "--amend", "--no-edit")  # the trailer stays
    assert branch.PROPOSED_TRAILER in _git(reviewer, "log", "-1", "--format=%B")
    _git(reviewer, "push", "-q", "--force", "origin", "retrain/2024-05")
    amended = _git(reviewer, "rev-parse", "--short", "HEAD").strip()
    _git(project, "checkout", "-q", "main")
    _git(project, "commit", "-q", "--allow-empty", "-m", "main moves on")
    _git(project, "push", "-q", "origin", "main")
    git = Git(project)
    base = git.rev("main")
    assert base and made != _git(reviewer, "rev-parse", "HEAD").strip()
    with pytest.raises(
        LoopError, match=rf"origin/retrain/2024-05 has 1 commit autoops did not make \({amended} "
    ):
        branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    # A fresh runner sees the same.
    runner = Git(_clone(origin, tmp_path / "runner"))
    with pytest.raises(LoopError, match=rf"\({amended} "):
        branch.branch_start(runner, "origin", "retrain/2024-05", base, "main", has_remote=True)


def test_a_rerun_keeps_unpushed_local_commits(tmp_path: Path) -> None:
    """Issue 20, point 1: commits on the local retrain/<month> that are not on the remote yet are
    continued from (and pushed), never reset away to the remote's tip."""
    project, origin = _project_with_origin(tmp_path)
    _git(project, "checkout", "-q", "-b", "retrain/2024-05")
    _retrain_commit(project, "2024-05")
    _push(project)
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "# mine\n")
    _git(project, "commit", "-qam", "Mine, not pushed yet")
    mine = _git(project, "rev-parse", "HEAD").strip()
    _git(project, "checkout", "-q", "main")
    git = Git(project)
    base = git.rev("main")
    assert base
    start = branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert start.start == mine and not start.rebuilt
    # Only a fast-forward push carries it: nothing on the remote is replaced.
    _push(project)
    assert _git(project, "ls-remote", "--heads", str(origin), "retrain/2024-05").split()[0] == mine

    # Someone else pushes meanwhile while a local commit of a person waits: the two have diverged,
    # and propose stops naming the local commit, leaving both as they are.
    other = _clone(origin, tmp_path / "other")
    _git(other, "checkout", "-q", "retrain/2024-05")
    _git(other, "commit", "-q", "--allow-empty", "-m", "Theirs")
    _git(other, "push", "-q", "origin", "retrain/2024-05")
    _git(project, "checkout", "-q", "retrain/2024-05")
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "# mine again\n")
    _git(project, "commit", "-qam", "Mine again")
    local = _git(project, "rev-parse", "HEAD").strip()
    _git(project, "checkout", "-q", "main")
    with pytest.raises(
        LoopError, match=r"retrain/2024-05 has 1 commit not on origin/retrain/2024-05 \(.* Mine again"
    ):
        branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert git.rev("refs/heads/retrain/2024-05") == local

    # The bot's own unpushed commit (an earlier `propose --no-push`) is not a person's work: the
    # remote's branch wins and the rerun rebuilds that commit's content anyway.
    _git(project, "branch", "-q", "-f", "retrain/2024-05", "origin/retrain/2024-05~1")
    _git(project, "checkout", "-q", "retrain/2024-05")
    _retrain_commit(project, "2024-05", note=" (no push)")
    _git(project, "checkout", "-q", "main")
    start = branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)
    assert start.start == git.rev("refs/remotes/origin/retrain/2024-05") and not start.rebuilt


def test_a_push_refused_because_someone_pushed_says_so(tmp_path: Path) -> None:
    """Issue 20, point 4: not git's bare "failed to push some refs" but what happened, and that a
    rerun is safe."""
    project, origin = _project_with_origin(tmp_path)
    _git(project, "checkout", "-q", "-b", "retrain/2024-05")
    _retrain_commit(project, "2024-05")
    _push(project)
    pushed = _git(project, "rev-parse", "HEAD").strip()
    other = _clone(origin, tmp_path / "other")
    _git(other, "checkout", "-q", "retrain/2024-05")
    _git(other, "commit", "-q", "--allow-empty", "-m", "Theirs")
    _git(other, "push", "-q", "origin", "retrain/2024-05")
    _retrain_commit(project, "2024-05", note=" again")
    message = r"someone pushed to origin/retrain/2024-05 while propose ran.*nothing was lost.*rerun"
    for lease in (None, pushed):  # continued (a fast-forward), rebuilt (a lease on what it saw)
        with pytest.raises(LoopError, match=message):
            branch.push_branch(Git(project), "origin", "retrain/2024-05", lease)
    # The rerun after a refused rebuild: the local branch is main's new tip plus propose's commit.
    # main's commits are not the local branch's own; the other push is a person's, so it stops.
    _git(project, "checkout", "-q", "main")
    _git(project, "commit", "-q", "--allow-empty", "-m", "main moves on")
    _git(project, "checkout", "-q", "-B", "retrain/2024-05", "main")
    _retrain_commit(project, "2024-05", note=" rebuilt")
    _git(project, "checkout", "-q", "main")
    git = Git(project)
    base = git.rev("main")
    assert base
    with pytest.raises(
        LoopError, match=r"^origin/retrain/2024-05 has 1 commit autoops did not make \(.* Theirs"
    ):
        branch.branch_start(git, "origin", "retrain/2024-05", base, "main", has_remote=True)


def test_a_month_whose_pr_was_closed_unmerged_is_not_proposed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 5: closing a retrain PR unmerged is the answer for that month."""
    from tests.github_api import fake_github

    project, _ = _project_with_origin(tmp_path)
    with fake_github() as gh:
        for key, value in gh.env().items():
            monkeypatch.setenv(key, value)
        pull = gh.open_pull("retrain/2024-05", "main", "Retrain on 2024-05")
        gh.close(pull["number"])
        out = tmp_path / "gh_output"
        monkeypatch.setenv("GITHUB_OUTPUT", str(out))
        code, text = _cli(project, monkeypatch, "propose", "--month", "2024-05")
        assert code == 0, text
        assert "closed unmerged" in text and pull["html_url"] in text
        assert "proposed=false" in out.read_text()
        assert any(r.startswith("GET /repos/acme/auto-ops/pulls?") for r in gh.requests)
        assert _git(project, "branch", "--list", "retrain/*") == ""
        # A newer month is a new question ...
        assert propose.closed_pull_request("retrain/2024-06") is None
        # ... and a person can ask again for this one (drift-watch run by hand for the month).
        code, text = _cli(project, monkeypatch, "propose", "--month", "2024-05", "--reopen")
        assert "closed unmerged" not in text
        # Reopened on GitHub: it is open again, so it is not an answer any more.
        gh.pulls[0]["state"] = "open"
        assert propose.closed_pull_request("retrain/2024-05") is None
    monkeypatch.delenv("GITHUB_REPOSITORY")
    assert propose.closed_pull_request("retrain/2024-05") is None  # not on GitHub: nothing to ask


def test_fetch_model_without_a_remote_accepts_only_a_byte_identical_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1: without a DVC remote the release may rebuild, but only the approved bytes pass."""
    project = tmp_path / "p"
    (project / "models").mkdir(parents=True)
    (project / "params.yaml").write_text("{}\n")
    # A stand-in `train` stage whose output depends on the machine (as a non-reproducible fit would).
    script = "import os; open('models/model.pkl', 'w').write(os.environ.get('RUNNER_FLAVOUR', 'approved'))"
    (project / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"train": {"cmd": f'python -c "{script}"', "outs": ["models/model.pkl"]}}})
    )
    _git(project, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=project, check=True, capture_output=True)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "the approved model")
    # A fresh runner: no DVC cache, no model.
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "models/model.pkl").unlink()
    monkeypatch.setenv("RUNNER_FLAVOUR", "different")
    # Issue 20, point 4: from here a rebuild that is not reproducible and a lock that pins the
    # wrong bytes look the same, so the message names both.
    both = (
        r"rebuilt .* not the md5 .* committed dvc\.lock pins: "
        r"either .*not byte-reproducible.* or .*dvc\.lock itself"
    )
    with pytest.raises(LoopError, match=both):
        release.fetch_model(project)
    monkeypatch.delenv("RUNNER_FLAVOUR")
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    assert release.fetch_model(project).startswith("rebuilt")
    assert (project / "models/model.pkl").read_text() == "approved"
    # A lock edited by hand: the rebuild is faithful, the pinned md5 is what is wrong.
    lock = (project / "dvc.lock").read_text()
    pinned = yaml.safe_load(lock)["stages"]["train"]["outs"][0]["md5"]
    (project / "dvc.lock").write_text(lock.replace(pinned, "0123456789abcdef" * 2))
    _git(project, "commit", "-qam", "a lock edited by hand")
    with pytest.raises(LoopError, match=both):
        release.fetch_model(project)


def test_a_failing_stage_names_its_cause_in_check(tmp_path: Path) -> None:
    """Issue 20, point 4: the stage's own one-line error, not "see the output above", in the
    console's last line and in the job summary. `check` runs the data checks first, so that is the
    stage that fails here."""
    project = _mini_project(tmp_path / "p", git=True)
    (project / "checks_stage.py").write_text(
        "from core.io import StageError\nfrom core.runner import run_stage\n\n\n"
        "def main():\n"
        "    raise StageError('data/raw/green_tripdata_2024-03.parquet: missing; run dvc repro ingest')\n\n\n"
        "run_stage('data_checks', main)\n"
    )
    stages = {"data_checks": {"cmd": "python checks_stage.py"}}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": str(summary)}
    # A process of its own, as in a workflow step: DVC's and the stage's output stream through it.
    result = subprocess.run(
        [sys.executable, "-m", "autoops.cli", "check", "--month", "2024-03"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: `dvc repro data_checks` failed")
    missing = "data/raw/green_tripdata_2024-03.parquet: missing"
    assert f"error [data_checks]: {missing}; run dvc repro ingest" in last
    assert f"error [data_checks]: {missing}" in summary.read_text()


def test_report_images_point_at_the_branch_commit_not_an_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 8: by default the PR comment shows the PNGs committed on the branch, pinned to its commit."""
    project = _mini_project(tmp_path / "p", git=True)
    sha = _git(project, "rev-parse", "HEAD").strip()
    out = project / ".autoops" / "pr-comment.md"
    markdown = "![MAE by pickup hour](../reports/loop/error_by_hour.png)\n\n[a link](../reports/loop/x.csv)\n"
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/auto-ops")
    pinned = github.comment_images(markdown, project, out, "auto")
    url = f"https://github.com/acme/auto-ops/raw/{sha}/reports/loop/error_by_hour.png"
    assert pinned == markdown.replace("../reports/loop/error_by_hour.png", url)
    # Opt-in upload (CML's --publish): the paths stay relative, for CML to find the files.
    assert github.comment_images(markdown, project, out, "relative") == markdown
    # On a laptop there is no repository URL: relative, as in reports/loop/report.md.
    monkeypatch.delenv("GITHUB_REPOSITORY")
    assert github.comment_images(markdown, project, out, "auto") == markdown
    with pytest.raises(LoopError, match="needs GITHUB_SERVER_URL and GITHUB_REPOSITORY"):
        github.comment_images(markdown, project, out, "commit")
