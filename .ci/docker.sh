#!/usr/bin/env bash
# A Docker engine and the trainer image for tests/docker, on a fresh CI machine or here.
# Idempotent: installs docker.io + debootstrap (and docker-compose) if missing, starts dockerd if it is not
# answering, builds the trainer image if it is missing or older than the sources.
#
#   .ci/docker.sh            (root; the lead's .ci/run calls it before the tests)
#
# Env: AUTOML_TRAINER_IMAGE (default dino-automl/trainer:latest), AUTOML_IMAGE_RECIPE
# (venv: FROM the project's .venv, the quick default; offline: wheels resolved by pip),
# DOCKERD_LOG (default /var/log/dockerd.log).
# dockerd runs with --bridge=none --iptables=false: trial containers use no network and
# builds use the host's (docker build --network host).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${AUTOML_TRAINER_IMAGE:-dino-automl/trainer:latest}"
recipe="${AUTOML_IMAGE_RECIPE:-venv}"
log="${DOCKERD_LOG:-/var/log/dockerd.log}"
start=$SECONDS
stamp() { echo "ci/docker: $1 ($(($SECONDS - $2)) s)"; }

t=$SECONDS
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "ci/docker: docker.io/debootstrap missing and not root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { apt-get -o DPkg::Lock::Timeout=600 -q "$@"; }
  apt_get install -y docker.io debootstrap >/dev/null 2>&1 \
    || { apt_get update >/dev/null && apt_get install -y docker.io debootstrap >/dev/null; }
  stamp "installed docker.io and debootstrap" "$t"
fi

t=$SECONDS
# the compose tooling tests/deploy validates docker-compose.yml with: Debian bookworm ships
# Compose v1 as the docker-compose package (no `docker compose` plugin in its archive)
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || { echo "ci/docker: docker-compose missing and not root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 -q install -y docker-compose >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null \
         && apt-get -o DPkg::Lock::Timeout=600 -q install -y docker-compose >/dev/null; }
  stamp "installed docker-compose" "$t"
fi

t=$SECONDS
if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || { echo "ci/docker: the Docker daemon is not answering and only root can start it" >&2; exit 1; }
  # A new session so that it outlives this script and the caller's process group.
  setsid nohup dockerd --bridge=none --iptables=false >>"$log" 2>&1 < /dev/null &
  echo $! > /run/dockerd.ci.pid
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$(cat /run/dockerd.ci.pid)" 2>/dev/null || { tail -20 "$log" >&2; echo "ci/docker: dockerd exited (log: $log)" >&2; exit 1; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -20 "$log" >&2; echo "ci/docker: dockerd did not answer within 60 s (log: $log)" >&2; exit 1; }
  stamp "started dockerd, pid $(cat /run/dockerd.ci.pid), log $log" "$t"
else
  echo "ci/docker: dockerd is running (pid $(pgrep -x dockerd | head -1 || echo '?'))"
fi

t=$SECONDS
want="$("$repo/docker/build_trainer.sh" --print-source-hash)"
have="$(docker image inspect -f '{{index .Config.Labels "automl.source_hash"}}' "$image" 2>/dev/null || true)"
if [[ "$have" == "$want" ]]; then
  echo "ci/docker: $image is up to date (sources $want)"
else
  echo "ci/docker: building $image (${have:+sources changed: $have -> }$want; recipe $recipe)"
  case "$recipe" in
    venv) "$repo/docker/build_trainer.sh" --from-venv "$repo/.venv" --tag "$image" ;;
    offline) "$repo/docker/build_trainer.sh" --tag "$image" ;;
    *) echo "ci/docker: AUTOML_IMAGE_RECIPE must be venv or offline, not $recipe" >&2; exit 2 ;;
  esac
  stamp "built $image" "$t"
fi
echo "ci/docker: ready in $((SECONDS - start)) s"
