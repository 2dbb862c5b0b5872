"""The pipeline scores with the compiled trees (core/scoring.py): the same bytes as scikit-learn.

One real project (2021-01 -> 2021-02, a small model so the compiles take seconds) is ingested,
featurized and trained once for the module; evaluate and the drift stage's gain estimate then run
in this process with scikit-learn (``$CC`` naming a missing program) and compiled, and their
outputs are compared byte for byte.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import core.scoring as scoring
from core.artifacts.model_card import ModelCard
from core.compiled_trees import COMPILED_META, find_compiler, load_compiled
from core.features import FEATURES, TARGET
from core.io import file_sha256
from core.paths import FEATURES_DIR, PLOTS_DIR, PREDICTIONS_DIR
from core.tree_codegen import CODEGEN_VERSION
from tests.conftest import ROOT, set_params

needs_compiler = pytest.mark.skipif(find_compiler() is None, reason="no C compiler (gcc/clang)")
MISSING_CC = "/nonexistent/autoops-cc"


@dataclass
class RealProject:
    folder: Path
    model: Any
    card: ModelCard


@pytest.fixture(scope="module")
def real_project(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealProject]:
    from core.evaluation import load_trained_model
    from core.params import load_params
    from core.training import train
    from stages.featurize import featurize
    from stages.ingest import ingest

    folder = tmp_path_factory.mktemp("scoring")
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    set_params(
        folder,
        **{
            "data.source": "dir",
            "data.dir": str(real_dir),
            "months.reference": "2021-01",
            "months.current": "2021-02",
            "train.hist_gradient_boosting.max_iter": 30,
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        params = load_params()
        ingest(params)
        featurize(params)
        train(params, use_mlflow=False)
        model, card = load_trained_model()
        yield RealProject(folder, model, card)


@pytest.fixture
def in_project(real_project: RealProject, monkeypatch: pytest.MonkeyPatch) -> RealProject:
    monkeypatch.chdir(real_project.folder)
    return real_project


def _outputs() -> dict[str, str]:
    files = [
        *PREDICTIONS_DIR.glob("*.parquet"),
        *PLOTS_DIR.glob("*.csv"),
        Path("reports/metrics/evaluate.json"),
    ]
    return {str(path): file_sha256(path) for path in sorted(files)}


def _scored_with(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "core.scoring" and "scoring" in r.getMessage()
    ]


@pytest.mark.realdata
@needs_compiler
def test_evaluate_writes_the_same_bytes_compiled_or_not(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from core.params import load_params
    from stages.evaluate import evaluate

    params = load_params()
    shutil.rmtree(scoring.COMPILED_CACHE, ignore_errors=True)
    with caplog.at_level(logging.INFO):
        monkeypatch.setenv("CC", MISSING_CC)
        sklearn_metrics = evaluate(params)
        by_sklearn = _outputs()
        monkeypatch.delenv("CC")
        monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
        compiled_metrics = evaluate(params)
    assert [m.split(" with ")[1].split(":")[0] for m in _scored_with(caplog)] == [
        "scikit-learn",
        "the compiled trees of model " + in_project.card.model_sha256[:12],
    ]
    assert (scoring.COMPILED_CACHE / in_project.card.model_sha256).is_dir()
    assert compiled_metrics == sklearn_metrics
    assert _outputs() == by_sklearn and len(by_sklearn) == 5


@pytest.mark.realdata
@needs_compiler
def test_the_drift_stage_gain_is_the_same_compiled_or_not(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from core.params import load_params
    from core.trigger import estimate_gain_from_file

    params = load_params()
    current = FEATURES_DIR / "current.parquet"
    monkeypatch.setenv("CC", MISSING_CC)
    by_sklearn = estimate_gain_from_file(in_project.model, current, params, "2021-02")
    monkeypatch.delenv("CC")
    monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
    with caplog.at_level(logging.INFO):
        compiled = estimate_gain_from_file(in_project.model, current, params, "2021-02")
    used = _scored_with(caplog)
    assert len(used) == 2 and all("with the compiled trees" in m for m in used), used
    assert compiled == by_sklearn


@pytest.mark.realdata
@needs_compiler
def test_compiled_scores_are_sklearns_bit_for_bit_on_real_trips(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row of a real month, both feature files (unseen zones, missing optional fields and all)."""
    from core.model import predict

    monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
    scorer = scoring.scorer(in_project.model, 1, "test")
    assert scorer.kind == "compiled"
    for name in ("holdout", "current"):
        x = pd.read_parquet(FEATURES_DIR / f"{name}.parquet", columns=list(FEATURES)).to_numpy(np.float64)
        assert np.array_equal(scorer.predict(x), predict(in_project.model, x))
    assert scorer.checked_rows > 0 and scorer.max_diff == 0.0


@pytest.mark.realdata
def test_without_a_compiler_sklearn_scores_and_one_line_says_why(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", MISSING_CC)
    monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
    with caplog.at_level(logging.INFO):
        scorer = scoring.scorer(in_project.model, 10**8, "evaluate", cache_dir=tmp_path)
    assert scorer.kind == "sklearn" and find_compiler() is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "with scikit-learn" in lines[0] and "no C compiler" in lines[0], lines
    assert not any(tmp_path.iterdir())


@pytest.mark.realdata
def test_a_small_month_is_not_worth_a_compile(
    in_project: RealProject, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        scorer = scoring.scorer(
            in_project.model, scoring.COMPILE_MIN_ROWS - 1, "evaluate", cache_dir=tmp_path
        )
    assert scorer.kind == "sklearn" and "do not pay for a compile" in caplog.text
    assert not any(tmp_path.iterdir())


@pytest.mark.realdata
@needs_compiler
def test_a_library_that_disagrees_stops_the_stage(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another model's library under this model's name: loud, with the largest difference."""
    from core.model import build_model
    from core.params import load_params

    monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
    compiled = scoring.scorer(in_project.model, 1, "test").compiled
    x = pd.read_parquet(FEATURES_DIR / "holdout.parquet").head(3000)
    other = (
        build_model(load_params().train)
        .set_params(max_iter=5)
        .fit(x[list(FEATURES)].to_numpy(np.float64), x[TARGET].to_numpy())
    )
    wrong = scoring.Scorer(other, compiled, "evaluate")
    with pytest.raises(
        scoring.ParityError, match=r"evaluate: the compiled trees .* differ from scikit-learn by \d"
    ):
        wrong.predict(x[list(FEATURES)].to_numpy(np.float64))


def test_the_pipeline_and_the_service_share_one_cache_and_key(real_project: RealProject) -> None:
    """A library the service built (python -m serve.compile) is the one evaluate finds, and back."""
    from serve.settings import Settings

    assert Settings.model_fields["compiled_cache"].default == scoring.COMPILED_CACHE
    assert scoring.model_sha256(real_project.model) == real_project.card.model_sha256


@pytest.mark.realdata
@needs_compiler
def test_a_library_from_the_older_code_generator_is_not_used(
    in_project: RealProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Codegen 1 added the base score last (~1e-13 off scikit-learn): such a library is rebuilt."""
    monkeypatch.setattr(scoring, "COMPILE_MIN_ROWS", 0)
    compiled = scoring.scorer(in_project.model, 1, "test").compiled
    assert compiled is not None and compiled.meta["codegen"] == CODEGEN_VERSION
    old = shutil.copytree(compiled.lib_dir, tmp_path / compiled.lib_dir.name)
    meta = json.loads((old / COMPILED_META).read_text())
    (old / COMPILED_META).write_text(json.dumps({k: v for k, v in meta.items() if k != "codegen"}))
    assert load_compiled(tmp_path, old.name) is None


@pytest.mark.realdata
def test_the_trees_share_c_files_but_each_keeps_its_own_function(
    real_project: RealProject, tmp_path: Path
) -> None:
    """predict_batch runs one tree at a time: merging tl2cgen's one-tree files (fewer gcc processes)
    must keep every tree a function of its own, defined once, in tl2cgen's order."""
    import tl2cgen
    import treelite

    from core.tree_codegen import COMPILER_PARAMS, batch_source, merge_units

    tl_model = treelite.sklearn.import_model(real_project.model)
    src = tmp_path / "src"
    params = {**COMPILER_PARAMS, "parallel_comp": tl_model.num_tree}
    tl2cgen.generate_c_code(tl_model, dirpath=str(src), params=params)
    merge_units(src, per_source=7)
    recipe = json.loads((src / "recipe.json").read_text())
    files = [s["name"] for s in recipe["sources"] if s["name"].startswith("trees")]
    assert len(files) == -(-tl_model.num_tree // 7) and not list(src.glob("tu*.c"))
    defined: list[str] = []
    for name in files:
        code = (src / f"{name}.c").read_text()
        assert code.count('#include "header.h"') == 1
        signature = r"^void (predict_unit\d+)\(union Entry\* data, double\* result\) \{"
        defined += re.findall(signature, code, re.M)
    assert defined == [f"predict_unit{k}" for k in range(tl_model.num_tree)]
    batch = batch_source((src / "main.c").read_text(), (src / "header.h").read_text())
    assert re.findall(r"predict_unit\d+", batch) == defined
