"""The service's commands, each the very function its `python -m serve...` form runs: `serve`
(serve/start.py), `compile` (serve/compile.py) and `export-log` (serve/export_log.py)."""

from __future__ import annotations

import typer

from serve.compile import run as compile_run
from serve.export_log import run as export_log_run
from serve.start import run as serve_run


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_run)
    app.command("compile")(compile_run)
    app.command("export-log")(export_log_run)
