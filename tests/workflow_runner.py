"""Run a GitHub workflow's jobs on this machine: each `run:` step in order, in bash, as Actions would.

What Actions itself provides is reproduced here (contexts, `${{ }}` expressions, `if:`, step
outputs through $GITHUB_OUTPUT, $GITHUB_ENV/$GITHUB_PATH, `needs:`); everything a step runs is the
real thing (git against a bare origin, DVC, the autoops CLI). What stands outside:

* GitHub's API: the HTTP server in tests/github_api.py, reached by the `cml` stand-in below
  (CML itself comes from npm, which this machine does not reach).
* `uses:` actions, which live on GitHub: `actions/checkout` clones the origin, `setup-python`
  is this interpreter, `upload-artifact` and the docker actions are recorded, not executed;
  a reusable workflow (`uses: ./...`) is reported with the result the test chooses.
* Steps that install software (pip, npm): the test's environment already has it.

Size (~390 lines): one small Actions interpreter; its parts (expressions, contexts, steps, jobs)
only make sense together.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import stage_env

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|!|\(|\)|,)"
    r"|(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w-]*(?:\.[\w-]+)*))"
)
INSTALLS = ("python -m pip install", "npm install")


# --- expressions -------------------------------------------------------------------------------


def evaluate(expression: str, context: Mapping[str, Any], status: str = "success") -> Any:
    """A GitHub Actions expression (the subset the workflows use) against ``context``."""
    python: list[str] = []
    pos = 0
    while pos < len(expression):
        match = TOKEN.match(expression, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot parse expression {expression!r} at {expression[pos:]!r}")
        pos = match.end()
        if text := match["str"]:
            python.append(repr(text[1:-1].replace("''", "'")))
        elif op := match["op"]:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(op, op))
        elif num := match["num"]:
            python.append(num)
        elif name := match["name"]:
            following = expression[pos:].lstrip()
            if following.startswith("("):
                python.append(f"_fn_{name}")
            elif name in ("true", "false", "null"):
                python.append({"true": "True", "false": "False", "null": "None"}[name])
            else:
                python.append(f"_get({name!r})")

    def get(path: str) -> Any:
        node: Any = context
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    names = {
        "_get": get,
        "_fn_always": lambda: True,
        "_fn_success": lambda: status == "success",
        "_fn_failure": lambda: status == "failure",
        "_fn_cancelled": lambda: False,
    }
    return eval("".join(python), {"__builtins__": {}}, names)  # our own translation, no builtins


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def interpolate(value: Any, context: Mapping[str, Any]) -> str:
    text = _text(value)
    whole = EXPR.fullmatch(text.strip())
    if whole:
        return _text(evaluate(whole[1], context))
    return EXPR.sub(lambda m: _text(evaluate(m[1], context)), text)


def condition(expr: Any, context: Mapping[str, Any], status: str) -> bool:
    if expr is None:
        return status == "success"
    text = EXPR.fullmatch(str(expr).strip())
    source = text[1] if text else str(expr)
    # Like Actions: a condition without a status function implies success().
    if not re.search(r"\b(always|success|failure|cancelled)\(", source):
        source = f"success() && ({source})"
    return bool(evaluate(source, context, status))


def parse_outputs(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


# --- running jobs ------------------------------------------------------------------------------


@dataclass
class StepRun:
    name: str
    outcome: str  # success, failure, skipped
    outputs: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    uses: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRun:
    name: str
    result: str  # success, failure, skipped
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def step(self, name: str) -> StepRun:
        return next(s for s in self.steps if name in s.name)

    def log(self) -> str:
        return "\n".join(f"[{s.outcome}] {s.name}\n{s.stdout}{s.stderr}" for s in self.steps)


@dataclass
class Runner:
    """One workflow run: the event, secrets and vars it sees, and where its jobs check out."""

    workflow: Path
    origin: Path
    workspace: Path
    event_name: str
    ref_name: str = "main"
    inputs: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    repository: str = "acme/auto-ops"
    event: dict[str, Any] = field(default_factory=dict)  # github.event beyond the inputs
    base_ref: str = ""  # pull_request events: the PR's target branch
    # A reusable workflow (`uses: ./...`) job's result, chosen by the test.
    called: Callable[[str], str] = lambda path: "success"
    # Where the `cml` stand-in logs its calls; it is installed where `npm install --prefix
    # "$HOME/.cml"` would put CML, so the workflow's own PATH step is what finds it.
    cml_log: Path | None = None

    def run(self, only: str | None = None) -> dict[str, JobRun]:
        spec = yaml.safe_load(self.workflow.read_text())
        results: dict[str, JobRun] = {}
        pending = dict(spec["jobs"])
        while pending:
            for name, job in list(pending.items()):
                needs = job.get("needs", [])
                needs = [needs] if isinstance(needs, str) else needs
                if any(n not in results for n in needs):
                    continue
                del pending[name]
                if only and name != only and name not in self._needed_by(spec, only):
                    continue
                if any(results[n].result != "success" for n in needs):
                    results[name] = JobRun(name, "skipped")
                elif "uses" in job:
                    results[name] = JobRun(name, self.called(job["uses"]))
                else:
                    results[name] = self._job(name, job, {n: results[n] for n in needs})
        return results

    def _needed_by(self, spec: dict[str, Any], job: str) -> set[str]:
        needs = spec["jobs"][job].get("needs", [])
        needs = {needs} if isinstance(needs, str) else set(needs)
        return needs | {m for n in needs for m in self._needed_by(spec, n)}

    def _context(self, sha: str, needs: dict[str, JobRun]) -> dict[str, Any]:
        return {
            "github": {
                "event_name": self.event_name,
                "ref": f"refs/heads/{self.ref_name}",
                "ref_name": self.ref_name,
                "sha": sha,
                "repository": self.repository,
                "actor": "octocat",
                "token": "ghs_test_token",
                "base_ref": self.base_ref,
                "event": {"inputs": self.inputs, **self.event},
            },
            "inputs": self.inputs,
            "secrets": self.secrets,
            "vars": self.vars,
            "needs": {n: {"result": j.result, "outputs": j.outputs} for n, j in needs.items()},
            "steps": {},
            "env": {},
        }

    def _job(self, name: str, job: dict[str, Any], needs: dict[str, JobRun]) -> JobRun:
        workspace = self.workspace / name
        sha = subprocess.run(
            ["git", "ls-remote", str(self.origin), f"refs/heads/{self.ref_name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        context = self._context(sha, needs)
        files = self.workspace / f"{name}.files"
        files.mkdir(parents=True, exist_ok=True)
        home = files / "home"
        home.mkdir(exist_ok=True)
        if self.cml_log:
            cml_standin(home / ".cml" / "bin")
        base_env = {
            **stage_env(workspace),
            **self.env,
            "HOME": str(home),
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REF_NAME": self.ref_name,
            "GITHUB_SHA": sha,
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_STEP_SUMMARY": str(files / "summary.md"),
            "GIT_CONFIG_NOSYSTEM": "1",
            **({"CML_STANDIN_LOG": str(self.cml_log)} if self.cml_log else {}),
        }
        extra_path: list[str] = []
        job_env = {k: interpolate(v, context) for k, v in (job.get("env") or {}).items()}
        context["env"] = job_env
        run = JobRun(name, "success")
        status = "success"
        for index, step in enumerate(job["steps"]):
            title = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            if not condition(step.get("if"), context, status):
                run.steps.append(StepRun(title, "skipped"))
                context["steps"][step.get("id", f"_{index}")] = {"outcome": "skipped", "outputs": {}}
                continue
            env = {**job_env, **{k: interpolate(v, context) for k, v in (step.get("env") or {}).items()}}
            if "uses" in step:
                result = self._uses(step, workspace, sha, context)
            elif step["run"].strip().startswith(INSTALLS):
                result = StepRun(title, "success", stdout="(already installed)")
            else:
                result = self._shell(step["run"], workspace, files, {**base_env, **env}, extra_path)
            result.name = title
            run.steps.append(result)
            outcome = {"outcome": result.outcome, "outputs": result.outputs}
            context["steps"][step.get("id", f"_{index}")] = outcome
            if result.outcome == "failure":
                status = "failure"
        run.result = status
        run.outputs = {k: interpolate(v, context) for k, v in (job.get("outputs") or {}).items()}
        return run

    def _uses(self, step: dict[str, Any], workspace: Path, sha: str, context: dict[str, Any]) -> StepRun:
        action = step["uses"].split("@")[0]
        inputs = {k: interpolate(v, context) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            subprocess.run(["git", "clone", "-q", str(self.origin), str(workspace)], check=True)
            ref = inputs.get("ref") or sha
            subprocess.run(["git", "checkout", "-q", "--detach", ref], cwd=workspace, check=True)
            if inputs.get("persist-credentials") != "false":
                raise AssertionError("checkout must not persist credentials")
        return StepRun(step["uses"], "success", uses=action, inputs=inputs)

    def _shell(
        self, script: str, workspace: Path, files: Path, env: dict[str, str], extra_path: list[str]
    ) -> StepRun:
        token = secrets.token_hex(4)
        output, github_env, github_path = (files / f"{n}-{token}" for n in ("output", "env", "path"))
        for path in (output, github_env, github_path):
            path.write_text("")
        script_file = files / f"step-{token}.sh"
        script_file.write_text(script)
        files_env = {"GITHUB_OUTPUT": output, "GITHUB_ENV": github_env, "GITHUB_PATH": github_path}
        full_env = {**env, **{k: str(v) for k, v in files_env.items()}}
        full_env["PATH"] = os.pathsep.join([*reversed(extra_path), full_env["PATH"]])
        # The shell GitHub uses for `run:` on Linux.
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
            cwd=workspace,
            env=full_env,
            capture_output=True,
            text=True,
        )
        extra_path.extend(line for line in github_path.read_text().splitlines() if line)
        env.update(parse_outputs(github_env.read_text()))
        return StepRun(
            "",
            "success" if done.returncode == 0 else "failure",
            outputs=parse_outputs(output.read_text()),
            stdout=done.stdout,
            stderr=done.stderr,
        )


# --- the `cml` stand-in ------------------------------------------------------------------------

# CML's defaults when `cml repo prepare` is not told who commits (bin/cml/repo/prepare.js).
CML_DEFAULT_USER = ("Olivaw[bot]", "olivaw@iterative.ai")

CML_SCRIPT = '''
"""The `cml` commands drift-watch and pr-report use, talking to the GitHub API stand-in."""
import json, os, subprocess, sys, urllib.request

LOG = os.environ["CML_STANDIN_LOG"]
api, repo = os.environ["GITHUB_API_URL"], os.environ["GITHUB_REPOSITORY"]
token = os.environ.get("REPO_TOKEN", "")
args = sys.argv[1:]
with open(LOG, "a") as log:
    log.write(json.dumps(args) + "\\n")

def opt(name, default=None):
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default

def call(method, path, body=None):
    request = urllib.request.Request(
        api + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": "token " + token, "content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)

if not token:
    sys.exit("cml: no REPO_TOKEN")
if args[:2] == ["repo", "prepare"]:
    subprocess.run(["git", "config", "user.name", opt("--user-name", __USER__)], check=True)
    subprocess.run(["git", "config", "user.email", opt("--user-email", __EMAIL__)], check=True)
elif args[:2] == ["pr", "create"]:
    owner = repo.split("/")[0]
    branch = opt("--branch")
    found = call("GET", f"/repos/{repo}/pulls?state=open&head={owner}:{branch}")
    pull = found[0] if found else call("POST", f"/repos/{repo}/pulls", {
        "head": branch, "base": opt("--target-branch"), "title": opt("--title"), "body": opt("--body")})
    print(pull["html_url"])
elif args[:2] == ["comment", "update"]:
    target = opt("--target")
    with open(args[-1]) as handle:
        call("POST", f"/repos/{repo}/issues/{target.split('/')[1]}/comments", {"body": handle.read()})
else:
    sys.exit("cml stand-in: unsupported " + " ".join(args))
'''.replace("__USER__", repr(CML_DEFAULT_USER[0])).replace("__EMAIL__", repr(CML_DEFAULT_USER[1]))


def cml_standin(folder: Path) -> Path:
    """A `cml` executable in ``folder``; it logs its calls to $CML_STANDIN_LOG (a JSON list a line)."""
    folder.mkdir(parents=True, exist_ok=True)
    cml = folder / "cml"
    cml.write_text(f"#!{sys.executable}\n{CML_SCRIPT}")
    cml.chmod(0o755)
    return cml


def cml_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
