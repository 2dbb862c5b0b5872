"""Backtest every sequence the product is judged on, and write the figures into bench/README.md.

    python -m bench.backtests               # replay every sequence (real ones need ../shared/data/tlc)
    python -m bench.backtests --render      # only re-render bench/README.md from bench/results/
    python -m bench.backtests --hindsight   # only (re)compute the hindsight limit of the stored results

Each sequence's summary goes to ``bench/results/backtest_<name>.json``; the README's block between
the ``backtests`` markers is rendered from those files only, so every figure in it has a source a
command regenerates (tests/test_bench_docs.py checks the committed text matches).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from autoops.backtest import load_with_overrides, run_backtest
from autoops.backtest_hindsight import hindsight
from autoops.backtest_policy import CALENDAR, STATIC
from autoops.backtest_report import TRIGGER, verdict_line
from bench.readme_block import fill_block
from core.artifacts.backtest import Backtest
from core.months import month_range
from core.params import Params

RESULTS = Path("bench/results")
README = Path("bench/README.md")
REAL_DIR = Path("../shared/data/tlc")
SPRING_2021 = month_range("2021-01", "2021-05")
RECENT = [
    "2023-01", "2023-02", "2023-12", "2024-01", "2024-03", "2024-04", "2024-07", "2024-10",
    "2024-12", "2025-01", "2025-02", "2025-10", "2025-11",
]  # fmt: skip
# name: (what it shows, --set overrides, months or None for params' backtest range)
SEQUENCES: dict[str, tuple[str, list[str], list[str] | None]] = {
    "synthetic-default": ("synthetic, slow seasonal drift + regime shift 2024-05", [], None),
    "synthetic-mild-shift": (
        "synthetic, a mild slowdown in 2024-05 that data drift barely sees",
        ["synthetic.shift_speed_factor=0.9", "synthetic.shift_long_trip_share=0.1"],
        None,
    ),
    "real-2021": ("real, 5 consecutive months", ["data.source=dir"], SPRING_2021),
    "real-2021-2023": (
        "real, spring 2021 then the 2022-01 change",
        ["data.source=dir"],
        [*SPRING_2021, "2022-01", "2023-01", "2023-02"],
    ),
    "real-2023-2025": ("real, 13 months of one regime, with gaps", ["data.source=dir"], RECENT),
    "real-all": (
        "real, all 19 shared months in order",
        ["data.source=dir"],
        [*SPRING_2021, "2022-01", *RECENT],
    ),
}
BEGIN, END = "<!-- backtests:begin (python -m bench.backtests) -->", "<!-- backtests:end -->"


def summarize(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the README needs from a backtest: the summary, the verdict, the trigger's months and the
    hindsight limit (its frontier, `auto`'s regret, and the score matrix both come from)."""
    rows = [r for r in result["policies"][TRIGGER] if not r.get("bootstrap")]
    limit = result["hindsight"]
    return {
        "months": result["months"],
        "settings": result["settings"],
        "summary": {
            name: {k: s[k] for k in ("mean_mae", "degradation_reduction", "retrains", "retrain_months")}
            for name, s in result["summary"].items()
        },
        "versus_calendar": result["versus_calendar"],
        "trigger": [
            {k: r.get(k) for k in ("month", "mae", "expected_gain", "data_drift", "retrain", "reason")}
            for r in rows
        ],
        "hindsight": {
            "frontier": limit["frontier"],
            "regret": {TRIGGER: limit["regret"][TRIGGER]},
            "mae": limit["mae"],
        },
        "work": result.get("work"),
        "seconds": round(seconds, 1),
    }


def _sequence(name: str, real_dir: Path) -> tuple[Params, list[str]] | None:
    """The params and months of a sequence; None when it needs real months that are absent."""
    _, overrides, months = SEQUENCES[name]
    if "data.source=dir" in overrides and not real_dir.is_dir():
        print(f"{name}: skipped ({real_dir} is absent)")
        return None
    sets = [*overrides, f"data.dir={real_dir}"] if "data.source=dir" in overrides else overrides
    params = load_with_overrides(Path("params.yaml"), sets)
    return params, months or month_range(params.backtest.start, params.backtest.end)


def run(names: list[str], jobs: int | None, real_dir: Path = REAL_DIR) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        sequence = _sequence(name, real_dir)
        if sequence is None:
            continue
        params, months = sequence
        started = time.perf_counter()
        result = run_backtest(params, months, cache_dir=Path(params.backtest.cache_dir), jobs=jobs)
        out = summarize(result, time.perf_counter() - started)
        (RESULTS / f"backtest_{name}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {verdict_line(Backtest.model_validate(result))} ({out['seconds']} s)")


def add_hindsight(names: list[str], jobs: int | None, real_dir: Path = REAL_DIR) -> None:
    """Add the hindsight limit to stored results without replaying the whole backtest again.

    The limit needs every month's model scored on every later month, not the trigger's
    challengers nor Evidently's drift checks, which are most of a replay's time: so only the
    calendar is replayed (it fits every month's model), then the matrix is completed. The stored
    figures are kept only if that replay reproduces them to the last digit (every calendar
    policy's mean MAE and retrains, and `auto`'s MAE every month from the matrix); otherwise the
    sequence must be replayed in full (``--only NAME``).
    """
    for name in names:
        path = RESULTS / f"backtest_{name}.json"
        sequence = _sequence(name, real_dir) if path.exists() else None
        if sequence is None:
            continue
        params, months = sequence
        stored = json.loads(path.read_text())
        started = time.perf_counter()
        result = run_backtest(params, months, [STATIC], cache_dir=Path(params.backtest.cache_dir), jobs=jobs)
        mae = result["hindsight"]["mae"]
        _check_reproduced(name, stored, result, mae)
        limit = hindsight(months, mae, {TRIGGER: stored["summary"][TRIGGER]}, {TRIGGER: stored["trigger"]})
        stored["hindsight"] = {
            **limit,
            "computed_by": "python -m bench.backtests --hindsight",
            "seconds": round(time.perf_counter() - started, 1),
            "work": result["work"],
        }
        path.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {_regret_text(stored)} ({stored['hindsight']['seconds']} s)")


def _check_reproduced(name: str, stored: dict[str, Any], result: dict[str, Any], mae: dict[str, Any]) -> None:
    if stored["months"] != result["months"]:
        raise SystemExit(f"{name}: the stored months differ from the sequence's: run --only {name}")
    for policy in [STATIC, *(f"periodic_k{k}" for k in CALENDAR)]:
        old, new = stored["summary"][policy], result["summary"][policy]
        if (old["mean_mae"], old["retrains"]) != (new["mean_mae"], new["retrains"]):
            raise SystemExit(
                f"{name}: {policy} now gives MAE {new['mean_mae']} with {new['retrains']} retrains, stored "
                f"{old['mean_mae']} with {old['retrains']}: the models changed, run --only {name}"
            )
    deployed = result["months"][0]
    for row in stored["trigger"]:
        if mae[deployed][row["month"]] != row["mae"]:
            raise SystemExit(
                f"{name}: {TRIGGER}'s MAE at {row['month']} (model {deployed}) is now "
                f"{mae[deployed][row['month']]}, stored {row['mae']}: run --only {name}"
            )
        if row["retrain"]:
            deployed = row["month"]


def _regret_text(r: dict[str, Any]) -> str:
    g = r["hindsight"]["regret"][TRIGGER]
    return (
        f"`{TRIGGER}` {g['mean_mae']:.3f} with {g['retrains']} retrains, "
        f"hindsight limit {g['limit_mae']:.3f}: regret {g['regret']:+.3f} ({g['regret_pct']:+.1%})"
    )


def _cell(s: dict[str, Any]) -> str:
    removed = s["degradation_reduction"]
    return f"{s['retrains']} / {'n/a' if removed is None else f'{removed:.0%}'}"


def render_block() -> str:
    lines = [
        BEGIN,
        "",
        "Each cell: retrains / degradation removed (n/a: `static` never fell behind retraining every "
        "month, so there was nothing to remove; dominance is then decided on mean MAE).",
        "",
        "| sequence | months | `auto` MAE | `auto` | K=1 | K=2 | K=3 | K=4 | K=5 | K=6 | `data_drift` | "
        "`performance` | dominates the calendar |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    details = []
    for name, (what, _, _) in SEQUENCES.items():
        path = RESULTS / f"backtest_{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        s, check = r["summary"], r["versus_calendar"]
        calendar = " | ".join(_cell(s[f"periodic_k{k}"]) for k in range(1, 7))
        verdict = "**yes**" if check["dominates_calendar"] else f"no: {', '.join(check['beaten_by'])}"
        lines.append(
            f"| `{name}` ({what}) | {len(r['months'])} | {s[TRIGGER]['mean_mae']:.3f} | "
            f"**{_cell(s[TRIGGER])}** | {calendar} | {_cell(s['data_drift'])} | {_cell(s['performance'])} | "
            f"{verdict} |"
        )
        retrains = [t for t in r["trigger"] if t["retrain"]]
        gains = ", ".join(
            f"{t['month']} {t['expected_gain']:+.1%}" for t in r["trigger"] if t["expected_gain"] is not None
        )
        details.append(
            f"- `{name}`: retrained on {', '.join(t['month'] for t in retrains) or 'no month'}"
            f"{' (' + '; '.join(_why(t) for t in retrains) + ')' if retrains else ''}. "
            f"Expected gain each month: {gains}."
        )
    lines += ["", "Why `auto` retrained where it did, and the trigger's estimate every month:", "", *details]
    lines += ["", *_hindsight_table(), "", END]
    return "\n".join(lines)


def _hindsight_table() -> list[str]:
    lines = [
        "The hindsight limit: knowing every month's labels in advance, the lowest mean MAE any schedule "
        "reaches with at most k retrains (a dynamic programme over every month's model scored on every "
        "later month, with the replay's timing: `autoops backtest` writes it too). `auto`'s **regret** is "
        "its mean MAE above the limit at its own number of retrains: what any trigger could still win at "
        "that cost, at most.",
        "",
        "| sequence | `auto` retrains | `auto` MAE | limit | regret | the limit retrains on | "
        "limit for k = 0, 1, 2, ... retrains |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name in SEQUENCES:
        path = RESULTS / f"backtest_{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        if "hindsight" not in r:
            lines.append(
                f"| `{name}` | not computed yet: `python -m bench.backtests --hindsight --only {name}` |"
            )
            continue
        g = r["hindsight"]["regret"][TRIGGER]
        curve = ", ".join(f"{p['mean_mae']:.3f}" for p in r["hindsight"]["frontier"])
        lines.append(
            f"| `{name}` | {g['retrains']} | {g['mean_mae']:.3f} | {g['limit_mae']:.3f} | "
            f"**{g['regret']:+.3f} ({g['regret_pct']:+.1%})** | "
            f"{', '.join(g['limit_retrain_months']) or 'no month'} | {curve} |"
        )
    return lines


def _why(row: dict[str, Any]) -> str:
    if row["data_drift"]:
        return f"{row['month']}: data drift"
    return f"{row['month']}: expected gain {row['expected_gain']:+.1%}"


def render(readme: Path = README) -> str:
    return fill_block(readme, BEGIN, END, render_block())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="only re-render the README block")
    parser.add_argument(
        "--hindsight",
        action="store_true",
        help="only add the hindsight limit to the stored results (replays the calendar alone)",
    )
    parser.add_argument("--only", action="append", choices=sorted(SEQUENCES), help="run only these")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument(
        "--real-dir", type=Path, default=REAL_DIR, help=f"the real months (default {REAL_DIR})"
    )
    args = parser.parse_args()
    names = args.only or list(SEQUENCES)
    if args.hindsight:
        add_hindsight(names, args.jobs, args.real_dir)
    elif not args.render:
        run(names, args.jobs, args.real_dir)
    README.write_text(render())


if __name__ == "__main__":
    main()
