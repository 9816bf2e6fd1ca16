#!/usr/bin/env bash
# Services the test suite talks to for real, installed and started if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "[services] apt-get install ${need[*]}"
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# PostgreSQL on 127.0.0.1:5432 (trust auth on this machine kind)
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "[services] starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
# Docker engine and the CPU trainer image
bash .ci/docker.sh
