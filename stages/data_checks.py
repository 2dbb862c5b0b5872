"""Stage data_checks (after ingest): can the current month be trusted, before anything learns from it?

The work is core/data_checks.py's (the checks and their thresholds' meaning) and
core/month_profile.py's (one streaming pass per month); this entry point reads params.yaml and
writes the DVC metric ``reports/metrics/data_checks.json`` (see dvc.yaml's `data_checks`). It never
fails on bad data: the verdict is the output, and the decision (core/trigger.py) acts on it.
"""

from __future__ import annotations

import logging

from core.artifacts.data_checks import DataChecks
from core.data_checks import run_checks
from core.params import Params, load_params
from core.paths import DATA_CHECKS_METRICS
from core.runner import run_stage

log = logging.getLogger(__name__)


def data_checks(params: Params) -> DataChecks:
    result = run_checks(params)
    result.write(DATA_CHECKS_METRICS)
    if result.problem:
        log.warning(
            "%s%s", result.problem, " (accepted: data_checks.accepted_months)" if result.accepted else ""
        )
    else:
        log.info("%s: every blocking data check passed against %s", result.month, result.reference_month)
    return result


def main() -> None:
    data_checks(load_params())


if __name__ == "__main__":
    run_stage("data_checks", main)
