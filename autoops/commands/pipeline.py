"""The pipeline from the one front door, with no stage module imported: `repro` (`dvc repro`),
`stage` (one stage's own command, `python -m stages.<name>`, in a process of its own) and `summary`
(the last run in short)."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys
from typing import Annotated, Any

import typer

from autoops.commands.shared import one_line_errors
from autoops.gitops import LoopError
from autoops.project import project_root
from autoops.summary import summary

# Unknown options (`--force`, `--current FILE`) pass through to the command run.
PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}


def stage_names() -> list[str]:
    """The stage entry points: the modules of stages/, found without importing any of them."""
    spec = importlib.util.find_spec("stages")
    locations = spec.submodule_search_locations if spec else None
    return sorted(module.name for module in pkgutil.iter_modules(locations or []))


def _run(command: list[str]) -> None:
    """Run in the project root with this interpreter (the stages see autoops's environment); its
    exit status is the command's."""
    code = subprocess.run(command, cwd=project_root(), check=False).returncode
    if code:
        raise typer.Exit(code)


@one_line_errors
def repro_cmd(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Stages (default: all) and `dvc repro` options, e.g. `drift --force`."),
    ] = None,
) -> None:
    """Run the pipeline: `dvc repro` (a person's run: train registers its model in MLflow)."""
    _run([sys.executable, "-m", "dvc", "repro", *(args or [])])


@one_line_errors
def stage_cmd(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(stage_names())}.", show_default=False)],
    args: Annotated[
        list[str] | None, typer.Argument(help="The stage's own options, e.g. drift `--current FILE`.")
    ] = None,
) -> None:
    """Run one stage's command as dvc.yaml does (`python -m stages.<name>`), outside DVC: nothing is
    cached or locked, and the stages before it are not run (`-- --help`: the stage's own options)."""
    names = stage_names()
    if name not in names:
        raise LoopError(f"no stage {name!r}: the stages are {', '.join(names)}")
    _run([sys.executable, "-m", f"stages.{name}", *(args or [])])


def summary_cmd() -> None:
    """Print metrics, the drift verdict and where the reports are, for the last `dvc repro`."""
    raise typer.Exit(summary())


def register(app: typer.Typer) -> None:
    app.command("repro", context_settings=PASS_THROUGH)(repro_cmd)
    app.command("stage", context_settings=PASS_THROUGH)(stage_cmd)
    app.command("summary")(summary_cmd)
