"""Entry-point wrapper shared by every stage: expected failures become one clear line, exit 1."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from core.io import StageError
from core.months import MonthError
from core.params import ParamsError
from core.schema import SchemaError

EXPECTED_ERRORS = (StageError, MonthError, ParamsError, SchemaError)


def quiet_telemetry() -> None:
    # The pipeline runs offline and in CI: no usage pings from the libraries it drives.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def run_stage(name: str, main: Callable[[], None]) -> None:
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s", stream=sys.stderr)
    try:
        main()
    except EXPECTED_ERRORS as exc:
        print(f"error [{name}]: {exc}", file=sys.stderr)
        sys.exit(1)
