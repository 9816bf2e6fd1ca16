#!/usr/bin/env bash
# Install, start what the tests need (Docker engine + trainer image, Chromium,
# PostgreSQL), lint (ruff) and type-check (mypy, the modules pyproject.toml lists),
# then run the whole test suite. pytest finding no test is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh || exit 1
./scripts/test_services.sh || exit 1
echo "[lint] ruff check"
.venv/bin/ruff check . || exit 1
echo "[types] mypy"
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
