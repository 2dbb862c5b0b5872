"""The drift-watch commands before any branch exists: `pull`, `latest-month`, `check`, `data-issue`."""

from __future__ import annotations

import typer

from autoops import github
from autoops.check import CHECK_JSON, CHECK_MD, run_check
from autoops.commands.shared import AcceptOpt, AsOfOpt, MonthOpt, as_of_date, console, one_line_errors
from autoops.gitops import LoopError, dvc, dvc_remote_configured
from autoops.project import project_root
from autoops.sources import latest_month
from core.artifacts.check import CheckResult
from core.params import load_params
from core.paths import PARAMS_FILE


@one_line_errors
def pull_cmd() -> None:
    """`dvc pull` when a DVC remote is configured; otherwise say the pipeline will rebuild instead."""
    root = project_root()
    if not dvc_remote_configured(root):
        console.print("no DVC remote configured: stages will be rebuilt from the data source")
        return
    dvc(root, "pull", "--allow-missing")


@one_line_errors
def latest_month_cmd(as_of: AsOfOpt = None) -> None:
    """Print the newest month the data source has published (TLC: a HEAD probe walking back)."""
    root = project_root()
    month = latest_month(root, load_params(root / PARAMS_FILE), as_of_date(as_of))
    github.write_outputs({"month": month})
    typer.echo(month)


@one_line_errors
def check_cmd(month: MonthOpt = None, as_of: AsOfOpt = None, accept: AcceptOpt = False) -> None:
    """Point months.current at a month (default: the latest), check its data, run `dvc repro drift`,
    print the verdict.

    Exit 0 either way; the verdict is in .autoops/check.json and in $GITHUB_OUTPUT (breach,
    expected_gain, month, branch, data_problem). A month failing a blocking data check is never a
    breach. Nothing is committed or pushed.
    """
    root = project_root()
    result = run_check(root, month, as_of_date(as_of), accept)
    summary = (root / CHECK_MD).read_text()
    github.append_summary(summary)
    outputs: dict[str, object] = {
        "breach": result.breach,
        "month": result.month,
        "branch": result.branch,
        "reason": result.reason,
        "data_problem": result.data_problem,
    }
    # Empty when the model already learned the month (nothing to estimate).
    outputs["expected_gain"] = "" if result.expected_gain is None else result.expected_gain
    github.write_outputs(outputs)
    if result.data_problem:
        console.print(f"[bold red]{result.data_problem}[/bold red]")
        console.print(f"result: {CHECK_JSON}, summary: {CHECK_MD}")
        return
    colour = "yellow" if result.breach else "green"
    label = "BREACH" if result.breach else "OK"
    console.print(f"[bold {colour}]{label}[/bold {colour}] {result.reason}")
    console.print(f"result: {CHECK_JSON}, summary: {CHECK_MD}")


@one_line_errors
def data_issue_cmd() -> None:
    """Open a GitHub issue for the data problem `autoops check` found (one open issue per month).

    Reads .autoops/check.json; does nothing when the check found no data problem, or outside
    GitHub (no GITHUB_REPOSITORY). Outputs `issue_url`.
    """
    root = project_root()
    if not (root / CHECK_JSON).exists():
        raise LoopError("no check result: run `autoops check` first")
    result = CheckResult.read(root / CHECK_JSON)
    problem = result.data_problem
    if not problem:
        console.print(f"no data problem in {result.month}: no issue to open")
        return
    issue = github.open_issue(
        f"Data problem in {result.month}",
        (root / CHECK_MD).read_text() + _run_line(),
    )
    if issue is None:
        console.print(f"not running for a GitHub repository: no issue opened ({problem})")
        return
    github.write_outputs({"issue_url": issue["html_url"]})
    state = "already open" if issue.get("existing") else "opened"
    console.print(f"issue {state}: {issue['html_url']}")


def _run_line() -> str:
    url = github.run_url()
    return f"\nFound by [this drift-watch run]({url}).\n" if url else ""


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_cmd)
    app.command("latest-month")(latest_month_cmd)
    app.command("check")(check_cmd)
    app.command("data-issue")(data_issue_cmd)
