"""Guards around the retrain branch: what may be discarded when switching, and where it continues."""

from __future__ import annotations

from typing import NamedTuple

from autoops.gitops import Git, LoopError, dvc
from autoops.params_edit import only_current_month_changed
from autoops.project import pipeline_paths
from core.paths import PARAMS_FILE

# A git trailer on every commit `propose` makes: for people reading the log. It decides nothing: a
# reviewer who amends or rewords the commit keeps it.
PROPOSED_TRAILER = "Auto-Ops-Proposed"
# What does decide whose a commit is: a git note on each commit `propose` made, under one notes ref
# per branch (pushed with the branch, so a rerun on a fresh runner reads it). A note names a commit
# id, which amending or rewording replaces: the reviewer's new commit has none, so it is theirs.
NOTES_PREFIX = "refs/notes/auto-ops/"


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
        if path == PARAMS_FILE.as_posix() and only_current_month_changed(git):
            continue
        raise LoopError(
            f"uncommitted change to {path}: commit or stash it first (propose switches branches and "
            "would lose it)"
        )


def switch(git: Git, ref: str, branch: str | None = None) -> None:
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


class BranchStart(NamedTuple):
    start: str  # the commit retrain/<month> is built on
    rebuilt: bool  # True: the remote branch is replaced (pushed with a lease)
    remote_sha: str | None
    local_sha: str | None


def notes_ref(branch: str) -> str:
    return f"{NOTES_PREFIX}{branch}"


def record_proposed(git: Git, branch: str, sha: str, month: str) -> None:
    """Note ``sha`` as a commit `propose` made on ``branch`` (pushed with it by push_branch)."""
    git.run(
        "notes", f"--ref={notes_ref(branch)}", "add", "--force", "-m", f"{PROPOSED_TRAILER}: {month}", sha
    )


def fetch_notes(git: Git, remote: str, branch: str) -> None:
    """Bring the remote's record of `propose`'s commits on ``branch`` into the local notes ref.

    Merged, not overwritten: the local ref may also note commits made here and not pushed yet
    (`propose --no-push`). Both only ever add notes, so their union is the whole record.
    """
    ref = notes_ref(branch)
    if not git.run("ls-remote", remote, ref):
        return
    fetched = f"refs/notes/auto-ops-{remote}/{branch}"
    git.run("fetch", "--quiet", remote, f"+{ref}:{fetched}")
    git.run("notes", f"--ref={ref}", "merge", "--quiet", "--strategy=cat_sort_uniq", fetched)


def proposed_commits(git: Git, branch: str) -> set[str]:
    """The commits `propose` made on ``branch``, as far as this clone's notes ref knows."""
    if not git.rev(notes_ref(branch)):
        return set()
    return {line.split()[1] for line in git.run("notes", f"--ref={notes_ref(branch)}", "list").splitlines()}


def foreign_commits(git: Git, branch: str, tip: str, *older: str) -> list[str]:
    """Commits on ``tip``, on none of ``older``, that `propose` did not make: `<sha> <subject> (<author>)`."""
    ours = proposed_commits(git, branch)
    out = git.run("log", "--format=%H %h %s (%an)", tip, "--not", *older)
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.split(" ", 1)[0] not in ours]


def _listed(commits: list[str], which: str) -> str:
    return f"{len(commits)} {'commit' if len(commits) == 1 else 'commits'} {which} ({'; '.join(commits)})"


def _tip(
    git: Git, remote: str, branch: str, local_sha: str | None, remote_sha: str | None, base_sha: str
) -> str | None:
    """The branch as it stands: the remote's, or the local branch when it has commits the remote lacks.

    A local commit is never reset away: when the local branch is ahead it is the tip (and the push
    a fast-forward); when both moved on, a person's local commits stop propose. Only `propose`'s
    own unpushed commits (an earlier `--no-push` run) give way to the remote: the rerun remakes them.
    """
    if not (local_sha and remote_sha) or git.is_ancestor(local_sha, remote_sha):
        return remote_sha or local_sha
    if git.is_ancestor(remote_sha, local_sha):
        return local_sha
    # The base's commits are not the local branch's own (a rebuild starts from the base).
    if local := foreign_commits(git, branch, local_sha, remote_sha, base_sha):
        raise LoopError(
            f"{branch} has {_listed(local, f'not on {remote}/{branch}')}, and {remote}/{branch} has commits "
            f"{branch} lacks: merge {remote}/{branch} into it (or rebase it) and push, then rerun; "
            "both are left as they are"
        )
    return remote_sha


def branch_start(
    git: Git, remote: str, branch: str, base_sha: str, base: str, *, has_remote: bool
) -> BranchStart:
    """Where retrain/<month> continues: the existing branch when it contains the base, else the base.

    The existing branch is the remote's with any local commits it lacks (see _tip). Starting afresh
    drops the branch's commits, which is only allowed when `propose` made all of them (its notes,
    not a trailer, say so): a person's commit on the branch stops propose with the branch left as it is.
    """
    remote_sha = None
    if has_remote and git.remote_branch_sha(remote, branch):
        remote_sha = git.fetch_branch(remote, branch)
        fetch_notes(git, remote, branch)
    local_sha = git.rev(f"refs/heads/{branch}")
    tip = _tip(git, remote, branch, local_sha, remote_sha, base_sha)
    if tip and git.is_ancestor(base_sha, tip):
        return BranchStart(tip, False, remote_sha, local_sha)
    if tip and (foreign := foreign_commits(git, branch, tip, base_sha)):
        where = f"{remote}/{branch}" if tip == remote_sha else branch
        raise LoopError(
            f"{where} has {_listed(foreign, 'autoops did not make')} and {base} moved on: merge {base} "
            "into it (or rebase it) and push, then rerun; the branch is left as it is"
        )
    # The base moved on (or there is no branch yet): rebuild on top of it.
    return BranchStart(base_sha, bool(remote_sha), remote_sha, local_sha)


def push_branch(git: Git, remote: str, branch: str, lease: str | None) -> None:
    """Push ``branch`` and the notes naming `propose`'s commits on it, both or neither (--atomic).

    ``lease``: the remote tip it may replace (a rebuilt branch); otherwise only a fast-forward.
    """
    flags = ["--atomic", *([f"--force-with-lease=refs/heads/{branch}:{lease}"] if lease else [])]
    refspecs = [f"refs/heads/{branch}:refs/heads/{branch}"]
    if git.rev(notes_ref(branch)):
        refspecs.append(f"{notes_ref(branch)}:{notes_ref(branch)}")
    result = git.attempt("push", "--quiet", *flags, remote, *refspecs)
    if result.returncode == 0:
        return
    detail = result.stderr.strip()
    rejected = next((line.strip() for line in detail.splitlines() if "[rejected]" in line), None)
    if rejected:
        # A fast-forward refused ("fetch first") or a lease broken ("stale info"): the branch moved.
        raise LoopError(
            f"someone pushed to {remote}/{branch} while propose ran, so {remote} refused this push "
            f"({rejected}); nothing was lost (this commit stays on the local {branch}): rerun propose, "
            f"which is safe: it starts again from what {remote} has now"
        )
    last = detail.splitlines()[-1] if detail else f"exit code {result.returncode}"
    raise LoopError(f"`git push` of {branch} to {remote} failed: {last}")
