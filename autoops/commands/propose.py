"""The retrain proposal's commands: `propose` (branch, retrain, commit, push), `report` (the PR's
CML comment) and `diff` (the pr-report workflow's params and metrics diff)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autoops import github
from autoops.check import CHECK_JSON
from autoops.commands.shared import AcceptOpt, BaseOpt, MonthOpt, console, one_line_errors
from autoops.gitops import LoopError
from autoops.project import ensure_work_dir, project_root
from autoops.propose import run_propose
from core.artifacts.check import CheckResult
from core.io import write_json, write_text
from core.paths import LOOP_REPORT, WORK_DIR

# `report` and `diff` import autoops.evidence_report (scikit-learn, by way of core.metrics) inside
# their bodies: at the top it would add about 1.5 s of CPU to every `autoops` start, `--help`
# included (bench/results/cli_startup.json, `python -m bench.cli_startup`).


@one_line_errors
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
    reason (data drift, or the expected gain of a retrain) the PR shows. The PR's title and body
    are outputs, the words of the commit (autoops/pr_text.py).
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
            "body": outcome.get("body", ""),
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


@one_line_errors
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
    from autoops import evidence_report  # start-up time: see the top of this module

    root = project_root()
    out = out if out.is_absolute() else root / out
    markdown = evidence_report.render_markdown(root, base, out, run_url=run_url or github.run_url())
    write_text(github.comment_images(markdown, root, out, images), out)
    console.print(f"wrote {out.relative_to(root) if out.is_relative_to(root) else out}")


@one_line_errors
def diff_cmd(
    base: BaseOpt = "main",
    out: Annotated[Path, typer.Option(help="Where to write the markdown.")] = WORK_DIR / "diff.md",
) -> None:
    """`dvc params diff` and `dvc metrics diff` against the base, as markdown (the PR check comment)."""
    from autoops import evidence_report  # start-up time: see the top of this module

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


def register(app: typer.Typer) -> None:
    app.command("propose")(propose_cmd)
    app.command("report")(report_cmd)
    app.command("diff")(diff_cmd)
