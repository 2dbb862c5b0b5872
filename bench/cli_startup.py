"""What an ``autoops`` start costs, and what each import the commands defer would add to it.

``python -m autoops --help`` is timed end to end (a fresh interpreter each run, the median CPU
time of ``--runs``); each deferred module is timed as ``import autoops.cli, <module>`` minus ``import
autoops.cli``: what every command, ``--help`` included, would pay if the module were imported at the
top. The comments beside those function-body imports quote these figures.

    python -m bench.cli_startup [--runs 9] [--root CHECKOUT]

``--root`` times another checkout (say the commit before a change) with this interpreter. Writes
bench/results/cli_startup.json (with ``--root``, prints only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from core.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cli_startup.json"
# The modules autoops/commands/ imports inside command bodies, and what for.
DEFERRED = {
    "autoops.release": "register, fetch-model, release-artifact, promote",
    "autoops.evidence_report": "report, diff",
    "core.model": "(what autoops.summary avoids by taking the file names from serve.model_store)",
}


def seconds(command: list[str], root: Path, runs: int) -> float:
    """Median CPU time (user + system) of ``command`` run in ``root`` with ``root`` first on the
    import path: on a shared machine it varies far less than wall time, and a start-up is all CPU."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to time")
    args = parser.parse_args()
    root = args.root.resolve()
    python = sys.executable
    base = seconds([python, "-c", "import autoops.cli"], root, args.runs)
    result = {
        "runs": args.runs,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "help_seconds": round(seconds([python, "-m", "autoops", "--help"], root, args.runs), 2)
        if (root / "autoops" / "__main__.py").exists()
        else round(seconds([python, "-m", "autoops.cli", "--help"], root, args.runs), 2),
        "import_cli_seconds": round(base, 2),
        "deferred_extra_seconds": {
            module: round(seconds([python, "-c", f"import autoops.cli, {module}"], root, args.runs) - base, 2)
            for module in DEFERRED
        },
    }
    print(json.dumps(result, indent=2))
    if root == ROOT:
        write_json(result, RESULTS)


if __name__ == "__main__":
    main()
