"""The evidence a retrain pull request carries: champion vs challenger, plots, and the markdown.

Everything here is a pure function of files in the working tree (plus `dvc ... diff` against the
base branch), so the report committed on the branch, the one CML posts and a local
``autoops report`` are the same document, and rerunning on the same data gives the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoops.gitops import LoopError, dvc
from stages.evaluate import PREDICTION, load_trained_model
from stages.features import TARGET
from stages.io import StageError, file_sha256, write_json, write_text
from stages.metrics import mae_by_hour, regression_metrics
from stages.paths import LOOP_DIR, LOOP_REPORT
from stages.train import xy

TRIGGER_DRIFT = LOOP_DIR / "drift.json"
COMPARISON = LOOP_DIR / "comparison.json"
ERROR_BY_HOUR = LOOP_DIR / "error_by_hour.csv"
PRED_VS_ACTUAL = LOOP_DIR / "predicted_vs_actual.csv"
DURATION_HIST = LOOP_DIR / "duration_distribution.csv"
REPORT = LOOP_REPORT
# Enough points to see the shape of each model's errors, few enough for a small committed CSV.
SCATTER_POINTS = 1000
DURATION_BINS = np.arange(0, 62, 2)


# --- champion vs challenger --------------------------------------------------------------------


def load_model_and_card(models_dir: Path) -> tuple[Any, dict[str, Any]]:
    """``stages.evaluate.load_trained_model`` (same order), its failures as the loop's errors."""
    try:
        return load_trained_model(models_dir)
    except (StageError, ValueError) as exc:  # ValueError: the model does not match its card
        raise LoopError(str(exc)) from exc


def compare(
    champion_dir: Path,
    challenger_dir: Path,
    holdout_path: Path,
    champion_evaluation: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score both models on the very same rows: the new month's holdout the challenger never saw.

    Returns the comparison and the holdout with both models' predictions (for the plots).
    """
    champion, champion_card = load_model_and_card(champion_dir)
    challenger, challenger_card = load_model_and_card(challenger_dir)
    if not holdout_path.exists():
        raise LoopError(f"{holdout_path}: missing; run `dvc repro featurize`")
    holdout = pd.read_parquet(holdout_path)
    x, y = xy(holdout)
    scored = holdout[["pickup_hour", TARGET]].copy()
    scored["champion"] = np.asarray(champion.predict(x), dtype=np.float64)
    scored["challenger"] = np.asarray(challenger.predict(x), dtype=np.float64)
    champ = regression_metrics(y, scored["champion"].to_numpy())
    chall = regression_metrics(y, scored["challenger"].to_numpy())
    mae_change = chall["mae"] / champ["mae"] - 1.0
    # A fact for the report, not a gate: the decision to retrain was the trigger's (stages/trigger.py).
    better = mae_change < 0
    month = challenger_card["reference_month"]
    verdict = (
        f"the challenger {'beats' if better else 'does not beat'} the champion on the {month} holdout: "
        f"MAE {chall['mae']:.3f} vs {champ['mae']:.3f} ({mae_change:+.1%})"
    )
    comparison = {
        "month": month,
        "holdout": {"path": str(holdout_path), "sha256": file_sha256(holdout_path), "rows": len(holdout)},
        "champion": {
            "version": champion_card["version"],
            "training_months": champion_card["training_months"],
            "metrics": champ,
            # What the champion scored when it was current: the baseline the drift is measured from.
            "reference_holdout": champion_evaluation.get("reference_holdout"),
            "reference_month": champion_card["reference_month"],
            "current_month_metrics": champion_evaluation.get("current"),
        },
        "challenger": {
            "version": challenger_card["version"],
            "training_months": challenger_card["training_months"],
            "reference_month": challenger_card["reference_month"],
            "metrics": chall,
        },
        "change": {
            "mae": round(chall["mae"] - champ["mae"], 6),
            "mae_relative": round(mae_change, 6),
            "rmse": round(chall["rmse"] - champ["rmse"], 6),
            "r2": round(chall["r2"] - champ["r2"], 6),
        },
        "challenger_better": bool(better),
        "verdict": verdict,
    }
    return comparison, scored


def write_evidence(
    comparison: dict[str, Any],
    scored: pd.DataFrame,
    trigger_drift: dict[str, Any],
    trigger_predictions: dict[str, pd.DataFrame],
) -> None:
    """The files the report is built from, all small enough to commit on the retrain branch."""
    write_json(trigger_drift, TRIGGER_DRIFT)
    write_json(comparison, COMPARISON)
    by_hour = pd.DataFrame(
        {
            "champion_reference_holdout_mae": mae_by_hour(trigger_predictions["holdout"], PREDICTION, TARGET),
            "champion_mae": mae_by_hour(scored, "champion", TARGET),
            "challenger_mae": mae_by_hour(scored, "challenger", TARGET),
        }
    ).reindex(range(24))
    by_hour.index.name = "hour"
    write_text(by_hour.round(4).reset_index().to_csv(index=False), ERROR_BY_HOUR)
    sample = scored.sample(n=min(SCATTER_POINTS, len(scored)), random_state=0)
    scatter = pd.DataFrame(
        {"actual": sample[TARGET], "champion": sample["champion"], "challenger": sample["challenger"]}
    )
    write_text(scatter.round(3).sort_values(["actual", "champion"]).to_csv(index=False), PRED_VS_ACTUAL)
    hist = pd.DataFrame({"bin_start_min": DURATION_BINS[:-1]})
    for label, frame in (("reference_share", "holdout"), ("current_share", "current")):
        counts, _ = np.histogram(trigger_predictions[frame][TARGET], bins=DURATION_BINS)
        hist[label] = (counts / max(1, counts.sum())).round(5)
    write_text(hist.to_csv(index=False), DURATION_HIST)


# --- plots -------------------------------------------------------------------------------------


# --- markdown ----------------------------------------------------------------------------------


# Long strings (the drift verdict's reason) make the metrics table unreadable; the report already
# quotes the reason in full.
DIFF_MAX_TEXT = 24


def dvc_diffs(root: Path, base: str) -> dict[str, str]:
    """`dvc params diff` and `dvc metrics diff` of the working tree against ``base``, as markdown.

    Taken as JSON and rendered here, sorted: DVC's own --md tables list the metrics files in no
    fixed order, which would make every rerun of propose a "change" to the committed report.
    """
    out = {}
    for kind, extra in (("params", []), ("metrics", ["--precision", "4"])):
        result = dvc(root, kind, "diff", base, "--json", *extra, capture=True, check=False)
        if result.returncode != 0:
            last = (result.stderr or "").strip().splitlines()
            out[kind] = f"_`dvc {kind} diff {base}` failed: {last[-1] if last else 'no output'}_"
            continue
        try:
            changes = json.loads(result.stdout or "{}")
        except json.JSONDecodeError:
            out[kind] = f"_`dvc {kind} diff {base}` printed no JSON_"
            continue
        out[kind] = _diff_table(changes, base, with_change=kind == "metrics")
    return out


def _diff_table(changes: dict[str, dict[str, dict[str, Any]]], base: str, *, with_change: bool) -> str:
    rows = []
    for path in sorted(changes):
        for key in sorted(changes[path]):
            entry = changes[path][key]
            old, new = entry.get("old"), entry.get("new")
            if any(isinstance(v, str) and len(v) > DIFF_MAX_TEXT for v in (old, new)):
                continue
            row = [path, key, _cell(old), _cell(new)]
            if with_change:
                diff = entry.get("diff")
                numeric = isinstance(diff, int | float) and not isinstance(diff, bool)
                row.append(_cell(diff) if numeric else "")
            rows.append("| " + " | ".join(row) + " |")
    if not rows:
        return "_no changes_"
    head = ["file", "key", f"`{base}`", "this branch", *(["change"] if with_change else [])]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *rows])


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _rel(target: Path, report_path: Path) -> str:
    # Relative to the markdown file: that is how CML finds local images to upload, and how
    # GitHub renders them when the file is browsed on the branch.
    return Path(os.path.relpath(target.resolve(), report_path.resolve().parent)).as_posix()


def render_markdown(
    root: Path,
    base: str,
    report_path: Path,
    *,
    run_url: str | None = None,
    plots: list[tuple[str, Path]] | None = None,
) -> str:
    folder = root / LOOP_DIR
    for needed in (TRIGGER_DRIFT, COMPARISON):
        if not (root / needed).exists():
            raise LoopError(f"{needed}: missing; `autoops report` describes a branch `autoops propose` made")
    drift = json.loads((root / TRIGGER_DRIFT).read_text())
    comp = json.loads((root / COMPARISON).read_text())
    if plots is None:
        from autoops.evidence_plots import render_plots  # it imports this module's file names

        plots = render_plots(folder)
    diffs = dvc_diffs(root, base)
    lines = [
        *_proposal_lines(drift, comp, base),
        *_comparison_lines(comp, base),
        *_drift_lines(drift),
        "",
        "### Plots",
        "",
    ]
    for title, path in plots:
        lines += [f"![{title}]({_rel(path, report_path)})", ""]
    lines += _diff_lines(diffs, base)
    lines += _evidently_lines(drift, base, run_url)
    lines += [
        "",
        "<sub>Generated by `autoops report`; the numbers behind it are in "
        f"`{LOOP_DIR.as_posix()}/` on this branch.</sub>",
    ]
    return "\n".join(lines) + "\n"


def _proposal_lines(drift: dict[str, Any], comp: dict[str, Any], base: str) -> list[str]:
    month, ref = comp["month"], comp["champion"]["reference_month"]
    return [
        f"## Auto-Ops retrain proposal: {month}",
        "",
        f"The model serving on `{base}` learned **{ref}**. Checked against **{month}**, the drift check "
        "says:",
        "",
        f"> **{drift['reason']}**",
        "",
        *_estimate_lines(drift),
        f"This branch moves `months.reference` to **{month}** and retrains (`dvc repro`). "
        "Merging it ships the new model: the release workflow builds the serving image from it and "
        "moves the MLflow `champion` alias. Closing it keeps the current model.",
        "",
    ]


def _comparison_lines(comp: dict[str, Any], base: str) -> list[str]:
    month, ref = comp["month"], comp["champion"]["reference_month"]
    champ, chall, change = comp["champion"], comp["challenger"], comp["change"]
    mark = "✅" if comp["challenger_better"] else "❌"
    lines = [
        f"### Champion vs challenger on the same new data "
        f"({month} holdout, {comp['holdout']['rows']:,} rows)",
        "",
        "Both models predict the same rows: the part of the new month the challenger did not train on.",
        "",
        "| model | trained on | version | MAE | RMSE | R² |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for label, m in ((f"champion (`{base}`)", champ), ("challenger (this PR)", chall)):
        mm = m["metrics"]
        lines.append(
            f"| {label} | {', '.join(m['training_months'])} | `{m['version']}` | "
            f"{_fmt(mm['mae'])} | {_fmt(mm['rmse'])} | {_fmt(mm['r2'])} |"
        )
    lines += [
        f"| change | | | {change['mae']:+.3f} ({change['mae_relative']:+.1%}) | {change['rmse']:+.3f} "
        f"| {change['r2']:+.3f} |",
        "",
        f"{mark} {comp['verdict']}.",
    ]
    before = champ.get("reference_holdout")
    if before:
        lines += [
            "",
            f"For scale: on its own {ref} holdout the champion had MAE {_fmt(before['mae'])}, "
            f"RMSE {_fmt(before['rmse'])}, R² {_fmt(before['r2'])}.",
        ]
    return lines


def _drift_lines(drift: dict[str, Any]) -> list[str]:
    return [
        "",
        f"### Data drift: {drift['reference_month']} reference holdout vs {drift['current_month']}",
        "",
        f"{len(drift['drifted_columns'])} of {drift['n_columns']} columns drifted "
        f"(share {drift['drifted_share']:.2f}; the dataset counts as drifted at "
        f"{drift['drift_share_threshold']}). Performance: MAE {drift['current_mae']:.3f} vs "
        f"{drift['reference_mae']:.3f} on the reference holdout ({drift['mae_change']:+.1%}; threshold "
        f"{drift['threshold']:+.0%}).",
        "",
        *drift_table(drift),
    ]


def _diff_lines(diffs: dict[str, str], base: str) -> list[str]:
    return [
        f"### Parameters (`dvc params diff {base}`)",
        "",
        diffs["params"],
        "",
        f"### Metrics (`dvc metrics diff {base}`)",
        "",
        "<details><summary>All changed metrics</summary>",
        "",
        diffs["metrics"],
        "",
        "</details>",
        "",
        "### Evidently report",
        "",
    ]


def _evidently_lines(drift: dict[str, Any], base: str, run_url: str | None) -> list[str]:
    if run_url:
        return [
            f"The full interactive drift report ({drift['reference_month']} vs {drift['current_month']}) is "
            f"the `evidently-drift-report` artifact of [this workflow run]({run_url})."
        ]
    return [
        f"The full interactive drift report ({drift['reference_month']} vs {drift['current_month']}) is "
            "attached to the drift-watch workflow run that opened this PR (artifact "
            "`evidently-drift-report`); locally, `autoops check --month "
        f"{drift['current_month']}` on `{base}` writes it to `reports/drift_report.html`."
    ]


def _estimate_lines(drift: dict[str, Any]) -> list[str]:
    """The trigger's estimate, the evidence the decision to retrain rests on."""
    from stages.trigger import gain_sentence

    gain = drift.get("gain")
    if not gain:
        return []
    return [
        f"**The trigger's estimate**: {gain_sentence(gain)}. Auto-Ops retrains when this reaches "
        f"{gain['min_retrain_gain']:.0%} or on data drift (`drift.min_retrain_gain`, `drift.drift_share`).",
        "",
    ]


def drift_table(drift: dict[str, Any]) -> list[str]:
    """The drift stage's per-column results as a markdown table, drifted columns first."""
    lines = ["| column | score | method | threshold | drifted |", "| --- | ---: | --- | ---: | :---: |"]
    columns = drift["columns"]
    for name in sorted(columns, key=lambda c: (not columns[c]["drifted"], c)):
        col = columns[name]
        lines.append(
            f"| `{name}` | {col['score']:.4g} | {col['method']} | {col['threshold']} | "
            f"{'**yes**' if col['drifted'] else 'no'} |"
        )
    return lines
