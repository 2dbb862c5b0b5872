"""Which months the configured data source has published: the loop's question, the source's answer.

The source (core/sources/) knows what it has; the loop adds the calendar (no month after this
one) and turns "not published" into a loop error, one line for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from autoops.gitops import LoopError
from core.months import current_month, month_index
from core.params import Params

if TYPE_CHECKING:
    from core.sources import DataSource

# core.sources is imported when a source is asked for, not with this module: the tlc source brings
# requests, tenacity and tqdm, about 0.2 s of `python -X importtime -c "import autoops.cli"` that
# `autoops --help` and the commands that never ask a source should not pay.


T = TypeVar("T")


def _ask(root: Path, params: Params, question: Callable[[DataSource], T]) -> T:
    """The configured source's answer; its "not published" becomes the loop's one-line error."""
    # Here, not at the top: the sources bring requests, tenacity and tqdm (~540 ms of CPU) to every
    # `autoops` start.
    from core.sources import UnpublishedError, source_for

    try:
        return question(source_for(params, root))
    except UnpublishedError as exc:
        raise LoopError(str(exc)) from exc


def latest_month(root: Path, params: Params, as_of: date | None = None) -> str:
    """The newest month the configured source can deliver."""
    return _ask(root, params, lambda source: source.latest(current_month(as_of)))


def ensure_published(root: Path, params: Params, month: str, as_of: date | None = None) -> None:
    """Refuse a month the source has not published: a retrain on it would train on nothing real."""
    today_month = current_month(as_of)
    if month_index(month) > month_index(today_month):
        raise LoopError(
            f"{month} is not published yet: it is after this month ({today_month}, the newest possible)"
        )
    _ask(root, params, lambda source: source.check_published(month, today_month))
