"""After a merge: the serving artifact (what the image bakes in, plus its tags) and the MLflow promotion.

The release workflow runs `autoops release-artifact` before `docker build`, so an image is only
ever built from a model that is exactly the one ``dvc.lock`` on main pins, and its tags and
labels say which model it serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from autoops.gitops import Git, LoopError, dvc, dvc_remote_configured
from autoops.project import lock_outputs
from core import tracking
from core.artifacts.model_card import ModelCard
from core.features import FEATURES
from core.io import file_md5, file_sha256, write_json
from core.model import MODEL_FILE, load_model, predict
from core.params import load_params
from core.paths import CARD_FILE, MODELS_DIR
from core.paths import DVC_LOCK as LOCK_FILE
from core.training import register

LABEL_PREFIX = "io.auto-ops.model"


def locked_outputs(root: Path, rev: str = "HEAD") -> dict[str, str]:
    """``{path: md5}`` of the outputs in the *committed* dvc.lock of ``rev``.

    Never the working tree's: `dvc repro` rewrites that file to describe whatever it just built,
    so checking a rebuilt model against it proves nothing. The commit is what a person approved.
    """
    git = Git(root)
    if not git.ok("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"):
        raise LoopError(
            f"{root} has no commit {rev}: a release checks the model against the committed {LOCK_FILE}"
        )
    text = git.show(rev, LOCK_FILE.as_posix())
    if text is None:
        raise LoopError(
            f"{LOCK_FILE}: missing in {rev}; a release needs the lock file the pipeline committed"
        )
    return lock_outputs(text)


def verify_model(root: Path, *, with_model: bool = True) -> ModelCard:
    """The model card, after checking model and card are byte-for-byte what the committed dvc.lock pins.

    ``with_model=False`` checks the card alone (it is git-tracked, and it carries the model's
    sha256): enough to name the model, e.g. in MLflow, without fetching it from the DVC remote.
    """
    outs = locked_outputs(root)
    for name in (MODEL_FILE, CARD_FILE) if with_model else (CARD_FILE,):
        key = (MODELS_DIR / name).as_posix()  # dvc.lock paths are relative to the repository
        path = root / key
        if key not in outs:
            raise LoopError(f"{LOCK_FILE} pins no {key}; run `dvc repro` and commit dvc.lock")
        if not path.exists():
            raise LoopError(f"{key}: missing; fetch it with `autoops fetch-model` (or `dvc pull {key}`)")
        if (actual := file_md5(path)) != outs[key]:
            raise LoopError(
                f"{key} (md5 {actual[:12]}) is not the file the committed {LOCK_FILE} pins "
                f"(md5 {outs[key][:12]}); run `autoops fetch-model`"
            )
    card = ModelCard.read(root / MODELS_DIR / CARD_FILE)
    if with_model and file_sha256(root / MODELS_DIR / MODEL_FILE) != card.model_sha256:
        raise LoopError(f"{MODELS_DIR / MODEL_FILE} does not match its model card's sha256")
    return card


def fetch_model(root: Path) -> str:
    """Put exactly the model the committed dvc.lock pins into models/, or fail saying why.

    From the DVC remote when there is one; a model the remote lacks is an error, never a retrain
    (a retrain on the runner is a model nobody reviewed). Without a remote the pipeline rebuilds
    it, and the rebuild counts only if it is byte-for-byte the pinned file.
    """

    key = (MODELS_DIR / MODEL_FILE).as_posix()
    pinned = locked_outputs(root).get(key)
    if not pinned:
        raise LoopError(f"the committed {LOCK_FILE} pins no {key}; nothing to release")
    if dvc_remote_configured(root):
        result = dvc(root, "pull", "--force", key, capture=True, check=False)
        how = "pulled from the DVC remote"
        if result.returncode != 0:
            raise LoopError(
                f"the DVC remote has no {key} with md5 {pinned[:12]} (the model the committed {LOCK_FILE} "
                "pins): push it from the clone that trained it (`dvc push`); a release never retrains"
            )
    else:
        dvc(root, "repro", "train")
        how = "rebuilt (no DVC remote configured)"
    actual = file_md5(root / key) if (root / key).exists() else "missing"
    if actual != pinned:
        # Without a remote, nothing tells a rebuild that differs from a lock that is wrong: say both.
        causes = (
            ""
            if how.startswith("pulled")
            else (
                ": either the pipeline is not byte-reproducible on this machine (use a DVC remote, so "
                f"the release pulls the reviewed bytes), or the committed {LOCK_FILE} itself is wrong "
                "(edited by hand, or committed without the `dvc repro` that wrote it: run `dvc repro` "
                f"and commit {LOCK_FILE})"
            )
        )
        raise LoopError(
            f"{key} {how} is md5 {actual[:12]}, not the md5 {pinned[:12]} the committed {LOCK_FILE} pins"
            + causes
        )
    return how


def image_name(repository: str | None) -> str:
    # GHCR (like every OCI registry) requires lowercase repository names; GitHub names need not be.
    return f"ghcr.io/{repository.lower()}" if repository else "auto-ops-serve"


def release_artifact(root: Path, out_dir: Path, image: str | None, git_sha: str | None) -> dict[str, Any]:
    card = verify_model(root)
    # A smoke prediction: the artifact must load and serve, not merely exist.
    model = load_model(root / MODELS_DIR / MODEL_FILE, sha256=card.model_sha256)
    sample = predict(model, np.zeros((1, len(FEATURES))))
    if not np.isfinite(sample).all():
        raise LoopError("the model predicts non-finite values on a smoke input; refusing to release it")
    sha = git_sha or Git(root).run("rev-parse", "HEAD")
    image = image or image_name(os.environ.get("GITHUB_REPOSITORY"))
    month = card.reference_month
    tags = [f"{image}:{sha}", f"{image}:model-{month}"]
    labels = {
        "org.opencontainers.image.revision": sha,
        f"{LABEL_PREFIX}.name": card.name,
        f"{LABEL_PREFIX}.version": card.version,
        f"{LABEL_PREFIX}.reference-month": month,
        f"{LABEL_PREFIX}.training-months": ",".join(card.training_months),
        f"{LABEL_PREFIX}.sha256": card.model_sha256,
        f"{LABEL_PREFIX}.data-source": card.data_source,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copy2(root / MODELS_DIR / name, out_dir / name)
    release = {
        "image": image,
        "git_sha": sha,
        "tags": tags,
        "labels": labels,
        "model_version": card.version,
        "model_month": month,
        "model_sha256": card.model_sha256,
        "files": {name: file_sha256(out_dir / name) for name in (MODEL_FILE, CARD_FILE)},
    }
    write_json(release, out_dir / "release.json")
    return release


# --- MLflow ------------------------------------------------------------------------------------


def register_challenger(root: Path, branch: str, pr: str | None = None) -> dict[str, str]:
    """Register the model on this retrain branch as MLflow's ``challenger``, tagged with branch and PR.

    Idempotent: a version of the same model file (its ``model_sha256`` tag) is reused, so a rerun
    of drift-watch adds no version. Only proposed models get here; the stages never register
    when the loop runs them.
    """

    card = verify_model(root)
    mlflow = tracking.configure()
    client = mlflow.MlflowClient()
    name = card.name
    tags = {"branch": branch, **({"pull_request": pr} if pr else {})}
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # no registered model yet
        versions = []
    same = [v for v in versions if (v.tags or {}).get("model_sha256") == card.model_sha256]
    if same:
        version = str(max(int(v.version) for v in same))
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, tracking.CHALLENGER, version)
    else:
        model = load_model(root / MODELS_DIR / MODEL_FILE, sha256=card.model_sha256)
        params = load_params(root / "params.yaml")
        proposed = register(params, model, card, 0.0, tags=tags, first_is_champion=False, challenger=True)
        version = proposed["version"]
    return {"registered_model": name, "version": version, "model_version": card.version, **tags}


def retire_challenger(branch: str) -> bool:
    """Take the ``challenger`` alias off the model of ``branch`` (its PR was closed unmerged)."""
    mlflow = tracking.configure()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    name = load_params().mlflow.registered_model
    try:
        version = client.get_model_version_by_alias(name, tracking.CHALLENGER)
    except MlflowException:
        return False
    if (version.tags or {}).get("branch") != branch:
        return False
    client.delete_registered_model_alias(name, tracking.CHALLENGER)
    return True


def ship_compiled(root: Path, name: str, version: str, tracking_uri: str) -> None:
    """Compile the version's trees and log the library into its run (``serve.compile --publish``).

    Done before the alias moves, so a service that follows ``champion`` finds the version already
    compiled and swaps to it at full speed instead of serving sklearn while it compiles. A child
    process: serve.compile is the one command the image build and the service also use, and the
    tracking server is handed to it alone (nothing process-wide is set here).
    """
    command = [sys.executable, "-m", "serve.compile", "--model-uri", f"models:/{name}/{version}"]
    result = subprocess.run(
        [*command, "--publish", "--require"],
        cwd=root,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise LoopError(
            f"{name} version {version}: compiling its trees for the release failed "
            f"({last[-1] if last else f'exit {result.returncode}'}); the champion alias was not moved"
        )


def promote(root: Path, tracking_uri: str, *, compiled: bool = True) -> dict[str, str]:
    """Point the registered model's ``champion`` alias at the version that is on main now, after
    shipping its compiled library with it (unless ``compiled`` is False)."""
    card = verify_model(root, with_model=False)
    # The client below is given the server; nothing is set process-wide (a later caller, or test,
    # would inherit it).
    tracking.configure()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    name = card.name
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise LoopError(f"MLflow at {tracking_uri}: cannot list versions of {name}: {exc}") from exc
    # The train stage tags every version with the sha256 of the exact model file it registered.
    matching = [v for v in versions if (v.tags or {}).get("model_sha256") == card.model_sha256]
    if not matching:
        raise LoopError(
            f"no version of {name!r} in MLflow at {tracking_uri} is the model on main "
            f"(model_sha256 {card.model_sha256[:12]}); was it trained against this tracking server?"
        )
    version = str(max(int(v.version) for v in matching))
    try:
        previous = str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)
    except MlflowException:
        previous = ""
    if compiled:
        ship_compiled(root, name, version, tracking_uri)
    client.set_registered_model_alias(name, tracking.CHAMPION, version)
    # The PR that pinned this model is merged: `challenger` names an open PR's model or nothing.
    try:
        if str(client.get_model_version_by_alias(name, tracking.CHALLENGER).version) == version:
            client.delete_registered_model_alias(name, tracking.CHALLENGER)
    except MlflowException:
        pass
    return {
        "registered_model": name,
        "version": version,
        "previous": previous,
        "model_version": card.version,
    }
