"""``python -m serve.compile``: compile the model the service would serve, ahead of time.

The service compiles a new model version itself (in a background process, serving sklearn
meanwhile); running this first - after ``dvc repro``, or in the image build - means it starts
compiled. The library lands in AUTOOPS_COMPILED_CACHE (or --cache) under the model's sha256.

``--publish`` ships the library with the model, for a release: into ``<models dir>/compiled/<sha256>/``
(a models/ folder source), or among the artifacts of the model version's MLflow run (an MLflow
source). A service that later swaps to that version finds it there and serves it compiled at once.
The release calls :func:`publish_compiled` (or runs this with ``--publish``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from core.compiled_trees import COMPILED_LIB, COMPILED_META, CompiledPredictor, compile_model
from serve.model_store import RELEASE_COMPILED_DIR, ModelArtifact, ModelLoadError, make_source
from serve.settings import Settings, SettingsError

# prctl(2): deliver a signal to this process when its parent exits.
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("serve.compile")


def _as_service_child() -> None:
    """Run as the service's background compiler: lower priority, and die with the service.

    The service stops this process group when it stops; if the service is killed outright, the
    parent-death signal takes this process and its compiler processes down instead of leaving
    them running for minutes. (Linux only; elsewhere the service's own stop still applies.)
    """
    with contextlib.suppress(OSError, ValueError):
        os.nice(int(os.environ.get("AUTOOPS_COMPILE_NICENESS", "0")))

    def stop_group(signum: int, frame: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop_group)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def publish_compiled(artifact: ModelArtifact, compiled: CompiledPredictor) -> str:
    """Ship the compiled library with the model version it was built for; returns where it went.

    The release hook: for a models/ folder source, ``<models dir>/compiled/<sha256>/`` (written
    atomically); for an MLflow source, ``compiled/<sha256>/`` among the artifacts of the version's
    run, where the service's MLflow source looks for it.
    """
    sha = artifact.card.model_sha256
    if artifact.compile_args[:1] == ("--models-dir",):
        target = Path(artifact.compile_args[1]) / RELEASE_COMPILED_DIR / sha
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}.", suffix=".tmp", dir=target.parent))
        try:
            for name in (COMPILED_LIB, COMPILED_META):
                shutil.copyfile(compiled.lib_dir / name, tmp / name)
            os.chmod(tmp, 0o755)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return str(target)
    from mlflow import MlflowClient

    run_id = _run_id(artifact)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / sha
        staged.mkdir()
        for name in (COMPILED_LIB, COMPILED_META):
            shutil.copyfile(compiled.lib_dir / name, staged / name)
        MlflowClient().log_artifacts(run_id, str(staged), f"{RELEASE_COMPILED_DIR}/{sha}")
    return f"runs:/{run_id}/{RELEASE_COMPILED_DIR}/{sha}"


def _run_id(artifact: ModelArtifact) -> str:
    from mlflow import MlflowClient

    name, version = str(artifact.model_uri).removeprefix("models:/").split("/")
    return str(MlflowClient().get_model_version(name, version).run_id)


def run(
    models_dir: Annotated[
        Path | None, typer.Option(help="models/ folder (AUTOOPS_MODELS_DIR, default models)")
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option(help="an MLflow model URI instead (AUTOOPS_MODEL_URI)")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="where compiled models go (AUTOOPS_COMPILED_CACHE)")
    ] = None,
    require: Annotated[
        bool, typer.Option("--require", help="exit 1 if the model could not be compiled")
    ] = False,
    publish: Annotated[
        bool, typer.Option("--publish", help="ship the library with the model version (a release)")
    ] = False,
    # Used by the service for its background compiles.
    expect_sha256: Annotated[str | None, typer.Option(hidden=True)] = None,
    work_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Compile the served model's trees to a native library, cached by the model's sha256."""
    logging.basicConfig(level=logging.INFO, format="[compile] %(message)s")
    if work_dir is not None:
        _as_service_child()
        # tl2cgen writes its C sources to a temporary folder: inside the one the service removes.
        tempfile.tempdir = str(work_dir)
    try:
        settings = Settings.from_env(models_dir=models_dir, model_uri=model_uri, compiled_cache=cache)
        artifact = make_source(settings).resolve()
        sha = artifact.card.model_sha256
        if expect_sha256 and sha != expect_sha256:
            raise ModelLoadError(f"the source now holds model {sha[:12]}, not {expect_sha256[:12]}")
        estimator = artifact.load_estimator()
    except (SettingsError, ModelLoadError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    compiled = compile_model(estimator, sha, settings.compiled_cache, work_dir=work_dir)
    if compiled is None:
        message = f"model {sha[:12]} not compiled: the service will serve the sklearn estimator"
        if require or publish:
            sys.exit(f"error: {message}")
        print(message)
        return
    print(f"model {sha[:12]} compiled: {compiled.lib_dir}")
    if publish:
        print(f"model {sha[:12]} published: {publish_compiled(artifact, compiled)}")


if __name__ == "__main__":
    typer.run(run)
