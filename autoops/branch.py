"""Guards around the retrain branch: what may be discarded when switching, and where it continues."""

from __future__ import annotations

from typing import NamedTuple

from autoops.gitops import Git, LoopError, dvc
from autoops.params_edit import only_current_month_changed
from autoops.project import pipeline_paths
from stages.paths import PARAMS_FILE

# A git trailer on every commit `propose` makes: how a rerun tells its own commits (safe to rebuild)
# from a person's (never dropped).
PROPOSED_TRAILER = "Auto-Ops-Proposed"


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


def foreign_commits(git: Git, base_sha: str, tip: str) -> list[str]:
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
    if tip and (foreign := foreign_commits(git, base_sha, tip)):
        where = f"{remote}/{branch}" if remote_sha else branch
        noun = "commit" if len(foreign) == 1 else "commits"
        raise LoopError(
            f"{where} has {len(foreign)} {noun} autoops did not make ({'; '.join(foreign)}) and {base} "
            f"moved on: merge {base} into it (or rebase it) and push, then rerun; the branch is left as it is"
        )
    # The base moved on (or there is no branch yet): rebuild on top of it.
    return BranchStart(base_sha, bool(remote_sha), remote_sha, local_sha)


def push_branch(git: Git, remote: str, branch: str, lease: str | None) -> None:
    """Push ``branch``; ``lease``: the remote tip it may replace (a rebuilt branch), else a fast-forward."""
    flags = [f"--force-with-lease=refs/heads/{branch}:{lease}"] if lease else []
    git.run("push", "--quiet", *flags, remote, f"refs/heads/{branch}:refs/heads/{branch}")
