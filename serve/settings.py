"""Service configuration: ``AUTOOPS_*`` environment variables, validated once at startup.

Environment variables (not a config file) because the same image runs everywhere; see
serve/README.md for the table. pydantic-settings reads them: ``AUTOOPS_`` + a field's name, in any
case (``Settings()`` reads them too). A bad value stops the service with one clear message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.host import usable_cpus
from core.paths import MODELS_DIR

ENV_PREFIX = "AUTOOPS_"
# The models/ folder `dvc repro` writes; relative to the working directory.
DEFAULT_MODELS_DIR = MODELS_DIR
_OFF = {"", "0", "off", "none", "false", "no"}


class Settings(BaseSettings):
    # Defaults are trusted as written (pydantic-settings would validate them: workers' default, the
    # usable cores, would then refuse to start on a machine with more than 64).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=False
    )

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="models/ folder written by `dvc repro`")
    model_uri: str | None = Field(
        None,
        description="MLflow model URI (models:/<name>@<alias> or models:/<name>/<version>); "
        "overrides models_dir",
    )
    compile: Literal["auto", "off"] = Field(
        "auto",
        description="auto: serve the compiled trees (cached, else compiled in the background); "
        "off: serve the sklearn estimator",
    )
    compiled_cache: Path = Field(Path(".cache/serve/compiled"), description="compiled models, by sha256")
    watch_interval_s: float = Field(10.0, ge=0, description="how often to look for a new model (0: never)")
    admin_token: SecretStr | None = Field(None, description="bearer token for POST /admin/reload")
    max_batch: int = Field(1000, ge=1, le=100_000, description="most trips in one /predict_batch")
    prediction_log: Path | None = Field(
        Path("serve_logs/predictions.sqlite"), description="SQLite prediction log (off: no log)"
    )
    prediction_log_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://...) of a log shared by several replicas; "
        "replaces the SQLite file",
    )
    log_max_rows: int = Field(1_000_000, ge=100, description="oldest rows are deleted beyond this")
    log_flush_rows: int = Field(2000, ge=1, description="write as soon as this many rows wait")
    log_flush_interval_s: float = Field(1.0, gt=0, description="... or after this long")
    log_max_pending_rows: int = Field(200_000, ge=1, description="rows dropped (and counted) beyond this")
    startup_timeout_s: float = Field(60.0, ge=0, description="wait this long for the first model")
    # Hostile clients (serve/http_protocol.py, serve/request_body.py; serve/README.md, "Limits").
    max_header_bytes: int = Field(
        16_384, ge=1024, description="request line + headers beyond this: 431 (h11's default size)"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="the head must arrive within this: 408")
    body_timeout_s: float = Field(
        30.0, gt=0, description="the body must arrive within this after the head: 408"
    )
    max_connections: int = Field(
        1000, ge=2, description="open connections per worker; at the cap the longest-idle one is closed"
    )
    max_errors: int = Field(20, ge=1, description="validation errors returned in a 422 (the rest counted)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(default_factory=usable_cpus, ge=1, le=64)

    @field_validator("model_uri", "admin_token", "prediction_log", "prediction_log_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in _OFF else value

    @field_validator("prediction_log_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The AUTOOPS_* environment, with the ``overrides`` that are not None (options given) on top.

        Hand-written around pydantic-settings for the message: a bad value is a SettingsError of one
        line naming the variable (``AUTOOPS_MAX_BATCH: Input should be ...``), not pydantic's
        multi-line report naming the field.
        """
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise SettingsError(problems) from exc

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for processes this one starts (workers).

        Hand-written: pydantic-settings only reads. ``python -m serve`` hands its settings, options
        included, to uvicorn's worker processes this way.
        """
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[ENV_PREFIX + name.upper()] = "off" if value is None else str(value)
        return env


# Set by `python -m serve` for its workers: a worker whose startup fails writes why here, so the
# supervisor exits non-zero (uvicorn's own supervisor stops, but exits 0, when workers fail to start).
STARTUP_FAILURE_ENV = "AUTOOPS_STARTUP_FAILURE_FILE"


def report_startup_failure(exc: BaseException) -> None:
    """Record a failed worker start for the supervisor (no-op outside ``python -m serve``)."""
    if path := os.environ.get(STARTUP_FAILURE_ENV):
        with open(path, "a") as handle:  # each worker appends its line
            handle.write(f"{type(exc).__name__}: {exc}\n")


class SettingsError(ValueError):
    """An AUTOOPS_* variable is invalid."""
