"""`autoops check`: point months.current at a month, `dvc repro drift`, and the trigger's verdict.

Never commits or pushes; the verdict goes to .autoops/check.json and a markdown summary.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console

from autoops.gitops import LoopError, dvc
from autoops.params_edit import set_months
from autoops.project import BRANCH_PREFIX, ensure_work_dir, read_json, to_month
from autoops.sources import latest_month
from stages.io import write_json, write_text
from stages.months import month_index
from stages.params import load_params
from stages.paths import DRIFT_METRICS, DRIFT_REPORT, PARAMS_FILE, WORK_DIR

CHECK_JSON = WORK_DIR / "check.json"
CHECK_MD = WORK_DIR / "check.md"
# The drift report that triggered a retrain, kept for the CI artifact.
EVIDENCE_DIR = WORK_DIR / "evidence"
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def run_check(root: Path, month: str | None, as_of: date | None = None) -> dict[str, Any]:
    params = load_params(root / PARAMS_FILE)
    month = to_month(month) if month else latest_month(root, params, as_of)
    reference = params.months.reference
    if month_index(month) < month_index(reference):
        raise LoopError(f"month {month} is before the model's reference month {reference}")
    set_months(root / PARAMS_FILE, current=month)
    err_console.print(f"[bold]checking {month} against the model trained on {reference}[/bold]")
    dvc(root, "repro", "drift")
    drift = read_json(root / DRIFT_METRICS)
    if drift.get("current_month") != month:
        raise LoopError(
            f"{DRIFT_METRICS} describes {drift.get('current_month')}, not {month}; rerun the check"
        )
    breach = bool(drift["retrain_recommended"])
    result = {
        "month": month,
        "reference_month": drift["reference_month"],
        "model_version": drift["model_version"],
        "breach": breach,
        "data_drift": drift["data_drift"],
        "performance_drift": drift["performance_drift"],
        "expected_gain": drift["expected_gain"],
        "drifted_columns": drift["drifted_columns"],
        "reason": drift["reason"],
        "branch": f"{BRANCH_PREFIX}{month}",
    }
    work = ensure_work_dir(root)
    write_json(result, work / CHECK_JSON.name)
    summary = check_markdown(drift, breach)
    write_text(summary, work / CHECK_MD.name)
    if (root / DRIFT_REPORT).exists():
        # Kept aside: `propose` moves the working tree on, but this is the report that triggered it.
        (work / EVIDENCE_DIR.name).mkdir(exist_ok=True)
        shutil.copy2(root / DRIFT_REPORT, work / EVIDENCE_DIR.name / DRIFT_REPORT.name)
    return result


def check_markdown(drift: dict[str, Any], breach: bool) -> str:
    from autoops.evidence_report import drift_table
    from stages.trigger import gain_sentence

    head = "Retrain recommended" if breach else "No retrain needed"
    gain = drift["gain"]
    lines = [
        f"## Auto-Ops drift check: {drift['current_month']} vs {drift['reference_month']} — {head}",
        "",
        f"> {drift['reason']}",
        "",
        *(
            [
                f"**The trigger's estimate**: {gain_sentence(gain)}; it retrains at "
                f"{gain['min_retrain_gain']:.0%} or on data drift.",
                "",
            ]
            if gain
            else []
        ),
        f"Model `{drift['model_version']}`: MAE {drift['current_mae']:.3f} on {drift['current_month']} vs "
        f"{drift['reference_mae']:.3f} on its {drift['reference_month']} holdout "
        f"({drift['mae_change']:+.1%}).",
        "",
        *drift_table(drift),
        "",
    ]
    if breach:
        month = drift["current_month"]
        lines.append(f"Next: `autoops propose --month {month}` opens `{BRANCH_PREFIX}{month}`.")
    return "\n".join(lines) + "\n"
