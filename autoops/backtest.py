"""``autoops backtest``: replay real or synthetic months and measure what self-healing saves.

Every month the deployed model predicts the month, then each retrain policy (static, periodic,
data_drift, performance, auto) decides whether to retrain on it; the new model serves from the
next month on. The summary gives each policy's mean MAE, its **degradation** (mean MAE above
retraining every month) and the **reduction** of static's degradation it achieves, against the
number of retrains it paid, and its **regret**: how far it is above the best schedule with as
many retrains, found in hindsight. The replay is autoops/backtest_engine.py, the policies
autoops/backtest_policy.py, the shared and cached models and scores autoops/backtest_store.py, the
worker processes autoops/backtest_workers.py, the month data autoops/backtest_data.py, the
hindsight limit autoops/backtest_hindsight.py, the reports autoops/backtest_report.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from core.artifacts.backtest import Backtest
from core.io import StageError
from core.months import month_range, validate_month
from core.params import PARAMS_FILE, Params, ParamsError, params_from_dict
from core.paths import REPORTS_DIR
from core.runner import EXPECTED_ERRORS

if TYPE_CHECKING:
    from autoops.backtest_data import MonthData

# The engine (pandas, scikit-learn, Evidently) and the data sources (requests, for the tlc source)
# are imported inside the functions: `autoops --help` and the other commands should not pay for it.


def load_with_overrides(path: Path, overrides: list[str]) -> Params:
    """params.yaml with ``KEY=VALUE`` overrides (dotted keys, YAML values), validated as one."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: not found (run from the repository root)") from exc
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted.strip():
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. drift.performance_threshold=0.2")
        node = raw
        *parents, leaf = dotted.strip().split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ParamsError(f"--set {item!r}: {key} is not a section")
        node[leaf] = yaml.safe_load(value)
    source = f"{path} + --set {' '.join(overrides)}" if overrides else str(path)
    return params_from_dict(raw, source)


def resolve_months(params: Params, start: str | None, end: str | None, months: str | None) -> list[str]:
    """``--months`` (a list: real months need not be contiguous), else ``--from``/``--to``, else params."""
    if months:
        if start or end:
            raise StageError("give either --months or --from/--to, not both")
        return [validate_month(m) for m in months.split(",") if m.strip()]
    if not (start or end) and params.backtest.months:
        return list(params.backtest.months)
    return month_range(
        validate_month(start or params.backtest.start), validate_month(end or params.backtest.end)
    )


def settings(params: Params, jobs: int) -> dict[str, Any]:
    """The knobs that shape the figures, recorded beside them."""
    # Here, not at the top: the sources bring requests, tenacity and tqdm (~70-540 ms of CPU) to every
    # `autoops` start.
    from core.sources import source_for

    out: dict[str, Any] = {
        "source": params.data.source,
        "train_window": params.months.train_window,
        "model": params.train.model,
        "drift_share": params.drift.drift_share,
        "sample_rows": params.drift.sample_rows,
        "performance_threshold": params.drift.performance_threshold,
        "min_retrain_gain": params.drift.min_retrain_gain,
        "late_fraction": params.drift.late_fraction,
        "periodic_every": params.backtest.periodic_every,
    }
    if params.train.model == "hist_gradient_boosting":
        out["max_iter"] = params.train.hist_gradient_boosting.max_iter
    return out | source_for(params).settings()


def run_backtest(
    params: Params,
    months: list[str],
    policy_specs: list[str] | None = None,
    *,
    data: MonthData | None = None,
    cache_dir: Path | None = None,
    jobs: int | None = None,
    progress: Callable[[str, str, int], None] | None = None,
    on_predicted: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole backtest as data (what reports/backtest.json holds). ``data`` defaults to the
    configured source; tests pass their own provider (see autoops/backtest_data.MonthData)."""
    # Here, not at the top: the replay's modules import pandas, scikit-learn and Evidently's peers (1.1-1.6
    # s of CPU each, measured with process_time after this module) that `autoops --help` and every other
    # command would pay.
    from autoops.backtest_data import SourceMonths
    from autoops.backtest_engine import replay
    from autoops.backtest_policy import parse_policies
    from autoops.backtest_report import build_result
    from autoops.backtest_workers import default_jobs

    policies = parse_policies(policy_specs or params.backtest.policies, params.backtest.periodic_every)
    workers = default_jobs(params.backtest.jobs if jobs is None else jobs)
    data = data if data is not None else SourceMonths(params, cache_dir)
    replayed = replay(
        months,
        policies,
        params,
        data,
        cache_dir=cache_dir,
        jobs=workers,
        progress=progress,
        on_predicted=on_predicted,
    )
    result = build_result(months, policies, replayed, settings(params, workers))
    result["work"] = replayed["work"]
    return result


def _progress_bars(enabled: bool) -> tuple[Callable[[str, str, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    labels = {"load": "featurise months", "replay": "replay"}

    def update(phase: str, month: str, total: int) -> None:
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            bars[phase] = tqdm(
                total=total, desc=labels[phase], unit="month", disable=not enabled, file=sys.stderr
            )
        bars[phase].set_postfix_str(month)
        bars[phase].update(1)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def _text_option(flag: str, help: str, *, repeatable: bool = False) -> Any:
    """An optional text option, None when absent; ``repeatable`` collects every use into a list."""
    kind = list[str] | None if repeatable else str | None
    return Annotated[kind, typer.Option(flag, help=help)]


FromOpt = _text_option("--from", "First month (YYYY-MM) of a range.")
ToOpt = _text_option("--to", "Last month (YYYY-MM) of a range.")
MonthsOpt = _text_option("--months", "Comma-separated months, e.g. 2021-01,2021-02,2022-01.")
PolicyOpt = _text_option(
    "--policy",
    "static, periodic, periodic:K, data_drift, performance, auto (repeat or comma-separate). "
    "static and periodic_k1 always run: they are the yardsticks. Default: backtest.policies.",
    repeatable=True,
)
SourceOpt = _text_option("--source", "Override data.source: synthetic|tlc|dir.")
SetOpt = _text_option(
    "--set", "Override a param, e.g. --set drift.performance_threshold=0.2 (repeatable).", repeatable=True
)


def backtest(
    start: FromOpt = None,
    end: ToOpt = None,
    months: MonthsOpt = None,
    policy: PolicyOpt = None,
    source: SourceOpt = None,
    overrides: SetOpt = None,
    params_file: Annotated[Path, typer.Option("--params", help="The params file.")] = PARAMS_FILE,
    out: Annotated[Path, typer.Option("--out", help="Where the reports go.")] = REPORTS_DIR,
    jobs: Annotated[int | None, typer.Option("--jobs", help="Worker processes (0 = one per CPU).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute everything; keep nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Replay months as the scheduled workflow would have lived them; compare retrain policies.

    Writes reports/backtest.json, reports/backtest.md, reports/backtest.png (each with the
    hindsight limit: the best any schedule could do per number of retrains, and each policy's
    regret against it) and reports/plots/backtest_{mae,frontier}.csv (DVC plots: `dvc plots show`).
    """
    started = time.perf_counter()
    sets = list(overrides or [])
    if source:
        sets.append(f"data.source={source}")
    close: Callable[[], None] = lambda: None  # noqa: E731
    try:
        params = load_with_overrides(params_file, sets)
        replayed_months = resolve_months(params, start, end, months)
        specs = [s for item in (policy or []) for s in item.split(",") if s.strip()] or None
        cache = None if no_cache else Path(params.backtest.cache_dir)
        update, close = _progress_bars(enabled=not quiet)
        result = run_backtest(params, replayed_months, specs, cache_dir=cache, jobs=jobs, progress=update)
        close()
    except EXPECTED_ERRORS as exc:
        close()
        typer.echo(f"error [backtest]: {exc}", err=True)
        raise typer.Exit(1) from None
    # Here, not at the top: the report brings matplotlib and pandas (~1.1 s of CPU), the sources
    # requests, tenacity and tqdm: only a backtest needs them, not every `autoops` start.
    from autoops.backtest_report import write_reports
    from core.sources import source_for

    work = result.pop("work")
    report = Backtest.model_validate(result)
    paths = write_reports(report, out, source_for(params).shift_month)
    elapsed = time.perf_counter() - started
    typer.echo(
        f"backtest: {len(replayed_months)} months x {len(report.summary)} policies in {elapsed:.0f} s "
        f"({work['fits']} fits, {work['challenger_fits']} trigger challengers, "
        f"{work['scored']} month scores, "
        f"{work['drift_checks']} drift checks computed; "
        "the rest from .cache/backtest)"
    )
    typer.echo(
        f"{'policy':<14}{'mean MAE':>9}{'degradation':>13}{'reduction':>11}{'retrains':>10}{'regret':>9}"
    )
    for name, s in report.summary.items():
        reduction = "n/a" if s.degradation_reduction is None else f"{s.degradation_reduction:.0%}"
        regret = report.hindsight.regret[name].regret
        typer.echo(
            f"{name:<14}{s.mean_mae:>9.3f}{s.degradation:>+13.3f}{reduction:>11}{s.retrains:>10}{regret:>+9.3f}"
        )
    typer.echo("regret: mean MAE above the best schedule with as many retrains, in hindsight (backtest.md)")
    typer.echo("reports: " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
