"""The retrain PR report a reviewer gets, from a real run of the loop: docs/example_pr_report.md.

    python -m bench.example_report               # real months (--real-dir): 2021-02 -> 2022-01
    python -m bench.example_report --synthetic   # no real months: synthetic 2024-04 -> 2024-05
    python -m bench.example_report --reference 2023-01 --month 2023-02 --force --out /tmp/x

A clean copy of the project (what a clone holds) runs `dvc repro` on the reference month, commits,
and runs `autoops propose --month <month> --no-push` exactly as drift-watch would. The report
propose wrote, with the evidence it was rendered from (drift.json, comparison.json) and its plots,
is copied to ``--out``; tests/test_bench_docs.py renders the report's sections again from the
copied JSON and finds them in the committed markdown, so no figure in it is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from core.paths import LOOP_DIR, LOOP_REPORT

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "data" / "tlc"
DOC = Path("docs/example_pr_report.md")
EVIDENCE = Path("docs/example_pr_report")
EVIDENCE_FILES = ("drift.json", "comparison.json")
# The real breach the e2e test also proposes (a regime change between 2021 and 2022), and the
# synthetic shift month of params.yaml.
REAL = ("2021-02", "2022-01")
SYNTHETIC = ("2024-04", "2024-05")


def _run(cwd: Path, *args: str) -> None:
    from tests.conftest import run_in

    result = run_in(cwd, *args)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def header(command: str, source: str, reference: str, month: str) -> str:
    return (
        "<!-- Generated: do not edit by hand. -->\n"
        f"# Example: the retrain pull request for {month}\n\n"
        f"What `autoops propose` writes as the PR description (and CML posts) when the model serving on "
        f"`main` learned **{reference}** and **{month}** arrives, from a real run of the loop on "
        f"**{source}** months. Regenerate with `{command}` (it runs `dvc repro` and `autoops propose` "
        f"in a throw-away copy of the project). The evidence it was rendered from is in "
        f"[`{EVIDENCE.as_posix()}/`]({EVIDENCE.name}/).\n\n---\n\n"
    )


def generate(reference: str, month: str, real_dir: Path | None, force: bool, out: Path, command: str) -> Path:
    """Run the loop on ``reference`` -> ``month`` (real months from ``real_dir``, else synthetic)."""
    from tests.conftest import copy_project, set_params

    if real_dir is not None and not (real_dir / f"green_tripdata_{month}.parquet").exists():
        sys.exit(f"real months not found in {real_dir}: pass --real-dir, or --synthetic")
    with tempfile.TemporaryDirectory(prefix="autoops-example-") as tmp:
        work = copy_project(Path(tmp) / "work")
        source = (
            {"data.source": "dir", "data.dir": str(real_dir)} if real_dir else {"data.source": "synthetic"}
        )
        set_params(work, **source, **{"months.reference": reference, "months.current": reference})
        _run(work, "dvc", "repro")
        git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
        _run(work, *git, "add", "-A")
        _run(work, *git, "commit", "-qm", f"model on {reference}")
        _run(work, "autoops", "propose", "--month", month, "--no-push", *(["--force"] if force else []))
        loop = work / LOOP_DIR
        if not (work / LOOP_REPORT).exists():
            sys.exit(f"propose wrote no report for {month}: was it proposed? (--force proposes anyway)")
        folder = out / EVIDENCE.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in EVIDENCE_FILES:
            shutil.copy2(loop / name, folder / name)
        body = (work / LOOP_REPORT).read_text()
        for png in sorted(loop.glob("*.png")):
            shutil.copy2(png, folder / png.name)
            # The report links its plots beside it (reports/loop/); here they sit with the evidence.
            body = body.replace(f"]({png.name})", f"]({EVIDENCE.name}/{png.name})")
    kind = "real TLC Green Taxi" if real_dir else "synthetic"
    doc = out / DOC.name
    doc.write_text(header(command, kind, reference, month) + body)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synthetic", action="store_true", help="synthetic months instead of real ones")
    parser.add_argument("--reference", help="the month the serving model learned")
    parser.add_argument("--month", help="the new month to propose")
    parser.add_argument("--force", action="store_true", help="propose even when the trigger says no")
    parser.add_argument(
        "--real-dir", type=Path, default=REAL_DIR, help="folder of the real TLC monthly files"
    )
    parser.add_argument("--out", type=Path, default=DOC.parent, help="folder for the markdown and evidence")
    args = parser.parse_args()
    reference, month = SYNTHETIC if args.synthetic else REAL
    reference, month = args.reference or reference, args.month or month
    # The command as a reader reruns it: this machine's folders left out.
    shown = [*(["--synthetic"] if args.synthetic else []), *(["--force"] if args.force else [])]
    if args.reference or args.month:
        shown += ["--reference", reference, "--month", month]
    command = " ".join(["python -m bench.example_report", *shown])
    real_dir = None if args.synthetic else args.real_dir.resolve()
    doc = generate(reference, month, real_dir, args.force, args.out, command)
    comparison = json.loads((args.out / EVIDENCE.name / "comparison.json").read_text())
    print(f"{doc}: {comparison['verdict']}")


if __name__ == "__main__":
    main()
