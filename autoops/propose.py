"""`autoops propose`: on the check's breach, retrain on branch retrain/<month> and commit the evidence.

Champion vs challenger on the same rows, the report, commit, `dvc push`, `git push`, and only
then the MLflow `challenger` alias. Idempotent: one branch per month, reruns commit nothing new.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from autoops import github
from autoops.branch import (
    branch_start,
    ensure_only_pipeline_changes,
    push_branch,
    record_proposed,
    switch,
)
from autoops.check import run_check
from autoops.gitops import Git, LoopError, dvc, dvc_remote_configured
from autoops.params_edit import accept_data_problems, params_at, set_months
from autoops.pr_text import proposal_text
from autoops.project import BRANCH_PREFIX, dvc_outputs, lock_outputs, to_month
from autoops.sources import ensure_published
from core.artifacts.comparison import Comparison
from core.artifacts.drift import Drift
from core.artifacts.evaluation import EvaluationMetrics
from core.features import TARGET
from core.io import file_md5, write_text
from core.months import month_index
from core.paths import (
    DRIFT_METRICS,
    DVC_LOCK,
    EVALUATE_METRICS,
    FEATURES_DIR,
    LOOP_DIR,
    LOOP_REPORT,
    MODELS_DIR,
    PARAMS_FILE,
    PREDICTIONS_DIR,
    WORK_DIR,
)

# The base branch's model, kept aside before the working tree moves to the challenger.
CHAMPION_DIR = WORK_DIR / "champion"
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def snapshot_champion(root: Path, git: Git, base_sha: str, base: str) -> None:
    """Keep the base branch's model aside before the working tree moves to the challenger."""
    folder = root / CHAMPION_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("model.pkl", "model_card.json"):
        source = root / MODELS_DIR / name
        if not source.exists():
            raise LoopError(f"{source.relative_to(root)}: missing after the check; run `dvc repro train`")
        shutil.copy2(source, folder / name)
    # The champion must be the model the base branch pins, not whatever the working tree held.
    lock = git.show(base_sha, DVC_LOCK.as_posix())
    if lock is not None:
        expected = lock_outputs(lock).get("models/model.pkl")
        if expected and file_md5(folder / "model.pkl") != expected:
            raise LoopError(
                f"models/model.pkl is not the model {base}'s dvc.lock pins; run `dvc pull` "
                "(or `dvc checkout`) on the base branch and retry"
            )


def read_trigger_predictions(root: Path) -> dict[str, Any]:
    import pandas as pd

    # Here, not at the top: core.evaluation imports scikit-learn (~1.4 s of CPU) that every `autoops` start
    # would pay.
    from core.evaluation import PREDICTION

    columns = ["pickup_hour", TARGET, PREDICTION]
    return {
        name: pd.read_parquet(root / PREDICTIONS_DIR / f"{name}.parquet", columns=columns)
        for name in ("holdout", "current")
    }


def closed_pull_request(branch: str) -> dict[str, Any] | None:
    """The pull request a person closed unmerged for ``branch``, unless one is open for it now."""
    pulls = github.pull_requests(branch)
    if any(p["state"] == "open" for p in pulls):
        return None
    closed = [p for p in pulls if p["state"] == "closed" and not p.get("merged_at")]
    return max(closed, key=lambda p: p["number"]) if closed else None


def run_propose(
    root: Path,
    month: str,
    base: str = "main",
    remote: str = "origin",
    push: bool = True,
    force: bool = False,
    reopen: bool = False,
    accept_problems: bool = False,
) -> dict[str, Any]:
    git = Git.discover(root)
    month = to_month(month)
    branch = f"{BRANCH_PREFIX}{month}"
    has_remote = git.has_remote(remote)
    if push and not has_remote:
        raise LoopError(f"no git remote {remote!r} to push {branch} to: add one, or pass --no-push")
    base_checkout, base_sha = _check_base(root, git, month, base, remote if has_remote else None)
    outcome: dict[str, Any] = {"month": month, "branch": branch, "base": base, "proposed": False}
    # A person closing the month's PR unmerged answered it; asking again every week is noise.
    if not reopen and (closed := closed_pull_request(branch)):
        outcome["reason"] = (
            f"{branch} was closed unmerged ({closed['html_url']}): that is the answer for {month} until a "
            f"newer month breaches; run drift-watch by hand with month {month} to propose it again"
        )
        # Here, not at the top: autoops.release imports MLflow (~1.3 s of CPU), needed only when a closed
        # PR's challenger is retired.
        from autoops.release import retire_challenger

        # `challenger` names an open PR's model; this one's PR is closed.
        outcome["challenger_retired"] = retire_challenger(branch)
        return outcome
    # Decided before any work: a branch that cannot be continued stops propose here, untouched.
    start, rebuilt, remote_sha, local_sha = branch_start(
        git, remote, branch, base_sha, base, has_remote=has_remote
    )

    # 1. The verdict, from the base branch's own model and params.
    switch(git, base_checkout)
    checked = run_check(root, month, accept_problems=accept_problems)
    outcome["check"] = checked.as_dict()
    # A data problem stops propose even with --force: only a person's --accept-data-problems lifts it.
    if checked.data_problem:
        outcome.update(reason=checked.data_problem, data_problem=checked.data_problem)
        return outcome
    if not checked.breach and not force:
        outcome["reason"] = f"no breach for {month}: {checked.reason}"
        return outcome
    snapshot_champion(root, git, base_sha, base)
    # The check's own outputs, read before the branch switch and `dvc repro` replace them.
    trigger_drift = Drift.read(root / DRIFT_METRICS)
    trigger_eval = EvaluationMetrics.read(root / EVALUATE_METRICS)
    trigger_predictions = read_trigger_predictions(root)

    # 2. The branch: continue an existing retrain/<month> that already contains the base, else
    # start it afresh from the base (see branch_start). Reruns land on the same branch.
    switch(git, start, branch=branch)

    # 3. and 4. Retrain, compare on the same rows, commit the evidence.
    comparison = _retrain_with_evidence(
        root, git, month, branch, base, (trigger_drift, trigger_eval, trigger_predictions), accept_problems
    )
    outcome["comparison"] = comparison.as_dict()
    head = git.rev("HEAD")

    # 5. Data before code: the branch must never point at outputs the DVC remote lacks.
    pushed = False
    if push:
        if dvc_remote_configured(root):
            dvc(root, "push")
        if head != remote_sha:
            push_branch(git, remote, branch, remote_sha if rebuilt else None)
            pushed = True
    # 6. Only now, proposed, does the challenger enter the MLflow registry (alias `challenger`).
    from autoops.release import register_challenger

    outcome["mlflow"] = register_challenger(root, branch)
    text = proposal_text(month, trigger_drift.reference_month, trigger_drift.reason, comparison)
    outcome.update(
        proposed=True,
        updated=head != (remote_sha or local_sha),
        pushed=pushed,
        commit=head,
        report=LOOP_REPORT.as_posix(),
        title=text.title,
        body=text.pr_body,
        reason=trigger_drift.reason,
    )
    return outcome


def _check_base(root: Path, git: Git, month: str, base: str, remote: str | None) -> tuple[str, str]:
    """The base to propose against (its checkout and sha), after the guards that make proposing
    ``month`` on it meaningful: a clean tree, a month newer than the base model's, published."""
    ensure_only_pipeline_changes(git)
    base_checkout, base_sha = git.resolve_base(base, remote)
    base_params = params_at(git, base_sha, base)
    base_reference = base_params.months.reference
    if month_index(month) <= month_index(base_reference):
        raise LoopError(
            f"the model on {base} already learned {base_reference}; nothing to retrain for {month}"
        )
    ensure_published(root, base_params, month)
    return base_checkout, base_sha


def _retrain_with_evidence(
    root: Path,
    git: Git,
    month: str,
    branch: str,
    base: str,
    trigger: tuple[Drift, EvaluationMetrics, dict[str, Any]],
    accept_problems: bool = False,
) -> Comparison:
    """On the retrain branch: retrain on ``month``, compare both models on the rows the new one
    never saw, write the evidence and the report, commit. ``trigger``: the check's drift metrics,
    evaluate metrics and predictions. Returns the comparison."""
    # Here, not at the top: evidence and its plots import scikit-learn and matplotlib (~1.4-1.5 s of CPU
    # each), needed only by a proposal.
    from autoops import evidence, evidence_report
    from autoops.evidence_plots import render_plots

    trigger_drift, trigger_eval, trigger_predictions = trigger
    set_months(root / PARAMS_FILE, reference=month, current=month)
    if accept_problems:
        # Committed with the retrain: the PR's params diff shows that a person accepted the data.
        accept_data_problems(root / PARAMS_FILE, month)
    err_console.print(f"[bold]retraining on {month} (branch {branch})[/bold]")
    dvc(root, "repro")
    # No second gate here: whether to retrain was decided once, by the check's trigger (which
    # already pitted a challenger against the champion, out of time). This comparison is the
    # evidence the PR shows: the champion and the new model on the rows the new model never saw.
    holdout = root / FEATURES_DIR / "holdout.parquet"
    comparison, scored = evidence.compare(root / CHAMPION_DIR, root / MODELS_DIR, holdout, trigger_eval)
    evidence.write_evidence(comparison, scored, trigger_drift, trigger_predictions)
    plots = render_plots(root / LOOP_DIR)
    markdown = evidence_report.render_markdown(root, base, root / LOOP_REPORT, plots=plots)
    write_text(markdown, root / LOOP_REPORT)
    _commit(git, root, month, trigger_drift, comparison)
    return comparison


def _commit(git: Git, root: Path, month: str, drift: Drift, comparison: Comparison) -> bool:
    """Commit exactly the pipeline's small files and the evidence; False when nothing changed."""
    cached, uncached = dvc_outputs(root)
    paths = {PARAMS_FILE.as_posix(), DVC_LOCK.as_posix(), *uncached, LOOP_DIR.as_posix()}
    # DVC keeps cached outputs out of git with a .gitignore beside each; on a repository that
    # never ran the pipeline before, those files are new and belong in the same commit.
    paths |= {(Path(p).parent / ".gitignore").as_posix() for p in cached}
    git.run("add", "--", *sorted(p for p in paths if (root / p).exists()))
    if git.ok("diff", "--cached", "--quiet"):
        return False
    text = proposal_text(month, drift.reference_month, drift.reason, comparison)
    git.run("commit", "--quiet", "-m", text.title, "-m", text.commit_body)
    # The record a rerun decides ownership by (autoops/branch.py): this very commit id.
    record_proposed(git, f"{BRANCH_PREFIX}{month}", git.run("rev-parse", "HEAD"), month)
    return True
