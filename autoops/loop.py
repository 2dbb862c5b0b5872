"""The self-healing loop: `latest-month`, `check`, `propose`, `report`, and the release helpers.

One code path for a person at a terminal and for the GitHub workflows: the workflows only call
these commands and pass their outputs along, so everything they do is testable on a laptop.

    check    set months.current, `dvc repro drift`, verdict       (never commits or pushes)
    propose  on a breach: branch retrain/<month>, bump months.reference, `dvc repro`,
             champion vs challenger on the same rows, report, commit, `dvc push`, `git push`
    report   the pull-request markdown for the working tree (as CML posts it)
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypeVar

import typer
import yaml
from rich.console import Console

from autoops import github
from autoops.gitops import Git, LoopError, dvc, dvc_remote_configured
from stages.io import write_json, write_text
from stages.months import MonthError, add_months, current_month, month_index, validate_month
from stages.params import Params, ParamsError, load_params, params_from_dict
from stages.runner import EXPECTED_ERRORS

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
DVC_LOCK = "dvc.lock"
DRIFT_JSON = Path("reports/metrics/drift.json")
EVALUATE_JSON = Path("reports/metrics/evaluate.json")
DRIFT_HTML = Path("reports/drift_report.html")
PREDICTIONS = Path("data/predictions")
HOLDOUT = Path("data/features/holdout.parquet")
# Scratch space for one run (check result, champion snapshot, evidence for the CI artifact).
# It ignores itself, so no .gitignore entry is needed and nothing in it is ever committed.
WORK_DIR = Path(".autoops")
CHECK_JSON = WORK_DIR / "check.json"
CHECK_MD = WORK_DIR / "check.md"
CHAMPION_DIR = WORK_DIR / "champion"
EVIDENCE_DIR = WORK_DIR / "evidence"
BRANCH_PREFIX = "retrain/"
# A git trailer on every commit `propose` makes: how a rerun tells its own commits (safe to rebuild)
# from a person's (never dropped).
PROPOSED_TRAILER = "Auto-Ops-Proposed"
# Defaults of CLI options, spelled out here so that `autoops --help` (and every other command)
# does not pay for importing scikit-learn and pandas through autoops.evidence/autoops.release.
REPORT = Path("reports/loop/report.md")
RELEASE_DIR = Path(".autoops/release")
# How far back `latest-month` probes TLC: it publishes with a lag of about two months, so a year
# without a new file means something other than lag is wrong.
TLC_LOOKBACK_MONTHS = 12

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


# --- small helpers -----------------------------------------------------------------------------


def _cli(func: F) -> F:
    """Expected failures end as one `error: ...` line and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (LoopError, *EXPECTED_ERRORS) as exc:
            err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def project_root() -> Path:
    root = Path.cwd()
    missing = [p.name for p in (PARAMS, DVC_YAML) if not (root / p).exists()]
    if missing:
        raise LoopError(f"no {' or '.join(missing)} in {root}: run autoops from the project's root folder")
    return root


def _month(value: str) -> str:
    try:
        return validate_month(value)
    except MonthError as exc:
        raise LoopError(str(exc)) from exc


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise LoopError(f"invalid date {value!r}: expected YYYY-MM-DD") from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise LoopError(f"{path}: missing")
    return json.loads(path.read_text())


def ensure_work_dir(root: Path) -> Path:
    folder = root / WORK_DIR
    folder.mkdir(exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Scratch space of `autoops`; never committed.\n*\n")
    return folder


def set_months(path: Path, **months: str) -> bool:
    """Set ``months.<key>`` in params.yaml, keeping its comments, order and quoting; True if changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a long comment or value
    data = rt.load(path.read_text())
    changed = False
    for key, value in months.items():
        if str(data["months"].get(key)) != value:
            # Quoted, like the file's own months: a bare 2024-05 is a string in YAML today, but
            # a quoted one cannot be misread by any YAML loader.
            data["months"][key] = DoubleQuotedScalarString(value)
            changed = True
    if changed:
        buffer = io.StringIO()
        rt.dump(data, buffer)
        # Validated before writing: an impossible combination (current before reference) is an
        # error for the caller, never a broken params.yaml left behind.
        params_from_dict(yaml.safe_load(buffer.getvalue()) or {}, str(path))
        write_text(buffer.getvalue(), path)
    return changed


def dvc_outputs(root: Path) -> tuple[list[str], list[str]]:
    """``(cached, uncached)`` output paths declared in dvc.yaml.

    The uncached ones (``cache: false``: metrics, plot data, the model card) are tracked by git;
    the cached ones are listed in the ``.gitignore`` DVC writes beside them.
    """
    stages = (yaml.safe_load((root / DVC_YAML).read_text()) or {}).get("stages", {})
    cached, uncached = [], []
    for stage in stages.values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            (uncached if isinstance(options, dict) and options.get("cache") is False else cached).append(path)
    return cached, uncached


# --- latest-month ------------------------------------------------------------------------------


def latest_month(root: Path, params: Params, as_of: date | None = None) -> str:
    """The newest month the configured source can deliver."""
    today_month = current_month(as_of)
    source = params.data.source
    if source == "synthetic":
        # The generator can make any month; "published" means complete, i.e. last month.
        return add_months(today_month, -1)
    if source == "dir":
        from stages.tlc import _FILE_RE

        folder = (root / params.data.dir).resolve()
        if not folder.is_dir():
            raise LoopError(f"data.dir {params.data.dir} ({folder}) is not a folder")
        months = sorted(
            m.group(1)
            for p in folder.iterdir()
            if (m := _FILE_RE.match(p.name)) and month_index(m.group(1)) <= month_index(today_month)
        )
        if not months:
            raise LoopError(f"no green_tripdata_YYYY-MM.parquet files in {folder}")
        return months[-1]
    from stages.tlc import probe_month

    for back in range(TLC_LOOKBACK_MONTHS + 1):
        month = add_months(today_month, -back)
        if probe_month(month, params.data):
            return month
    raise LoopError(f"TLC has published no month in the {TLC_LOOKBACK_MONTHS} months before {today_month}")


def ensure_published(root: Path, params: Params, month: str, as_of: date | None = None) -> None:
    """Refuse a month the source has not published: a retrain on it would train on nothing real."""
    today_month = current_month(as_of)
    if month_index(month) > month_index(today_month):
        raise LoopError(
            f"{month} is not published yet: it is after this month ({today_month}, the newest possible)"
        )
    if params.data.source == "tlc":
        from stages.tlc import probe_month

        # One HEAD request for the month itself: TLC's newest file is the authority, not the calendar.
        if not probe_month(month, params.data):
            raise LoopError(
                f"{month} is not published yet: TLC has no file for it (newest: see `autoops latest-month`)"
            )
        return
    newest = latest_month(root, params, as_of)
    if month_index(month) > month_index(newest):
        raise LoopError(f"{month} is not published yet: the newest {params.data.source} month is {newest}")


# --- check -------------------------------------------------------------------------------------


def run_check(root: Path, month: str | None, as_of: date | None = None) -> dict[str, Any]:
    params = load_params(root / PARAMS)
    month = _month(month) if month else latest_month(root, params, as_of)
    reference = params.months.reference
    if month_index(month) < month_index(reference):
        raise LoopError(f"month {month} is before the model's reference month {reference}")
    set_months(root / PARAMS, current=month)
    err_console.print(f"[bold]checking {month} against the model trained on {reference}[/bold]")
    dvc(root, "repro", "drift")
    drift = _read_json(root / DRIFT_JSON)
    if drift.get("current_month") != month:
        raise LoopError(f"{DRIFT_JSON} describes {drift.get('current_month')}, not {month}; rerun the check")
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
    if (root / DRIFT_HTML).exists():
        # Kept aside: `propose` moves the working tree on, but this is the report that triggered it.
        (work / EVIDENCE_DIR.name).mkdir(exist_ok=True)
        shutil.copy2(root / DRIFT_HTML, work / EVIDENCE_DIR.name / DRIFT_HTML.name)
    return result


def check_markdown(drift: dict[str, Any], breach: bool) -> str:
    from autoops.evidence import drift_table
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


# --- propose -----------------------------------------------------------------------------------


def pipeline_paths(root: Path) -> list[str]:
    """What `dvc repro` rewrites: dvc.lock and the outputs dvc.yaml declares, nothing else.

    Uncommitted changes to these are the normal state after `autoops check` and are safe to
    discard when switching branches; a hand-edited file beside them (a note in reports/) is not.
    """
    cached, uncached = dvc_outputs(root)
    return [DVC_LOCK, *cached, *uncached]


def _is_under(path: str, outputs: list[str]) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in outputs)


def ensure_only_pipeline_changes(git: Git) -> None:
    """Refuse to switch branches over anything but the pipeline's own regenerated files."""
    outputs = pipeline_paths(git.root)
    for status, path in git.changed_paths():
        if status == "??":
            continue  # untracked files survive a branch switch and are never committed by propose
        if _is_under(path, outputs):
            continue
        if path == PARAMS.as_posix() and _only_current_month_changed(git):
            continue
        raise LoopError(
            f"uncommitted change to {path}: commit or stash it first (propose switches branches and "
            "would lose it)"
        )


def _only_current_month_changed(git: Git) -> bool:
    committed = git.show("HEAD", PARAMS.as_posix())
    if committed is None:
        return False
    before = yaml.safe_load(committed) or {}
    after = yaml.safe_load((git.root / PARAMS).read_text()) or {}
    for side in (before, after):
        side.get("months", {}).pop("current", None)
    return before == after


def _base_params(git: Git, sha: str, base: str) -> Params:
    text = git.show(sha, PARAMS.as_posix())
    if text is None:
        raise LoopError(f"{base} has no {PARAMS}")
    try:
        return params_from_dict(yaml.safe_load(text) or {}, f"{base}:{PARAMS}")
    except ParamsError as exc:
        raise LoopError(str(exc)) from exc


def _snapshot_champion(root: Path, git: Git, base_sha: str, base: str) -> None:
    """Keep the base branch's model aside before the working tree moves to the challenger."""
    folder = root / CHAMPION_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("model.pkl", "model_card.json"):
        source = root / "models" / name
        if not source.exists():
            raise LoopError(f"{source.relative_to(root)}: missing after the check; run `dvc repro train`")
        shutil.copy2(source, folder / name)
    # The champion must be the model the base branch pins, not whatever the working tree held.
    lock = git.show(base_sha, "dvc.lock")
    if lock is not None:
        pinned = {
            out["path"]: out.get("md5")
            for stage in (yaml.safe_load(lock) or {}).get("stages", {}).values()
            for out in stage.get("outs", [])
        }
        expected = pinned.get("models/model.pkl")
        from autoops.release import file_md5

        if expected and file_md5(folder / "model.pkl") != expected:
            raise LoopError(
                f"models/model.pkl is not the model {base}'s dvc.lock pins; run `dvc pull` "
                "(or `dvc checkout`) on the base branch and retry"
            )


def _trigger_predictions(root: Path) -> dict[str, Any]:
    import pandas as pd

    from stages.evaluate import PREDICTION
    from stages.features import TARGET

    columns = ["pickup_hour", TARGET, PREDICTION]
    return {
        name: pd.read_parquet(root / PREDICTIONS / f"{name}.parquet", columns=columns)
        for name in ("holdout", "current")
    }


def _switch(git: Git, ref: str, branch: str | None = None) -> None:
    """Check out ``ref`` (as ``branch``, reset to it) and bring DVC's outputs along.

    `dvc checkout` does what DVC's post-checkout hook would: the working tree's models and data
    match the new dvc.lock, so `dvc repro` only runs what really changed. Without it a stage whose
    outputs are not in DVC's run-cache (train: its model card is an uncached output) would be
    retrained just because the previous branch left its own model behind.
    """
    if branch:
        git.run("checkout", "--quiet", "--force", "-B", branch, ref)
    else:
        git.run("checkout", "--quiet", "--force", ref)
    dvc(git.root, "checkout", "--quiet", "--force", "--allow-missing", capture=True)


def closed_pull_request(branch: str) -> dict[str, Any] | None:
    """The pull request a person closed unmerged for ``branch``, unless one is open for it now."""
    pulls = github.pull_requests(branch)
    if any(p["state"] == "open" for p in pulls):
        return None
    closed = [p for p in pulls if p["state"] == "closed" and not p.get("merged_at")]
    return max(closed, key=lambda p: p["number"]) if closed else None


class BranchStart(NamedTuple):
    start: str  # the commit retrain/<month> is built on
    rebuilt: bool  # True: the remote branch is replaced (pushed with a lease)
    remote_sha: str | None
    local_sha: str | None


def _foreign_commits(git: Git, base_sha: str, tip: str) -> list[str]:
    """Commits on ``tip`` but not on the base that `propose` did not make, as `<sha> <subject> (<author>)`."""
    out = git.run("log", "-z", "--format=%h %s (%an)%x1f%B", f"{base_sha}..{tip}")
    foreign = []
    for entry in filter(None, out.split("\0")):
        line, _, message = entry.partition("\x1f")
        if not any(t.startswith(f"{PROPOSED_TRAILER}:") for t in message.splitlines()):
            foreign.append(line.strip())
    return foreign


def branch_start(
    git: Git, remote: str, branch: str, base_sha: str, base: str, *, has_remote: bool
) -> BranchStart:
    """Where retrain/<month> continues: the existing branch when it contains the base, else the base.

    Starting afresh drops the branch's commits, which is only allowed when `propose` made all of
    them: a person's commit on the branch stops propose with the branch left as it is.
    """
    remote_sha = git.remote_branch_sha(remote, branch) if has_remote else None
    local_sha = git.rev(f"refs/heads/{branch}")
    tip = git.fetch_branch(remote, branch) if remote_sha else local_sha
    if tip and git.is_ancestor(base_sha, tip):
        return BranchStart(tip, False, remote_sha, local_sha)
    if tip and (foreign := _foreign_commits(git, base_sha, tip)):
        where = f"{remote}/{branch}" if remote_sha else branch
        noun = "commit" if len(foreign) == 1 else "commits"
        raise LoopError(
            f"{where} has {len(foreign)} {noun} autoops did not make ({'; '.join(foreign)}) and {base} "
            f"moved on: merge {base} into it (or rebase it) and push, then rerun; the branch is left as it is"
        )
    # The base moved on (or there is no branch yet): rebuild on top of it.
    return BranchStart(base_sha, bool(remote_sha), remote_sha, local_sha)


def run_propose(
    root: Path,
    month: str,
    base: str = "main",
    remote: str = "origin",
    push: bool = True,
    force: bool = False,
    reopen: bool = False,
) -> dict[str, Any]:
    from autoops import evidence

    git = Git.discover(root)
    month = _month(month)
    branch = f"{BRANCH_PREFIX}{month}"
    has_remote = git.has_remote(remote)
    if push and not has_remote:
        raise LoopError(f"no git remote {remote!r} to push {branch} to: add one, or pass --no-push")
    ensure_only_pipeline_changes(git)
    base_checkout, base_sha = git.resolve_base(base, remote if has_remote else None)
    base_params = _base_params(git, base_sha, base)
    base_reference = base_params.months.reference
    if month_index(month) <= month_index(base_reference):
        raise LoopError(
            f"the model on {base} already learned {base_reference}; nothing to retrain for {month}"
        )
    ensure_published(root, base_params, month)
    outcome: dict[str, Any] = {"month": month, "branch": branch, "base": base, "proposed": False}
    # A person closing the month's PR unmerged answered it; asking again every week is noise.
    if not reopen and (closed := closed_pull_request(branch)):
        outcome["reason"] = (
            f"{branch} was closed unmerged ({closed['html_url']}): that is the answer for {month} until a "
            f"newer month breaches; run drift-watch by hand with month {month} to propose it again"
        )
        from autoops.release import retire_challenger

        # `challenger` names an open PR's model; this one's PR is closed.
        outcome["challenger_retired"] = retire_challenger(branch)
        return outcome
    # Decided before any work: a branch that cannot be continued stops propose here, untouched.
    branch_plan = branch_start(git, remote, branch, base_sha, base, has_remote=has_remote)

    # 1. The verdict, from the base branch's own model and params.
    _switch(git, base_checkout)
    checked = run_check(root, month)
    outcome["check"] = checked
    if not checked["breach"] and not force:
        outcome["reason"] = f"no breach for {month}: {checked['reason']}"
        return outcome
    _snapshot_champion(root, git, base_sha, base)
    trigger_drift = _read_json(root / DRIFT_JSON)
    trigger_eval = _read_json(root / EVALUATE_JSON)
    trigger_predictions = _trigger_predictions(root)

    # 2. The branch: continue an existing retrain/<month> that already contains the base, else
    # start it afresh from the base (see branch_start). Reruns land on the same branch.
    start, rebuilt, remote_sha, local_sha = branch_plan
    _switch(git, start, branch=branch)

    # 3. Retrain on the new month and compare on the same rows.
    set_months(root / PARAMS, reference=month, current=month)
    err_console.print(f"[bold]retraining on {month} (branch {branch})[/bold]")
    dvc(root, "repro")
    # No second gate here: whether to retrain was decided once, by the check's trigger (which
    # already pitted a challenger against the champion, out of time). This comparison is the
    # evidence the PR shows: the champion and the new model on the rows the new model never saw.
    comparison, scored = evidence.compare(root / CHAMPION_DIR, root / "models", root / HOLDOUT, trigger_eval)
    outcome["comparison"] = comparison

    # 4. The evidence and the report, committed with the params and the lock.
    evidence.write_evidence(comparison, scored, trigger_drift, trigger_predictions)
    plots = evidence.render_plots(root / evidence.LOOP_DIR)
    markdown = evidence.render_markdown(root, base, root / evidence.REPORT, plots=plots)
    write_text(markdown, root / evidence.REPORT)
    _commit(git, root, month, trigger_drift, comparison)
    head = git.rev("HEAD")

    # 5. Data before code: the branch must never point at outputs the DVC remote lacks.
    pushed = False
    if push:
        if dvc_remote_configured(root):
            dvc(root, "push")
        if head != remote_sha:
            lease = [f"--force-with-lease=refs/heads/{branch}:{remote_sha}"] if rebuilt and remote_sha else []
            git.run("push", "--quiet", *lease, remote, f"refs/heads/{branch}:refs/heads/{branch}")
            pushed = True
    # 6. Only now, proposed, does the challenger enter the MLflow registry (alias `challenger`).
    from autoops.release import register_challenger

    outcome["mlflow"] = register_challenger(root, branch)
    champ, chall = comparison["champion"]["metrics"], comparison["challenger"]["metrics"]
    outcome.update(
        proposed=True,
        updated=head != (remote_sha or local_sha),
        pushed=pushed,
        commit=head,
        report=evidence.REPORT.as_posix(),
        title=f"Retrain on {month}: MAE {champ['mae']:.2f} -> {chall['mae']:.2f} on the new month",
        reason=trigger_drift["reason"],
    )
    return outcome


def _commit(git: Git, root: Path, month: str, drift: dict[str, Any], comparison: dict[str, Any]) -> bool:
    """Commit exactly the pipeline's small files and the evidence; False when nothing changed."""
    from autoops.evidence import LOOP_DIR

    cached, uncached = dvc_outputs(root)
    paths = {PARAMS.as_posix(), "dvc.lock", *uncached, LOOP_DIR.as_posix()}
    # DVC keeps cached outputs out of git with a .gitignore beside each; on a repository that
    # never ran the pipeline before, those files are new and belong in the same commit.
    paths |= {(Path(p).parent / ".gitignore").as_posix() for p in cached}
    git.run("add", "--", *sorted(p for p in paths if (root / p).exists()))
    if git.ok("diff", "--cached", "--quiet"):
        return False
    body = (
        f"{drift['reason']}\n\n{comparison['verdict']}.\n\n"
        "Proposed by `autoops propose`; the evidence is in reports/loop/.\n\n"
        f"{PROPOSED_TRAILER}: {month}"
    )
    title = f"Retrain on {month} (the model was trained on {drift['reference_month']})"
    git.run("commit", "--quiet", "-m", title, "-m", body)
    return True


# --- CLI ---------------------------------------------------------------------------------------

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
    month = latest_month(root, load_params(root / PARAMS), _as_of(as_of))
    github.write_outputs({"month": month})
    typer.echo(month)


@_cli
def check_cmd(month: MonthOpt = None, as_of: AsOfOpt = None) -> None:
    """Point months.current at a month (default: the latest), run `dvc repro drift`, print the verdict.

    Exit 0 either way; the verdict is in .autoops/check.json and in $GITHUB_OUTPUT (breach,
    expected_gain, month, branch). Nothing is committed or pushed.
    """
    root = project_root()
    result = run_check(root, month, _as_of(as_of))
    summary = (root / CHECK_MD).read_text()
    github.append_summary(summary)
    outputs = {key: result[key] for key in ("breach", "month", "branch", "reason")}
    # Empty when the model already learned the month (nothing to estimate).
    outputs["expected_gain"] = "" if result["expected_gain"] is None else result["expected_gain"]
    github.write_outputs(outputs)
    colour = "yellow" if result["breach"] else "green"
    label = "BREACH" if result["breach"] else "OK"
    console.print(f"[bold {colour}]{label}[/bold {colour}] {result['reason']}")
    console.print(f"result: {CHECK_JSON}, summary: {CHECK_MD}")


@_cli
def propose_cmd(
    month: MonthOpt = None,
    base: BaseOpt = "main",
    remote: Annotated[str, typer.Option(help="Git remote to push the branch to.")] = "origin",
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push data (dvc) and branch (git).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Retrain even without a drift breach.")] = False,
    reopen: Annotated[
        bool,
        typer.Option("--reopen", help="Propose the month even though a person closed its PR unmerged."),
    ] = False,
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
        month = _read_json(root / CHECK_JSON)["month"]
    outcome = run_propose(root, month, base, remote, push, force, reopen)
    github.write_outputs(
        {
            "proposed": outcome["proposed"],
            "branch": outcome["branch"],
            "month": outcome["month"],
            "updated": outcome.get("updated", False),
            "title": outcome.get("title", ""),
            "report": outcome.get("report", ""),
            "reason": outcome.get("reason", ""),
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


def comment_images(markdown: str, root: Path, out: Path, mode: str) -> str:
    """Point the report's images at the PNGs committed on this branch, by a commit-pinned URL.

    ``relative`` keeps the paths (what `cml comment --publish` needs to find and upload them);
    ``commit`` pins them to HEAD on GitHub, so nothing leaves for a third-party host and the
    comment keeps showing this commit's plots after the branch moves on; ``auto`` is ``commit``
    in Actions and ``relative`` elsewhere.
    """
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if mode == "auto":
        mode = "commit" if server and repository else "relative"
    if mode not in ("commit", "relative"):
        raise LoopError(f"--images {mode!r}: expected auto, commit or relative")
    if mode == "relative":
        return markdown
    if not (server and repository):
        raise LoopError(
            "--images commit needs GITHUB_SERVER_URL and GITHUB_REPOSITORY (set in GitHub Actions)"
        )
    sha = Git(root).run("rev-parse", "HEAD")

    def pin(match: re.Match[str]) -> str:
        target = (out.parent / match[2]).resolve()
        if not target.is_relative_to(root.resolve()):
            return match[0]
        return (
            f"![{match[1]}]({server}/{repository}/raw/{sha}/{target.relative_to(root.resolve()).as_posix()})"
        )

    return re.sub(r"!\[([^\]]*)\]\(([^)\s:]+\.png)\)", pin, markdown)


@_cli
def report_cmd(
    base: BaseOpt = "main",
    out: Annotated[Path, typer.Option(help="Where to write the markdown.")] = REPORT,
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
    from autoops import evidence

    root = project_root()
    out = out if out.is_absolute() else root / out
    markdown = evidence.render_markdown(root, base, out, run_url=run_url or github.run_url())
    write_text(comment_images(markdown, root, out, images), out)
    console.print(f"wrote {out.relative_to(root) if out.is_relative_to(root) else out}")


@_cli
def diff_cmd(
    base: BaseOpt = "main",
    out: Annotated[Path, typer.Option(help="Where to write the markdown.")] = WORK_DIR / "diff.md",
) -> None:
    """`dvc params diff` and `dvc metrics diff` against the base, as markdown (the PR check comment)."""
    from autoops import evidence

    root = project_root()
    diffs = evidence.dvc_diffs(root, base)
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
) -> None:
    """Move the MLflow `champion` alias to the model on this commit (skipped without a tracking server)."""
    from autoops import release

    root = project_root()
    if not tracking_uri:
        console.print("no MLflow tracking server configured (MLFLOW_TRACKING_URI unset): nothing to promote")
        return
    result = release.promote(root, tracking_uri)
    github.write_outputs({"mlflow_version": result["version"]})
    version, previous = result["version"], result["previous"]
    was = f" (was {previous})" if previous and previous != version else ""
    console.print(
        f"{result['registered_model']}: champion -> version {version}{was}, model {result['model_version']}"
    )


def register(app: typer.Typer) -> None:
    app.command("latest-month")(latest_month_cmd)
    app.command("check")(check_cmd)
    app.command("propose")(propose_cmd)
    app.command("report")(report_cmd)
    app.command("diff")(diff_cmd)
    app.command("pull")(pull_cmd)
    app.command("fetch-model")(fetch_model_cmd)
    app.command("register")(register_cmd)
    app.command("release-artifact")(release_artifact_cmd)
    app.command("promote")(promote_cmd)
