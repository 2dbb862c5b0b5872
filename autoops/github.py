"""The GitHub Actions side channels: step outputs, the job summary and the run's address.

Each is a plain file or variable that Actions provides; outside Actions they are simply absent
and these helpers do nothing, so the same command runs unchanged on a laptop.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping


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
