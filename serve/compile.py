"""``python -m serve.compile``: compile the model the service would serve, ahead of time.

The service compiles a new model version itself (in the background, serving sklearn meanwhile);
running this first - after ``dvc repro``, or in the image build - means it starts compiled.
The library lands in AUTOOPS_COMPILED_CACHE (or --cache) under the model's sha256.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from serve.model_store import ModelLoadError, make_source
from serve.predictor import compile_model
from serve.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="models/ folder (AUTOOPS_MODELS_DIR, default models)")
    parser.add_argument("--model-uri", help="an MLflow model URI instead (AUTOOPS_MODEL_URI)")
    parser.add_argument("--cache", type=Path, help="where compiled models go (AUTOOPS_COMPILED_CACHE)")
    parser.add_argument("--require", action="store_true", help="exit 1 if the model could not be compiled")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[compile] %(message)s")
    try:
        settings = Settings.from_env(
            models_dir=args.models_dir, model_uri=args.model_uri, compiled_cache=args.cache
        )
        artifact = make_source(settings).resolve()
        estimator = artifact.load_estimator()
    except (SettingsError, ModelLoadError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    sha = str(artifact.card["model_sha256"])
    compiled = compile_model(estimator, sha, settings.compiled_cache)
    if compiled is None:
        message = f"model {sha[:12]} not compiled: the service will serve the sklearn estimator"
        if args.require:
            sys.exit(f"error: {message}")
        print(message)
        return
    print(f"model {sha[:12]} compiled: {compiled.lib_dir}")


if __name__ == "__main__":
    main()
