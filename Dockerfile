# syntax=docker/dockerfile:1
# The serving image: `python -m serve` with the model from models/ (what `dvc repro` produced) baked
# in and compiled to native code at build time, so the container needs no MLflow server and no
# compiler. See serve/README.md.
#
#   docker build -t auto-ops-serve .          (BASE_IMAGE must provide Python 3.11 with venv)
#   docker run -p 8000:8000 auto-ops-serve
#
# Few instructions on purpose: storage drivers without layer sharing (buildah's vfs) keep a full
# copy of the file system per layer.

ARG BASE_IMAGE=python:3.11-slim

# --- build: dependencies into a venv, the model compiled with gcc --------------------------------
FROM ${BASE_IMAGE} AS build

# gcc compiles the model's trees (tl2cgen); it stays in this stage. Versions come from the base
# image's release (pinning Debian package versions would break on every point release).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/autoops/venv

COPY constraints.txt serve/requirements.txt /tmp/deps/
# Behind a TLS-intercepting proxy pip needs its CA bundle: pass it as the optional build secret
# `pip_ca` (docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt). The cache
# mount keeps downloaded wheels between builds without putting them in a layer.
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
       /opt/autoops/venv/bin/pip install -c /tmp/deps/constraints.txt -r /tmp/deps/requirements.txt

# The service, the pipeline modules it imports and the model: .dockerignore lets in nothing else.
COPY . /opt/autoops/app
# Compile once per model version, here, where gcc is; the library is keyed by the model's sha256.
# --require: an image that would silently serve the slow fallback is a failed build.
# Byte-compiled here because the runtime user cannot write next to the code: without .pyc files
# every start would recompile the service's modules (pip already compiled the packages).
RUN PYTHONPATH=/opt/autoops/app OMP_NUM_THREADS=1 /opt/autoops/venv/bin/python -m serve.compile \
        --models-dir /opt/autoops/app/models --cache /opt/autoops/app/compiled --require \
    && /opt/autoops/venv/bin/python -m compileall -q /opt/autoops/app/core /opt/autoops/app/serve

# --- runtime: no compiler, no build tools, an unprivileged user -------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="auto-ops-serve" \
      org.opencontainers.image.description="NYC Green Taxi trip duration prediction service (Auto-Ops)"

RUN groupadd --system --gid 10001 autoops \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/autoops/app --no-create-home autoops \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=build /opt/autoops /opt/autoops

ENV PATH=/opt/autoops/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    AUTOOPS_HOST=0.0.0.0 \
    AUTOOPS_PORT=8000 \
    AUTOOPS_MODELS_DIR=/opt/autoops/app/models \
    AUTOOPS_COMPILED_CACHE=/opt/autoops/app/compiled \
    AUTOOPS_PREDICTION_LOG=/data/predictions.sqlite

WORKDIR /opt/autoops/app
# Numeric, so runtimes that check for non-root (runAsNonRoot) can tell without an /etc/passwd.
USER 10001:10001
EXPOSE 8000
# The prediction log; mount a volume here to keep it.
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "serve.healthcheck"]
CMD ["python", "-m", "serve"]
