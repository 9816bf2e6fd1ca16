#!/usr/bin/env bash
# ONE device call (H100, < 6 min incl. compile): training / inference speed of our
# DINO-4scale R50 eager and with train.compile's torch.compile wrapping, fp32 and bf16,
# beside HF Deformable-DETR (two-stage, box refine) as the same-session baseline.
# Batch 4, 800x800. Writes $OUT/speed.jsonl (one line per row) and $OUT/speed_table.txt.
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
run() {  # label, time cap in seconds, then model_speed.py arguments
  local label=$1 cap=$2; shift 2
  echo "== $label"
  timeout $cap python3 bench/model_speed.py --iters 10 --warmup 3 --out $OUT/speed.jsonl "$@" \
    > $OUT/$label.txt 2>&1
  echo "exit $?"; tail -12 $OUT/$label.txt
}
run hf_deformable_detr 70 --models hf_deformable_detr_two_stage --dtypes fp32,bf16
run ours_eager 70 --models dino_4scale_r50 --dtypes fp32,bf16
run ours_compile 200 --models dino_4scale_r50 --dtypes fp32,bf16 --compile
grep -h -A20 "^model " $OUT/hf_deformable_detr.txt $OUT/ours_eager.txt $OUT/ours_compile.txt > $OUT/speed_table.txt
cat $OUT/speed_table.txt
