#!/usr/bin/env bash
# Run here, before a device call: the wheels the device lacks into .whl/ (Python 3.12,
# manylinux x86_64, no dependencies resolved: the list is what the device misses beside its
# torch, triton, transformers and onnxruntime) and ../shared/anchors into .anchors/.
# Both are ignored by git; pass them in the call's carry: ["." + "whl", ".anchors"].
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(optuna alembic Mako colorlog sqlalchemy greenlet pycocotools faster-coco-eval pydantic pydantic-core annotated-types
      typing-inspection rich markdown-it-py mdurl cmaes boto3 botocore s3transfer jmespath croniter
      python-dateutil six tzdata)
mkdir -p .whl
.venv/bin/python -m pip download -q --dest .whl --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 "${pkgs[@]}" 2>&1 | grep -v '^WARNING: Location' || true
if [ -d ../shared/anchors ]; then
  rm -rf .anchors && cp -r ../shared/anchors .anchors
else
  echo "no ../shared/anchors: the GPU check's baseline rows need hf_anchor.py in .anchors/" >&2
fi
ls .whl | wc -l | xargs echo "wheels in .whl:"
grep -qxF '.whl/' .git/info/exclude 2>/dev/null || printf '.whl/\n.anchors/\n' >> .git/info/exclude
