#!/usr/bin/env bash
# ONE device call: does the GPU smoke profile's trial learn with the learning rate that
# the convergence task uses (2e-4)? One trial of `automl run --profile smoke`, local launcher.
set -uo pipefail
source bench/device_setup.sh > $OUT/env.txt 2>&1; cat $OUT/env.txt
mkdir -p /tmp/bin; printf '#!/bin/sh\nexec python3 -m dino "$@"\n' > /tmp/bin/dino; chmod +x /tmp/bin/dino
export PATH=/tmp/bin:$PATH
timeout ${CAP:-240} python3 -m automl run --profile smoke --workspace /tmp/ws --n-trials 1 \
  --fixed train.optim.lr=0.0002 > $OUT/smoke_gpu_lr2e-4.txt 2>&1
echo "exit $?"; cat $OUT/smoke_gpu_lr2e-4.txt
