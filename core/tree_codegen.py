"""The C the compiled library is built from: tl2cgen's trees plus a batch entry point of our own.

tl2cgen generates one ``predict(row)`` that runs every tree on one row. On a 1000-trip batch that
walks all 300 trees' code (over a megabyte of if/else) once per row, so the instruction cache is
cold for every tree of every row. ``predict_batch`` turns the loops around: each tree (one function
per tree, ``predict_unitK``) runs over a block of rows before the next tree, so its few kilobytes of
code stay hot, and the block's rows stay in the L2 cache while the 300 trees pass over them (the
whole batch, 256k rows of 96 bytes in evaluate, did not: every tree re-read it from memory). Same
generated trees, same quantized thresholds, same sum; about half the time per batch
(bench/README.md, "Serving", the in-process timings).

Compiling costs CPU wherever the model is first needed (a big month's evaluate, the service, the
image build): -O1 and 25 tree functions per C file (12 gcc processes instead of 300) more than
halve it for the default 300 trees, with prediction as fast as with -Os; evaluate's CPU with the
compile in it is ``python -m bench.scale``'s (bench/README.md, "Scale").

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

# tl2cgen's default -O3 makes the per-row path (every tree's code once per row) overflow the
# instruction cache. -O1 code is as small as -Os's and predicts as fast (the trees are compares and
# additions, which no higher level improves), and gcc takes half the time over it (-O0: a quarter,
# but predicting is twice as slow).
COMPILER_OPTIONS = ("-O1",)
# Quantized thresholds: integer compares after one binary search per feature and row.
COMPILER_PARAMS: dict[str, Any] = {"quantize": 1}
# One function per tree (tl2cgen's "unit"), so predict_batch can run one tree at a time; gcc also
# compiles many small functions faster than a few big ones (its time grows faster than linearly with
# function size).
TREES_PER_UNIT = 1
# Tree functions per C file, i.e. per gcc process: one process per tree spent ~20% of the compile's
# CPU starting gcc and re-reading the header (300 processes for the default model).
UNITS_PER_SOURCE = 25
BATCH_SOURCE = "batch"
# Rows predict_batch runs every tree over before the next rows: their entries (8 bytes a feature)
# stay in the CPU's L2 cache while all the trees pass over them.
BLOCK_ROWS = 1024
# Recorded in each library's compiled.json; a library from another generation is rebuilt. 2: the
# batch sum starts from the base score, as scikit-learn's does (1 added it last: ~1e-13 apart).
# 3: -O1, 25 trees per C file, predict_batch in blocks of BLOCK_ROWS rows (the same doubles).
CODEGEN_VERSION = 3


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
  for (int start = 0; start < n; start += {BLOCK_ROWS}) {{
    const int end = n - start < {BLOCK_ROWS} ? n : start + {BLOCK_ROWS};
    for (unsigned u = 0; u < sizeof(units) / sizeof(units[0]); ++u) {{
      const unit_fn tree = units[u];
      for (int r = start; r < end; ++r) {{
        tree(data + (long)r * {nf}, out + r);
      }}
    }}
  }}
  for (int r = 0; r < n; ++r) {{
    postprocess(out + r);
  }}
}}
"""


def merge_units(src: Path, per_source: int) -> None:
    """Put ``per_source`` of tl2cgen's one-tree files ``tuK.c`` into each C file, in place (sources
    and recipe.json). Each tree stays its own function; only the number of gcc processes drops.

    tl2cgen's header.h has no include guard, so each merged file includes it once.
    """
    recipe = json.loads((src / "recipe.json").read_text())
    # recipe.json lists tu0, tu1, tu10, ...: in tree order instead, so a file holds neighbours.
    units = sorted(
        (s for s in recipe["sources"] if re.fullmatch(r"tu\d+", s["name"])), key=lambda s: int(s["name"][2:])
    )
    others = [s for s in recipe["sources"] if not re.fullmatch(r"tu\d+", s["name"])]
    merged = []
    for start in range(0, len(units), per_source):
        group = units[start : start + per_source]
        name = f"trees{start // per_source}"
        bodies = [(src / f"{u['name']}.c").read_text().replace('#include "header.h"', "") for u in group]
        code = '#include "header.h"\n' + "\n".join(bodies)
        (src / f"{name}.c").write_text(code)
        for unit in group:
            (src / f"{unit['name']}.c").unlink()
        merged.append({"name": name, "length": code.count("\n")})
    recipe["sources"] = others + merged
    (src / "recipe.json").write_text(json.dumps(recipe))


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
    merge_units(src, UNITS_PER_SOURCE)
    code = batch_source((src / "main.c").read_text(), (src / "header.h").read_text())
    (src / f"{BATCH_SOURCE}.c").write_text(code)
    # tl2cgen builds what recipe.json lists: add the batch entry point to it.
    recipe = json.loads((src / "recipe.json").read_text())
    recipe["sources"].append({"name": BATCH_SOURCE, "length": code.count("\n")})
    (src / "recipe.json").write_text(json.dumps(recipe))
    built = tl2cgen.create_shared(compiler, str(src), nthread=nthread, options=list(COMPILER_OPTIONS))
    shutil.move(str(built), libpath)
    shutil.rmtree(src, ignore_errors=True)
