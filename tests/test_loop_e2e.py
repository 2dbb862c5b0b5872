"""The whole self-healing loop on this machine: git, DVC, the synthetic months, and a bare `origin`.

GitHub itself stands outside: where a workflow would call CML, the test reads the markdown CML
would post, and "merging the PR" is a merge commit pushed to origin's main by another clone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoops.params_edit import set_months
from tests.conftest import copy_project, run_in, set_params, stage_env
from tests.small_project import small_project
from tests.workflow_runner import parse_outputs

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
BRANCH = "origin/retrain/2024-05"


class Loop:
    """One developer checkout with an `origin` and a DVC remote, plus helpers to drive autoops."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.dvc_remote = root / "dvc-remote"
        self.work = root / "work"
        self.timings: dict[str, float] = {}
        self.stderr = ""  # the last autoops command's (DVC's progress lines go there)
        self.main_sha = ""  # origin's main after the bootstrap
        self.proposal: Proposal | None = None  # set by the propose phase when it passed

    def require_proposal(self) -> Proposal:
        if self.proposal is None:
            pytest.skip(
                "needs retrain/2024-05, made by test_3_propose_pushes_one_retrain_commit: it did not pass"
            )
        return self.proposal

    def run(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        result = run_in(cwd, *args)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def autoops(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Run the CLI as a workflow step would; returns what it wrote to $GITHUB_OUTPUT."""
        cwd = cwd or self.work
        outputs = self.root / "github_output"
        outputs.write_text("")
        full_env = {**stage_env(cwd), "GITHUB_OUTPUT": str(outputs), **(env or {})}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "autoops.cli", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
        )
        key = " ".join(args)
        while key in self.timings:  # a rerun of the same command gets its own entry
            key += " (again)"
        self.timings[key] = round(time.perf_counter() - started, 1)
        self.stderr = result.stderr
        assert result.returncode == 0, f"autoops {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return parse_outputs(outputs.read_text())

    def remote_heads(self) -> dict[str, str]:
        out = self.run(self.work, "git", "ls-remote", "--heads", str(self.origin)).stdout
        return {
            ref.removeprefix("refs/heads/"): sha
            for sha, ref in (line.split("\t") for line in out.splitlines())
        }

    def show(self, ref: str, path: str) -> str:
        return self.run(self.work, "git", "show", f"{ref}:{path}").stdout


@dataclass(frozen=True)
class Proposal:
    """What the propose phase left on origin, for the phases after it."""

    branch_sha: str
    files: set[str]
    card: dict[str, Any]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """main has the pipeline run on the first months and pushed, as after `./run.sh` and a commit.

    The tests below are the loop's phases, in order, on this one checkout and origin; a phase that
    needs an earlier one's result skips, naming it, when that phase failed.
    """
    state = Loop(tmp_path_factory.mktemp("loop"))
    # The session's person's `dvc repro` on small months, committed (tests/small_project.py): its
    # regime shift at 2024-05 is as strong as at full size, and every later `dvc repro` stays short.
    # Each phase's own runs (check, propose) are what these tests are about.
    work = small_project(tmp_path_factory, state.work)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(state.origin)], check=True)
    state.run(work, "git", "remote", "add", "origin", str(state.origin))
    state.run(work, "dvc", "remote", "add", "-d", "storage", str(state.dvc_remote))
    state.run(work, *GIT, "commit", "-qam", "DVC remote")
    state.run(work, "dvc", "push")
    state.run(work, "git", "push", "-q", "origin", "main")
    state.main_sha = state.remote_heads()["main"]
    yield state
    print("timings (s):", json.dumps(state.timings, indent=1))


# Each phase runs `dvc repro` once or more (the first also waits for the fixture's): minutes on an
# idle 2-core runner, far more on a shared, loaded one.
phase = pytest.mark.timeout(1800)


@pytest.mark.slow
@phase
def test_1_stable_months_breach_nothing(loop: Loop) -> None:
    """Stable months: no breach, nothing committed or pushed. A month bump is a change DVC notices
    without retraining: the stages that read the month rerun, train does not."""
    summary = loop.root / "step_summary.md"
    set_months(loop.work / "params.yaml", current="2024-03")  # what `check --month 2024-03` does first
    changed = set(json.loads(loop.run(loop.work, "dvc", "status", "--json").stdout))
    assert {"ingest", "evaluate", "drift"} <= changed, changed
    for month in ("2024-03", "2024-04"):
        out = loop.autoops("check", "--month", month, env={"GITHUB_STEP_SUMMARY": str(summary)})
        # The training data did not change, so neither did the model: only the new month is scored.
        assert "Stage 'train' didn't change, skipping" in loop.stderr, loop.stderr[-3000:]
        assert out["breach"] == "false" and out["month"] == month, out
        result = json.loads((loop.work / ".autoops/check.json").read_text())
        assert result["breach"] is False and result["month"] == month
        assert loop.remote_heads() == {"main": loop.main_sha}
    assert "No retrain needed" in summary.read_text()


@pytest.mark.slow
@phase
def test_2_the_shifted_month_breaches(loop: Loop) -> None:
    out = loop.autoops("check", "--month", "2024-05")
    assert out["breach"] == "true" and out["branch"] == "retrain/2024-05", out
    assert "data drift" in out["reason"]
    assert float(out["expected_gain"]) > 0.1, out  # the trigger's estimate agrees: a retrain pays


@pytest.mark.slow
@phase
def test_3_propose_pushes_one_retrain_commit(loop: Loop) -> None:
    """propose pushes retrain/2024-05 with the bumped params, a new lock and the report."""
    out = loop.autoops("propose", "--month", "2024-05", "--base", "main")
    assert out["proposed"] == "true" and out["updated"] == "true", out
    assert out["report"] == "reports/loop/report.md"
    heads = loop.remote_heads()
    assert heads["main"] == loop.main_sha, "main must stay untouched"
    branch_sha = heads["retrain/2024-05"]
    branch = BRANCH
    loop.run(loop.work, "git", "fetch", "-q", "origin")
    params = yaml.safe_load(loop.show(branch, "params.yaml"))
    assert params["months"]["reference"] == params["months"]["current"] == "2024-05"
    assert loop.show(branch, "dvc.lock") != loop.show("origin/main", "dvc.lock")
    # One commit on top of main, touching only the pipeline's files and the evidence.
    log = loop.run(loop.work, "git", "log", "--format=%H", f"origin/main..{branch}").stdout.split()
    assert len(log) == 1
    files = set(loop.run(loop.work, "git", "diff", "--name-only", "origin/main", branch).stdout.split())
    assert {"params.yaml", "dvc.lock", "models/model_card.json", "reports/loop/report.md"} <= files
    assert all(f in ("params.yaml", "dvc.lock") or f.startswith(("reports/", "models/")) for f in files), (
        files
    )
    card = json.loads(loop.show(branch, "models/model_card.json"))
    assert card["reference_month"] == "2024-05"
    comparison = json.loads(loop.show(branch, "reports/loop/comparison.json"))
    assert comparison["challenger_better"] and comparison["challenger"]["version"] == card["version"]
    # Issue 20, point 3: no runner path in the repository (a rerun elsewhere would commit a new one).
    assert comparison["holdout"]["path"] == "data/features/holdout.parquet"
    # Champion and challenger were scored on the same rows: the challenger's own holdout.
    evaluation = json.loads(loop.show(branch, "reports/metrics/evaluate.json"))
    assert comparison["challenger"]["metrics"] == evaluation["reference_holdout"]
    assert comparison["holdout"]["rows"] == evaluation["reference_holdout"]["rows"]
    # The branch's own "current" figures (what the PR's metrics diff shows) are out of sample: the
    # challenger trained on most of 2024-05, so only that month's holdout rows may stand for it.
    assert evaluation["current_rows"] == "holdout"
    assert evaluation["current"] == evaluation["reference_holdout"]
    loop.proposal = Proposal(branch_sha, files, card)


@pytest.mark.slow
@phase
def test_4_the_report_is_what_cml_would_post(loop: Loop) -> None:
    """GitHub's side of the boundary: the verdict, both models, the drift table, the plots."""
    proposal = loop.require_proposal()
    report = loop.show(BRANCH, "reports/loop/report.md")
    drift = json.loads(loop.show(BRANCH, "reports/loop/drift.json"))
    assert drift["retrain_recommended"] and drift["current_month"] == "2024-05"
    assert drift["reason"] in report
    for column in drift["drifted_columns"]:
        assert f"| `{column}` |" in report
    assert "| champion (`main`) |" in report and "| challenger (this PR) |" in report
    assert "months.reference" in report  # from `dvc params diff main`
    for png in ("error_by_hour.png", "predicted_vs_actual.png", "duration_distribution.png"):
        assert f"]({png})" in report
        assert f"reports/loop/{png}" in proposal.files


@pytest.mark.slow
@phase
def test_5_a_rerun_of_propose_changes_nothing(loop: Loop) -> None:
    """A rerun for the same month: same branch, same commit, no new branches."""
    proposal = loop.require_proposal()
    out = loop.autoops("propose", "--month", "2024-05", "--base", "main")
    assert out["proposed"] == "true" and out["updated"] == "false", out
    assert loop.remote_heads() == {"main": loop.main_sha, "retrain/2024-05": proposal.branch_sha}


@pytest.mark.slow
@phase
def test_5b_a_local_commit_survives_a_rerun(loop: Loop) -> None:
    """Issue 20, point 1: a person's commit on the local retrain/<month>, not pushed yet, is where a
    rerun continues from, and it reaches origin; it is never reset away to origin's tip."""
    proposal = loop.require_proposal()
    loop.run(loop.work, "git", "checkout", "-q", "retrain/2024-05")
    (loop.work / "REVIEW.md").write_text("Checked the drift table by hand.\n")
    loop.run(loop.work, *GIT, "add", "REVIEW.md")
    loop.run(loop.work, *GIT, "commit", "-qm", "Review notes, not pushed yet")
    mine = loop.run(loop.work, "git", "rev-parse", "HEAD").stdout.strip()
    out = loop.autoops("propose", "--month", "2024-05", "--base", "main")
    assert out["proposed"] == "true" and out["updated"] == "true", out
    heads = loop.remote_heads()
    # Pushed as a fast-forward of what was there; the rerun itself had nothing new to commit.
    assert heads["retrain/2024-05"] == mine, heads
    assert loop.run(loop.work, "git", "merge-base", "--is-ancestor", proposal.branch_sha, mine)


@pytest.mark.slow
@phase
def test_6_a_calm_month_is_not_proposed(loop: Loop) -> None:
    """One decision: propose retrains exactly when the check's trigger says so. A calm month is
    not proposed (no second rule of propose's own could disagree), and nothing moves."""
    before = loop.remote_heads()
    assert before["main"] == loop.main_sha
    out = loop.autoops("propose", "--month", "2024-04", "--base", "main")
    assert out["proposed"] == "false", out
    assert out["reason"].startswith("no breach for 2024-04: no retrain needed"), out
    assert loop.remote_heads() == before


@pytest.mark.slow
@phase
def test_7_the_merge_releases_and_promotes_the_proposed_model(loop: Loop) -> None:
    card = loop.require_proposal().card
    # The PR is merged (on "GitHub": another clone merges and pushes main) ...
    github = loop.root / "github"
    loop.run(loop.root, "git", "clone", "-q", str(loop.origin), str(github))
    loop.run(github, *GIT, "merge", "-q", "--no-ff", "-m", "Merge retrain/2024-05", BRANCH)
    loop.run(github, "git", "push", "-q", "origin", "main")

    # ... and the release job, on a fresh clone of main, builds the serving artifact.
    release = loop.root / "release"
    loop.run(loop.root, "git", "clone", "-q", str(loop.origin), str(release))
    loop.autoops("pull", cwd=release)
    merged_sha = loop.run(release, "git", "rev-parse", "HEAD").stdout.strip()
    out = loop.autoops("release-artifact", "--image", "ghcr.io/acme/auto-ops", cwd=release)
    assert out["model_version"] == card["version"] and out["model_month"] == "2024-05"
    assert out["tags"].splitlines() == [
        f"ghcr.io/acme/auto-ops:{merged_sha}",
        "ghcr.io/acme/auto-ops:model-2024-05",
    ]
    artifact = json.loads((release / ".autoops/release/release.json").read_text())
    assert artifact["model_sha256"] == card["model_sha256"]
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy as np; from core.model import load_model, predict; "
            f"m = load_model('.autoops/release/model.pkl', sha256='{card['model_sha256']}'); "
            "print(predict(m, np.ones((1, 12)))[0])",
        ],
        cwd=release,
        env=stage_env(release),
        capture_output=True,
        text=True,
    )
    assert served.returncode == 0 and float(served.stdout) > 0, served.stderr

    # The merged model becomes MLflow's champion (the working copy's tracking store stands in
    # for the tracking server the workflows would use).
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{loop.work / 'mlflow.db'}"}
    out = loop.autoops("promote", cwd=release, env=tracking)
    from mlflow import MlflowClient

    champion = MlflowClient(tracking_uri=tracking["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        card["name"], "champion"
    )
    assert str(champion.version) == out["mlflow_version"]
    assert champion.tags["model_sha256"] == card["model_sha256"]


@pytest.mark.slow
@pytest.mark.realdata
def test_pr_markdown_for_a_real_breach(real_dir: Path, tmp_path: Path) -> None:
    """Real TLC months (dir source): the model learned 2021-02, and 2022-01 has drifted."""
    work = copy_project(tmp_path / "work")
    set_params(
        work,
        **{
            "data.source": "dir",
            "data.dir": str(real_dir),
            "months.reference": "2021-02",
            "months.current": "2021-02",
            "train.hist_gradient_boosting.max_iter": 100,
        },
    )
    # The champion is made the way the loop rebuilds (no MLflow registration: on a real month that
    # costs several times the fit); the proposed challenger below is registered as always.
    unregistered = {**stage_env(work), "AUTOOPS_MLFLOW_REGISTER": "0"}
    repro = subprocess.run(["dvc", "repro"], cwd=work, env=unregistered, capture_output=True, text=True)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert run_in(work, *GIT, "add", "-A").returncode == 0
    assert run_in(work, *GIT, "commit", "-qm", "model on 2021-02").returncode == 0

    env = {**stage_env(work), "GITHUB_OUTPUT": str(tmp_path / "out")}
    result = subprocess.run(
        [sys.executable, "-m", "autoops.cli", "propose", "--month", "2022-01", "--no-push"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = parse_outputs((tmp_path / "out").read_text())
    assert outputs["proposed"] == "true", outputs

    # The check's verdict (tests/test_pipeline.py checks that consecutive months do not drift):
    # real months years apart are real data, so the data checks pass and leave the call to drift.
    drift = json.loads((work / "reports/loop/drift.json").read_text())
    assert drift["data_drift"] and drift["retrain_recommended"], drift["reason"]
    assert drift["data_checks"]["passed"] and drift["data_problem"] is None
    assert (drift["reference_month"], drift["current_month"]) == ("2021-02", "2022-01")
    assert {"pu_zone", "do_zone", "trip_distance", "prediction"} <= set(drift["drifted_columns"])
    report = (work / "reports/loop/report.md").read_text()
    for column in drift["drifted_columns"]:
        assert f"| `{column}` | {drift['columns'][column]['score']:.4g} |" in report
        assert "**yes**" in report
    comparison = json.loads((work / "reports/loop/comparison.json").read_text())
    for role, label in (("champion", "champion (`main`)"), ("challenger", "challenger (this PR)")):
        metrics = comparison[role]["metrics"]
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        assert (
            f"{metrics['mae']:.3f}" in row
            and f"{metrics['rmse']:.3f}" in row
            and f"{metrics['r2']:.3f}" in row
        )
    assert "2021-02" in report and "2022-01" in report
