"""The ``autoops`` console script: the project's one front door, used identically by people and by
the GitHub workflows.

This module only assembles: each group of commands lives in its own module and registers itself
(README.md, "Entry points", lists every command). The commands are thin: each parses its options,
calls the module that does the work and passes the result to GitHub's outputs and summary, so the
workflows stay thin and everything they do can be run (and tested) locally.
"""

from __future__ import annotations

import typer

from autoops import backtest
from autoops.commands import pipeline, propose, release, serve, watch
from core.runner import quiet_telemetry

app = typer.Typer(
    name="autoops",
    help="Auto-Ops: watch a deployed model for drift, retrain, and propose the new model as a PR.",
    no_args_is_help=True,
    add_completion=False,
)
# In the order a month travels: the pipeline, the watch, the proposal, the release; then the
# service and the backtest.
for commands in (pipeline, watch, propose, release, serve, backtest):
    commands.register(app)


def main() -> None:
    quiet_telemetry()
    app()


if __name__ == "__main__":
    main()
