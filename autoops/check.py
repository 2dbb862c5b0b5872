"""`autoops check`: point months.current at a month, check its data, `dvc repro drift`, the verdict.

The data checks run first (`dvc repro data_checks`): a month that fails a blocking one stops there,
with one line naming the check, its figure and its threshold ("data problem in <month>: ..."), and
is never featurised, scored or proposed. ``--accept-data-problems`` is a person's override: the
month joins ``data_checks.accepted_months`` and the check goes on to the trigger's verdict.

Never commits or pushes; the verdict goes to .autoops/check.json and a markdown summary.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from rich.console import Console

from autoops.evidence_report import data_checks_lines, drift_table
from autoops.gitops import LoopError, dvc
from autoops.params_edit import accept_data_problems, set_months
from autoops.project import BRANCH_PREFIX, ensure_work_dir, to_month
from autoops.sources import latest_month
from core.artifacts.check import CheckResult, ChecksOutcome
from core.artifacts.data_checks import DataChecks
from core.artifacts.drift import Drift
from core.io import write_text
from core.months import month_index
from core.params import load_params
from core.paths import CHECK_RESULT, DATA_CHECKS_METRICS, DRIFT_METRICS, DRIFT_REPORT, PARAMS_FILE, WORK_DIR

CHECK_JSON = CHECK_RESULT
CHECK_MD = WORK_DIR / "check.md"
# The drift report that triggered a retrain, kept for the CI artifact.
EVIDENCE_DIR = WORK_DIR / "evidence"
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def run_check(
    root: Path, month: str | None, as_of: date | None = None, accept_problems: bool = False
) -> CheckResult:
    # Here, not at the top: core.trigger imports scikit-learn (~1.1 s of CPU), which `autoops --help` and
    # the other commands never need.
    from core.trigger import data_problem

    params = load_params(root / PARAMS_FILE)
    month = to_month(month) if month else latest_month(root, params, as_of)
    reference = params.months.reference
    if month_index(month) < month_index(reference):
        raise LoopError(f"month {month} is before the model's reference month {reference}")
    set_months(root / PARAMS_FILE, current=month)
    if accept_problems:
        accept_data_problems_in(root, month)
    err_console.print(f"[bold]checking {month} against the model trained on {reference}[/bold]")
    dvc(root, "repro", "data_checks")
    checks = DataChecks.read(root / DATA_CHECKS_METRICS)
    if checks.month != month:
        raise LoopError(f"{DATA_CHECKS_METRICS} describes {checks.month}, not {month}; rerun the check")
    if problem := data_problem(checks.as_dict()):
        return _write_result(
            root, data_problem_result(checks, problem), data_problem_markdown(checks, problem)
        )
    dvc(root, "repro", "drift")
    drift = Drift.read(root / DRIFT_METRICS)
    if drift.current_month != month:
        raise LoopError(f"{DRIFT_METRICS} describes {drift.current_month}, not {month}; rerun the check")
    breach = drift.retrain_recommended
    result = CheckResult(
        month=month,
        reference_month=drift.reference_month,
        model_version=drift.model_version,
        breach=breach,
        data_drift=drift.data_drift,
        performance_drift=drift.performance_drift,
        expected_gain=drift.expected_gain,
        drifted_columns=drift.drifted_columns,
        reason=drift.reason,
        branch=f"{BRANCH_PREFIX}{month}",
        data_problem=None,
        data_checks=_checks_outcome(checks),
    )
    _write_result(root, result, check_markdown(drift, breach))
    if (root / DRIFT_REPORT).exists():
        # Kept aside: `propose` moves the working tree on, but this is the report that triggered it.
        (root / EVIDENCE_DIR).mkdir(exist_ok=True)
        shutil.copy2(root / DRIFT_REPORT, root / EVIDENCE_DIR / DRIFT_REPORT.name)
    return result


def accept_data_problems_in(root: Path, month: str) -> None:
    if accept_data_problems(root / PARAMS_FILE, month):
        err_console.print(f"data problems in {month} accepted: added to data_checks.accepted_months")


def _write_result(root: Path, result: CheckResult, summary: str) -> CheckResult:
    work = ensure_work_dir(root)
    result.write(work / CHECK_RESULT.name)
    write_text(summary, work / CHECK_MD.name)
    return result


def _checks_outcome(checks: DataChecks) -> ChecksOutcome:
    return ChecksOutcome.model_validate(
        checks.model_dump(include={"passed", "accepted", "blocking", "warnings", "problem"})
    )


def data_problem_result(checks: DataChecks, problem: str) -> CheckResult:
    """check.json for a month the data checks stopped: no breach, and the problem as the reason."""
    return CheckResult(
        month=checks.month,
        reference_month=checks.reference_month,
        model_version=None,
        breach=False,
        data_drift=None,
        performance_drift=None,
        expected_gain=None,
        drifted_columns=[],
        reason=problem,
        branch=f"{BRANCH_PREFIX}{checks.month}",
        data_problem=problem,
        data_checks=_checks_outcome(checks),
    )


def data_problem_markdown(checks: DataChecks, problem: str) -> str:
    """The job summary (and the issue's body) for a month the data checks stopped."""
    month = checks.month
    return (
        "\n".join(
            [
                f"## Auto-Ops drift check: {month} vs {checks.reference_month} — data problem, no retrain",
                "",
                f"> **{problem}**",
                "",
                f"{month} failed a blocking data check, so it was not featurised, scored or proposed: "
                "a retrain on a broken feed would learn the fault. Fix the data at its source and run the "
                "check again; if the data is right after all, run drift-watch by hand for this month with "
                f"`accept_data_problems` ticked (locally: `autoops check --month {month} "
                "--accept-data-problems`).",
                "",
                *data_checks_lines(checks),
            ]
        )
        + "\n"
    )


def check_markdown(drift: Drift, breach: bool) -> str:
    # Here, not at the top: core.trigger imports scikit-learn (~1.1 s of CPU; see run_check).
    from core.trigger import gain_sentence

    head = "Retrain recommended" if breach else "No retrain needed"
    gain = drift.gain
    lines = [
        f"## Auto-Ops drift check: {drift.current_month} vs {drift.reference_month} — {head}",
        "",
        f"> {drift.reason}",
        "",
        *(
            [
                f"**The trigger's estimate**: {gain_sentence(gain.as_dict())}; it retrains at "
                f"{gain.min_retrain_gain:.0%} or on data drift.",
                "",
            ]
            if gain
            else []
        ),
        f"Model `{drift.model_version}`: MAE {drift.current_mae:.3f} on {drift.current_month} vs "
        f"{drift.reference_mae:.3f} on its {drift.reference_month} holdout "
        f"({drift.mae_change:+.1%}).",
        "",
        *drift_table(drift),
        "",
        *(data_checks_lines(drift.data_checks) if drift.data_checks else []),
    ]
    if breach:
        month = drift.current_month
        lines.append(f"Next: `autoops propose --month {month}` opens `{BRANCH_PREFIX}{month}`.")
    return "\n".join(lines) + "\n"
