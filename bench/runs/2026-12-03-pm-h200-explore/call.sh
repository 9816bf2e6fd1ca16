#!/usr/bin/env bash
# One device call (2026-12-03, afternoon): is the shared graph pool right, how much memory
# does a graphed smoke trial reserve now, how do two graphed trials share the card, and
# where does the graphed 800-px training step spend its time.
#   device run: bash bench/runs/2026-12-03-pm-h200-explore/call.sh   (carry .whl, .anchors)
set -uo pipefail
source bench/device_setup.sh > "$OUT/env.txt" 2>&1
python3 -m pytest -q tests/trainer/test_training_graphs.py 2>&1 | tail -4 | tee "$OUT/gate.txt"
timeout 100 python3 bench/profile_train_step.py --steps 5 --rows 70 > "$OUT/profile_graphed_800.txt" 2>&1
tail -3 "$OUT/profile_graphed_800.txt"
python3 - <<'PY'
import yaml
p = yaml.safe_load(open("automl/profiles/smoke.yaml"))
p["pruner"] = {"name": "none"}
p["devices"] = {"trials_per_slot": 2}
p["fixed"]["train.cuda_graphs"] = True
open("/tmp/pair.yaml", "w").write(yaml.safe_dump(p))
PY
rm -rf /tmp/pair_ws
timeout 200 python3 -m automl run --config /tmp/pair.yaml --n-trials 2 --fixed train.num_epochs=3 \
  --workspace /tmp/pair_ws > "$OUT/pair_run.log" 2>&1
tail -5 "$OUT/pair_run.log"
for t in /tmp/pair_ws/dino-smoke/trial_000*; do
  n=$(basename "$t"); cp "$t/stdout.log" "$OUT/${n}_stdout.log"; cp "$t/train/status.json" "$OUT/${n}_status.json"
  grep -h "peak_gpu_memory_mib" "$t/train/status.json" | python3 -c "import sys,json; [print('$n', json.loads(l).get('epoch'), json.loads(l).get('peak_gpu_memory_mib'), json.loads(l).get('timings')) for l in sys.stdin]" 2>/dev/null | tail -3
  grep -h "Epoch\|cuda_graphs\|Start-up" "$t/stdout.log" | tail -8
done
