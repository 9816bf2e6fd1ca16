#!/usr/bin/env bash
# ONE device call after the kernel compile-time fix: the speed table again (HF
# Deformable-DETR re-measured in the same call; our warm-up time includes the cold Triton
# compile), a 2-epoch fp16 training run, and `automl run --profile smoke` on the GPU for
# as long as the call allows (--timeout 140: trials started before then finish).
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
mkdir -p /tmp/bin; printf '#!/bin/sh\nexec python3 -m dino "$@"\n' > /tmp/bin/dino; chmod +x /tmp/bin/dino
export PATH=/tmp/bin:$PATH
speed_run hf_deformable_detr 70 --models hf_deformable_detr_two_stage --dtypes fp32,bf16
speed_run ours_fused 90 --models dino_4scale_r50 --dtypes fp32,bf16
echo "== fp16 check"
timeout 90 python3 bench/convergence.py --out /tmp/fp16 --n-train 200 --size 256 --epochs 2 \
  --set train.precision=fp16 > $OUT/fp16_check.jsonl 2>&1
echo "exit $?"; cat $OUT/fp16_check.jsonl; grep -E "FAILURE|rror|step 25" /tmp/fp16/dino_stdout.log | head -5
echo "== GPU smoke"
timeout 230 python3 -m automl run --profile smoke --workspace /tmp/ws --timeout 140 > $OUT/smoke_gpu.txt 2>&1
echo "exit $?"; tail -25 $OUT/smoke_gpu.txt
