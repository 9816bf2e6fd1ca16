#!/usr/bin/env bash
# One exploratory device call (2026-12-03): the relaxed atomics of the backward kernel,
# the training step's profile at 800 px and in the smoke's regime with its real loader.
set -uo pipefail
source bench/device_setup.sh > "$OUT/env.txt" 2>&1; cat "$OUT/env.txt"
t0=$SECONDS
timeout 120 python3 bench/msda_kernel_speed.py --iters 20 --out "$OUT/msda_kernels.jsonl" 2>&1 | tail -20
echo "== kernels done at $((SECONDS - t0)) s"
speed_run "800 b4 bf16 eager" 90 --models dino_4scale_r50 --no-hf --dtypes bf16 --size 800 --batch 4
speed_run "800 b4 bf16 graphs" 100 --models dino_4scale_r50 --no-hf --dtypes bf16 --size 800 --batch 4 --cuda-graphs
speed_run "320 b8 bf16 eager" 80 --models dino_4scale_r50 --no-hf --dtypes bf16 --size 320 --batch 8
speed_run "320 b8 bf16 graphs" 80 --models dino_4scale_r50 --no-hf --dtypes bf16 --size 320 --batch 8 --cuda-graphs
echo "== speed done at $((SECONDS - t0)) s"
timeout 90 python3 bench/profile_train_step.py --dtype bf16 --steps 3 --rows 30 > "$OUT/profile_800.txt" 2>&1
tail -8 "$OUT/profile_800.txt"
echo "== profile done at $((SECONDS - t0)) s"
timeout 150 python3 bench/shape_churn.py --out /tmp/sc --epochs 1 --modes multiple,fixed --profile 6 2>&1 | tail -12
cp /tmp/sc/shape_churn.md /tmp/sc/profile_*.txt "$OUT/" 2>/dev/null
echo "== churn done at $((SECONDS - t0)) s"
