"""Calibrate the data checks (core/data_checks.py) on real months: clean pairs pass, faults do not.

Every real month in ../shared/data/tlc is checked against every earlier one (consecutive and
years apart, as a model that went unretrained for long would be), with params.yaml's thresholds.
Each check's worst figure over all those clean pairs is set beside its threshold, and beside the
figures of the faults the tests inject (tests/data_faults.py, into real 2023-02 against 2023-01)
and of the real changes that must still be retrained on (2021-02 -> 2022-01, the synthetic
regime shift at ``synthetic.shift_month``).

    python -m bench.data_checks [--tlc-dir ../shared/data/tlc]   # measure, then render
    python -m bench.data_checks --render                          # only re-render bench/README.md

Writes bench/results/data_checks.json; bench/README.md's ``data-checks`` block is rendered from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.readme_block import fill_block
from core.data_checks import evaluate
from core.month_profile import MonthProfile, profile_tables
from core.months import add_months
from core.params import Params, load_params
from core.schema import CANONICAL_SCHEMA, normalize
from core.sources.synthetic import generate_month

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "tlc"
RESULTS = ROOT / "bench" / "results" / "data_checks.json"
README = ROOT / "bench" / "README.md"
BEGIN = "<!-- data-checks:begin (python -m bench.data_checks) -->"
END = "<!-- data-checks:end -->"
FAULT_MONTHS = ("2023-01", "2023-02")
PASSES = "passes: whether to retrain is the trigger's call"
REAL_CHANGE = ("2021-02", "2022-01")


def real_frame(month: str, folder: Path = REAL_DIR) -> pd.DataFrame:
    path = folder / f"green_tripdata_{month}.parquet"
    return normalize(pq.read_table(path), str(path)).to_pandas()


def profile_frame(month: str, frame: pd.DataFrame, params: Params) -> MonthProfile:
    table = pa.Table.from_pandas(frame, schema=CANONICAL_SCHEMA, preserve_index=False)
    return profile_tables(month, [table], params.filters)


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "blocking": result["blocking"],
        "warnings": result["warnings"],
        "problem": result["problem"],
        "figures": {c["name"]: c["figure"] for c in result["checks"]},
    }


def measure(params: Params, folder: Path = REAL_DIR) -> dict[str, Any]:
    months = sorted(p.name[15:22] for p in folder.glob("green_tripdata_*.parquet"))
    profiles = {m: profile_frame(m, real_frame(m, folder), params) for m in months}
    pairs = [(a, b) for i, a in enumerate(months) for b in months[i + 1 :]]
    results = {f"{a} -> {b}": evaluate(profiles[a], profiles[b], params.data_checks) for a, b in pairs}
    checks: dict[str, Any] = {}
    for pair, result in results.items():
        for check in result["checks"]:
            low = check["threshold_text"].startswith("min") or check["name"] == "trips_per_day"
            entry = checks.setdefault(
                check["name"],
                {
                    "limit": check["threshold_text"],
                    "blocking": check["blocking"],
                    "lowest": None,
                    "highest": None,
                },
            )
            for side, better in (("lowest", lambda a, b: a < b), ("highest", lambda a, b: a > b)):
                if entry[side] is None or better(check["figure"], entry[side]["figure"]):
                    entry[side] = {"figure": check["figure"], "pair": pair}
            entry["worst"] = "lowest" if low else "highest"
    failed = {
        pair: r["blocking"] + r["warnings"] for pair, r in results.items() if r["blocking"] or r["warnings"]
    }

    from tests.data_faults import FAULTS

    ref_month, cur_month = FAULT_MONTHS
    current = real_frame(cur_month, folder)
    faults = {
        name: {
            "expected": expected,
            **_figures(
                evaluate(
                    profiles[ref_month], profile_frame(cur_month, fault(current), params), params.data_checks
                )
            ),
        }
        for name, (fault, expected) in FAULTS.items()
    }
    changes = {f"real {' -> '.join(REAL_CHANGE)}": _figures(results[" -> ".join(REAL_CHANGE)])}
    shift = params.synthetic.shift_month
    synthetic = {
        m: profile_frame(m, _synthetic_frame(m, params), params) for m in (add_months(shift, -1), shift)
    }
    changes[f"synthetic {add_months(shift, -1)} -> {shift}"] = _figures(
        evaluate(*synthetic.values(), params.data_checks)
    )
    return {
        "months": months,
        "pairs": len(pairs),
        "thresholds": params.data_checks.model_dump(exclude={"accepted_months"}),
        "checks": checks,
        "clean_pairs_failing": failed,
        "faults": {"reference": ref_month, "current": cur_month, "results": faults},
        "real_changes": changes,
    }


def _synthetic_frame(month: str, params: Params) -> pd.DataFrame:

    return normalize(generate_month(month, params.synthetic), f"synthetic {month}").to_pandas()


def _fmt(figure: float, limit: str) -> str:
    if limit.endswith("x") or "x-" in limit:
        return f"{figure:.2f}x"
    return f"{figure:.1%}"


def render_block(r: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "",
        f"{len(r['months'])} real months ({r['months'][0]} to {r['months'][-1]}), each checked against "
        f"every earlier one: {r['pairs']} clean pairs, {len(r['clean_pairs_failing'])} with a failing check"
        + (f" ({', '.join(sorted(r['clean_pairs_failing']))})" if r["clean_pairs_failing"] else "")
        + ". The worst figure of any clean pair, beside the threshold (params.yaml, `data_checks:`) and "
        f"the faults injected into real {r['faults']['current']} against {r['faults']['reference']}:",
        "",
        "| check | blocks | threshold | worst clean pair | that pair | faults that fail it |",
        "| --- | :---: | --- | ---: | --- | --- |",
    ]
    for name, entry in r["checks"].items():
        worst = entry[entry["worst"]]
        caught = [f for f, res in r["faults"]["results"].items() if name in res["blocking"] + res["warnings"]]
        lines.append(
            f"| `{name}` | {'yes' if entry['blocking'] else 'warns'} | {entry['limit']} | "
            f"{_fmt(worst['figure'], entry['limit'])} | {worst['pair']} | {', '.join(caught) or '—'} |"
        )
    lines += [
        "",
        "What each fault, and each real change, ends with:",
        "",
        "| month | blocking checks | reason |",
        "| --- | --- | --- |",
    ]
    for name, res in r["faults"]["results"].items():
        lines.append(
            f"| fault: {name} | {', '.join(res['blocking']) or '—'} | {res['problem'] or 'passes'} |"
        )
    for name, res in r["real_changes"].items():
        lines.append(f"| change: {name} | {', '.join(res['blocking']) or '—'} | {res['problem'] or PASSES} |")
    return "\n".join([*lines, "", END])


def render(readme: Path = README, results: Path = RESULTS) -> str:
    return fill_block(readme, BEGIN, END, render_block(json.loads(results.read_text())))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--render", action="store_true", help="only re-render the README block")
    parser.add_argument("--tlc-dir", type=Path, default=REAL_DIR, help="the real TLC months")
    args = parser.parse_args()
    if not args.render:
        if not args.tlc_dir.is_dir():
            sys.exit(f"{args.tlc_dir}: no real TLC months to calibrate on")
        results = measure(load_params(ROOT / "params.yaml"), args.tlc_dir)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    README.write_text(render())


if __name__ == "__main__":
    main()
