"""Serving from MLflow: ``AUTOOPS_MODEL_URI=models:/<name>@champion`` against a real (sqlite)
registry filled by the pipeline's train stage, following the alias when it moves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from core.features import feature_matrix
from core.model import MODEL_FILE, load_model
from serve.model_store import DirSource, MlflowSource
from serve.predictor import find_compiler
from serve.request_models import Trip
from serve.testing import ROOT, ServerProcess, features_with_target, random_trips, train_model_dir
from serve.trip_columns import trip_columns

TRIPS = [
    {
        "pu_location_id": 74,
        "do_location_id": 168,
        "trip_distance": 2.3,
        "pickup_datetime": "2021-01-15T08:30:00",
    },
    {"pu_location_id": 41, "do_location_id": 42, "trip_distance": 0.9, "pickup_hour": 17.5, "pickup_dow": 4},
]


def expected(estimator: Any) -> np.ndarray:
    return np.asarray(
        estimator.predict(feature_matrix(trip_columns([Trip.model_validate(t) for t in TRIPS])))
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two versions registered by the train stage; the champion alias stays on the first."""
    work = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    versions = []
    try:
        for seed, iters in ((1, 12), (2, 16)):
            frame = features_with_target(random_trips(2500, seed=seed))
            models = train_model_dir(
                work, frame.iloc[:2000], frame.iloc[2000:], max_iter=iters, seed=seed, use_mlflow=True
            )
            card = json.loads((models / "model_card.json").read_text())
            estimator = load_model(models / MODEL_FILE, sha256=card["model_sha256"])
            versions.append(
                {
                    "card": card,
                    "estimator": estimator,
                    "registry": json.loads((models / "registry.json").read_text()),
                }
            )
    finally:
        mp.undo()
    return {"work": work, "tracking_uri": tracking_uri, "models": work / "models", "versions": versions}


def registry_server_env(
    registry: dict[str, Any], model_uri: str, cache: str, watch_interval_s: str = "0"
) -> dict[str, str]:
    """A server of ``model_uri`` from the test registry, compiling into (or reading) work/``cache``."""
    return {
        "AUTOOPS_MODEL_URI": model_uri,
        "MLFLOW_TRACKING_URI": registry["tracking_uri"],
        "AUTOOPS_COMPILED_CACHE": str(registry["work"] / cache),
        "AUTOOPS_PREDICTION_LOG": "off",
        "AUTOOPS_WATCH_INTERVAL_S": watch_interval_s,
    }


def test_registry_version_of_a_models_dir(registry: dict[str, Any]) -> None:
    artifact = DirSource(registry["models"]).resolve()
    assert artifact.registry_version == "2"
    assert artifact.model_uri == "models:/green-taxi-duration/2"


def test_a_registered_version_names_exactly_what_it_needs(registry: dict[str, Any]) -> None:
    """The requirements MLflow stores are the pinned ones, not an inference of the registering process."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    from core.training import model_requirements

    mlflow.set_tracking_uri(registry["tracking_uri"])
    uri = registry["versions"][-1]["registry"]["model_uri"]
    stored = Path(download_artifacts(f"{uri}/requirements.txt", dst_path=str(registry["work"] / "req")))
    assert stored.read_text().split() == model_requirements()
    assert not any(line.startswith(("pytest", "rich")) for line in stored.read_text().split())


def test_mlflow_source_uri_forms() -> None:
    alias = MlflowSource("models:/green-taxi-duration@champion")
    assert (alias.name, alias.alias, alias.version) == ("green-taxi-duration", "champion", None)
    pinned = MlflowSource("models:/green-taxi-duration/3")
    assert (pinned.alias, pinned.version) == (None, "3")
    with pytest.raises(ValueError, match="expected models:/"):
        MlflowSource("runs:/abc/model")


def test_serves_the_champion_and_follows_the_alias(registry: dict[str, Any]) -> None:
    v1, v2 = registry["versions"]
    env = registry_server_env(
        registry, "models:/green-taxi-duration@champion", "compiled", watch_interval_s="0.5"
    )
    with ServerProcess(cwd=registry["work"], env=env, args=("--workers", "1")) as server:
        info = httpx.get(f"{server.url}/model/info").json()
        assert info["version"] == v1["card"]["version"]
        assert (info["registry_version"], info["model_uri"]) == ("1", "models:/green-taxi-duration/1")
        assert info["source"] == "models:/green-taxi-duration@champion"
        served = httpx.post(f"{server.url}/predict_batch", json={"trips": TRIPS}).json()["predictions"]
        # The registry's copy is skops, not the pickle: the same model all the same.
        np.testing.assert_allclose(served, expected(v1["estimator"]), atol=1e-6, rtol=0)

        from mlflow import MlflowClient

        MlflowClient(tracking_uri=registry["tracking_uri"]).set_registered_model_alias(
            "green-taxi-duration", "champion", "2"
        )
        server.wait_for(lambda h: h["model_version"] == v2["card"]["version"], timeout=60)
        served = httpx.post(f"{server.url}/predict_batch", json={"trips": TRIPS}).json()
        assert served["model_version"] == v2["card"]["version"]
        np.testing.assert_allclose(served["predictions"], expected(v2["estimator"]), atol=1e-6, rtol=0)
        assert httpx.get(f"{server.url}/model/info").json()["registry_version"] == "2"


def test_a_version_published_compiled_is_served_compiled(
    registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release ships the library with the version before it moves the alias (`autoops
    promote`: release.ship_compiled, i.e. `serve.compile --publish` into the version's run); a
    service with an empty cache serves that version compiled from its first request, compiling
    nothing. A version that cannot be compiled stops the release with the reason."""
    if find_compiler() is None:
        pytest.skip("no C compiler")
    from mlflow import MlflowClient

    from autoops.gitops import LoopError
    from autoops.release import ship_compiled

    v2 = registry["versions"][1]
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("AUTOOPS_COMPILED_CACHE", str(registry["work"] / "release-build"))
    ship_compiled(ROOT, "green-taxi-duration", "2", registry["tracking_uri"])
    client = MlflowClient(tracking_uri=registry["tracking_uri"])
    shipped = client.list_artifacts(v2["registry"]["run_id"], f"compiled/{v2['card']['model_sha256']}")
    assert sorted(a.path.rsplit("/", 1)[-1] for a in shipped) == ["compiled.json", "predictor.so"]
    with pytest.raises(LoopError, match=r"version 9: compiling .* failed .*champion alias was not moved"):
        ship_compiled(ROOT, "green-taxi-duration", "9", registry["tracking_uri"])
    serve_env = registry_server_env(registry, "models:/green-taxi-duration/2", "empty-cache")
    with ServerProcess(cwd=registry["work"], env=serve_env, args=("--workers", "1")) as server:
        assert httpx.get(f"{server.url}/health").json()["predictor"] == "compiled"
        served = httpx.post(f"{server.url}/predict_batch", json={"trips": TRIPS}).json()
        np.testing.assert_allclose(served["predictions"], expected(v2["estimator"]), atol=1e-6, rtol=0)
        assert "release compiled" in server.log() and "compile-" not in server.log()
