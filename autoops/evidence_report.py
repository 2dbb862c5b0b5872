"""The retrain pull request's markdown, from the evidence files on the branch.

Everything here is a pure function of files in the working tree (autoops/evidence.py's evidence,
plus `dvc ... diff` against the base branch), so the report committed on the branch, the one CML
posts and a local ``autoops report`` are the same document, and rerunning on the same data gives
the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autoops.gitops import LoopError, dvc
from core.artifacts.base import ArtifactError
from core.artifacts.comparison import Comparison
from core.artifacts.data_checks import DataChecks
from core.artifacts.drift import DataDrift, Drift
from core.artifacts.metrics import Interval
from core.bootstrap import percent_with_interval
from core.paths import LOOP_COMPARISON, LOOP_DIR, LOOP_DRIFT

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


def _interval(interval: Interval | None) -> dict[str, Any] | None:
    # core/bootstrap.py's formatting takes the interval as the dict it computes.
    return interval.as_dict() if interval else None


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
    for needed in (LOOP_DRIFT, LOOP_COMPARISON):
        if not (root / needed).exists():
            raise LoopError(f"{needed}: missing; `autoops report` describes a branch `autoops propose` made")
    try:
        drift, comp = Drift.read(root / LOOP_DRIFT), Comparison.read(root / LOOP_COMPARISON)
    except ArtifactError as exc:
        raise LoopError(str(exc)) from None
    if plots is None:
        from autoops.evidence_plots import render_plots  # matplotlib only when no plots were given

        plots = render_plots(folder)
    diffs = dvc_diffs(root, base)
    lines = [
        *_proposal_lines(drift, comp, base),
        *([*data_checks_lines(drift.data_checks), ""] if drift.data_checks else []),
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


def _proposal_lines(drift: Drift, comp: Comparison, base: str) -> list[str]:
    month, ref = comp.month, comp.champion.reference_month
    return [
        f"## Auto-Ops retrain proposal: {month}",
        "",
        f"The model serving on `{base}` learned **{ref}**. Checked against **{month}**, the drift check "
        "says:",
        "",
        f"> **{drift.reason}**",
        "",
        *_estimate_lines(drift),
        f"This branch moves `months.reference` to **{month}** and retrains (`dvc repro`). "
        "Merging it ships the new model: the release workflow builds the serving image from it and "
        "moves the MLflow `champion` alias. Closing it keeps the current model.",
        "",
    ]


def _comparison_lines(comp: Comparison, base: str) -> list[str]:
    month, ref = comp.month, comp.champion.reference_month
    champ, chall, change = comp.champion, comp.challenger, comp.change
    mark = "✅" if comp.challenger_better else "❌"
    lines = [
        f"### Champion vs challenger on the same new data ({month} holdout, {comp.holdout.rows:,} rows)",
        "",
        "Both models predict the same rows: the part of the new month the challenger did not train on.",
        "",
        "| model | trained on | version | MAE | RMSE | R² |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for label, m in ((f"champion (`{base}`)", champ), ("challenger (this PR)", chall)):
        mm = m.metrics
        lines.append(
            f"| {label} | {', '.join(m.training_months)} | `{m.version}` | "
            f"{_fmt(mm.mae)} | {_fmt(mm.rmse)} | {_fmt(mm.r2)} |"
        )
    relative = percent_with_interval(change.mae_relative, _interval(change.mae_relative_ci95), inside=True)
    lines += [
        f"| change | | | {change.mae:+.3f} ({relative}) | {change.rmse:+.3f} | {change.r2:+.3f} |",
        "",
        f"{mark} {comp.verdict}.",
    ]
    before = champ.reference_holdout
    if before:
        lines += [
            "",
            f"For scale: on its own {ref} holdout the champion had MAE {_fmt(before.mae)}, "
            f"RMSE {_fmt(before.rmse)}, R² {_fmt(before.r2)}.",
        ]
    if change.mae_relative_ci95:
        lines += [
            "",
            "The interval is a paired bootstrap over the holdout's trips (both models' errors on the same "
            "resampled trips, core/bootstrap.py): how far the change could move with other trips.",
        ]
    return [*lines, *who_loses_lines(comp)]


def who_loses_lines(comp: Comparison) -> list[str]:
    """Challenger vs champion per borough, hour band and vendor (autoops/segments.py), the
    segments the challenger is worse on first: where merging costs something, and on how many trips."""
    segments = comp.segments
    if not segments:
        return []
    worse = [s for s in segments if s.challenger_worse]
    summary = (
        f"The challenger is worse on {len(worse)} of {len(segments)} segments, listed first."
        if worse
        else f"The challenger is better on all {len(segments)} segments."
    )
    lines = [
        "",
        f"#### Who loses: by pickup borough, hour band and vendor ({comp.month} holdout)",
        "",
        f"{summary} Change = challenger MAE / champion MAE - 1, with its paired bootstrap 95% interval; "
        "a segment of few trips has a wide one.",
        "",
        "| | by | segment | trips | champion MAE | challenger MAE | change (95% CI) |",
        "| :---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in segments:
        change = (
            "n/a"
            if row.mae_relative is None
            else percent_with_interval(row.mae_relative, _interval(row.mae_relative_ci95))
        )
        mark = "❌" if row.challenger_worse else "✅"
        lines.append(
            f"| {mark} | {row.by} | {row.segment} | {row.trips:,} | "
            f"{row.champion_mae:.3f} | {row.challenger_mae:.3f} | {change} |"
        )
    return lines


def _drift_lines(drift: Drift) -> list[str]:
    return [
        "",
        f"### Data drift: {drift.reference_month} reference holdout vs {drift.current_month}",
        "",
        f"{len(drift.drifted_columns)} of {drift.n_columns} columns drifted "
        f"(share {drift.drifted_share:.2f}; the dataset counts as drifted at "
        f"{drift.drift_share_threshold}). Performance: MAE {drift.current_mae:.3f} vs "
        f"{drift.reference_mae:.3f} on the reference holdout ({drift.mae_change:+.1%}; threshold "
        f"{drift.threshold:+.0%}).",
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


def _evidently_lines(drift: Drift, base: str, run_url: str | None) -> list[str]:
    if run_url:
        return [
            f"The full interactive drift report ({drift.reference_month} vs {drift.current_month}) is "
            f"the `evidently-drift-report` artifact of [this workflow run]({run_url})."
        ]
    return [
        f"The full interactive drift report ({drift.reference_month} vs {drift.current_month}) is "
        "attached to the drift-watch workflow run that opened this PR (artifact "
        "`evidently-drift-report`); locally, `autoops check --month "
        f"{drift.current_month}` on `{base}` writes it to `reports/drift_report.html`."
    ]


def _estimate_lines(drift: Drift) -> list[str]:
    """The trigger's estimate, the evidence the decision to retrain rests on."""
    # Here, not at the top: core.trigger imports scikit-learn (~1.4 s of CPU), which `autoops diff` never
    # needs.
    from core.trigger import gain_sentence

    gain = drift.gain
    if not gain:
        return []
    return [
        f"**The trigger's estimate**: {gain_sentence(gain.as_dict())}. Auto-Ops retrains when this reaches "
        f"{gain.min_retrain_gain:.0%} or on data drift (`drift.min_retrain_gain`, `drift.drift_share`).",
        "",
    ]


def drift_table(drift: DataDrift) -> list[str]:
    """The drift stage's per-column results as a markdown table, drifted columns first."""
    lines = ["| column | score | method | threshold | drifted |", "| --- | ---: | --- | ---: | :---: |"]
    columns = drift.columns
    for name in sorted(columns, key=lambda c: (not columns[c].drifted, c)):
        col = columns[name]
        lines.append(
            f"| `{name}` | {col.score:.4g} | {col.method} | {col.threshold} | "
            f"{'**yes**' if col.drifted else 'no'} |"
        )
    return lines


def data_checks_lines(checks: DataChecks) -> list[str]:
    """The data checks (core/data_checks.py) for a reviewer: what failed or warned, every check's
    figure, and the target's distribution per vendor against the reference month."""
    month, ref = checks.month, checks.reference_month
    failed = [c for c in checks.checks if not c.passed]
    lines = [f"### Data checks: {month} against {ref}", ""]
    if checks.accepted and not checks.passed:
        lines += [
            f"> **Accepted by a person** (`data_checks.accepted_months` lists {month}): {checks.problem}. "
            "Without that override this month would not have been proposed.",
            "",
        ]
    if failed:
        lines += ["| check | | figure | threshold |", "| --- | :---: | --- | --- |"]
        for check in sorted(failed, key=lambda c: not c.blocking):
            mark = "❌ blocks" if check.blocking else "⚠️ warning"
            lines.append(f"| `{check.name}` | {mark} | {check.detail} | {check.threshold_text} |")
    else:
        lines.append(f"Every data check passed ({len(checks.checks)} checks).")
    lines += ["", "<details><summary>Every check</summary>", "", "| check | passed | figure | threshold |"]
    lines.append("| --- | :---: | --- | --- |")
    for check in checks.checks:
        mark = "yes" if check.passed else ("**no**" if check.blocking else "warning")
        lines.append(f"| `{check.name}` | {mark} | {check.detail} | {check.threshold_text} |")
    lines += ["", "</details>", "", *target_table_lines(checks)]
    return lines


def target_table_lines(checks: DataChecks) -> list[str]:
    """Median trip duration per vendor and distance band, reference month -> this month."""
    rows = checks.target_by_vendor
    bands = list(dict.fromkeys(r.band for r in rows))
    vendors = list(dict.fromkeys(r.vendor for r in rows))
    cell = {(r.vendor, r.band): r for r in rows}
    lines = [
        f"**Trip duration by distance band, per vendor** (median minutes, {checks.reference_month} → "
        f"{checks.month}, the change and this month's trips in brackets). A feed fault moves one "
        "vendor; a changed world moves them all.",
        "",
        "| vendor | " + " | ".join(bands) + " |",
        "| --- |" + " ---: |" * len(bands),
    ]
    for vendor in vendors:
        cells = []
        for band in bands:
            r = cell[vendor, band]
            if r.change is None:
                cells.append(f"— ({r.current_trips:,})")
            else:
                cells.append(
                    f"{r.reference_median_min:.1f} → {r.current_median_min:.1f} "
                    f"({r.change:+.0%}; {r.current_trips:,})"
                )
        lines.append(f"| {vendor} | " + " | ".join(cells) + " |")
    return lines
