"""The ``autoops`` console script, used identically by people and by the GitHub workflows.

Each command group lives in its own module and adds itself here through ``register(app)``, so
the workflows stay thin and everything they do can be run (and tested) locally.
"""

from __future__ import annotations

import typer

from autoops.backtest import register as register_backtest
from autoops.loop import register as register_loop
from stages.runner import quiet_telemetry

app = typer.Typer(
    name="autoops",
    help="Auto-Ops: watch a deployed model for drift, retrain, and propose the new model as a PR.",
    no_args_is_help=True,
    add_completion=False,
)
register_backtest(app)
register_loop(app)


@app.command()
def summary() -> None:
    """Print metrics, the drift verdict and where the reports are, for the last `dvc repro`."""
    from stages.summary import summary as print_summary

    raise typer.Exit(print_summary())


def main() -> None:
    quiet_telemetry()
    app()


if __name__ == "__main__":
    main()
