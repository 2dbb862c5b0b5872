"""Thin, explicit wrappers around the ``git`` and ``dvc`` command lines used by the loop.

Plain subprocess calls rather than a git library: the loop only needs a dozen porcelain
commands, and running the very same commands a person would type keeps every step easy to
replay by hand when something goes wrong in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# Used only when the repository has no identity configured (a fresh CI runner before
# `cml repo prepare`), so a commit never fails on "Please tell me who you are".
BOT_NAME = "auto-ops[bot]"
BOT_EMAIL = "auto-ops-bot@users.noreply.github.com"
# How a stage (core/runner.py) and DVC itself name the cause of a failure, one line each.
STAGE_ERROR = re.compile(r"error \[[\w-]+\]: ")
DVC_ERROR = re.compile(r"ERROR: ")


class LoopError(RuntimeError):
    """An expected failure of a loop command: one line for the user, no traceback."""


def _run(
    args: Sequence[str], cwd: Path, *, check: bool = True, capture: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(args),
            cwd=cwd,
            text=True,
            capture_output=capture,
            # Streamed output goes to stderr so stdout stays machine-readable for callers.
            stdout=None if capture else sys.stderr,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LoopError(f"{args[0]}: command not found (is it installed and on PATH?)") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        raise LoopError(f"`{' '.join(args)}` failed: {last}")
    return result


class Git:
    """The repository the loop works in (always its top level)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def discover(cls, cwd: Path | None = None) -> Git:
        cwd = (cwd or Path.cwd()).resolve()
        result = _run(["git", "rev-parse", "--show-toplevel"], cwd, check=False)
        if result.returncode != 0:
            raise LoopError(f"{cwd} is not inside a git repository; run autoops from a clone of the project")
        root = Path(result.stdout.strip()).resolve()
        if root != cwd:
            raise LoopError(f"run autoops from the repository root ({root}), not {cwd}")
        return cls(root)

    def run(self, *args: str, check: bool = True) -> str:
        return _run(["git", *self._identity(args), *args], self.root, check=check).stdout.strip()

    def ok(self, *args: str) -> bool:
        return _run(["git", *args], self.root, check=False).returncode == 0

    def attempt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run git and hand back the result, failed or not, for a caller that explains the failure."""
        return _run(["git", *self._identity(args), *args], self.root, check=False)

    def _identity(self, args: Sequence[str]) -> list[str]:
        # `notes add` and `notes merge` commit to the notes ref: they need an identity too.
        if not args or args[0] not in ("commit", "notes"):
            return []
        have_email = _run(["git", "config", "user.email"], self.root, check=False).stdout.strip()
        return [] if have_email else ["-c", f"user.name={BOT_NAME}", "-c", f"user.email={BOT_EMAIL}"]

    # --- refs -------------------------------------------------------------------------------

    def rev(self, ref: str) -> str | None:
        result = _run(
            ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], self.root, check=False
        )
        return result.stdout.strip() or None

    def current_branch(self) -> str | None:
        name = self.run("branch", "--show-current")
        return name or None

    def resolve_base(self, base: str, remote: str | None) -> tuple[str, str]:
        """``(ref to check out, sha)`` for the base branch: the local branch, else the remote one."""
        candidates = [f"refs/heads/{base}"]
        if remote:
            candidates.append(f"refs/remotes/{remote}/{base}")
        candidates.append(base)  # a tag or a sha, for people experimenting locally
        for ref in candidates:
            if sha := self.rev(ref):
                return (base if ref.startswith("refs/heads/") else sha), sha
        raise LoopError(f"base branch {base!r} not found (neither locally nor on the remote)")

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", older, newer)

    def has_remote(self, remote: str) -> bool:
        return self.ok("remote", "get-url", remote)

    def remote_branch_sha(self, remote: str, branch: str) -> str | None:
        out = self.run("ls-remote", "--heads", remote, f"refs/heads/{branch}")
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{branch}":
                return sha
        return None

    def fetch_branch(self, remote: str, branch: str) -> str:
        self.run("fetch", "--quiet", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
        sha = self.rev(f"refs/remotes/{remote}/{branch}")
        if sha is None:
            raise LoopError(f"could not fetch {remote}/{branch}")
        return sha

    # --- working tree -----------------------------------------------------------------------

    def changed_paths(self) -> list[tuple[str, str]]:
        """``(status, path)`` for every tracked change and untracked file (ignored ones excluded)."""
        out = _run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"], self.root).stdout
        entries = out.split("\0")
        changes: list[tuple[str, str]] = []
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if not entry:
                continue
            status, path = entry[:2], entry[3:]
            if status[0] in "RC":
                i += 1  # a rename is followed by its source path
            changes.append((status, path))
        return changes

    def show(self, ref: str, path: str) -> str | None:
        result = _run(["git", "show", f"{ref}:{path}"], self.root, check=False)
        return result.stdout if result.returncode == 0 else None


def dvc(
    root: Path, *args: str, capture: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run DVC with this interpreter, so stages see the same environment as autoops itself."""
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    # The loop's rebuilds never register models in MLflow (core/training.py, REGISTER_ENV):
    # only a proposed challenger is registered, by `autoops propose` itself.
    env["AUTOOPS_MLFLOW_REGISTER"] = "0"
    command = [sys.executable, "-m", "dvc", *args]
    result = _run(command, root, check=False, env=env) if capture else _stream(command, root, env)
    if check and result.returncode != 0:
        raise LoopError(f"`dvc {' '.join(args)}` failed (exit {result.returncode}): {_cause(result.stderr)}")
    return result


def _stream(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with its output passed on to stderr as it comes, and kept for _cause."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            lines.append(line)
    return subprocess.CompletedProcess(command, process.returncode, "", "".join(lines))


def _cause(output: str | None) -> str:
    """The line that says why DVC failed: a stage's own one-line error (core/runner.py prints
    `error [<stage>]: ...`), else DVC's `ERROR:` line, else the last line."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    for pattern in (STAGE_ERROR, DVC_ERROR):
        if found := [line for line in lines if pattern.match(line)]:
            return found[-1]
    return lines[-1] if lines else "no output"


def dvc_remote_configured(root: Path) -> bool:
    result = dvc(root, "remote", "list", capture=True, check=False)
    return result.returncode == 0 and bool(result.stdout.strip())
