"""The ``autoops`` console script, used identically by people and by the GitHub workflows.

The commands are thin: each parses its options, calls the module that does the work (check,
propose, release, evidence, backtest) and passes the result to GitHub's outputs and summary, so
the workflows stay thin and everything they do can be run (and tested) locally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from autoops import github
from autoops.backtest import register as register_backtest
from autoops.check import CHECK_JSON, CHECK_MD, run_check
from autoops.gitops import Git, LoopError, dvc, dvc_remote_configured
from autoops.project import BRANCH_PREFIX, ensure_work_dir, project_root
from autoops.propose import run_propose
from autoops.sources import latest_month
from core.artifacts.check import CheckResult
from core.io import write_json, write_text
from core.params import load_params
from core.paths import LOOP_REPORT, PARAMS_FILE, RELEASE_DIR, WORK_DIR
from core.runner import EXPECTED_ERRORS, quiet_telemetry

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="autoops",
    help="Auto-Ops: watch a deployed model for drift, retrain, and propose the new model as a PR.",
    no_args_is_help=True,
    add_completion=False,
)
register_backtest(app)


def _cli(func: F) -> F:
    """Expected failures end as one `error: ...` line and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (LoopError, *EXPECTED_ERRORS) as exc:
            # Escaped: a message quoting a stage's `error [drift]: ...` is text, not rich markup.
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            # In Actions, the run's page shows the cause without opening the step's log.
            command = click.get_current_context(silent=True)
            name = command.info_name if command else func.__name__
            github.append_summary(f"## Auto-Ops: `autoops {name}` failed\n\n{exc}\n")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise LoopError(f"invalid date {value!r}: expected YYYY-MM-DD") from exc


MonthOpt = Annotated[str | None, typer.Option("--month", "-m", help="Month YYYY-MM.", show_default=False)]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Pretend today is this date (YYYY-MM-DD) when finding the latest month."),
]
BaseOpt = Annotated[
    str, typer.Option("--base", envvar="AUTOOPS_BASE", help="The branch that serves the champion model.")
]


@_cli
def latest_month_cmd(as_of: AsOfOpt = None) -> None:
    """Print the newest month the data source has published (TLC: a HEAD probe walking back)."""
    root = project_root()
    month = latest_month(root, load_params(root / PARAMS_FILE), _as_of(as_of))
    github.write_outputs({"month": month})
    typer.echo(month)


AcceptOpt = Annotated[
    bool,
    typer.Option(
        "--accept-data-problems",
        help="A person vouches for the month's data: its failing data checks no longer block a retrain "
        "(the month is added to data_checks.accepted_months, and the PR shows it).",
    ),
]


@_cli
def check_cmd(month: MonthOpt = None, as_of: AsOfOpt = None, accept: AcceptOpt = False) -> None:
    """Point months.current at a month (default: the latest), check its data, run `dvc repro drift`,
    print the verdict.

    Exit 0 either way; the verdict is in .autoops/check.json and in $GITHUB_OUTPUT (breach,
    expected_gain, month, branch, data_problem). A month failing a blocking data check is never a
    breach. Nothing is committed or pushed.
    """
    root = project_root()
    result = run_check(root, month, _as_of(as_of), accept)
    summary = (root / CHECK_MD).read_text()
    github.append_summary(summary)
    outputs = {
        "breach": result.breach,
        "month": result.month,
        "branch": result.branch,
        "reason": result.reason,
        "data_problem": result.data_problem,
        # Empty when the model already learned the month (nothing to estimate).
        "expected_gain": "" if result.expected_gain is None else result.expected_gain,
    }
    github.write_outputs(outputs)
    if result.data_problem:
        console.print(f"[bold red]{result.data_problem}[/bold red]")
        console.print(f"result: {CHECK_JSON}, summary: {CHECK_MD}")
        return
    colour = "yellow" if result.breach else "green"
    label = "BREACH" if result.breach else "OK"
    console.print(f"[bold {colour}]{label}[/bold {colour}] {result.reason}")
    console.print(f"result: {CHECK_JSON}, summary: {CHECK_MD}")


@_cli
def propose_cmd(
    month: MonthOpt = None,
    base: BaseOpt = "main",
    remote: Annotated[str, typer.Option(help="Git remote to push the branch to.")] = "origin",
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push data (dvc) and branch (git).")] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even without a drift breach (never over a data problem).")
    ] = False,
    reopen: Annotated[
        bool,
        typer.Option("--reopen", help="Propose the month even though a person closed its PR unmerged."),
    ] = False,
    accept: AcceptOpt = False,
) -> None:
    """On a breach: retrain on branch retrain/<month>, compare with the champion, commit, push.

    Idempotent: a rerun for the same month updates the same branch and pushes only real changes.
    Proposes exactly when the check's trigger says retrain (or with --force): one decision, whose
    reason (data drift, or the expected gain of a retrain) the PR shows.
    """
    root = project_root()
    if month is None:
        if not (root / CHECK_JSON).exists():
            raise LoopError("which month? pass --month YYYY-MM or run `autoops check` first")
        month = CheckResult.read(root / CHECK_JSON).month
    outcome = run_propose(root, month, base, remote, push, force, reopen, accept)
    github.write_outputs(
        {
            "proposed": outcome["proposed"],
            "branch": outcome["branch"],
            "month": outcome["month"],
            "updated": outcome.get("updated", False),
            "title": outcome.get("title", ""),
            "report": outcome.get("report", ""),
            "reason": outcome.get("reason", ""),
            "data_problem": outcome.get("data_problem") or "",
        }
    )
    write_json(outcome, ensure_work_dir(root) / "propose.json")
    if not outcome["proposed"]:
        github.append_summary(f"## Auto-Ops: no retrain proposed for {month}\n\n{outcome['reason']}\n")
        console.print(f"[bold]not proposed[/bold]: {outcome['reason']}")
        return
    if outcome["pushed"]:
        state = "pushed"
    else:
        state = "committed (not pushed)" if outcome["updated"] else "already up to date, nothing to push"
    console.print(f"[bold green]{outcome['branch']}[/bold green] {state}: {outcome['comparison']['verdict']}")
    console.print(f"report: {outcome['report']}")


@_cli
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


@_cli
def report_cmd(
    base: BaseOpt = "main",
    out: Annotated[Path, typer.Option(help="Where to write the markdown.")] = LOOP_REPORT,
    run_url: Annotated[
        str | None, typer.Option(help="Workflow run with the Evidently artifact (default: this Actions run).")
    ] = None,
    images: Annotated[
        str,
        typer.Option(
            help="Image links: auto, commit (GitHub URLs pinned to HEAD) or relative (for `cml --publish`)."
        ),
    ] = "auto",
) -> None:
    """Write the pull-request markdown for the retrain on this branch (PNG plots alongside)."""
    from autoops import evidence_report

    root = project_root()
    out = out if out.is_absolute() else root / out
    markdown = evidence_report.render_markdown(root, base, out, run_url=run_url or github.run_url())
    write_text(github.comment_images(markdown, root, out, images), out)
    console.print(f"wrote {out.relative_to(root) if out.is_relative_to(root) else out}")


@_cli
def diff_cmd(
    base: BaseOpt = "main",
    out: Annotated[Path, typer.Option(help="Where to write the markdown.")] = WORK_DIR / "diff.md",
) -> None:
    """`dvc params diff` and `dvc metrics diff` against the base, as markdown (the PR check comment)."""
    from autoops import evidence_report

    root = project_root()
    diffs = evidence_report.dvc_diffs(root, base)
    markdown = (
        f"## Auto-Ops: parameters and metrics vs `{base}`\n\n### Parameters\n\n{diffs['params']}\n\n"
        f"### Metrics\n\n{diffs['metrics']}\n"
    )
    out = out if out.is_absolute() else root / out
    if out.parent == root / WORK_DIR:
        ensure_work_dir(root)
    write_text(markdown, out)
    github.append_summary(markdown)
    console.print(markdown, markup=False)


@_cli
def pull_cmd() -> None:
    """`dvc pull` when a DVC remote is configured; otherwise say the pipeline will rebuild instead."""
    root = project_root()
    if not dvc_remote_configured(root):
        console.print("no DVC remote configured: stages will be rebuilt from the data source")
        return
    dvc(root, "pull", "--allow-missing")


@_cli
def register_cmd(
    pr: Annotated[str | None, typer.Option("--pr", help="The pull request that proposes this model.")] = None,
) -> None:
    """Register the model on this retrain branch as MLflow's `challenger` (tags: branch, pull request)."""
    from autoops import release

    root = project_root()
    branch = Git.discover(root).current_branch()
    if not branch or not branch.startswith(BRANCH_PREFIX):
        raise LoopError(
            f"on {branch or 'a detached HEAD'}, not a {BRANCH_PREFIX}<month> branch: nothing to register"
        )
    result = release.register_challenger(root, branch, pr)
    github.write_outputs({"mlflow_version": result["version"]})
    console.print(f"{result['registered_model']}: challenger -> version {result['version']} ({branch})")


@_cli
def fetch_model_cmd() -> None:
    """Fetch exactly the model the committed dvc.lock pins (DVC remote; rebuilt only without one)."""
    from autoops import release

    root = project_root()
    how = release.fetch_model(root)
    console.print(f"models/model.pkl {how}: the model the committed dvc.lock pins")


@_cli
def release_artifact_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the artifact.")] = RELEASE_DIR,
    image: Annotated[str | None, typer.Option(help="Image (default: ghcr.io/<GITHUB_REPOSITORY>).")] = None,
    sha: Annotated[str | None, typer.Option(help="Commit the image is built from (default: HEAD).")] = None,
) -> None:
    """Verify models/ is exactly what the committed dvc.lock pins, then write the artifact and image tags."""
    from autoops import release

    root = project_root()
    out = out if out.is_absolute() else root / out
    if out.is_relative_to(root / WORK_DIR):
        ensure_work_dir(root)
    info = release.release_artifact(root, out, image, sha)
    github.write_outputs(
        {
            "image": info["image"],
            "git_sha": info["git_sha"],
            "tags": "\n".join(info["tags"]),
            "labels": "\n".join(f"{k}={v}" for k, v in info["labels"].items()),
            "model_version": info["model_version"],
            "model_month": info["model_month"],
        }
    )
    console.print(f"model {info['model_version']} ({info['model_month']}) -> {', '.join(info['tags'])}")


@_cli
def promote_cmd(
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server.", show_default=False),
    ] = None,
    compiled: Annotated[
        bool,
        typer.Option(
            "--compiled/--no-compiled",
            help="First compile the version's trees and ship the library with it (needs gcc); "
            "--no-compiled where only the image, which compiles its own, serves.",
        ),
    ] = True,
) -> None:
    """Move the MLflow `champion` alias to the model on this commit (skipped without a tracking server)."""
    from autoops import release

    root = project_root()
    if not tracking_uri:
        console.print("no MLflow tracking server configured (MLFLOW_TRACKING_URI unset): nothing to promote")
        return
    result = release.promote(root, tracking_uri, compiled=compiled)
    github.write_outputs({"mlflow_version": result["version"]})
    version, previous = result["version"], result["previous"]
    was = f" (was {previous})" if previous and previous != version else ""
    console.print(
        f"{result['registered_model']}: champion -> version {version}{was}, model {result['model_version']}"
    )


app.command("latest-month")(latest_month_cmd)
app.command("check")(check_cmd)
app.command("data-issue")(data_issue_cmd)
app.command("propose")(propose_cmd)
app.command("report")(report_cmd)
app.command("diff")(diff_cmd)
app.command("pull")(pull_cmd)
app.command("fetch-model")(fetch_model_cmd)
app.command("register")(register_cmd)
app.command("release-artifact")(release_artifact_cmd)
app.command("promote")(promote_cmd)


@app.command()
def summary() -> None:
    """Print metrics, the drift verdict and where the reports are, for the last `dvc repro`."""
    from stages.summary import summary as print_summary

    raise typer.Exit(print_summary())


def main() -> None:
    quiet_telemetry()
    app()


if __name__ == "__main__":
    main()
