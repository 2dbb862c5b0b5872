"""Scoring many rows with the model's trees compiled to C when that pays, else with scikit-learn.

Why: scikit-learn's predict is most of the evaluate stage's CPU on a big month (bench/README.md,
"Scale"), and the library the service builds from the same trees (core/compiled_trees.py)
predicts a big batch several times cheaper.

Which: a library already in the cache for this model is always used. The cache is the service's
(``.cache/serve/compiled``, keyed on the model file's sha256, as in its model card), so ``python -m
serve.compile``, the service and a big month's evaluate each fill it for the others; never a DVC
output. Otherwise the model is compiled when the rows to score pay for the compile (~18 CPU
seconds for the default 300 trees: :data:`COMPILE_MIN_ROWS`) and a C compiler is present (``$CC``,
gcc or clang). Otherwise scikit-learn scores, with one log line saying why.

Parity: every batch scored compiled also has a deterministic sample of its rows (evenly spaced,
:data:`PARITY_ROWS`) scored by scikit-learn; a difference above the service's tolerance stops the
stage with the largest difference. The compiled sum adds the same doubles in scikit-learn's order
(core/tree_codegen.py), so predictions are bitwise equal and every output's bytes are the same.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from core.compiled_trees import (
    PARITY_TOLERANCE,
    CompiledPredictor,
    compile_model,
    find_compiler,
    load_compiled,
)
from core.io import StageError
from core.model import predict

# The service's default AUTOOPS_COMPILED_CACHE (serve/settings.py; tests/test_scoring.py checks they agree).
COMPILED_CACHE = Path(".cache/serve/compiled")
# A compile of the default 300 trees costs ~18 CPU-s (-O1, 25 trees per gcc; core/tree_codegen.py)
# and the compiled trees save ~6 CPU-s per million rows scored against scikit-learn (~10 against ~4),
# so it pays from about three million rows; four leaves a margin for a slower compiler. Below that
# only a library someone already built is used: the default 60k-row month would otherwise spend
# 18 s compiling to save half a second.
COMPILE_MIN_ROWS = 4_000_000
# Rows of each batch also scored by scikit-learn: cheap (one call per batch) and spread over the batch.
PARITY_ROWS = 256

log = logging.getLogger(__name__)


class ParityError(StageError):
    """The compiled trees and scikit-learn disagree on the month: a wrong library, never used."""


# Models loaded from models/, with their card's sha256 (the file's): the service's cache key for them.
# A loaded model pickled again need not give the file's bytes, so it is remembered, not recomputed.
_CARD_SHA256: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def remember_sha256(model: Any, sha256: str) -> None:
    """Key ``model``'s library by its model card's sha256 (:func:`core.evaluation.load_trained_model`)."""
    _CARD_SHA256[model] = sha256


def model_sha256(model: Any) -> str:
    """The cache key of ``model``'s library: its card's sha256, else that of its pickle (a challenger)."""
    return _CARD_SHA256.get(model) or hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()


class Scorer:
    """``predict(features)`` in minutes, compiled or by scikit-learn; what :func:`core.model.predict`
    calls when handed a scorer in place of the estimator."""

    def __init__(self, model: Any, compiled: CompiledPredictor | None, label: str) -> None:
        self.model = model
        self.compiled = compiled
        self.label = label
        self.kind = "sklearn" if compiled is None else "compiled"
        self.checked_rows = 0
        self.max_diff = 0.0

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.compiled is None or not len(features):
            return predict(self.model, features)
        out = self.compiled.predict(features)
        sample = np.unique(np.linspace(0, len(features) - 1, PARITY_ROWS).astype(np.intp))
        diff = float(np.max(np.abs(out[sample] - predict(self.model, features[sample]))))
        self.checked_rows += len(sample)
        self.max_diff = max(self.max_diff, diff)
        if not diff <= PARITY_TOLERANCE:
            raise ParityError(
                f"{self.label}: the compiled trees ({self.compiled.lib_dir}) differ from scikit-learn by "
                f"{diff:.3g} min on a sample of the month's rows (tolerance {PARITY_TOLERANCE:g}); "
                "remove that folder to rebuild it, or set CC to a missing program to score with scikit-learn"
            )
        return out

    def log_parity(self) -> None:
        if self.compiled is not None:
            log.info(
                "%s: compiled trees matched scikit-learn on %s sampled rows (largest difference %.3g min)",
                self.label,
                f"{self.checked_rows:,}",
                self.max_diff,
            )


def _why_not_compile(model: Any, rows: int) -> str | None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    if not isinstance(model, HistGradientBoostingRegressor):
        return f"only HistGradientBoosting models are compiled, not {type(model).__name__}"
    if rows < COMPILE_MIN_ROWS:
        return f"no compiled library for this model, and {rows:,} rows do not pay for a compile"
    if find_compiler() is None:
        return "no compiled library for this model, and no C compiler ($CC, gcc or clang) to build one"
    return None


def scorer(model: Any, rows: int, label: str, *, cache_dir: Path = COMPILED_CACHE) -> Scorer:
    """How to score ``rows`` rows with ``model``: its compiled library when there is or should be one."""
    sha = model_sha256(model)
    compiled = load_compiled(cache_dir, sha)
    if compiled is None:
        reason = _why_not_compile(model, rows)
        if reason is None:
            compiled = compile_model(model, sha, cache_dir)
            reason = "compiling failed (the warning above says why)" if compiled is None else None
        if reason is not None:
            log.info("%s: scoring %s rows with scikit-learn: %s", label, f"{rows:,}", reason)
            return Scorer(model, None, label)
    log.info("%s: scoring %s rows with the compiled trees of model %s", label, f"{rows:,}", sha[:12])
    return Scorer(model, compiled, label)
