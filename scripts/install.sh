#!/usr/bin/env bash
# Create .venv and install the project with its test extras (idempotent).
# torch/torchvision are pinned to the builds this machine kind serves from its disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] torch==2.14.1 torchvision==0.29.1 (about a minute)"
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v '^WARNING: Location' || true
fi
echo "[install] project and test extras"
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch, torchvision, optuna, optuna_dashboard, pycocotools; print('[install] ok: torch', torch.__version__, 'optuna', optuna.__version__)"
