#!/usr/bin/env bash
# Source on the lent GPU machine: installs the carried wheels (.whl, see bench/README.md)
# into /tmp/site, puts them and the repo on PYTHONPATH, and a `dino` command on PATH (the
# local launcher runs trials as `dino train`).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "wheel install failed" >&2
# bytecode, as a pip install has it: without it `automl run` spent 5.4 s importing on an H200 host, 3.7 s with it
python3 -m compileall -q -j 0 /tmp/site automl dino >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
mkdir -p /tmp/bin; printf '#!/bin/sh\nexec python3 -m dino "$@"\n' > /tmp/bin/dino; chmod +x /tmp/bin/dino
export PATH=/tmp/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, optuna, pycocotools, faster_coco_eval; print('torch', torch.__version__, 'optuna', optuna.__version__)"

# speed_run LABEL CAP [model_speed.py args]: one model_speed.py run capped at CAP seconds,
# its rows appended to $OUT/speed.jsonl and its log to $OUT/speed_log.txt
speed_run() {
  local label=$1 cap=$2; shift 2
  echo "== $label"
  timeout "$cap" python3 bench/model_speed.py --iters 10 --warmup 3 --out "$OUT/speed.jsonl" "$@" 2>&1 \
    | grep -v Warning | tee -a "$OUT/speed_log.txt" | tail -5
}
