#!/usr/bin/env bash
# ONE device call (H100, ~6 min): the fused Triton deformable attention alone against the
# canvas path (bench/msda_kernel_speed.py), then whole-model training / inference speed of
# ours with the fused kernels and with the PyTorch canvas (DINO_MSDA_IMPL=pytorch) beside
# HF Deformable-DETR re-measured in the same call, then torch.profiler summaries of our
# training step in bf16 and fp32. Everything lands under $OUT (at most 8 files).
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
echo "== msda kernels"
timeout 150 python3 bench/msda_kernel_speed.py --iters 10 --out $OUT/msda.jsonl > $OUT/msda.txt 2>&1
echo "exit $?"; tail -28 $OUT/msda.txt
speed_run hf_deformable_detr 80 --models hf_deformable_detr_two_stage --dtypes fp32,bf16
speed_run ours_fused 80 --models dino_4scale_r50 --dtypes fp32,bf16
DINO_MSDA_IMPL=pytorch speed_run ours_canvas 80 --models dino_4scale_r50 --dtypes fp32,bf16
for dt in bf16 fp32; do
  echo "== profile $dt"
  timeout 90 python3 bench/profile_train_step.py --dtype $dt --steps 3 --rows 30 > $OUT/profile_$dt.txt 2>&1
  echo "exit $?"; grep -E '^\{"profile"|host waits' $OUT/profile_$dt.txt
done
