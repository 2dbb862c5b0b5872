"""After a merge: the serving artifact (what the image bakes in, plus its tags) and the MLflow promotion.

The release workflow runs `autoops release-artifact` before `docker build`, so an image is only
ever built from a model that is exactly the one ``dvc.lock`` on main pins, and its tags and
labels say which model it serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autoops.gitops import Git, LoopError
from stages import tracking
from stages.features import FEATURES
from stages.io import file_sha256, write_json
from stages.model import CARD_FILE, MODEL_FILE, load_model, predict

MODELS_DIR = Path("models")
LOCK_FILE = Path("dvc.lock")
RELEASE_DIR = Path(".autoops/release")
LABEL_PREFIX = "io.auto-ops.model"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()  # what dvc.lock records for a file output
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def locked_outputs(lock_path: Path = LOCK_FILE) -> dict[str, str]:
    if not lock_path.exists():
        raise LoopError(f"{lock_path.name}: missing; a release needs the lock file the pipeline committed")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    return {
        out["path"]: out.get("md5", "")
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs", [])
    }


def verify_model(root: Path, *, with_model: bool = True) -> dict[str, Any]:
    """The model card, after checking model and card are byte-for-byte what dvc.lock pins.

    ``with_model=False`` checks the card alone (it is git-tracked, and it carries the model's
    sha256): enough to name the model, e.g. in MLflow, without fetching it from the DVC remote.
    """
    lock_path = root / LOCK_FILE
    outs = locked_outputs(lock_path)
    for name in (MODEL_FILE, CARD_FILE) if with_model else (CARD_FILE,):
        key = (MODELS_DIR / name).as_posix()  # dvc.lock paths are relative to the repository
        path = root / key
        if key not in outs:
            raise LoopError(f"{LOCK_FILE} pins no {key}; run `dvc repro` and commit dvc.lock")
        if not path.exists():
            raise LoopError(f"{key}: missing; fetch it with `dvc pull` (or rebuild it: `dvc repro train`)")
        if (actual := file_md5(path)) != outs[key]:
            raise LoopError(
                f"{key} (md5 {actual[:12]}) is not the file {LOCK_FILE} pins (md5 {outs[key][:12]}); "
                "run `dvc checkout` or `dvc pull`"
            )
    card = json.loads((root / MODELS_DIR / CARD_FILE).read_text())
    if with_model and file_sha256(root / MODELS_DIR / MODEL_FILE) != card["model_sha256"]:
        raise LoopError(f"{MODELS_DIR / MODEL_FILE} does not match its model card's sha256")
    return card


def image_name(repository: str | None) -> str:
    # GHCR (like every OCI registry) requires lowercase repository names; GitHub names need not be.
    return f"ghcr.io/{repository.lower()}" if repository else "auto-ops-serve"


def release_artifact(root: Path, out_dir: Path, image: str | None, git_sha: str | None) -> dict[str, Any]:
    card = verify_model(root)
    # A smoke prediction: the artifact must load and serve, not merely exist.
    model = load_model(root / MODELS_DIR / MODEL_FILE, sha256=card["model_sha256"])
    sample = predict(model, np.zeros((1, len(FEATURES))))
    if not np.isfinite(sample).all():
        raise LoopError("the model predicts non-finite values on a smoke input; refusing to release it")
    sha = git_sha or Git(root).run("rev-parse", "HEAD")
    image = image or image_name(os.environ.get("GITHUB_REPOSITORY"))
    month = card["reference_month"]
    tags = [f"{image}:{sha}", f"{image}:model-{month}"]
    labels = {
        "org.opencontainers.image.revision": sha,
        f"{LABEL_PREFIX}.name": card["name"],
        f"{LABEL_PREFIX}.version": card["version"],
        f"{LABEL_PREFIX}.reference-month": month,
        f"{LABEL_PREFIX}.training-months": ",".join(card["training_months"]),
        f"{LABEL_PREFIX}.sha256": card["model_sha256"],
        f"{LABEL_PREFIX}.data-source": card["data_source"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copy2(root / MODELS_DIR / name, out_dir / name)
    release = {
        "image": image,
        "git_sha": sha,
        "tags": tags,
        "labels": labels,
        "model_version": card["version"],
        "model_month": month,
        "model_sha256": card["model_sha256"],
        "files": {name: file_sha256(out_dir / name) for name in (MODEL_FILE, CARD_FILE)},
    }
    write_json(release, out_dir / "release.json")
    return release


# --- MLflow ------------------------------------------------------------------------------------


def promote(root: Path, tracking_uri: str) -> dict[str, str]:
    """Point the registered model's ``champion`` alias at the version that is on main now."""
    card = verify_model(root, with_model=False)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    tracking.configure()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    name = card["name"]
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise LoopError(f"MLflow at {tracking_uri}: cannot list versions of {name}: {exc}") from exc
    # The train stage tags every version with the sha256 of the exact model file it registered.
    matching = [v for v in versions if (v.tags or {}).get("model_sha256") == card["model_sha256"]]
    if not matching:
        raise LoopError(
            f"no version of {name!r} in MLflow at {tracking_uri} is the model on main "
            f"(model_sha256 {card['model_sha256'][:12]}); was it trained against this tracking server?"
        )
    version = str(max(int(v.version) for v in matching))
    try:
        previous = str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)
    except MlflowException:
        previous = ""
    client.set_registered_model_alias(name, tracking.CHAMPION, version)
    return {
        "registered_model": name,
        "version": version,
        "previous": previous,
        "model_version": card["version"],
    }
