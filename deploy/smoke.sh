#!/usr/bin/env bash
# Build the images and run the whole compose stack on this machine, check it end to end, and write
# benchmarks/results/deploy.json. Exits non-zero on the first failed check; prints timings as it goes.
#
#   deploy/smoke.sh            (root or the docker group; needs docker, docker compose or docker-compose)
#
# On a machine that cannot pull from Docker Hub it makes what it needs: a Debian bookworm base image
# (debootstrap + docker import; bookworm's Python is 3.11) for the semhash, proxy and PostgreSQL images,
# PostgreSQL from Debian's package (-f docker-compose.debian.yml), and, when build containers cannot
# reach PyPI, wheels fetched on the host into deploy/wheels/ (PIP_INSTALL_OPTIONS=--no-index).
#
# Environment (all optional):
#   SMOKE_CACHE          keeps the base root filesystem and the wheels between runs (default .smoke/)
#   SMOKE_DATA_DIR       folder holding 20news/train.jsonl.gz (default ../shared/data)
#   SMOKE_TRAIN_MINUTES  time budget of the quick text training (default 8)
#   SMOKE_SLICE          documents bulk-indexed (default 2000)
#   SMOKE_PORT           host port of the proxy (default 18000)
#   SMOKE_HEAVY          prefix for the CPU-heavy steps (e.g. /work/bin/heavy), default none
#   SMOKE_RETRAIN=0      keep a text bundle already in the models volume (a re-run skips training)
#   SMOKE_TEXT_BUNDLE    a trained text bundle folder copied into the models volume instead of training
#                        (the training image is still built and must import torch)
#   SMOKE_KEEP=1         leave the stack and its volumes up at the end
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=${SMOKE_CACHE:-$ROOT/.smoke}
DATA=$(cd "${SMOKE_DATA_DIR:-$ROOT/../shared/data}" 2>/dev/null && pwd) || DATA=${SMOKE_DATA_DIR:-$ROOT/../shared/data}
TRAIN_MINUTES=${SMOKE_TRAIN_MINUTES:-8}
SLICE=${SMOKE_SLICE:-2000}
PORT=${SMOKE_PORT:-18000}
HEAVY=${SMOKE_HEAVY:-}
PROJECT=semhash-smoke
COLLECTION=smoke
BASE_URL=http://127.0.0.1:$PORT
RESULTS=benchmarks/results/deploy.json
mkdir -p "$CACHE" benchmarks/results

now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
T0=$(now)
step() { printf '\n==> [%7s s] %s\n' "$(since "$T0")" "$*" >&2; }
die() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }
true_if() { python3 -c "import sys; sys.exit(0 if $1 else 1)"; }
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
http() { python3 deploy/smoke_http.py "$@"; }

[[ -f $DATA/20news/train.jsonl.gz ]] || die "no 20 Newsgroups at $DATA/20news/train.jsonl.gz (set SMOKE_DATA_DIR)"
docker info >/dev/null 2>&1 || die "no Docker engine (start dockerd)"
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); COMPOSE_VERSION=$(docker compose version --short)
elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); COMPOSE_VERSION=$(docker-compose version --short)
else die "neither docker compose nor docker-compose"; fi
ENGINE="Docker $(docker version -f '{{.Server.Version}}'), Compose $COMPOSE_VERSION ($(basename "${COMPOSE[*]}"))"
step "engine: $ENGINE"

# --- base images ---------------------------------------------------------------------------------------
pullable() { docker image inspect "$1" >/dev/null 2>&1 || timeout 300 docker pull -q "$1" >/dev/null 2>&1; }
PYTHON_IMAGE=python:3.11-slim DEBIAN_IMAGE=debian:bookworm-slim
if ! pullable "$PYTHON_IMAGE" || ! pullable "$DEBIAN_IMAGE"; then
    step "Docker Hub out of reach: a Debian bookworm base from debootstrap"
    if ! docker image inspect semhash-bookworm:base >/dev/null 2>&1; then
        if [[ ! -s $CACHE/bookworm-rootfs.tar ]]; then
            command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
            rootfs=$(mktemp -d)
            mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
            debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
                "${mirror:-http://deb.debian.org/debian}" >"$CACHE/debootstrap.log" 2>&1 \
                || die "debootstrap failed: $CACHE/debootstrap.log"
            # Docs, manuals, translations and caches: ~50 MB nothing in the images reads.
            rm -rf "$rootfs"/usr/share/{doc,man,locale,info}/* "$rootfs"/var/cache/apt/archives/*.deb \
                "$rootfs"/var/lib/apt/lists/*
            tar -C "$rootfs" -cf "$CACHE/bookworm-rootfs.tar" .
            rm -rf "$rootfs"
        fi
        docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' "$CACHE/bookworm-rootfs.tar" semhash-bookworm:base >/dev/null
    fi
    PYTHON_IMAGE=semhash-bookworm:base DEBIAN_IMAGE=semhash-bookworm:base
fi
COMPOSE_FILES=(-f docker-compose.yml)
if ! pullable postgres:17; then
    step "postgres:17 out of reach: PostgreSQL from Debian's package (docker-compose.debian.yml)"
    COMPOSE_FILES+=(-f docker-compose.debian.yml)
fi

# --- wheels for builds that cannot reach PyPI ------------------------------------------------------------
PIP_INSTALL_OPTIONS=
if ! docker run --rm "$PYTHON_IMAGE" python3 -c \
        "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=20)" >/dev/null 2>&1; then
    step "build containers cannot reach PyPI: wheels fetched on the host into deploy/wheels"
    mkdir -p "$CACHE/wheels"
    python3 deploy/requirements.py training > "$CACHE/requirements.txt"
    python3.11 -m pip download -q --only-binary=:all: -d "$CACHE/wheels" -r "$CACHE/requirements.txt" \
        "setuptools>=69" wheel "torch==$(sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' pyproject.toml)" \
        2> >(grep -v "is ignored: it is neither" >&2) || die "pip download failed (needs python3.11 with pip and a reachable index)"
    ls "$CACHE"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
        || die "no CPU-only torch wheel among the downloads: put one in $CACHE/wheels"
    rm -f deploy/wheels/*.whl
    cp -l "$CACHE"/wheels/*.whl deploy/wheels/ 2>/dev/null || cp "$CACHE"/wheels/*.whl deploy/wheels/
    PIP_INSTALL_OPTIONS=--no-index
fi

# --- the compose project ------------------------------------------------------------------------------
ENV_FILE=$CACHE/smoke.env
API_KEY=$(python3 -c "import secrets; print(secrets.token_urlsafe(24))")
cat > "$ENV_FILE" <<EOF
POSTGRES_USER=semhash
POSTGRES_PASSWORD=$(python3 -c "import secrets; print(secrets.token_hex(16))")
POSTGRES_DB=semhash
SEMHASH_API_KEY=$API_KEY
API_BIND=127.0.0.1
API_PORT=$PORT
SEMHASH_DATA_DIR=$CACHE/data
SEMHASH_IMAGE_TAG=smoke
PYTHON_IMAGE=$PYTHON_IMAGE
DEBIAN_IMAGE=$DEBIAN_IMAGE
PIP_INSTALL_OPTIONS=$PIP_INSTALL_OPTIONS
EOF
export SEMHASH_API_KEY=$API_KEY
compose() { "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" "${COMPOSE_FILES[@]}" "$@"; }
api_containers() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=api" | sort; }
container_url() { echo "http://$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"):8000"; }
wait_healthy() {  # wait_healthy SECONDS CONTAINER...: every container's HEALTHCHECK reports healthy
    local deadline=$(( $(date +%s) + $1 )); shift
    for c in "$@"; do
        until [[ $(docker inspect -f '{{.State.Health.Status}}' "$c") == healthy ]]; do
            (( $(date +%s) < deadline )) || die "container $c not healthy: $(docker inspect -f '{{json .State.Health}}' "$c")"
            sleep 1
        done
    done
}
# On success everything goes (down -v); after a failure the volumes stay for a look (and SMOKE_RETRAIN=0).
cleanup() {
    local status=$?
    [[ ${SMOKE_KEEP:-0} == 1 ]] && return
    if [[ $status == 0 ]]; then compose --profile train --profile index down -v --remove-orphans >/dev/null 2>&1 || true
    else compose --profile train --profile index down --remove-orphans >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Data the jobs see as /data: the 20news training split and a slice of it for the bulk index.
mkdir -p "$CACHE/data/20news"
rm -f "$CACHE/data/20news/train.jsonl.gz"
cp -l "$DATA/20news/train.jsonl.gz" "$CACHE/data/20news/" 2>/dev/null || cp "$DATA/20news/train.jsonl.gz" "$CACHE/data/20news/"
python3 - "$DATA/20news/train.jsonl.gz" "$CACHE/data/slice.jsonl" "$SLICE" <<'EOF'
import gzip, itertools, sys
with gzip.open(sys.argv[1], "rt") as src, open(sys.argv[2], "w") as dst:
    dst.writelines(itertools.islice(src, int(sys.argv[3])))
EOF

step "clean slate: down -v (SMOKE_RETRAIN=0 keeps the models volume)"
compose --profile train --profile index down --remove-orphans >/dev/null 2>&1 || true
for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"); do
    [[ ${SMOKE_RETRAIN:-1} == 0 && $volume == "${PROJECT}_models" ]] || docker volume rm "$volume" >/dev/null
done

step "build (serving, training, proxy, postgres)"
t=$(now)
compose --profile train build >"$CACHE/build.log" 2>&1 || { tail -30 "$CACHE/build.log"; die "build failed: $CACHE/build.log"; }
BUILD_SECONDS=$(since "$t")
mb() { python3 -c "print(round($(docker image inspect -f '{{.Size}}' "$1") / 1e6, 1))"; }
SERVING_MB=$(mb semhash:smoke) TRAINING_MB=$(mb semhash-train:smoke)
step "built in $BUILD_SECONDS s: serving $SERVING_MB MB, training $TRAINING_MB MB"
true_if "$SERVING_MB < 600" || die "serving image is $SERVING_MB MB (target < 600)"
docker run --rm --entrypoint python semhash:smoke -c "import importlib.util as u; assert u.find_spec('torch') is None" \
    || die "the serving image has torch"
docker run --rm --entrypoint sh semhash:smoke -c '! command -v gcc && ! command -v cc && ! command -v pip' >/dev/null \
    || die "the serving image has a compiler or pip"

step "train the quick text bundle into the models volume (<= $TRAIN_MINUTES min)"
t=$(now)
TEXT_BUNDLE_SOURCE="trained in the training image"
if [[ -n ${SMOKE_TEXT_BUNDLE:-} ]]; then
    [[ -s $SMOKE_TEXT_BUNDLE/weights.safetensors ]] || die "no text bundle at SMOKE_TEXT_BUNDLE=$SMOKE_TEXT_BUNDLE"
    TEXT_BUNDLE_SOURCE="copied from $SMOKE_TEXT_BUNDLE (SMOKE_TEXT_BUNDLE), not trained in this run"
    step "SMOKE_TEXT_BUNDLE: copying $SMOKE_TEXT_BUNDLE into the models volume instead of training"
    "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" "${COMPOSE_FILES[@]}" --profile train run --rm -u root \
        -v "$(cd "$SMOKE_TEXT_BUNDLE" && pwd):/bundle:ro" --entrypoint sh train \
        -c 'rm -rf /models/text && cp -r /bundle /models/text && chown -R semhash:semhash /models/text' \
        >"$CACHE/train.log" 2>&1 || { tail -20 "$CACHE/train.log"; die "copying the text bundle failed"; }
    docker run --rm --entrypoint python semhash-train:smoke -c "import torch; print('torch', torch.__version__)" \
        || die "the training image cannot import torch"
elif [[ ${SMOKE_RETRAIN:-1} == 0 ]] && docker run --rm -v "${PROJECT}_models:/models" --entrypoint test semhash:smoke \
        -s /models/text/weights.safetensors; then
    TEXT_BUNDLE_SOURCE="kept in the models volume from an earlier run (SMOKE_RETRAIN=0)"
    step "SMOKE_RETRAIN=0: keeping the text bundle already in the models volume"
else
$HEAVY "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" "${COMPOSE_FILES[@]}" --profile train run --rm \
    -e OMP_NUM_THREADS=1 -e MKL_NUM_THREADS=1 -e OPENBLAS_NUM_THREADS=1 train \
    text --corpus 20news --out /models/text --profile quick --threads 1 --max-minutes "$TRAIN_MINUTES" --no-progress \
    >"$CACHE/train.log" 2>&1 || { tail -20 "$CACHE/train.log"; die "training failed"; }
fi
TRAIN_SECONDS=$(since "$t")
step "trained in $TRAIN_SECONDS s"

# --- from nothing to the first search -----------------------------------------------------------------
step "up: postgres -> migrate -> 2 api replicas -> proxy; bulk-index $SLICE documents; first search"
t=$(now)
compose up -d --scale api=2 >"$CACHE/up.log" 2>&1 || { cat "$CACHE/up.log"; die "up failed"; }
http wait "$BASE_URL/readyz" 300 >/dev/null || die "the proxy never answered /readyz"
READY_SECONDS=$(since "$t")
$HEAVY "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" "${COMPOSE_FILES[@]}" --profile index run --rm indexer \
    --collection "$COLLECTION" --input /data/slice.jsonl --workers 0 >"$CACHE/index.log" 2>&1 \
    || { tail -20 "$CACHE/index.log"; die "bulk index failed"; }
until http search "$BASE_URL" "$COLLECTION" "the shuttle launch was delayed by the weather" >"$CACHE/first_search.json"; do
    true_if "$(since "$t") < 120" || die "no search hits through the proxy: $(cat "$CACHE/first_search.json")"
    sleep 0.2
done
FIRST_SEARCH_SECONDS=$(since "$t")
step "ready after $READY_SECONDS s; indexed and first search answered after $FIRST_SEARCH_SECONDS s"

mapfile -t APIS < <(api_containers)
(( ${#APIS[@]} == 2 )) || die "expected 2 api replicas, found ${#APIS[@]}"
PROXY=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=proxy")
wait_healthy 90 "${APIS[@]}" "$PROXY"
HEALTHY=True
for c in "${APIS[@]}"; do
    uid=$(docker exec "$c" awk '/^Uid:/ {print $2}' /proc/1/status)
    [[ $uid != 0 ]] || die "api container $c runs as root"
done
step "HEALTHCHECKs healthy; api processes run as uid $uid"

LOAD_AT_MEASUREMENTS=$(cut -d' ' -f1-3 /proc/loadavg)
step "replicas: a write through one is found through the other (load average $LOAD_AT_MEASUREMENTS)"
VISIBILITY=$(http visibility "$(container_url "${APIS[0]}")" "$(container_url "${APIS[1]}")" "$COLLECTION" 10) \
    || die "replica visibility: $VISIBILITY"
echo "$VISIBILITY"

step "throughput through the proxy: 1 replica, then 2"
compose up -d --scale api=1 --no-recreate >/dev/null 2>&1
sleep 6  # nginx re-resolves `api` every 5 s
LOAD1=$(http load "$BASE_URL" "$COLLECTION" 15 8) || die "load with 1 replica: $LOAD1"
compose up -d --scale api=2 --no-recreate >/dev/null 2>&1
mapfile -t APIS < <(api_containers)
wait_healthy 120 "${APIS[@]}"
sleep 6
LOAD2=$(http load "$BASE_URL" "$COLLECTION" 15 8) || die "load with 2 replicas: $LOAD2"
echo "1 replica: $LOAD1"; echo "2 replicas: $LOAD2"

step "drain: docker stop a replica while batch writes to it are in flight, searches still run through the proxy"
http load "$BASE_URL" "$COLLECTION" 8 4 >"$CACHE/drain_load.json" &
load_pid=$!
DRAIN=$(http drain "$(container_url "${APIS[0]}")" "$COLLECTION" 4 400 "${APIS[0]}") || die "drain: $DRAIN"
wait "$load_pid" || die "searches through the proxy failed while a replica stopped: $(cat "$CACHE/drain_load.json")"
echo "$DRAIN"; cat "$CACHE/drain_load.json"
compose up -d --scale api=2 >/dev/null 2>&1

step "down / up keeps every document"
http wait "$BASE_URL/readyz" 120 >/dev/null
BEFORE=$(http count "$BASE_URL" "$COLLECTION" | json '["documents"]')
compose down >/dev/null 2>&1
compose up -d --scale api=2 >/dev/null 2>&1
http wait "$BASE_URL/readyz" 300 >/dev/null || die "not ready after down/up"
AFTER=$(http count "$BASE_URL" "$COLLECTION" | json '["documents"]')
[[ $BEFORE == "$AFTER" ]] || die "documents before down: $BEFORE, after up: $AFTER"
http search "$BASE_URL" "$COLLECTION" "the shuttle launch was delayed by the weather" >/dev/null \
    || die "no search hits after down/up"
step "documents before down $BEFORE, after up $AFTER"

export VISIBILITY LOAD1 LOAD2 DRAIN DRAIN_LOAD="$(cat "$CACHE/drain_load.json")"
python3 - "$RESULTS" <<EOF
import json, os, sys
visibility, load1, load2, drain, drain_load = (
    json.loads(os.environ[name]) for name in ("VISIBILITY", "LOAD1", "LOAD2", "DRAIN", "DRAIN_LOAD")
)
result = {
    "serving_image_mb": $SERVING_MB,
    "training_image_mb": $TRAINING_MB,
    "stack_to_first_search_seconds": $FIRST_SEARCH_SECONDS,
    "replica_visibility_seconds": visibility["max_seconds"],
    "documents_before_restart": $BEFORE,
    "documents_after_restart": $AFTER,
    "healthy": $HEALTHY,
    "engine": "$ENGINE",
    "notes": {
        "stack_to_first_search_seconds": "images built, text bundle trained: from 'up -d --scale api=2' on an "
            "empty database through migrate, replicas healthy, bulk index of $SLICE documents, to the first "
            "search with hits through the proxy",
        "stack_ready_seconds": $READY_SECONDS,
        "replica_visibility": visibility,
        "throughput_1_replica": load1,
        "throughput_2_replicas": load2,
        "drain": drain,
        "searches_through_proxy_while_a_replica_stopped": drain_load,
        "build_seconds": $BUILD_SECONDS,
        "train_seconds": $TRAIN_SECONDS,
        "train_max_minutes": $TRAIN_MINUTES,
        "text_bundle": "$TEXT_BUNDLE_SOURCE",
        "base_images": {"python": "$PYTHON_IMAGE", "debian": "$DEBIAN_IMAGE"},
        "compose_files": "${COMPOSE_FILES[*]}",
        "pip_install_options": "$PIP_INSTALL_OPTIONS",
        "machine_cpus": $(nproc),
        "load_average_at_measurements": "$LOAD_AT_MEASUREMENTS",
    },
}
json.dump(result, open(sys.argv[1], "w"), indent=2)
open(sys.argv[1], "a").write("\n")
EOF
step "all checks passed; wrote $RESULTS"
cat "$RESULTS"
