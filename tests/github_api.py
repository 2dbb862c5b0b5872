"""A stand-in for GitHub's REST API, at its protocol boundary: a real HTTP server on localhost.

Only the pull-request and issue endpoints the loop touches (directly, or through the `cml` stand-in in
tests/workflow_runner.py) are served; the state is a list of pull requests a test can inspect
and change (close one unmerged, merge one) as a person on github.com would.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PULLS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls$")
ISSUES = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues$")
COMMENTS = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<number>\d+)/comments$")


@dataclass
class FakeGitHub:
    url: str = ""
    repository: str = "acme/auto-ops"
    pulls: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open_pull(self, head: str, base: str, title: str, body: str = "") -> dict[str, Any]:
        with self.lock:
            number = len(self.pulls) + 1
            pull = {
                "number": number,
                "state": "open",
                "title": title,
                "body": body,
                "merged_at": None,
                "head": {"ref": head, "label": f"{self.repository.split('/')[0]}:{head}"},
                "base": {"ref": base},
                "html_url": f"https://github.com/{self.repository}/pull/{number}",
            }
            self.pulls.append(pull)
            return pull

    def open_issue(self, title: str, body: str = "") -> dict[str, Any]:
        with self.lock:
            # Issues and pull requests share one number sequence on GitHub.
            number = len(self.pulls) + len(self.issues) + 1
            issue = {
                "number": number,
                "state": "open",
                "title": title,
                "body": body,
                "html_url": f"https://github.com/{self.repository}/issues/{number}",
            }
            self.issues.append(issue)
            return issue

    def close(self, number: int, *, merged: bool = False) -> None:
        with self.lock:
            pull = self.pulls[number - 1]
            pull["state"] = "closed"
            pull["merged_at"] = "2024-06-01T00:00:00Z" if merged else None

    def env(self, token: str = "test-token") -> dict[str, str]:
        """What Actions puts in a step's environment for talking to the API."""
        return {"GITHUB_API_URL": self.url, "GITHUB_REPOSITORY": self.repository, "REPO_TOKEN": token}


def _handler(github: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("authorization", "").split(" ")[-1]:
                return True
            self._reply(401, {"message": "Requires authentication"})
            return False

        def do_GET(self) -> None:
            url = urlparse(self.path)
            github.requests.append(f"GET {url.path}?{url.query}")
            if not self._authorised():
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if ISSUES.match(url.path):
                # GitHub lists pull requests among the issues, marked by a `pull_request` key.
                with github.lock:
                    listed = [*github.issues, *({**p, "pull_request": {}} for p in github.pulls)]
                state = query.get("state", "open")
                self._reply(200, [i for i in listed if state == "all" or i["state"] == state])
                return
            if not PULLS.match(url.path):
                self._reply(404, {"message": "Not Found"})
                return
            state, head = query.get("state", "open"), query.get("head")
            with github.lock:
                found = [
                    p
                    for p in github.pulls
                    if (state == "all" or p["state"] == state)
                    and (head is None or p["head"]["label"] == head)
                ]
            self._reply(200, found)

        def do_POST(self) -> None:
            url = urlparse(self.path)
            github.requests.append(f"POST {url.path}")
            if not self._authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
            if PULLS.match(url.path):
                self._reply(
                    201, github.open_pull(body["head"], body["base"], body["title"], body.get("body", ""))
                )
            elif ISSUES.match(url.path):
                self._reply(201, github.open_issue(body["title"], body.get("body", "")))
            elif match := COMMENTS.match(url.path):
                github.comments.setdefault(int(match["number"]), []).append(body["body"])
                self._reply(201, {"body": body["body"]})
            else:
                self._reply(404, {"message": "Not Found"})

    return Handler


@contextmanager
def fake_github() -> Iterator[FakeGitHub]:
    github = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(github))
    github.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield github
    finally:
        server.shutdown()
        server.server_close()
