"""The service's predictors: the trees compiled to native code, or sklearn.

They live in core/compiled_trees.py since the pipeline scores big months with the same compiled
libraries, and a stage must not import the service; these are the names the service imports.
"""

from core.compiled_trees import (
    COMPILED_LIB,
    COMPILED_META,
    DIRECT_ROWS,
    PARITY_TOLERANCE,
    PLATFORM,
    SORT_ROWS,
    CompiledPredictor,
    Predictor,
    SklearnPredictor,
    compile_model,
    find_compiler,
    install_compiled,
    known_categories,
    load_compiled,
    lock_path,
    max_abs_diff,
    probe_features,
    remove_abandoned_lock,
)

__all__ = [
    "COMPILED_LIB",
    "COMPILED_META",
    "DIRECT_ROWS",
    "PARITY_TOLERANCE",
    "PLATFORM",
    "SORT_ROWS",
    "CompiledPredictor",
    "Predictor",
    "SklearnPredictor",
    "compile_model",
    "find_compiler",
    "install_compiled",
    "known_categories",
    "load_compiled",
    "lock_path",
    "max_abs_diff",
    "probe_features",
    "remove_abandoned_lock",
]
