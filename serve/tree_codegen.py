"""The C the compiled library is built from: moved to core/tree_codegen.py (the pipeline builds
the same libraries, and a stage must not import the service); these are its public names."""

from core.tree_codegen import (
    BATCH_SOURCE,
    BLOCK_ROWS,
    CODEGEN_VERSION,
    COMPILER_OPTIONS,
    COMPILER_PARAMS,
    TREES_PER_UNIT,
    UNITS_PER_SOURCE,
    CodegenError,
    batch_source,
    export_library,
    merge_units,
)

__all__ = [
    "BATCH_SOURCE",
    "BLOCK_ROWS",
    "CODEGEN_VERSION",
    "COMPILER_OPTIONS",
    "COMPILER_PARAMS",
    "TREES_PER_UNIT",
    "UNITS_PER_SOURCE",
    "CodegenError",
    "batch_source",
    "export_library",
    "merge_units",
]
