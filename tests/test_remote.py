"""The stores beside git: the DVC remote as the workflows use it, and the MLflow registry.

The DVC remote is S3 (dvc-s3) against an S3-compatible server on localhost.

moto's standalone server speaks the S3 protocol; the credentials reach DVC the way the workflows
pass them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment). Skipped cleanly when
the server cannot start here, except in CI (CI=true), where that fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import set_params, stage_env
from tests.small_project import small_project

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
BUCKET = "auto-ops-dvc"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a fresh S3 server with one empty bucket."""
    try:
        import boto3
        import moto.server  # noqa: F401  (started below as `python -m moto.server`)
    except ImportError as exc:
        _unavailable(f"moto[s3] is not installed: {exc}")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=url, **_boto_credentials())
        for _ in range(100):  # readiness, not timing: poll until it answers or exits
            if server.poll() is not None:
                _unavailable(f"the S3 server exited: {log.read_text()[-500:]}")
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                time.sleep(0.2)
        else:
            _unavailable("the S3 server did not answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _unavailable(reason: str) -> None:
    """Skip on a laptop; fail in CI (Actions sets CI=true), where a skip would hide that the remote
    was never tested."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the S3 round trip must run in CI)")
    pytest.skip(reason)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), cwd=cwd, env={**stage_env(cwd), **S3_ENV, **(env or {})}, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _locked(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A person's `dvc repro` on small months, committed: the model is registered (v1, champion)."""
    return small_project(tmp_path_factory, tmp_path_factory.mktemp("trained") / "project")


def _copy(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_an_s3_server_that_does_not_start_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, point 6: on a laptop the round trip is skipped without an S3 server; in CI (where
    Actions sets CI=true) a skip would hide that the remote was never tested, so it fails."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as raised:  # pytest's Skipped and Failed are BaseExceptions
        _unavailable("the S3 server did not answer")
    assert raised.type is pytest.fail.Exception, raised.type
    monkeypatch.delenv("CI")
    with pytest.raises(BaseException) as raised:
        _unavailable("the S3 server did not answer")
    assert raised.type is pytest.skip.Exception, raised.type


def test_dvc_push_and_pull_through_s3(s3: str, trained: Path, tmp_path: Path) -> None:
    """Defect 7: dvc-s3 is installed and the documented remote round-trips the pipeline's outputs."""
    project = _copy(trained, tmp_path / "trained")
    _run(project, "dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/auto-ops")
    _run(project, "dvc", "remote", "modify", "storage", "endpointurl", s3)
    _run(project, *GIT, "commit", "-qam", "the S3 remote")
    _run(project, "dvc", "push")
    origin = tmp_path / "origin.git"
    _run(tmp_path, "git", "clone", "-q", "--bare", str(project), str(origin))

    # A fresh clone gets every output of the run back from S3, byte for byte.
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    _run(clone, "dvc", "pull", "--with-deps", "train")
    status = _run(clone, "dvc", "status", "--with-deps", "train", "--json").stdout
    assert status.strip() in ("{}", ""), status
    for path in (
        "models/model.pkl",
        "data/raw/green_tripdata_2024-01.parquet",
        "data/features/holdout.parquet",
    ):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path

    # The release's fetch: exactly the pinned model, nothing else downloaded, nothing rebuilt.
    released = tmp_path / "release"
    _run(tmp_path, "git", "clone", "-q", str(origin), str(released))
    out = _run(released, sys.executable, "-m", "autoops.cli", "fetch-model")
    assert "pulled from the DVC remote" in out.stdout
    assert (released / "models/model.pkl").read_bytes() == (project / "models/model.pkl").read_bytes()
    assert not (released / "data/raw").exists(), "a release needs the model only"

    # A lock pinning a model the bucket lacks: a one-line error, and no model.
    lock = (released / "dvc.lock").read_text()
    pinned = _locked(released)["models/model.pkl"]
    (released / "dvc.lock").write_text(lock.replace(pinned, "deadbeef" * 4))
    _run(released, *GIT, "commit", "-qam", "a lock nobody pushed the model for")
    (released / "models/model.pkl").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "autoops.cli", "fetch-model"],
        cwd=released,
        env={**stage_env(released), **S3_ENV},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("error: the DVC remote has no models/model.pkl with md5 deadbeefdead")


def _versions(uri: str) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return {
        str(v.version): dict(v.tags) for v in client.search_model_versions("name = 'green-taxi-duration'")
    }


def _alias(uri: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(
            MlflowClient(tracking_uri=uri).get_model_version_by_alias("green-taxi-duration", alias).version
        )
    except MlflowException:
        return None


def test_only_a_proposed_challenger_enters_the_registry(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: the loop's rebuilds never register; `champion`/`challenger` name what main and the PR pin."""
    from autoops.gitops import dvc

    project = _copy(trained, tmp_path / "registry")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = {**stage_env(project), "MLFLOW_TRACKING_URI": uri}
    assert _versions(uri).keys() == {"1"} and _alias(uri, "champion") == "1"

    # What `check` and `propose` run: a rebuild (here, a different model) registers nothing.
    set_params(project, **{"train.hist_gradient_boosting.max_iter": 21})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dvc(project, "repro", "train", capture=True)
    assert _versions(uri).keys() == {"1"}, "a rebuild by the loop entered the registry"
    # Issue 20, point 5: the person's own run that registered version 1 proposed nothing.
    assert _alias(uri, "challenger") is None

    # Proposed on retrain/2024-05, PR #7: registered once, tagged, alias `challenger`.
    _run(project, *GIT, "checkout", "-q", "-b", "retrain/2024-05")
    _run(project, *GIT, "commit", "-qam", "Retrain")
    for _ in range(2):  # a rerun of drift-watch adds no version
        _run(
            project,
            sys.executable,
            "-m",
            "autoops.cli",
            "register",
            "--pr",
            "7",
            env={"MLFLOW_TRACKING_URI": uri},
        )
    versions = _versions(uri)
    assert versions.keys() == {"1", "2"}
    assert versions["2"]["branch"] == "retrain/2024-05" and versions["2"]["pull_request"] == "7"
    assert (_alias(uri, "champion"), _alias(uri, "challenger")) == ("1", "2")

    # Merged: the release promotes it, and no open PR pins a challenger any more.
    _run(project, sys.executable, "-m", "autoops.cli", "promote", env={"MLFLOW_TRACKING_URI": uri})
    assert (_alias(uri, "champion"), _alias(uri, "challenger")) == ("2", None)
