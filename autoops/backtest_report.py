"""Backtest summaries and reports: JSON, a markdown table, a PNG plot and the DVC plot's CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from autoops.backtest_hindsight import hindsight
from autoops.backtest_policy import BASELINE, CALENDAR, STATIC, Policy
from core.artifacts.backtest import Backtest, PolicySummary, Step
from core.io import atomic_path, write_text
from core.paths import BACKTEST_RESULT

JSON_FILE = BACKTEST_RESULT.name
MARKDOWN_FILE = "backtest.md"
PNG_FILE = "backtest.png"
# Under reports/plots/ beside the pipeline's plot data; dvc.yaml's top-level `plots:` renders it.
CSV_FILE = "plots/backtest_mae.csv"
FRONTIER_CSV = "plots/backtest_frontier.csv"
TRIGGER = "auto"
# The frontier's rows in the DVC plot's CSV: the best schedule with at most ``retrains`` retrains.
HINDSIGHT = "hindsight_limit"


def summarize(policies: list[Policy], records: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per policy: mean MAE/RMSE, degradation vs ``periodic_k1``, its reduction vs ``static``, retrains.

    Only scored months count (not the bootstrap month, where nothing was deployed yet).
    """
    scored = {name: [r for r in rows if not r.get("bootstrap")] for name, rows in records.items()}
    baseline = {r["month"]: r["mae"] for r in scored[BASELINE]}

    def degradation(name: str) -> float:
        rows = scored[name]
        return sum(r["mae"] - baseline[r["month"]] for r in rows) / len(rows)

    static = degradation(STATIC)
    out = {}
    for policy in policies:
        rows = scored[policy.name]
        deg = degradation(policy.name)
        # Undefined when static does not degrade at all (nothing to reduce): say so with null.
        reduction = 1.0 - deg / static if static > 1e-12 else None
        out[policy.name] = {
            "description": policy.description,
            "mean_mae": round(sum(r["mae"] for r in rows) / len(rows), 4),
            "mean_rmse": round(sum(r["rmse"] for r in rows) / len(rows), 4),
            "degradation": round(deg, 4),
            "degradation_reduction": None if reduction is None else round(reduction, 4),
            "retrains": sum(bool(r["retrain"]) for r in rows),
            "retrain_months": [r["month"] for r in rows if r["retrain"]],
        }
    return out


def versus_calendar(summary: dict[str, dict[str, Any]], name: str = TRIGGER) -> dict[str, Any] | None:
    """Does ``name`` dominate the calendar? No ``periodic_kK`` may have a lower mean MAE with no more
    retrains. (A lower mean MAE is exactly "more degradation removed" whenever static degrades, and
    still decides when it does not.) None when ``name`` was not replayed.
    """
    point = summary.get(name)
    if point is None:
        return None
    beaten_by = [
        f"periodic_k{k}"
        for k in CALENDAR
        if summary[f"periodic_k{k}"]["retrains"] <= point["retrains"]
        and summary[f"periodic_k{k}"]["mean_mae"] < point["mean_mae"] - 1e-9
    ]
    return {
        "policy": name,
        "retrains": point["retrains"],
        "mean_mae": point["mean_mae"],
        "degradation_reduction": point["degradation_reduction"],
        "dominates_calendar": not beaten_by,
        "beaten_by": beaten_by,
    }


def _point(s: PolicySummary) -> str:
    removed = s.degradation_reduction
    what = f"MAE {s.mean_mae:.3f}"
    if removed is not None:
        what += f", {removed:.0%} of the degradation removed"
    return f"{what}, {s.retrains} retrain{'' if s.retrains == 1 else 's'}"


def verdict_line(result: Backtest) -> str:
    """The one line that says whether the trigger beats the calendar."""
    check = result.versus_calendar
    if check is None:
        return f"`{TRIGGER}` was not replayed: no verdict on the calendar."
    summary = result.summary
    own = _point(summary[TRIGGER])
    if check.dominates_calendar:
        return (
            f"**`{TRIGGER}` dominates the calendar** ({own}): no `periodic_kK` (K = 1..6) has a lower "
            "mean MAE with no more retrains."
        )
    rivals = ", ".join(f"`{n}` ({_point(summary[n])})" for n in check.beaten_by)
    return f"**`{TRIGGER}` does not dominate the calendar** ({own}): beaten by {rivals}."


def hindsight_line(result: Backtest, name: str = TRIGGER) -> str:
    """``name``'s regret: how far the best schedule with as many retrains, in hindsight, is below it."""
    r = result.hindsight.regret.get(name)
    if r is None:
        return f"`{name}` was not replayed: no regret against the hindsight limit."
    months = ", ".join(r.limit_retrain_months) or "no month"
    return (
        f"**Hindsight limit:** knowing every month's labels in advance, the best schedule with at most "
        f"{r.retrains} retrain{'' if r.retrains == 1 else 's'} (retrain on {months}) reaches MAE "
        f"{r.limit_mae:.3f}; `{name}` ({r.mean_mae:.3f}) is {r.regret:+.3f} min "
        f"({r.regret_pct:+.1%}) above it: what any trigger could still win at that cost."
    )


def build_result(
    months: list[str], policies: list[Policy], replayed: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    summary = summarize(policies, replayed["policies"])
    return {
        "versus_calendar": versus_calendar(summary),
        "months": months,
        "scored_months": months[1:],
        "baseline": BASELINE,
        # JSON objects are written key-sorted; this keeps the order the policies were asked for.
        "policy_order": [p.name for p in policies],
        "settings": settings,
        "summary": summary,
        "policies": replayed["policies"],
        "models": replayed["models"],
        "hindsight": hindsight(months, replayed["hindsight_mae"], summary, replayed["policies"]),
    }


def _retrains(rows: list[Step]) -> str:
    n = sum(r.retrain for r in rows)
    return f"{n} retrain{'' if n == 1 else 's'}"


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def markdown(result: Backtest) -> str:
    months = result.months
    settings = result.settings
    lines = [
        f"# Backtest: {months[0]} to {months[-1]} ({len(months)} months, {settings.source})",
        "",
        f"Each month the deployed model predicts the month, then the policy decides whether to retrain on "
        f"it. {months[0]} only trains the first model; MAE is averaged over the {len(months) - 1} months "
        f"after it. **Degradation** = mean MAE above `{BASELINE}` (retrain every month); **reduction** = "
        f"1 - degradation / degradation of `{STATIC}`; **retrains** = the cost.",
        "",
        verdict_line(result),
        "",
        hindsight_line(result),
        "",
        "| policy | trigger | mean MAE | mean RMSE | degradation | reduction | retrains | regret |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in result.policy_order:
        s = result.summary[name]
        regret = result.hindsight.regret[name]
        lines.append(
            f"| `{name}` | {s.description} | {s.mean_mae:.3f} | {s.mean_rmse:.3f} | "
            f"{s.degradation:+.3f} | {_fmt(s.degradation_reduction, '.0%')} | {s.retrains} | "
            f"{regret.regret:+.3f} ({regret.regret_pct:+.1%}) |"
        )
    lines += [
        "",
        "Settings: " + ", ".join(f"{k} `{v}`" for k, v in settings.as_dict().items()),
        "",
        "## MAE per month (minutes; `*` = retrained on that month)",
        "",
        "| month | " + " | ".join(f"`{n}`" for n in result.policy_order) + " |",
        "|---|" + "---:|" * len(result.policy_order),
    ]
    for i, month in enumerate(months):
        cells = []
        for name in result.policy_order:
            row = result.policies[name][i]
            cells.append("train" if row.bootstrap else f"{row.mae:.3f}{' *' if row.retrain else ''}")
        lines.append(f"| {month} | " + " | ".join(cells) + " |")
    lines += ["", "## Why each policy retrained", ""]
    for name in result.policy_order:
        rows = result.policies[name]
        if name in (STATIC, BASELINE) or name.startswith("periodic"):
            continue
        reasons = [f"  - {r.month}: {r.reason}" for r in rows if r.retrain and not r.bootstrap]
        lines.append(f"- `{name}`:" + ("" if reasons else " never"))
        lines += reasons
    return "\n".join([*lines, *_hindsight_section(result)]) + "\n"


def _hindsight_section(result: Backtest) -> list[str]:
    by_cost: dict[int, list[str]] = {}
    for name in result.policy_order:
        r = result.hindsight.regret[name]
        by_cost.setdefault(r.retrains, []).append(f"`{name}` {r.mean_mae:.3f} ({r.regret:+.3f})")
    lines = [
        "",
        "## The hindsight limit: the best schedule with at most k retrains",
        "",
        "Every month's model scored on every later month; a dynamic programme over those scores finds "
        "the schedule with the lowest mean MAE for each number of retrains, with the replay's timing (a "
        "model retrained on a month serves from the next replayed month; a retrain on the last month "
        "never serves). No policy can be below it: it chooses knowing every month's labels. "
        "**Regret** = a policy's mean MAE above the limit at its own number of retrains.",
        "",
        "| retrains | best mean MAE | retrain on | policies with that many retrains (MAE, regret) |",
        "|---:|---:|---|---|",
    ]
    for point in result.hindsight.frontier:
        months = ", ".join(point.retrain_months) or "-"
        policies = "; ".join(by_cost.get(point.retrains, []))
        lines.append(f"| {point.retrains} | {point.mean_mae:.3f} | {months} | {policies} |")
    return lines


def csv_table(result: Backtest) -> pd.DataFrame:
    """One row per scored month, one MAE column per policy (the shape DVC's linear template wants)."""
    months = result.scored_months
    table = pd.DataFrame({"step": range(1, len(months) + 1), "month": months})
    for name in result.policy_order:
        table[name] = [round(r.mae, 4) for r in _scored(result.policies[name])]
    return table


def _scored(rows: list[Step]) -> list[Step]:
    """The months a deployed model was scored on (not the bootstrap month: none was deployed)."""
    return [r for r in rows if not r.bootstrap and r.mae is not None]


def _removed(result: Backtest) -> Any:
    """Mean MAE -> % of static's degradation removed, or None when static never degraded."""
    summary = result.summary
    baseline, static = summary[BASELINE].mean_mae, summary[STATIC].degradation
    if static <= 1e-12:
        return None
    return lambda mae: 100.0 * (1.0 - (mae - baseline) / static)


def frontier_table(result: Backtest) -> pd.DataFrame:
    """Retrains against mean MAE, one row per policy, then the hindsight limit at every number of
    retrains (policy ``hindsight_limit``): DVC's scatter plot of the trade-off."""
    removed = _removed(result)
    rows = [
        {
            "policy": name,
            "retrains": s.retrains,
            "mean_mae": s.mean_mae,
            "degradation_removed": None
            if s.degradation_reduction is None
            else round(100 * s.degradation_reduction, 2),
        }
        for name, s in result.summary.items()
    ]
    rows += [
        {
            "policy": HINDSIGHT,
            "retrains": p.retrains,
            "mean_mae": p.mean_mae,
            "degradation_removed": None if removed is None else round(removed(p.mean_mae), 2),
        }
        for p in result.hindsight.frontier
    ]
    return pd.DataFrame(rows, columns=["policy", "retrains", "mean_mae", "degradation_removed"])


def _plot_frontier(ax: Any, result: Backtest) -> None:
    """Mean MAE against retrains: the hindsight limit under every policy, the calendar, the rest."""
    summary = result.summary
    limit = result.hindsight.frontier
    ax.step(
        [p.retrains for p in limit],
        [p.mean_mae for p in limit],
        where="post",
        color="black",
        linewidth=1.2,
        label="hindsight limit: best schedule with <= k retrains",
    )
    points = sorted(
        (summary[f"periodic_k{k}"].retrains, summary[f"periodic_k{k}"].mean_mae, k) for k in CALENDAR
    )
    ax.plot(
        [p[0] for p in points], [p[1] for p in points], "-o", color="grey", label="calendar: every K months"
    )
    for x, y, k in points:
        ax.annotate(f"K={k}", (x, y), fontsize=7, color="grey", xytext=(3, 4), textcoords="offset points")
    for name in result.policy_order:
        if name.startswith("periodic_k"):
            continue
        big = name == TRIGGER
        s = summary[name]
        ax.scatter(
            s.retrains,
            s.mean_mae,
            s=220 if big else 50,
            marker="*" if big else "D",
            zorder=3,
            label=name,
        )
    removed = _removed(result)
    if removed is not None:
        # The same axis read as the share of static's degradation removed (linear in mean MAE).
        baseline, static = summary[BASELINE].mean_mae, summary[STATIC].degradation
        inverse = lambda pct: baseline + static * (1.0 - pct / 100.0)  # noqa: E731
        ax.secondary_yaxis("right", functions=(removed, inverse)).set_ylabel("degradation removed (%)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("retrains (the cost)")
    ax.set_ylabel("mean MAE (minutes)")
    ax.set_title("Trade-off: down and left is better; nothing goes below the black line", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_png(result: Backtest, path: Path, shift_month: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = result.scored_months
    x = list(range(len(months)))
    fig, (ax, trade) = plt.subplots(1, 2, figsize=(16, 5.5), dpi=100, gridspec_kw={"width_ratios": [2.2, 1]})
    styles = ["-", "--", "-.", ":"]
    # The calendar's K = 2..6 are in the trade-off panel; as lines here they would bury the rest.
    shown = [n for n in result.policy_order if not (n.startswith("periodic_k") and n != BASELINE)]
    for i, name in enumerate(shown):
        scored = _scored(result.policies[name])
        mae = [r.mae for r in scored]
        # Policies often share a model for months on end; dashes keep every line visible.
        (line,) = ax.plot(
            x,
            mae,
            marker=".",
            linestyle=styles[i % len(styles)],
            linewidth=2.2 if name in (STATIC, BASELINE) else 1.5,
            label=f"{name} ({_retrains(scored)})",
        )
        hits = [i for i, r in enumerate(scored) if r.retrain]
        # A retrain at month m changes the model that serves m+1: the mark sits on m's point.
        ax.scatter(
            hits, [mae[i] for i in hits], s=60, facecolors="none", edgecolors=line.get_color(), linewidths=1.5
        )
    if shift_month in months:
        ax.axvline(months.index(shift_month), color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            "regime shift",
            (months.index(shift_month), ax.get_ylim()[1]),
            fontsize=8,
            color="grey",
            ha="left",
            va="top",
            xytext=(3, -3),
            textcoords="offset points",
        )
    ax.set_xticks(x)
    ax.set_xticklabels(months, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("MAE of the deployed model (minutes)")
    ax.set_title(
        "The deployed model's MAE per month, by retrain policy (o = retrained on that month)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _plot_frontier(trade, result)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_reports(result: Backtest, out_dir: Path, shift_month: str | None = None) -> dict[str, Path]:
    paths = {
        "json": out_dir / JSON_FILE,
        "markdown": out_dir / MARKDOWN_FILE,
        "png": out_dir / PNG_FILE,
        "csv": out_dir / CSV_FILE,
        "frontier_csv": out_dir / FRONTIER_CSV,
    }
    result.write(paths["json"])
    write_text(markdown(result), paths["markdown"])
    write_text(csv_table(result).to_csv(index=False), paths["csv"])
    write_text(frontier_table(result).to_csv(index=False), paths["frontier_csv"])
    plot_png(result, paths["png"], shift_month)
    return paths
