# syntax=docker/dockerfile:1
#
# semhash API / jobs image: CPU-only PyTorch on python:3.11-slim, non-root, configured only by SEMHASH_*
# environment variables (see README "Configuration").
#
#   docker build -t semhash .                          # models come from a volume mounted at /models
#   docker build -t semhash --build-arg MODELS=baked .  # bake ./artifacts (text/, digits/, images/) in
#
# The service runs the encoders with PyTorch, so the image carries torch; the CPU build keeps it to a few
# hundred MB instead of the GBs of CUDA libraries the default Linux wheel pulls in.

ARG PYTHON_IMAGE=python:3.11-slim
# "volume" (default): /models starts empty and is expected to be mounted. "baked": copy ./artifacts in.
ARG MODELS=volume

# ---------------------------------------------------------------------------------------------------------
# build: a virtual environment with the project and its dependencies, then copied whole into the runtime.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# CPU-only torch first: the project pins torch==2.13.0, which the installed 2.13.0+cpu satisfies, so the
# project install below never reaches for the CUDA build on PyPI.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Third-party dependencies in their own layer, keyed on pyproject.toml only, so code edits reuse it.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The project itself (a regular, non-editable install: the runtime needs nothing but /opt/venv).
COPY README.md semhash_cli.py ./
COPY models/ models/
COPY training/ training/
COPY service/ service/
COPY migrations/ migrations/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps .
# Compile the numba kernels (the Hamming-ball lookup) now, into a cache the runtime user can read, so
# neither the server nor a job compiles them at start-up.
ENV NUMBA_CACHE_DIR=/opt/numba-cache
RUN python -c "import service.index"

# ---------------------------------------------------------------------------------------------------------
# Model bundles for /models: an empty folder, or ./artifacts baked in (--build-arg MODELS=baked).
# BuildKit (the default builder since Docker 23) builds only the stage MODELS names, so a plain build
# does not need ./artifacts to exist.
FROM ${PYTHON_IMAGE} AS models-volume
RUN mkdir /models

FROM scratch AS models-baked
COPY artifacts/ /models/

FROM models-${MODELS} AS models

# ---------------------------------------------------------------------------------------------------------
# runtime: slim base + the venv; no compiler, no pip cache, no source tree.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEMHASH_MODELS_DIR=/models \
    NUMBA_CACHE_DIR=/opt/numba-cache

RUN groupadd --system --gid 10001 semhash \
    && useradd --system --uid 10001 --gid semhash --create-home --home-dir /home/semhash semhash
COPY --from=build /opt/venv /opt/venv
# Writable by the service user: numba checks that it can write its cache folder before reading it.
COPY --from=build --chown=semhash:semhash /opt/numba-cache /opt/numba-cache
# Owned by the service user so that a fresh named volume mounted here is writable by `semhash train`.
COPY --from=models --chown=semhash:semhash /models /models

USER semhash
WORKDIR /home/semhash
EXPOSE 8000

# Liveness only (the process answers); /readyz says whether models and database are ready.
# The slim image has no curl: python's urllib exits non-zero on a refused connection or an HTTP error.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Exec form: the server is PID 1 and gets SIGTERM itself, so uvicorn finishes in-flight requests on stop.
CMD ["semhash", "serve", "--host", "0.0.0.0", "--port", "8000"]
