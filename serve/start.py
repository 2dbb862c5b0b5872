"""``python -m serve`` and ``autoops serve`` (one function, :func:`run`): the service on uvicorn,
one worker process per core.

Options override the matching ``AUTOOPS_*`` environment variables (serve/README.md lists them all).
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from serve.metrics import MULTIPROC_ENV
from serve.settings import STARTUP_FAILURE_ENV, Settings, SettingsError

# uvicorn's own exit status for a failed start (one worker); the same for several.
STARTUP_FAILURE_EXIT = 3


def run(
    host: Annotated[str | None, typer.Option(help="bind address (AUTOOPS_HOST, default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (AUTOOPS_PORT, default 8000)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="worker processes (AUTOOPS_WORKERS, default: cores)")
    ] = None,
    models_dir: Annotated[Path | None, typer.Option(help="models/ folder (AUTOOPS_MODELS_DIR)")] = None,
    model_uri: Annotated[
        str | None, typer.Option(help="MLflow model URI instead, e.g. models:/green-taxi-duration@champion")
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="AUTOOPS_LOG_LEVEL")] = "info",
) -> None:
    """Serve the model on uvicorn; options override the matching AUTOOPS_* variables."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(
            host=host,
            port=port,
            workers=workers,
            models_dir=models_dir,
            model_uri=model_uri,
        )
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # Workers are new processes: they read the settings, and these, from the environment.
    os.environ.update(settings.to_env())
    # One OpenMP thread per worker: the workers already use every core, more threads only contend.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Quiet, offline MLflow when a model URI is used.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Per start: the workers' summed metrics and their startup-failure reports; removed on exit
    # (SIGTERM and SIGINT included, below), and by the next start if this process was killed.
    _remove_dead_run_dirs()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
    failure_file = run_dir / "startup-failure"
    os.environ[STARTUP_FAILURE_ENV] = str(failure_file)
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Metrics from every worker are summed through files here; a fresh folder per start, so no
        # counts survive from a previous run.
        (run_dir / "metrics").mkdir()
        os.environ[MULTIPROC_ENV] = str(run_dir / "metrics")
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # uvicorn sets up logging in each worker from this; without it our loggers would go unheard there.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("serve", "core"):
        log_config["loggers"][name] = {
            "handlers": ["default"],
            "level": log_level.upper(),
            "propagate": False,
        }
    failure = ""
    # uvicorn, after a graceful shutdown on SIGTERM, re-raises the signal to the handler it found:
    # Python's default would end the process before the clean-up below (one worker left its run
    # folder behind). This one exits through it, with the usual 128 + 15.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _allow_open_files(settings.max_connections)
    try:
        uvicorn.run(
            "serve.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=log_level.lower(),
            log_config=log_config,
            # Per-request access lines would cost more than a compiled prediction; /metrics counts them.
            access_log=False,
            # Keep-alive clients stay on one worker; closing idle ones after 5 s spreads load again.
            timeout_keep_alive=5,
            # httptools with a head size limit, deadlines for head and body, and a connection cap
            # (serve/http_protocol.py says why uvicorn's own options do not cover them).
            http="serve.http_protocol:GuardedHttpToolsProtocol",
        )
    finally:
        # With one worker uvicorn exits 3 itself on a failed start; with several its supervisor
        # stops and returns normally, so the workers' reports decide the exit status.
        failure = failure_file.read_text().strip() if failure_file.exists() else ""
        shutil.rmtree(run_dir, ignore_errors=True)
        if failure:
            print(f"error: the service did not start: {failure.splitlines()[0]}", file=sys.stderr)
    if failure:
        sys.exit(STARTUP_FAILURE_EXIT)


RUN_DIR_PREFIX = "autoops-serve-"


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _remove_dead_run_dirs() -> None:
    """Run folders of starts whose process is gone (killed with SIGKILL, say): nothing else would."""
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*-*"):
        pid = folder.name.removeprefix(RUN_DIR_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # another user's live process
            pass


def _allow_open_files(max_connections: int) -> None:
    """Raise this process's (and so its workers') open-file limit to fit the connection cap, as far
    as the hard limit allows: a worker at the cap must still open its model and log files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            logging.getLogger("serve").warning(
                "open-file limit %d is below AUTOOPS_MAX_CONNECTIONS + 256 (%d): lower the cap",
                new_soft,
                wanted,
            )
