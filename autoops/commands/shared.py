"""What every command shares: failures as one line, the consoles, the options several commands take."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from autoops import github
from autoops.gitops import LoopError
from core.runner import EXPECTED_ERRORS

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """Expected failures end as one `error: ...` line and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (LoopError, *EXPECTED_ERRORS) as exc:
            # Escaped: a message quoting a stage's `error [drift]: ...` is text, not rich markup.
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            # In Actions, the run's page shows the cause without opening the step's log.
            command = click.get_current_context(silent=True)
            name = command.info_name if command else func.__name__
            github.append_summary(f"## Auto-Ops: `autoops {name}` failed\n\n{exc}\n")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def as_of_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise LoopError(f"invalid date {value!r}: expected YYYY-MM-DD") from exc


MonthOpt = Annotated[str | None, typer.Option("--month", "-m", help="Month YYYY-MM.", show_default=False)]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Pretend today is this date (YYYY-MM-DD) when finding the latest month."),
]
BaseOpt = Annotated[
    str, typer.Option("--base", envvar="AUTOOPS_BASE", help="The branch that serves the champion model.")
]
AcceptOpt = Annotated[
    bool,
    typer.Option(
        "--accept-data-problems",
        help="A person vouches for the month's data: its failing data checks no longer block a retrain "
        "(the month is added to data_checks.accepted_months, and the PR shows it).",
    ),
]
