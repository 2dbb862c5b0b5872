"""The GitHub Actions side channels: step outputs, the job summary and the run's address.

Each is a plain file or variable that Actions provides; outside Actions they are simply absent
and these helpers do nothing, so the same command runs unchanged on a laptop.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoops.gitops import Git, LoopError


def write_outputs(values: Mapping[str, object]) -> None:
    """Append ``values`` to ``$GITHUB_OUTPUT`` (multi-line values use the heredoc form)."""
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    lines = []
    for key, value in values.items():
        text = _text(value)
        if "\n" in text:
            # A random delimiter cannot be forged by content (a month name, a reason string).
            delimiter = f"EOF_{secrets.token_hex(8)}"
            lines.append(f"{key}<<{delimiter}\n{text}\n{delimiter}")
        else:
            lines.append(f"{key}={text}")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def append_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(markdown.rstrip() + "\n")


def run_url() -> str | None:
    """This workflow run's page (where its artifacts are), when running in Actions."""
    server, repo, run_id = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repo and run_id:
        return f"{server}/{repo}/actions/runs/{run_id}"
    return None


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- the REST API (pull requests and issues) ----------------------------------------------------------

API_TIMEOUT_S = 30


class GitHubError(LoopError):
    """GitHub's API refused or could not be reached: one line for the user."""


def api_repository() -> tuple[str, str] | None:
    """``(API url, owner/repo)`` when running for a GitHub repository, else None (a laptop)."""
    repository = os.environ.get("GITHUB_REPOSITORY")
    if not repository:
        return None
    return os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"), repository


def _api(method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> Any:
    """One call to the repository's REST API (``path`` under /repos/<owner>/<repo>); refusals and
    unreachable hosts are one-line :class:`GitHubError`."""
    import httpx

    where = api_repository()
    assert where is not None, "callers check api_repository() first"
    api, repository = where
    # drift-watch hands its token to CML as REPO_TOKEN; GITHUB_TOKEN is the usual name elsewhere.
    token = os.environ.get("REPO_TOKEN") or os.environ.get("GITHUB_TOKEN")
    headers = {"accept": "application/vnd.github+json", "x-github-api-version": "2022-11-28"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    url = f"{api}/repos/{repository}{path}"
    try:
        response = httpx.request(
            method, url, params=params, json=body, headers=headers, timeout=API_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise GitHubError(f"GitHub API {url}: {exc}") from exc
    if response.status_code not in (200, 201):
        message = (
            response.json().get("message", "") if "json" in response.headers.get("content-type", "") else ""
        )
        raise GitHubError(f"GitHub API {url}: HTTP {response.status_code} {message}".rstrip())
    return response.json()


def pull_requests(branch: str, state: str = "all") -> list[dict]:
    """The repository's pull requests whose head is ``branch`` (this repository's, not a fork's)."""
    where = api_repository()
    if where is None:
        return []
    owner = where[1].split("/")[0]
    found = _api("GET", "/pulls", params={"state": state, "head": f"{owner}:{branch}", "per_page": 100})
    return [p for p in found if p.get("head", {}).get("ref") == branch]


def open_issue(title: str, body: str) -> dict[str, Any] | None:
    """Open an issue titled ``title``, unless one with that title is open already (a weekly rerun on
    the same broken month must not open another); that one is returned with ``existing: True``.
    None outside GitHub."""
    if api_repository() is None:
        return None
    # The issues endpoint lists pull requests too; they carry a `pull_request` key.
    issues = _api("GET", "/issues", params={"state": "open", "per_page": 100})
    for issue in issues:
        if issue.get("title") == title and "pull_request" not in issue:
            return {**issue, "existing": True}
    return {**_api("POST", "/issues", body={"title": title, "body": body}), "existing": False}


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
