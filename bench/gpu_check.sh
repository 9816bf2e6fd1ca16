#!/usr/bin/env bash
# The GPU check in one device call: bench/device_setup.sh (the carried wheels, a `dino`
# command for the local launcher), then bench/gpu_check.py. Its table and JSON land in $OUT, every
# step's log in $OUT/logs.tgz (a call brings back at most 8 files).
#   device run: bash bench/gpu_check.sh [gpu_check.py args]   (carry .whl and .anchors)
set -uo pipefail
source bench/device_setup.sh > "$OUT/env.txt" 2>&1; cat "$OUT/env.txt"
mkdir -p "$OUT/logs"
python3 bench/gpu_check.py --out "$OUT/logs" "$@"; rc=$?
mv "$OUT/logs/gpu_check.md" "$OUT/logs/gpu_check.json" "$OUT/" 2>/dev/null
for f in msda_truth.jsonl speed.jsonl; do [ -f "$OUT/logs/$f" ] && mv "$OUT/logs/$f" "$OUT/"; done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
exit $rc
