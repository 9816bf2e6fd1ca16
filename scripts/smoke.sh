#!/usr/bin/env bash
# Install, then run the smoke study on the embedded defaults (SQLite, local launcher,
# generated dataset). Extra arguments go to `automl run`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/automl run --profile smoke "$@"
