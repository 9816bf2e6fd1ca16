#!/usr/bin/env bash
# Device call 1: speed of ours beside the anchors' configurations (alone on the GPU),
# then the convergence run, started in its own session so that gpu_call2.sh can
# collect it if it outlasts this call.
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
python3 bench/model_speed.py --models dino_4scale_r50,hf_deformable_detr_two_stage,hf_rt_detr_r50 \
  --out $OUT/speed_ours_and_hf.jsonl > $OUT/speed_table.txt 2>&1
cat $OUT/speed_table.txt
mkdir -p /tmp/conv
setsid nohup python3 bench/convergence.py --anchors .anchors --out /tmp/conv --epochs 10 > /tmp/conv/progress.jsonl 2>&1 &
pid=$!
while [ $SECONDS -lt ${CALL_SECONDS:-540} ] && kill -0 $pid 2>/dev/null; do sleep 5; done
cat /tmp/conv/progress.jsonl; tail -3 /tmp/conv/dino_stdout.log
cp /tmp/conv/progress.jsonl $OUT/convergence_call1.jsonl
