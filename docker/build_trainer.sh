#!/usr/bin/env bash
# Build the trainer image (docker/trainer.Dockerfile) from this checkout.
#
#   docker/build_trainer.sh --from-venv .venv
#                     CI recipe (quick): FROM docker/build_base.sh --venv (the host venv's
#                     packages), nothing downloaded or unpacked again
#   docker/build_trainer.sh
#                     offline: FROM the local debootstrap base, every wheel resolved by this
#                     host's pip and served to the build over 127.0.0.1 (no registry, no
#                     index inside the build)
#   docker/build_trainer.sh --base pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime --online \
#       --tag dino-automl/trainer:cuda
#                     production: a registry CUDA base (its torch is kept), pip from PyPI
#
# Options: --base IMAGE, --tag IMAGE (default dino-automl/trainer:latest), --from-venv PATH,
# --online, --keep-wheels (keep build/docker-wheels for the next offline build).
# Costs of each recipe on a 2-core machine: bench/docker_image_build.md.
# Env: PYTHON (the host python whose pip resolves wheels; default .venv/bin/python),
# WHEEL_PORT (default 38765; fixed so that Docker's layer cache stays valid).
#
# The image records a hash of the sources it was built from (label automl.source_hash);
# `docker/build_trainer.sh --print-source-hash` prints the checkout's, so callers can tell
# a stale image (see .ci/docker.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
local_base="dino-automl/base:bookworm"
base="$local_base"
tag="dino-automl/trainer:latest"
online=0
from_venv=""
keep_wheels=0
port="${WHEEL_PORT:-38765}"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

# What goes into the image; .dockerignore keeps the context to these.
source_paths=(pyproject.toml README.md automl dino metric_extractors search_spaces
              docker/trainer.Dockerfile docker/trainer_install.sh)
source_hash() {
  find "${source_paths[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

# An image that lost its last tag to a rebuild; one still tagged elsewhere or used by a
# child image stays.
remove_if_untagged() {
  if [[ "$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null)" == 0 ]]; then
    docker rmi "$1" >/dev/null 2>&1 || true
  fi
}

while (($#)); do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --online) online=1; shift ;;
    --from-venv) from_venv="$2"; shift 2 ;;
    --keep-wheels) keep_wheels=1; shift ;;
    --print-source-hash) source_hash; exit 0 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build_trainer: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# One build at a time on this checkout: they share the wheelhouse folder and its port.
mkdir -p "$repo/build"
exec 9>"$repo/build/.build_trainer.lock"
flock 9
docker info >/dev/null 2>&1 || { echo "build_trainer: the Docker daemon is not reachable (start it: .ci/docker.sh)" >&2; exit 1; }
total=$SECONDS
if [[ -n "$from_venv" ]]; then
  base="dino-automl/base:venv"
  "$repo/docker/build_base.sh" --venv "$from_venv" "$base"
elif [[ "$base" == "$local_base" ]]; then
  "$repo/docker/build_base.sh" "$local_base"
fi

build_args=(--build-arg "BASE_IMAGE=$base" --build-arg "SOURCE_HASH=$(source_hash)")
server_pid=""
wheels="$repo/build/docker-wheels"
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if [[ -n "$from_venv" ]]; then
  build_args+=(--build-arg "WHEELHOUSE=none")  # every package is in the base's venv
elif ((online == 0)); then
  # The image's Python must take the wheels this host's pip picks.
  host_py="$("$python" -c 'import sys, platform; print(f"{sys.version_info[0]}.{sys.version_info[1]}-{platform.machine()}")')"
  image_py="$(docker run --rm --network none --entrypoint "" "$base" sh -c \
    'python3 -c "import sys, platform; print(f\"{sys.version_info[0]}.{sys.version_info[1]}-{platform.machine()}\")"')"
  if [[ "$host_py" != "$image_py" ]]; then
    echo "build_trainer: host python is $host_py but $base has $image_py; wheels would not fit (use --online or PYTHON=...)" >&2
    exit 1
  fi
  t=$SECONDS
  mkdir -p "$wheels"
  # Every dependency of the project (torch and its CUDA libraries included) plus build tools.
  "$python" - > "$wheels/requirements.txt" <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(deps + ["pip", "setuptools>=70.1"]))
EOF
  "$python" -m pip download --quiet --only-binary=:all: -d "$wheels" -r "$wheels/requirements.txt"
  echo "build_trainer: wheelhouse ready in $((SECONDS - t)) s: $(ls "$wheels"/*.whl | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"
  "$python" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
    sleep 0.1
  done
  build_args+=(--build-arg "WHEELHOUSE=http://127.0.0.1:$port/")
fi

old_id="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
t=$SECONDS
# The legacy builder: it needs no buildx plugin and honours --network host for RUN steps.
set +e
DOCKER_BUILDKIT=0 docker build --force-rm --network host -f docker/trainer.Dockerfile "${build_args[@]}" -t "$tag" . 2>&1 \
  | grep --line-buffered -v -E '^ ---> |^Removing intermediate|^Step [0-9]+/[0-9]+ : (LABEL|ENV|ARG|USER|WORKDIR|ENTRYPOINT|CMD)'
status=${PIPESTATUS[0]}
set -e
((status == 0)) || { echo "build_trainer: docker build failed (exit $status, see above)" >&2; exit 1; }
echo "build_trainer: docker build took $((SECONDS - t)) s"
if [[ -z "$from_venv" ]] && ((online == 0 && keep_wheels == 0)); then rm -rf "$wheels"; fi
# The image this build replaced, and a venv base image it was the last user of.
if [[ -n "$old_id" && "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]]; then
  remove_if_untagged "$old_id"
  docker image prune -f --filter label=automl.venv_hash >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')
echo "build_trainer: $tag built in $((SECONDS - total)) s, $size"
