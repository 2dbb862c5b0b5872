"""The workflows' behaviour: their jobs run step by step (tests/workflow_runner.py) against a bare
git origin and a real DVC remote; GitHub's API (tests/github_api.py) is the only stand-in.

The release runs here on a project whose model is small and made by the test, so no step trains
anything; drift-watch runs on the small synthetic project: a breach becomes one PR, and a month
whose data is broken ends the run with its data problem and an issue until a person accepts it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from autoops import release
from tests.conftest import ROOT, copy_project, run_in, set_params
from tests.test_loop import _fit, _models_dir
from tests.workflow_runner import JobRun, Runner, evaluate

WORKFLOWS = ROOT / ".github" / "workflows"
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_expressions_follow_actions_semantics() -> None:
    context = {"steps": {"check": {"outputs": {"breach": "true"}, "outcome": "success"}}, "secrets": {}}
    assert evaluate("steps.check.outputs.breach == 'true'", context) is True
    assert evaluate("secrets.AUTOOPS_PR_TOKEN || 'fallback'", context) == "fallback"
    assert evaluate("always() && steps.check.outcome == 'success'", context, "failure") is True
    assert evaluate("!(steps.nothing.outputs.x == 'y')", context) is True


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """main after a merge: a model someone trained, its card and lock committed, pushed to origin."""
    root = tmp_path_factory.mktemp("release")
    project = copy_project(root / "project")
    models = _models_dir(project / "models", _fit(1, 3.0), "2024-05")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for out in lock["stages"]["train"]["outs"]:
        out["md5"] = release.file_md5(models / Path(out["path"]).name)
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    remote = root / "dvc-remote"
    remote.mkdir()
    assert run_in(project, "dvc", "remote", "add", "-d", "storage", str(remote)).returncode == 0
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "Merge retrain/2024-05")
    origin = root / "origin.git"
    _git(root, "clone", "-q", "--bare", str(project), str(origin))
    return {"root": root, "project": project, "origin": origin, "remote": remote, "models": models}


def _in_remote(remote: Path, model: Path) -> Path:
    """Put ``model`` where `dvc push` puts a file in a local remote (files/md5/<2>/<30>)."""
    md5 = release.file_md5(model)
    target = remote / "files" / "md5" / md5[:2] / md5[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model, target)
    return target


def _release(merged: dict[str, Path], name: str, **options: object) -> dict:
    runner = Runner(
        workflow=WORKFLOWS / "release.yml",
        origin=merged["origin"],
        workspace=merged["root"] / name,
        event_name="push",
        **options,  # type: ignore[arg-type]
    )
    return runner.run()


def _built(job) -> bool:  # type: ignore[no-untyped-def]
    return any(s.uses == "docker/build-push-action" and s.outcome == "success" for s in job.steps)


def test_release_ships_exactly_the_pinned_model(merged: dict[str, Path]) -> None:
    stored = _in_remote(merged["remote"], merged["models"] / "model.pkl")
    try:
        jobs = _release(merged, "ships")
    finally:
        stored.unlink()
    image = jobs["image"]
    assert image.result == "success", image.log()
    assert _built(image)
    build = next(s for s in image.steps if s.uses == "docker/build-push-action")
    card = json.loads((merged["models"] / "model_card.json").read_text())
    meta = next(s for s in image.steps if s.uses == "docker/metadata-action")
    assert "type=raw,value=model-2024-05" in meta.inputs["tags"]
    assert f"io.auto-ops.model.sha256={card['model_sha256']}" in meta.inputs["labels"]
    assert build.inputs["context"] == "."
    artifact = json.loads((merged["root"] / "ships/image/.autoops/release/release.json").read_text())
    assert artifact["model_sha256"] == card["model_sha256"]
    assert jobs["promote"].result == "success", jobs["promote"].log()


def test_release_stops_before_the_image_when_the_pinned_model_is_nowhere(merged: dict[str, Path]) -> None:
    """Defect 1: a lock pinning a model nobody has must never become an image (no retrain on the runner)."""
    jobs = _release(merged, "nowhere")
    image = jobs["image"]
    assert image.result == "failure"
    assert not _built(image), "an image was built from a model nobody approved"
    failed = next(s for s in image.steps if s.outcome == "failure")
    assert "the DVC remote has no models/model.pkl" in failed.stderr, image.log()
    assert failed.stderr.strip().count("\n") == 0, "one line, not a traceback"
    assert jobs["promote"].result == "skipped"


def test_release_waits_for_the_tests_of_the_merged_commit(merged: dict[str, Path]) -> None:
    """Defect 2: the merged commit's tests gate the image, whoever opened the PR."""
    called: list[str] = []

    def ci(path: str) -> str:
        called.append(path)
        return "failure"

    stored = _in_remote(merged["remote"], merged["models"] / "model.pkl")
    try:
        jobs = _release(merged, "untested", called=ci)
    finally:
        stored.unlink()
    assert called == ["./.github/workflows/ci.yml"]
    assert jobs["image"].result == "skipped" and jobs["promote"].result == "skipped"


def test_pr_report_comments_the_diff_without_uploading_anything(merged: dict[str, Path]) -> None:
    from tests.github_api import fake_github

    root = merged["root"]
    origin = root / "pr-origin.git"
    _git(root, "clone", "-q", "--bare", str(merged["origin"]), str(origin))
    work = root / "pr-work"
    _git(root, "clone", "-q", str(origin), str(work))
    _git(work, "checkout", "-q", "-b", "tune")
    params = (work / "params.yaml").read_text().replace("max_iter: 300", "max_iter: 301")
    (work / "params.yaml").write_text(params)
    _git(work, "commit", "-qam", "more trees")
    _git(work, "push", "-q", "origin", "tune")
    with fake_github() as gh:
        pull = gh.open_pull("tune", "main", "More trees")
        log = root / "pr-cml.jsonl"
        runner = Runner(
            workflow=WORKFLOWS / "pr-report.yml",
            origin=origin,
            workspace=root / "pr-report",
            event_name="pull_request",
            ref_name="tune",
            base_ref="main",
            event={"pull_request": {"number": pull["number"]}},
            env={"GITHUB_API_URL": gh.url},
            cml_log=log,
        )
        job = runner.run()["diff"]
        assert job.result == "success", job.log()
        [comment] = gh.comments[pull["number"]]
    assert "train.hist_gradient_boosting.max_iter" in comment and "301" in comment
    [call] = [c for c in json.loads("[" + ",".join(log.read_text().splitlines()) + "]") if c[0] == "comment"]
    assert "--publish=false" in call


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """main with the small pipeline run, its outputs in a DVC remote, pushed to a bare origin."""
    from tests.small_project import small_project

    root = tmp_path_factory.mktemp("watch")
    project = small_project(tmp_path_factory, root / "project")
    assert run_in(project, "dvc", "remote", "add", "-d", "storage", str(root / "dvc-remote")).returncode == 0
    _git(project, "commit", "-qam", "DVC remote")
    assert run_in(project, "dvc", "push").returncode == 0
    origin = root / "origin.git"
    _git(root, "clone", "-q", "--bare", str(project), str(origin))
    # The MLflow "tracking server" the secrets point at: the store the first model was registered in.
    shutil.copy2(project / "mlflow.db", root / "mlflow.db")
    return {"root": root, "origin": origin, "mlflow": root / "mlflow.db"}


@pytest.mark.slow
# Two workflow runs with small-month retrains: a couple of minutes on an idle machine, far more
# on a busy one; the suite-wide 600 s limit is for hangs, not for this.
@pytest.mark.timeout(1800)
def test_drift_watch_opens_one_pr_and_takes_no_for_an_answer(watched: dict[str, Path]) -> None:
    """drift-watch's steps in order: a breach becomes a PR with the report; a closed PR is not reopened."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tests.github_api import fake_github

    root, uri = watched["root"], f"sqlite:///{watched['mlflow']}"
    with fake_github() as gh:

        def watch(name: str, event: str) -> dict:
            log = root / f"{name}-cml.jsonl"
            runner = Runner(
                workflow=WORKFLOWS / "drift-watch.yml",
                origin=watched["origin"],
                workspace=root / name,
                event_name=event,
                # A scheduled run has no inputs; here it stands for the week 2024-05 was the newest month.
                inputs={"month": "2024-05"},
                secrets={"MLFLOW_TRACKING_URI": uri},
                env={"GITHUB_API_URL": gh.url},
                cml_log=log,
            )
            job = runner.run()["watch"]
            assert job.result == "success", job.log()
            return {"job": job, "cml": [json.loads(line) for line in log.read_text().splitlines()]}

        first = watch("first", "workflow_dispatch")
        propose = first["job"].step("Propose a retrain")
        assert propose.outputs["proposed"] == "true", first["job"].log()
        [pull] = gh.pulls
        assert pull["head"]["ref"] == "retrain/2024-05" and pull["state"] == "open"
        [comment] = gh.comments[pull["number"]]
        head = _git(root, "--git-dir", str(watched["origin"]), "rev-parse", "retrain/2024-05").strip()
        # Defect 8: images pinned to the branch's commit on GitHub, nothing uploaded elsewhere.
        assert f"https://github.com/acme/auto-ops/raw/{head}/reports/loop/error_by_hour.png" in comment
        assert "](../reports/loop/" not in comment
        [update] = [c for c in first["cml"] if c[:2] == ["comment", "update"]]
        assert "--publish=false" in update
        author = _git(root, "--git-dir", str(watched["origin"]), "log", "-1", "--format=%an <%ae>", head)
        assert author.strip() == "auto-ops[bot] <auto-ops-bot@users.noreply.github.com>"
        # Defect 6: one new version, the proposed one, tagged with its branch and PR.
        client = MlflowClient(tracking_uri=uri)
        versions = {
            str(v.version): v.tags for v in client.search_model_versions("name = 'green-taxi-duration'")
        }
        assert versions.keys() == {"1", "2"}, versions
        assert versions["2"]["branch"] == "retrain/2024-05" and versions["2"]["pull_request"] == "1"
        assert str(client.get_model_version_by_alias("green-taxi-duration", "champion").version) == "1"
        assert str(client.get_model_version_by_alias("green-taxi-duration", "challenger").version) == "2"

        # Defect 5: a person closes the PR unmerged; the next scheduled run leaves the month alone.
        gh.close(pull["number"])
        second = watch("second", "schedule")
        propose = second["job"].step("Propose a retrain")
        assert propose.outputs["proposed"] == "false" and "closed unmerged" in propose.outputs["reason"]
        assert second["job"].step("Open or update the pull request").outcome == "skipped"
        assert len(gh.pulls) == 1 and not [c for c in second["cml"] if c[:2] == ["pr", "create"]]
        assert _git(root, "--git-dir", str(watched["origin"]), "rev-parse", "retrain/2024-05").strip() == head
        # No open PR pins a challenger any more; main's model is still the champion.
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias("green-taxi-duration", "challenger")
        assert str(client.get_model_version_by_alias("green-taxi-duration", "champion").version) == "1"


@pytest.fixture(scope="module")
def broken_month(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """main with the small pipeline run on months from a folder (`data.source: dir`), whose 2024-05
    (the synthetic regime shift: a real change) is cut after day 15, as an upload that stopped."""
    import pyarrow.parquet as pq

    from core.params import SyntheticParams
    from core.sources.synthetic import generate_month
    from tests.data_faults import cut_after_day
    from tests.small_project import SMALL, small_project

    root = tmp_path_factory.mktemp("broken")
    project = small_project(tmp_path_factory, root / "project")
    months = root / "months"
    months.mkdir()
    synthetic = SyntheticParams(rows_per_month=SMALL["synthetic.rows_per_month"])
    for month in ("2024-01", "2024-02", "2024-05"):
        table = generate_month(month, synthetic)
        if month == "2024-05":
            table = pa.Table.from_pandas(cut_after_day(15)(table.to_pandas()), schema=table.schema)
        pq.write_table(table, months / f"green_tripdata_{month}.parquet")
    set_params(project, **{"data.source": "dir", "data.dir": str(months)})
    for command in (
        ["dvc", "repro"],
        ["dvc", "remote", "add", "-d", "storage", str(root / "dvc-remote")],
        [*GIT, "commit", "-qam", "Months from a folder"],
        ["dvc", "push"],
    ):
        assert (done := run_in(project, *command)).returncode == 0, done.stderr
    origin = root / "origin.git"
    _git(root, "clone", "-q", "--bare", str(project), str(origin))
    return {"root": root, "origin": origin}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_drift_watch_stops_on_a_data_problem_until_a_person_accepts_it(broken_month: dict[str, Path]) -> None:
    """A broken month ends the run red with its one line and an issue: no branch, no PR. A person
    who vouches for the data dispatches the month with accept_data_problems, and the PR says so."""
    from tests.github_api import fake_github

    root, origin = broken_month["root"], broken_month["origin"]
    with fake_github() as gh:

        def watch(name: str, event: str, **inputs: str) -> JobRun:
            runner = Runner(
                workflow=WORKFLOWS / "drift-watch.yml",
                origin=origin,
                workspace=root / name,
                event_name=event,
                inputs={"month": "2024-05", **inputs},
                env={"GITHUB_API_URL": gh.url},
                cml_log=root / f"{name}-cml.jsonl",
            )
            return runner.run()["watch"]

        job = watch("scheduled", "schedule")
        assert job.result == "failure", job.log()
        check, stop = job.step("Check the data"), job.step("Stop on a data problem")
        line = check.outputs["data_problem"]
        assert line.startswith("data problem in 2024-05: days_covered: 48% of the month's days"), line
        assert check.outputs["breach"] == "false" and stop.outcome == "failure" and line in stop.stdout
        assert job.step("Propose a retrain").outcome == "skipped" and not gh.pulls
        assert "retrain/2024-05" not in _git(root, "--git-dir", str(origin), "branch", "--list")
        summary = (root / "scheduled" / "watch.files" / "summary.md").read_text()
        assert line in summary and "### Data checks: 2024-05 against 2024-01" in summary
        [issue] = gh.issues
        assert issue["title"] == "Data problem in 2024-05" and line in issue["body"]

        # The same month next week: still one issue, not one per run.
        again = watch("next-week", "schedule")
        assert again.result == "failure" and len(gh.issues) == 1
        assert "issue already open" in again.step("Stop on a data problem").stdout

        # A person knows the half month is right (say, a strike) and dispatches it with the override.
        accepted = watch("accepted", "workflow_dispatch", accept_data_problems="true")
        assert accepted.result == "success", accepted.log()
        assert accepted.step("Propose a retrain").outputs["proposed"] == "true"
        [pull] = gh.pulls
        [comment] = gh.comments[pull["number"]]
        assert "**Accepted by a person** (`data_checks.accepted_months` lists 2024-05)" in comment
        params = yaml.safe_load(_git(root, "--git-dir", str(origin), "show", "retrain/2024-05:params.yaml"))
        assert params["data_checks"]["accepted_months"] == ["2024-05"]
