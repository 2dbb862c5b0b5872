"""Where the served model comes from, and swapping in a new one without a restart.

Sources: the ``models/`` folder that ``dvc repro`` writes (the default; the image bakes it in, so no
MLflow server is needed), or an MLflow model URI such as ``models:/green-taxi-duration@champion``.

A swap builds the complete new :class:`ServedModel` (card + predictor) off the request path and
then replaces one reference. A request reads that reference once and uses only what it got, so
no request fails or mixes two models during a swap; each response names the version that answered.

Size (~500 lines): the two sources share the artifact checks (card, sha256, staleness) the holder's
swap relies on; the MLflow source alone would be a module of helpers that only make sense here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from core import tracking
from core.artifacts.base import ArtifactError
from core.artifacts.model_card import ModelCard
from core.io import file_sha256
from core.paths import CARD_FILE, REGISTRY_FILE
from serve.predictor import (
    Predictor,
    SklearnPredictor,
    find_compiler,
    install_compiled,
    load_compiled,
    remove_abandoned_lock,
)
from serve.settings import Settings

# Where a release puts the library it compiled for a model: <models dir>/compiled/<model sha256>/,
# and compiled/<model sha256>/ among the artifacts of the model version's MLflow run.
RELEASE_COMPILED_DIR = "compiled"
# Below the request path's priority: compiling a new version must not starve the requests.
COMPILE_NICENESS = 10

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The source holds no usable model (yet)."""


@dataclass(frozen=True)
class ModelArtifact:
    """A model version found at a source, before anything heavy is loaded."""

    card: ModelCard
    fingerprint: str
    source: str
    load_estimator: Callable[[], Any]
    registry_version: str | None = None
    model_uri: str | None = None
    # `python -m serve.compile` options that compile this same version in another process.
    compile_args: tuple[str, ...] = ()
    # The folder holding the library the release compiled for this version, if it shipped one
    # (fetched into the given scratch folder when it is remote).
    release_library: Callable[[Path], Path | None] = lambda scratch: None


@dataclass(frozen=True)
class ServedModel:
    """Everything one request needs, swapped as a unit."""

    predictor: Predictor
    card: ModelCard
    fingerprint: str
    source: str
    registry_version: str | None
    model_uri: str | None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def name(self) -> str:
        return self.card.name


class ModelSource(Protocol):
    description: str

    def fingerprint(self) -> str:
        """Cheap; changes exactly when a different model is published."""
        ...

    def resolve(self) -> ModelArtifact: ...


class DirSource:
    """The models/ folder: model.pkl + model_card.json (+ registry.json when registered in MLflow)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.description = str(models_dir)

    def _card(self) -> ModelCard:
        try:
            return ModelCard.read(self.models_dir / CARD_FILE)
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None

    def fingerprint(self) -> str:
        return self._card().model_sha256

    def resolve(self) -> ModelArtifact:
        card = self._card()
        model_path = self.models_dir / card.model_file
        if not model_path.exists():
            raise ModelLoadError(f"{model_path}: missing (the card in {self.models_dir} names it)")
        # The card is written last and carries the model's sha256 (core.training): a model file
        # from a different run than its card is refused rather than served under the wrong name.
        if (actual := file_sha256(model_path)) != card.model_sha256:
            raise ModelLoadError(
                f"{model_path}: sha256 {actual[:12]} does not match the card ({card.model_sha256[:12]}); "
                "a training run may be writing it"
            )

        def load_estimator() -> Any:
            # Here, not at the top: core.model imports scikit-learn (~1.3 s of CPU), which a service scoring
            # compiled trees never loads.
            from core.model import load_model

            return load_model(model_path, sha256=card.model_sha256)

        def release_library(scratch: Path) -> Path | None:
            lib_dir = self.models_dir / RELEASE_COMPILED_DIR / card.model_sha256
            return lib_dir if lib_dir.is_dir() else None

        registry = self._registry(card)
        return ModelArtifact(
            card=card,
            fingerprint=card.model_sha256,
            source=str(self.models_dir),
            load_estimator=load_estimator,
            registry_version=registry.get("version"),
            model_uri=registry.get("model_uri"),
            compile_args=("--models-dir", str(self.models_dir.resolve())),
            release_library=release_library,
        )

    def _registry(self, card: ModelCard) -> dict[str, Any]:
        # registry.json is written right after the card when train registers in MLflow; an older
        # one (a run without MLflow since) describes another model and is ignored.
        path = self.models_dir / REGISTRY_FILE
        try:
            if path.stat().st_mtime < (self.models_dir / CARD_FILE).stat().st_mtime:
                return {}
            registry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        if registry.get("registered_model") != card.name:
            return {}
        return {k: str(registry[k]) for k in ("version", "model_uri") if registry.get(k) is not None}


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class MlflowSource:
    """A registered model version: ``models:/<name>@<alias>`` (followed as the alias moves) or
    ``models:/<name>/<version>``. The card comes from the training run's model_card.json."""

    def __init__(self, uri: str) -> None:
        match = _MODELS_URI.match(uri)
        if not match:
            raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
        self.uri = uri
        self.description = uri
        self.name: str = match["name"]
        self.alias: str | None = match["alias"]
        self.version: str | None = match["version"]
        self._client: Any = None

    def _model_version(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            tracking.configure()
            self._client = MlflowClient()
        try:
            if self.alias:
                return self._client.get_model_version_by_alias(self.name, self.alias)
            return self._client.get_model_version(self.name, self.version)
        except Exception as exc:
            raise ModelLoadError(f"{self.uri}: {exc}") from exc

    def fingerprint(self) -> str:
        mv = self._model_version()
        return f"{self.name}/{mv.version}"

    def resolve(self) -> ModelArtifact:
        import mlflow

        mv = self._model_version()
        try:
            data = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{CARD_FILE}")
        except Exception as exc:
            raise ModelLoadError(
                f"{self.uri}: version {mv.version} has no {CARD_FILE} in its run: {exc}"
            ) from exc
        try:
            card = ModelCard.parse(data, f"{self.uri} (version {mv.version}) {CARD_FILE}")
        except ArtifactError as exc:
            raise ModelLoadError(str(exc)) from None
        version_uri = f"models:/{self.name}/{mv.version}"

        def load_estimator() -> Any:
            return _load_mlflow_sklearn(version_uri, card)

        def release_library(scratch: Path) -> Path | None:
            sha = card.model_sha256
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{mv.run_id}/{RELEASE_COMPILED_DIR}/{sha}", dst_path=str(scratch)
                )
            except Exception as exc:  # no library logged for this version: compile it here
                log.info("%s version %s: no compiled library in its run (%s)", self.name, mv.version, exc)
                return None
            return Path(local)

        return ModelArtifact(
            card=card,
            fingerprint=f"{self.name}/{mv.version}",
            source=self.uri,
            load_estimator=load_estimator,
            registry_version=str(mv.version),
            model_uri=version_uri,
            compile_args=("--model-uri", version_uri),
            release_library=release_library,
        )


def _load_mlflow_sklearn(uri: str, card: ModelCard) -> Any:
    """Load an MLflow sklearn model trusting only the types this pipeline's models contain.

    MLflow would take the list of trusted skops types from the registry itself; anyone who can
    write to a shared registry could widen it, so the pipeline's own list is used instead. A
    pickle-format model is only loaded if it is byte-identical to the one the card describes.
    """
    import mlflow

    # Here, not at the top: core.model imports scikit-learn (~1.3 s of CPU; see load_estimator).
    from core.model import SKOPS_TRUSTED_TYPES, load_model

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    flavor = mlflow.models.Model.load(local).flavors["sklearn"]
    path = local / flavor["pickled_model"]
    if flavor.get("serialization_format") == "skops":
        import skops.io

        return skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)
    return load_model(path, sha256=card.model_sha256)


def make_source(settings: Settings) -> ModelSource:
    if settings.model_uri:
        return MlflowSource(settings.model_uri)
    return DirSource(settings.models_dir)


SwapListener = Callable[["ServedModel | None", ServedModel], None]
ErrorListener = Callable[[Exception], None]


class ModelHolder:
    """Holds the served model; loads, swaps and watches for new versions."""

    def __init__(
        self,
        source: ModelSource,
        settings: Settings,
        on_swap: SwapListener | None = None,
        on_error: ErrorListener | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.on_swap = on_swap
        self.on_error = on_error
        # Read by requests without a lock: replacing a reference is atomic in Python.
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self.first_attempt = threading.Event()
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Running compiler processes (each the leader of its own process group) and their folders.
        self._compilers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self._compilers_lock = threading.Lock()

    @property
    def stale(self) -> bool:
        """A model is served but the source's current one could not be loaded (see last_error)."""
        return self.current is not None and self.last_error is not None

    def load(self) -> tuple[ServedModel, bool]:
        """Swap in the source's current model unless it is already served; (served, swapped?)."""
        with self._load_lock:
            artifact = self.source.resolve()
            current = self.current
            if current is not None and current.fingerprint == artifact.fingerprint:
                self.last_error = None  # the source is back to the model served: not stale
                return current, False
            served = ServedModel(
                predictor=self._predictor(artifact),
                card=artifact.card,
                fingerprint=artifact.fingerprint,
                source=artifact.source,
                registry_version=artifact.registry_version,
                model_uri=artifact.model_uri,
            )
            self._swap(served)
            self.last_error = None
            log.info(
                "serving %s version %s (%s predictor) from %s",
                served.name,
                served.version,
                served.predictor.kind,
                served.source,
            )
            return served, True

    def _swap(self, served: ServedModel) -> None:
        previous, self.current = self.current, served
        if self.on_swap is not None:
            self.on_swap(previous, served)

    def _predictor(self, artifact: ModelArtifact) -> Predictor:
        sha = artifact.card.model_sha256
        cache = self.settings.compiled_cache
        if self.settings.compile != "off":
            if compiled := load_compiled(cache, sha):
                return compiled
            # A released version arrives compiled: installing its library costs milliseconds,
            # where compiling takes a minute or more (and scikit-learn serves 10x slower meanwhile).
            with tempfile.TemporaryDirectory(prefix="autoops-release-lib-") as scratch:
                lib_dir = artifact.release_library(Path(scratch))
                if lib_dir is not None and (compiled := install_compiled(lib_dir, cache, sha)):
                    log.info("model %s: serving the library its release compiled", sha[:12])
                    return compiled
        try:
            estimator = artifact.load_estimator()
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{artifact.source}: cannot load the model: {exc}") from exc
        if self.settings.compile == "auto" and artifact.compile_args:
            if find_compiler() is None:
                log.warning(
                    "no C compiler (gcc or clang) found: serving the sklearn estimator, which is slower"
                )
            else:
                self._start(f"compile-{sha[:12]}", lambda: self._compile(artifact))
        return SklearnPredictor(estimator)

    def _compile(self, artifact: ModelArtifact) -> None:
        """Compile in a child process, then upgrade the predictor of the same version in place.

        A child process (not a thread) so that stopping the service can stop the compiler with
        it: the child leads its own process group (the compiler's processes included), and works
        in a folder of its own that is removed whatever happens to it.
        """
        sha = artifact.card.model_sha256
        cache = self.settings.compiled_cache
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".compile-{sha[:12]}.", suffix=".tmp", dir=cache))
        command = [
            sys.executable,
            "-m",
            "serve.compile",
            *artifact.compile_args,
            "--cache",
            str(cache),
            "--expect-sha256",
            sha,
            "--work-dir",
            str(work),
            "--require",
        ]
        try:
            with self._compilers_lock:
                if self._stop.is_set():
                    return
                proc = subprocess.Popen(command, start_new_session=True, env=_child_env())
                self._compilers[proc.pid] = (proc, work)
            returncode = proc.wait()
        finally:
            self._end_compiler(sha, work)
        if returncode != 0:
            if not self._stop.is_set():
                log.warning(
                    "model %s not compiled (exit %s): serving the sklearn estimator", sha[:12], returncode
                )
            return
        compiled = load_compiled(cache, sha)
        if compiled is None:
            return
        with self._load_lock:
            current = self.current
            # Only if that version is still the one served: a newer model may have arrived meanwhile.
            if current is not None and current.fingerprint == artifact.fingerprint:
                self._swap(replace(current, predictor=compiled))
                log.info("version %s now served by the compiled predictor", current.version)

    def start(self) -> None:
        """First load and then the watch, in a background thread (the service is live meanwhile)."""
        self._start("model-watch", self._watch)

    def _start(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _watch(self) -> None:
        self._try_load()
        self.first_attempt.set()
        interval = self.settings.watch_interval_s
        while interval > 0 and not self._stop.wait(interval):
            try:
                current = self.current
                if current is not None and self.source.fingerprint() == current.fingerprint:
                    self.last_error = None
                    continue
            except Exception as exc:
                self._failed(exc)
                continue
            self._try_load()

    def _try_load(self) -> None:
        try:
            self.load()
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error(exc)
        message = str(exc)
        # A source that stays broken (no model yet) is reported once, not every few seconds.
        if message != self.last_error:
            still = f"; still serving {self.current.version}" if self.current else "; no model loaded"
            log.warning("model source %s: %s%s", self.source.description, message, still)
        self.last_error = message

    def _end_compiler(self, sha: str, work: Path) -> None:
        with self._compilers_lock:
            entry = next(((p, w) for p, w in self._compilers.values() if w == work), None)
            if entry is not None:
                del self._compilers[entry[0].pid]
        if entry is not None and entry[0].poll() is None:
            _kill_group(entry[0])
        shutil.rmtree(work, ignore_errors=True)
        remove_abandoned_lock(self.settings.compiled_cache, sha)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and stop any compiler, leaving nothing behind in the compile cache."""
        with self._compilers_lock:
            self._stop.set()
            compilers = list(self._compilers.values())
        for proc, _ in compilers:
            _kill_group(proc)
        for thread in self._threads:
            thread.join(timeout)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The compiler runs below the request path's priority (see serve.compile); it may use every core.
    env.pop("OMP_NUM_THREADS", None)
    env["AUTOOPS_COMPILE_NICENESS"] = str(COMPILE_NICENESS)
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The whole group: the compile process and the compiler processes it started. Nothing in it is
    # worth keeping once the service stops, so no grace period.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
