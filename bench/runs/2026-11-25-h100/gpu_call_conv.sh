#!/usr/bin/env bash
# Device call: the anchor convergence run with the fused kernels, started in its own
# session so that bench/gpu_wait_convergence.sh (the next call, within the 30 s warm
# window) can collect it. While the anchor images are being generated (CPU, ~2 min) a
# short fp16 run (2 epochs, 200 generated 256 px images) checks train.precision=fp16.
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
mkdir -p /tmp/conv
setsid nohup python3 bench/convergence.py --anchors .anchors --out /tmp/conv --epochs 10 \
  > /tmp/conv/progress.jsonl 2>&1 < /dev/null &
echo "== fp16 check"
timeout 110 python3 bench/convergence.py --out /tmp/fp16 --n-train 200 --size 256 --epochs 2 \
  --set train.precision=fp16 > $OUT/fp16_check.jsonl 2>&1
echo "exit $?"; cat $OUT/fp16_check.jsonl; grep -E "FAILURE|Error|precision|learning rates" /tmp/fp16/dino_stdout.log | head -5
while [ $SECONDS -lt ${CALL_SECONDS:-560} ] && ! grep -q exit_code /tmp/conv/progress.jsonl; do sleep 5; done
cat /tmp/conv/progress.jsonl
