"""The C the compiled library is built from: tl2cgen's trees plus a batch entry point of our own.

tl2cgen generates one ``predict(row)`` that runs every tree on one row. On a 1000-trip batch that
walks all 300 trees' code (over a megabyte of if/else) once per row, so the instruction cache is
cold for every tree of every row. ``predict_batch`` turns the loops around: each tree (one per
translation unit, ``predict_unitK``) runs over every row of the batch before the next tree, so its
few kilobytes of code stay hot. Same generated trees, same quantized thresholds, same sum; about
half the time per batch (bench/README.md, "Serving", the in-process timings).

The library keeps tl2cgen's own entry points too (``predict``, ``get_num_feature``, ...); the
service calls ``predict_batch`` for every request (one trip is a batch of one).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

# Size over speed: tl2cgen's default -O3 makes the per-row path (every tree's code once per row)
# overflow the instruction cache; -Os predicts faster there and is on par for the batch path.
COMPILER_OPTIONS = ("-Os",)
# Quantized thresholds: integer compares after one binary search per feature and row.
COMPILER_PARAMS: dict[str, Any] = {"quantize": 1}
# One tree per translation unit, so predict_batch can run one tree at a time; gcc also compiles many
# small units faster than a few big ones (its time grows faster than linearly with function size).
TREES_PER_UNIT = 1
BATCH_SOURCE = "batch"
# Recorded in each library's compiled.json; a library from another generation is rebuilt. 2: the
# batch sum starts from the base score, as scikit-learn's does (1 added it last: ~1e-13 apart).
CODEGEN_VERSION = 2


class CodegenError(RuntimeError):
    """tl2cgen's generated code is not the shape predict_batch is written for."""


def batch_source(main_c: str, header_h: str) -> str:
    """The C of ``predict_batch(union Entry* rows, int n, double* out)`` for tl2cgen's sources.

    Read off main.c: the tree units in tl2cgen's order, the base score and the feature count;
    ``postprocess`` and ``quantize`` are tl2cgen's own. Rows are ``union Entry`` arrays as for
    ``predict`` (``missing == -1`` marks a missing value) and are quantized in place.

    The sum starts from the base score and adds the trees in order, as scikit-learn's does
    (tl2cgen's ``predict`` adds the base score last): the same additions in the same order give the
    same double, so a month scored compiled is byte for byte the month scored by scikit-learn.
    """
    single = (r"#define N_TARGET 1\b", r"#define MAX_N_CLASS 1\b")
    if not all(re.search(pattern, header_h) for pattern in single):
        raise CodegenError("predict_batch handles single-output models only")
    units = [int(u) for u in re.findall(r"predict_unit(\d+)\(data, result\);", main_c)]
    base = re.search(r"// Apply base_scores\s*result\[0\] \+= ([^;]+);", main_c)
    n_features = re.search(r"int32_t get_num_feature\(void\) \{\s*return (\d+);", main_c)
    if not units or base is None or n_features is None:
        raise CodegenError("main.c: tree units, base score or feature count not found")
    nf = int(n_features.group(1))
    table = ",\n  ".join(f"predict_unit{u}" for u in units)
    return f"""#include "header.h"

extern const unsigned char is_categorical[];
typedef void (*unit_fn)(union Entry*, double*);
static const unit_fn units[] = {{
  {table}
}};

void predict_batch(union Entry* data, int n, double* out) {{
  for (int r = 0; r < n; ++r) {{
    union Entry* row = data + (long)r * {nf};
    for (int i = 0; i < {nf}; ++i) {{
      if (row[i].missing != -1 && !is_categorical[i]) {{
        row[i].qvalue = quantize(row[i].fvalue, i);
      }}
    }}
    out[r] = {base.group(1)};
  }}
  for (unsigned u = 0; u < sizeof(units) / sizeof(units[0]); ++u) {{
    const unit_fn tree = units[u];
    for (int r = 0; r < n; ++r) {{
      tree(data + (long)r * {nf}, out + r);
    }}
  }}
  for (int r = 0; r < n; ++r) {{
    postprocess(out + r);
  }}
}}
"""


def export_library(tl_model: Any, libpath: Path, compiler: str, nthread: int) -> None:
    """Generate the trees' C with tl2cgen, add predict_batch, build ``libpath``.

    The sources go to a folder beside ``libpath`` (the caller's temporary folder), so an
    interrupted build leaves nothing outside it.
    """
    import tl2cgen

    src = libpath.parent / "src"
    tl2cgen.generate_c_code(
        tl_model,
        dirpath=str(src),
        params={**COMPILER_PARAMS, "parallel_comp": max(1, math.ceil(tl_model.num_tree / TREES_PER_UNIT))},
    )
    code = batch_source((src / "main.c").read_text(), (src / "header.h").read_text())
    (src / f"{BATCH_SOURCE}.c").write_text(code)
    # tl2cgen builds what recipe.json lists: add the batch entry point to it.
    recipe = json.loads((src / "recipe.json").read_text())
    recipe["sources"].append({"name": BATCH_SOURCE, "length": code.count("\n")})
    (src / "recipe.json").write_text(json.dumps(recipe))
    built = tl2cgen.create_shared(compiler, str(src), nthread=nthread, options=list(COMPILER_OPTIONS))
    shutil.move(str(built), libpath)
    shutil.rmtree(src, ignore_errors=True)
