#
# semhash images, two targets from one file (README "Deployment"):
#
#   serving  (the default, last stage): API, `semhash migrate` and the bulk indexer. Inference is numpy,
#            so it carries no torch, no compiler and no pip cache; non-root, HEALTHCHECK on /healthz.
#   training: the same plus CPU-only PyTorch, for `semhash train` (compose's `train` job).
#
#   docker build -t semhash .                                # serving
#   docker build -t semhash-train --target training .        # training
#   docker build --build-arg MODELS_DIR=artifacts -t semhash .   # bake ./artifacts/{text,...} into /models
#
# Works with BuildKit (Docker 23+) and with the legacy builder (no RUN --mount, no BuildKit-only syntax;
# the legacy builder also builds the training stages on the way to `serving`: slower, same image).
#
# Build arguments:
#   PYTHON_IMAGE         base image with Python 3.11 as `python3` (default the official python:3.11-slim;
#                        deploy/smoke.sh passes a Debian bookworm image made with debootstrap)
#   PIP_INSTALL_OPTIONS  extra pip options; `--no-index` installs only the wheels put in deploy/wheels/
#                        (a machine whose builds cannot reach PyPI: see deploy/smoke.sh)
#   TORCH_INDEX_URL      where the CPU-only torch wheel comes from (training target only)
#   MODELS_DIR           folder of the build context copied to /models (default: deploy/models, no bundle)

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------
# base: what every image shares: the service user and the environment. Configuration is SEMHASH_* only.
FROM ${PYTHON_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEMHASH_MODELS_DIR=/models \
    NUMBA_CACHE_DIR=/opt/numba-cache
RUN groupadd --system --gid 10001 semhash \
    && useradd --system --uid 10001 --gid semhash --create-home --home-dir /home/semhash semhash

# ---------------------------------------------------------------------------------------------------------
# build: a virtual environment with the project and what serving needs (no torch, no matplotlib).
FROM base AS build
ARG PIP_INSTALL_OPTIONS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels
RUN python3 -m venv /opt/venv
WORKDIR /src
# Wheels fed from the host (deploy/wheels holds only a README unless a script puts wheels there).
COPY deploy/wheels/ /wheels/

# Third-party dependencies in their own layer, keyed on pyproject.toml only, so code edits reuse it.
# --no-compile: the serving stage compiles only the modules the service imports (a smaller image).
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py serving > /tmp/requirements.txt \
    && pip install --no-cache-dir --no-compile $PIP_INSTALL_OPTIONS -r /tmp/requirements.txt

# The project itself (a regular, non-editable install: the runtime needs nothing but /opt/venv).
# --no-deps: its metadata names torch, which the serving image deliberately lacks.
COPY README.md semhash_cli.py ./
COPY models/ models/
COPY bundles/ bundles/
COPY training/ training/
COPY service/ service/
COPY migrations/ migrations/
RUN pip install --no-cache-dir --no-compile $PIP_INSTALL_OPTIONS --no-deps .
# Compile every index kernel (load, write, lookup, merge) and the sparse coder's one-row product now, into
# a cache the runtime user can read: the server's start-up warm-up and the sparse bundle's load then read
# them in milliseconds instead of compiling for seconds.
# From /, so that Python imports the installed package (numba keys its cache by the source file's path),
# not the copy in /src.
RUN cd / && python -c "from service.index_warmup import warm_up; warm_up()" \
    && python -c "from bundles.sparse import compile_kernels; compile_kernels()"

# ---------------------------------------------------------------------------------------------------------
# serving-venv: the build's venv stripped, without pip, setuptools and the libraries' test suites, with bytecode
# for exactly the modules the API, migrate and the indexer import (byte-compiling everything costs
# ~150 MB, mostly for code serving never runs). Imported from /, so the installed project is what gets
# compiled, not its copy in /src.
FROM build AS serving-venv
# binutils only here, for `strip`: the wheels' shared libraries keep symbol tables nothing reads (~60 MB,
# most in llvmlite; strip_libs.py keeps any library that would no longer load). Only /opt/venv goes on.
COPY deploy/strip_libs.py ./
RUN apt-get update && apt-get install --yes --no-install-recommends binutils \
    && python strip_libs.py /opt/venv \
    && python -m pip uninstall --yes --quiet pip setuptools wheel \
    && find /opt/venv/lib/python3.11/site-packages -depth -type d -name tests -exec rm -rf {} + \
    && cd / && PYTHONDONTWRITEBYTECODE= python -c "import semhash_cli, service.cli, service.main, service.bulk, service.upsert, service.migrate, uvicorn.loops.auto, uvicorn.protocols.http.auto, uvicorn.lifespan.on; service.main.create_app()" \
    && PYTHONDONTWRITEBYTECODE= python -m compileall -q /opt/venv/lib/python3.11/site-packages/migrations

# ---------------------------------------------------------------------------------------------------------
# training-build: the serving environment plus matplotlib and CPU-only torch (the default Linux wheel on
# PyPI pulls GBs of CUDA libraries). The project pins torch==2.13.0, which 2.13.0+cpu satisfies.
FROM build AS training-build
ARG PIP_INSTALL_OPTIONS=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python requirements.py training > /tmp/requirements.txt \
    && pip install --no-cache-dir $PIP_INSTALL_OPTIONS -r /tmp/requirements.txt \
    && pip install --no-cache-dir $PIP_INSTALL_OPTIONS --index-url "$TORCH_INDEX_URL" torch==2.13.0 \
    && python -c "import torch, matplotlib; print('torch', torch.__version__)"

# ---------------------------------------------------------------------------------------------------------
# training: `semhash train ...` into the models volume (compose's `train` job).
FROM base AS training
ARG MODELS_DIR=deploy/models
COPY --from=training-build /opt/venv /opt/venv
COPY --from=build --chown=semhash:semhash /opt/numba-cache /opt/numba-cache
COPY --chown=semhash:semhash ${MODELS_DIR}/ /models/
USER semhash
WORKDIR /home/semhash
CMD ["semhash", "train", "--help"]

# ---------------------------------------------------------------------------------------------------------
# serving (default): slim base + the venv; no torch, no compiler, no pip, no source tree.
FROM base AS serving
ARG MODELS_DIR=deploy/models
COPY --from=serving-venv /opt/venv /opt/venv
# Writable by the service user: numba checks that it can write its cache folder before reading it.
COPY --from=build --chown=semhash:semhash /opt/numba-cache /opt/numba-cache
# Owned by the service user so that a fresh named volume mounted here is writable by `semhash train`.
COPY --chown=semhash:semhash ${MODELS_DIR}/ /models/

USER semhash
WORKDIR /home/semhash
EXPOSE 8000

# Liveness only (the process answers); /readyz says whether models and database are ready.
# The slim image has no curl: python's urllib exits non-zero on a refused connection or an HTTP error.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Exec form: the server is PID 1 and gets SIGTERM itself, so uvicorn finishes in-flight requests on stop.
CMD ["semhash", "serve", "--host", "0.0.0.0", "--port", "8000"]
