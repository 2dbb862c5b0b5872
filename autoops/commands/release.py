"""The commands around MLflow's registry and the release: `register` (the challenger),
`fetch-model`, `release-artifact` and `promote` (the champion)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autoops import github
from autoops.commands.shared import console, one_line_errors
from autoops.gitops import Git, LoopError
from autoops.project import BRANCH_PREFIX, ensure_work_dir, project_root
from core.paths import RELEASE_DIR, WORK_DIR

# Each command imports autoops.release (scikit-learn, by way of core.model) inside its body: at the top
# it would add about 1.3 s of CPU to every `autoops` start, `--help` included
# (bench/results/cli_startup.json, `python -m bench.cli_startup`).


@one_line_errors
def register_cmd(
    pr: Annotated[str | None, typer.Option("--pr", help="The pull request that proposes this model.")] = None,
) -> None:
    """Register the model on this retrain branch as MLflow's `challenger` (tags: branch, pull request)."""
    from autoops import release  # start-up time: see the top of this module

    root = project_root()
    branch = Git.discover(root).current_branch()
    if not branch or not branch.startswith(BRANCH_PREFIX):
        raise LoopError(
            f"on {branch or 'a detached HEAD'}, not a {BRANCH_PREFIX}<month> branch: nothing to register"
        )
    result = release.register_challenger(root, branch, pr)
    github.write_outputs({"mlflow_version": result["version"]})
    console.print(f"{result['registered_model']}: challenger -> version {result['version']} ({branch})")


@one_line_errors
def fetch_model_cmd() -> None:
    """Fetch exactly the model the committed dvc.lock pins (DVC remote; rebuilt only without one)."""
    from autoops import release  # start-up time: see the top of this module

    root = project_root()
    how = release.fetch_model(root)
    console.print(f"models/model.pkl {how}: the model the committed dvc.lock pins")


@one_line_errors
def release_artifact_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the artifact.")] = RELEASE_DIR,
    image: Annotated[str | None, typer.Option(help="Image (default: ghcr.io/<GITHUB_REPOSITORY>).")] = None,
    sha: Annotated[str | None, typer.Option(help="Commit the image is built from (default: HEAD).")] = None,
) -> None:
    """Verify models/ is exactly what the committed dvc.lock pins, then write the artifact and image tags."""
    from autoops import release  # start-up time: see the top of this module

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


@one_line_errors
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
    from autoops import release  # start-up time: see the top of this module

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


def register(app: typer.Typer) -> None:
    app.command("register")(register_cmd)
    app.command("fetch-model")(fetch_model_cmd)
    app.command("release-artifact")(release_artifact_cmd)
    app.command("promote")(promote_cmd)
