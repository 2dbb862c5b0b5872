"""Scale benchmark: the pipeline's stages on synthetic months of 60k to 20M rows, time and peak memory.

Each size runs in a scratch folder (params.yaml with ``synthetic.rows_per_month`` set, the rest as
committed), each stage as its own process exactly as DVC runs it (``python -m stages.<stage>``),
one after the other. Wall time is measured around the process; peak RSS is the process's own
``ru_maxrss`` from ``wait4`` (the kernel's high-water mark, sampled by nothing). MLflow
registration is off (``AUTOOPS_MLFLOW_REGISTER=0``): its cost does not depend on the month.

    python -m bench.scale --rows 60000 1000000 3000000   # run these sizes, merge into the results
    python -m bench.scale --rows 20000000                 # the big month on its own (~20 min)
    python -m bench.scale --render                        # only rewrite bench/README.md's table

Results: bench/results/scale.json (one entry per size, re-running a size replaces it); the block
between the ``scale`` markers in bench/README.md is rendered from it and from
bench/results/sample_size.json (``python -m bench.sample_size``), and so is docs/scale.md's short
version: never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.readme_block import fill_block
from core.artifacts.model_card import ModelCard
from core.compiled_trees import COMPILED_LIB, COMPILED_META
from core.paths import MODEL_CARD
from core.scoring import COMPILE_MIN_ROWS, COMPILED_CACHE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
SAMPLE_SIZE = ROOT / "bench" / "results" / "sample_size.json"
README = ROOT / "bench" / "README.md"
DOCS = ROOT / "docs" / "scale.md"
STAGES = ["ingest", "featurize", "train", "evaluate", "drift"]
# Stages the measured ones need (drift reads data_checks.json) that the results do not cover yet:
# the sizes measured before the stage existed lack it, so it is timed apart and kept out of the
# totals and the slope until every size is re-measured with it in STAGES.
PREREQUISITES = {"data_checks": "ingest"}
BEGIN, END = "<!-- scale:begin (python -m bench.scale) -->", "<!-- scale:end -->"
# The target of issue 11: a 20M-row month through every stage under this peak RSS.
TARGET_PEAK_MB = 2048


def run_stage(stage: str, cwd: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AUTOOPS_MLFLOW_REGISTER": "0",
        # One OpenMP thread per stage: training already uses one, and prediction with two threads on
        # two shared cores collapses whenever another process runs (barriers wait on descheduled threads).
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
    }
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed with exit code {proc.returncode} in {cwd}")
    # ru_maxrss is in KiB on Linux. CPU seconds barely move with the machine's load, wall time does.
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def run_size(rows: int, keep: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"autoops-scale-{rows}-"))
    try:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["synthetic"]["rows_per_month"] = rows
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result: dict[str, Any] = {"rows_per_month": rows, "stages": {}}
        # The machine is shared: the load beside the run says how far the times are from an idle one.
        loads = [os.getloadavg()[0]]
        for stage in STAGES:
            result["stages"][stage] = run_stage(stage, work)
            loads.append(os.getloadavg()[0])
            print(rows, stage, result["stages"][stage], flush=True)
            for prerequisite, after in PREREQUISITES.items():
                if after == stage:
                    result.setdefault("prerequisites", {})[prerequisite] = run_stage(prerequisite, work)
        result["training_rows"] = ModelCard.read(work / MODEL_CARD).training_rows
        result["raw_rows"] = sum(_parquet_rows(p) for p in sorted((work / "data" / "raw").glob("*.parquet")))
        result["current_rows"] = _parquet_rows(work / "data" / "features" / "current.parquet")
        result["load_average"] = round(float(np.mean(loads)), 1)
        # Whether evaluate scored with the compiled trees (core/scoring.py builds a library in the
        # scratch folder's cache for a big enough month; its compile is in evaluate's time).
        result["compiled"] = any((work / COMPILED_CACHE).glob(f"*/{COMPILED_LIB}"))
        # The compile's own wall seconds (compiled.json), part of evaluate's time when it compiled.
        built = [json.loads(m.read_text()) for m in (work / COMPILED_CACHE).glob(f"*/{COMPILED_META}")]
        if built:
            result["compile_seconds"] = built[0]["compile_seconds"]
        result["total_seconds"] = round(sum(s["seconds"] for s in result["stages"].values()), 1)
        result["peak_rss_mb"] = max(s["peak_rss_mb"] for s in result["stages"].values())
        return result
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"machine": {}, "sizes": {}}


def slopes(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per million rows of the month, per stage and in all: a least-squares line through
    the sizes of 1M rows and more (60k is dominated by start-up). CPU seconds when every size has
    them (they do not depend on what else runs), else wall seconds."""
    big = [s for s in sizes if s["rows_per_month"] >= 1_000_000]
    if len(big) < 2:
        return {}
    key = "cpu_seconds" if all("cpu_seconds" in st for s in big for st in s["stages"].values()) else "seconds"
    x = np.array([s["rows_per_month"] / 1e6 for s in big])
    out: dict[str, Any] = {"kind": "CPU" if key == "cpu_seconds" else "wall", "sizes": len(big)}
    for stage in STAGES:
        y = np.array([s["stages"][stage][key] for s in big])
        out[stage] = round(float(np.polyfit(x, y, 1)[0]), 1)
    out["total"] = round(sum(out[stage] for stage in STAGES), 1)
    return out


def _millions(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def render_block() -> str:
    results = load_results()
    sizes = sorted(results["sizes"].values(), key=lambda s: s["rows_per_month"])
    lines = [BEGIN, ""]
    if sizes:
        machine = results.get("machine", {})
        lines += [
            f"Measured on {machine.get('cpus', '?')} shared cores, {machine.get('python', '?')}; each stage "
            "run as its own process, one after the other. Cells: wall seconds / peak RSS (MB) of the "
            "stage's process. *load*: the machine's 1-minute load average during the run (other jobs "
            "shared the cores; on an idle machine the times are several times shorter, the memory is not).",
            "",
            "| month (rows) | " + " | ".join(STAGES) + " | total (s) | peak RSS (MB) | trained on | load |",
            "|---|" + "---:|" * (len(STAGES) + 4),
        ]
        for s in sizes:
            cells = [
                f"{s['stages'][st]['seconds']:g} / {s['stages'][st]['peak_rss_mb']:.0f}" for st in STAGES
            ]
            lines.append(
                f"| {_millions(s['rows_per_month'])} | "
                + " | ".join(cells)
                + f" | {s['total_seconds']:g} | {s['peak_rss_mb']:.0f} | {s['training_rows']:,} rows"
                + f" | {s.get('load_average', 'not recorded')} |"
            )
        slope = slopes(sizes)
        if slope:
            per_stage = ", ".join(f"{st} {slope[st]:g}" for st in STAGES)
            lines += [
                "",
                f"**Slope** ({slope['kind']} seconds, least squares over the {slope['sizes']} months of 1M "
                f"rows and more): **{slope['total']:g} s per million rows** of the month in all "
                f"({per_stage}). Ingest generates two months (the training month and the current one), "
                "so its slope covers two million rows per million. Train fits at most `train.max_rows` "
                "rows whatever the month: "
                + (
                    "its slope is reading the month to draw that sample."
                    if slope["kind"] == "CPU"
                    else "its slope is the machine's load changing between runs, which wall seconds "
                    "also carry into every other stage."
                ),
            ]
        if line := _scoring_line(sizes):
            lines += ["", line]
        biggest = sizes[-1]
        verdict = "under" if biggest["peak_rss_mb"] < TARGET_PEAK_MB else "OVER"
        lines += [
            "",
            f"Largest month measured: {_millions(biggest['rows_per_month'])} rows, peak RSS "
            f"{biggest['peak_rss_mb']:.0f} MB ({verdict} the {TARGET_PEAK_MB} MB target), "
            f"{biggest['total_seconds'] / 60:.1f} min in all.",
        ]
        if line := _prerequisites_line(sizes):
            lines += ["", line]
    if SAMPLE_SIZE.exists():
        curve = json.loads(SAMPLE_SIZE.read_text())
        lines += [
            "",
            "### Training sample size (`train.max_rows`)",
            "",
            "`python -m bench.sample_size`: the default model fitted on deterministic samples of "
            f"{', '.join(curve['pool'])} (real, {curve['pool_rows']:,} trips), "
            f"tested on real {curve['test']}.",
            "",
            "| training rows | RMSE | MAE | R² | fit (s, one thread) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in curve["results"]:
            lines.append(
                f"| {r['rows']:,} | {r['rmse']:.3f} | {r['mae']:.3f} | {r['r2']:.3f} | {r['fit_seconds']:g} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def _scoring_line(sizes: list[dict[str, Any]]) -> str | None:
    """Which sizes evaluate scored with the compiled trees, and its CPU seconds for each."""
    if not any("compiled" in s for s in sizes):
        return None

    def cell(s: dict[str, Any]) -> str:
        how = {True: "compiled", False: "scikit-learn"}.get(s.get("compiled"), "not recorded")
        if "compile_seconds" in s:
            how += f", of which the compile {s['compile_seconds']:g} s wall"
        return f"{_millions(s['rows_per_month'])} {s['stages']['evaluate']['cpu_seconds']:g} ({how})"

    return (
        "**Evaluate's scoring**: the compiled trees when the month has a library already or at least "
        f"{COMPILE_MIN_ROWS:,} rows to score (core/scoring.py; a fresh scratch folder has no library, "
        "so the compile is in evaluate's time), scikit-learn below that; the slope above mixes both. "
        f"Evaluate's CPU seconds: {', '.join(cell(s) for s in sizes)}."
    )


def _prerequisites_line(sizes: list[dict[str, Any]]) -> str | None:
    """The stages timed apart (PREREQUISITES): not in the totals, but their memory counts too."""
    cells = [
        f"{name} at {_millions(s['rows_per_month'])}: {st['cpu_seconds']:g} CPU-s, peak RSS "
        f"{st['peak_rss_mb']:.0f} MB ({'under' if st['peak_rss_mb'] < TARGET_PEAK_MB else 'OVER'} the "
        f"{TARGET_PEAK_MB} MB target)"
        for s in sizes
        for name, st in s.get("prerequisites", {}).items()
    ]
    if not cells:
        return None
    return (
        "Timed apart, not in the totals or the slope (not yet measured at every size): "
        + "; ".join(cells)
        + "."
    )


def render_docs_block() -> str:
    """The short version for docs/scale.md: size, time, peak memory, and the slope."""
    results = load_results()
    sizes = sorted(results["sizes"].values(), key=lambda s: s["rows_per_month"])
    lines = [
        BEGIN,
        "",
        "| month (rows) | all stages (min) | peak RSS (MB) | load average |",
        "|---|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(
            f"| {_millions(s['rows_per_month'])} | {s['total_seconds'] / 60:.1f} | {s['peak_rss_mb']:.0f} "
            f"| {s.get('load_average', 'not recorded')} |"
        )
    slope = slopes(sizes)
    if slope:
        lines += [
            "",
            f"Slope ({slope['kind']} seconds over {slope['sizes']} sizes of 1M rows and more, on this "
            f"shared 2-core machine): **{slope['total']:g} s per million rows** of the month (evaluate "
            f"{slope['evaluate']:g}, drift {slope['drift']:g}, ingest {slope['ingest']:g}, featurize "
            f"{slope['featurize']:g}, train {slope['train']:g}; train fits a bounded sample, so its share "
            + (
                "is reading the month to draw it)."
                if slope["kind"] == "CPU"
                else "is the load changing between runs)."
            ),
        ]
    if line := _scoring_line(sizes):
        lines += ["", line]
    if sizes:
        peak = sizes[-1]["peak_rss_mb"]
        lines += [
            "",
            f"Peak RSS of the largest month ({_millions(sizes[-1]['rows_per_month'])} rows): {peak:.0f} MB, "
            f"{'under' if peak < TARGET_PEAK_MB else 'over'} the {TARGET_PEAK_MB} MB target.",
        ]
    if line := _prerequisites_line(sizes):
        lines += ["", line]
    lines += ["", END]
    return "\n".join(lines)


def render(readme: Path = README, block: str | None = None) -> str:
    return fill_block(readme, BEGIN, END, render_block() if block is None else block)


def render_docs() -> str:
    return render(DOCS, render_docs_block())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[], help="month sizes to run")
    parser.add_argument("--render", action="store_true", help="only render bench/README.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    if not args.render:
        results = load_results()
        results["machine"] = {
            "cpus": len(os.sched_getaffinity(0)),
            "python": f"Python {platform.python_version()}",
        }
        for rows in args.rows or [60_000, 1_000_000, 3_000_000, 20_000_000]:
            size = run_size(rows, keep=args.keep)
            # Re-read before writing: another invocation may have added a size meanwhile.
            results = {**load_results(), "machine": results["machine"]}
            results["sizes"][str(rows)] = size
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    README.write_text(render())
    DOCS.write_text(render_docs())


if __name__ == "__main__":
    main()
