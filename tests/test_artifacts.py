"""core/artifacts: each file the pipeline writes and the loop reads, as one model.

The files must stay byte-compatible with what the dicts wrote (DVC metrics, dvc.lock's md5s, the
committed PR evidence), so every committed one is read through its model and written back, and
the bytes compared. A missing or malformed file is one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoops.check import data_problem_result
from core.artifacts.backtest import Backtest
from core.artifacts.base import Artifact, ArtifactError
from core.artifacts.check import CheckResult
from core.artifacts.comparison import Comparison
from core.artifacts.data_checks import DataChecks
from core.artifacts.drift import Drift
from core.artifacts.evaluation import EvaluationMetrics
from core.artifacts.model_card import ModelCard
from core.paths import BACKTEST_RESULT, DATA_CHECKS_METRICS, DRIFT_METRICS, EVALUATE_METRICS, MODEL_CARD

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PR = ROOT / "docs" / "example_pr_report"
COMMITTED: list[tuple[type[Artifact], Path]] = [
    (Drift, ROOT / DRIFT_METRICS),
    (EvaluationMetrics, ROOT / EVALUATE_METRICS),
    (DataChecks, ROOT / DATA_CHECKS_METRICS),
    (ModelCard, ROOT / MODEL_CARD),
    (Backtest, ROOT / BACKTEST_RESULT),
    # The example retrain PR's evidence (bench/example_report.py): the loop's drift.json and
    # comparison.json as a real propose wrote them.
    (Drift, EXAMPLE_PR / "drift.json"),
    (Comparison, EXAMPLE_PR / "comparison.json"),
]


@pytest.mark.parametrize(
    ("model", "path"), COMMITTED, ids=[p.relative_to(ROOT).as_posix() for _, p in COMMITTED]
)
def test_committed_files_round_trip_byte_for_byte(model: type[Artifact], path: Path, tmp_path: Path) -> None:
    artifact = model.read(path)
    out = artifact.write(tmp_path / path.name)
    assert out.read_bytes() == path.read_bytes()


def test_an_absent_optional_key_stays_absent_and_a_null_stays_null(tmp_path: Path) -> None:
    card = json.loads((ROOT / MODEL_CARD).read_text())
    assert "training_rows_available" not in card  # the committed month is below train.max_rows
    sampled = {**card, "training_rows_available": 90000, "train_max_rows": 60000}
    path = tmp_path / "model_card.json"
    ModelCard.model_validate(sampled).write(path)
    assert json.loads(path.read_text()) == sampled
    checks = DataChecks.read(ROOT / DATA_CHECKS_METRICS)
    assert checks.problem is None and '"problem": null' in json.dumps(checks.as_dict())


def test_check_result_of_a_data_problem_keeps_its_nulls(tmp_path: Path) -> None:
    checks = DataChecks.read(ROOT / "reports" / "metrics" / "data_checks.json")
    result = data_problem_result(checks, f"data problem in {checks.month}: ...")
    path = result.write(tmp_path / "check.json")
    assert CheckResult.read(path) == result
    assert json.loads(path.read_text())["model_version"] is None


def test_a_missing_file_is_one_line_naming_it_and_its_writer(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as caught:
        Drift.read(tmp_path / "drift.json")
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{tmp_path / 'drift.json'}: missing; the drift stage (dvc repro drift) writes it"


def test_a_malformed_file_is_one_line_naming_it_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "evaluate.json"
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match=r"evaluate\.json: not readable JSON"):
        EvaluationMetrics.read(path)
    data = json.loads((ROOT / EVALUATE_METRICS).read_text())
    data["current"]["mean_absolute_error"] = data["current"].pop("mae")  # a renamed key
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as caught:
        EvaluationMetrics.read(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: malformed (EvaluationMetrics): current.mae: Field required")


def test_the_backtests_work_counts_are_never_written(tmp_path: Path) -> None:
    # The command prints what the replay computed; the file must not depend on the cache's state.
    data = {**json.loads((ROOT / BACKTEST_RESULT).read_text()), "work": {"fits": 3, "scored": 9}}
    backtest = Backtest.model_validate(data)
    assert backtest.work == {"fits": 3, "scored": 9}
    assert backtest.write(tmp_path / "backtest.json").read_bytes() == (ROOT / BACKTEST_RESULT).read_bytes()
