#!/usr/bin/env bash
# Next device call after bench/gpu_call_conv.sh: wait for the convergence run to end,
# then copy its per-epoch lines, status.json and the end of its log to $OUT.
set -uo pipefail
while [ $SECONDS -lt ${CALL_SECONDS:-570} ] && ! grep -q exit_code /tmp/conv/progress.jsonl; do sleep 5; done
cp /tmp/conv/progress.jsonl $OUT/convergence.jsonl
cp /tmp/conv/results/train/status.json $OUT/status.json 2>/dev/null
tail -40 /tmp/conv/dino_stdout.log > $OUT/dino_stdout_tail.txt
cat /tmp/conv/progress.jsonl
