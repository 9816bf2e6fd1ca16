#!/usr/bin/env bash
# The GPU study benchmark on the device: bench/device_setup.sh (the carried wheels, a `dino`
# command for the local launcher), then bench/gpu_study.py started detached (setsid), so that a study
# and its hand-off longer than one call survive the call's end while the machine stays warm.
# The call waits up to WAIT seconds (default 570) and brings back what is there; the same
# command again picks up the running study instead of starting a second one.
#   device run: bash bench/gpu_study.sh [gpu_study.py args]   (carry .whl and .anchors)
# A call brings back at most 8 files: the table, the JSON, the NVML trace, the run's log,
# and the trials' logs and the hand-off folder (without its ONNX file) as archives.
set -uo pipefail
run=/tmp/gpu_study_run
{ source bench/device_setup.sh; } > /tmp/gpu_study_env.txt 2>&1
if [ ! -f "$run/pid" ]; then
  mkdir -p "$run/out"
  cat /tmp/gpu_study_env.txt > "$run/log"
  setsid nohup python3 bench/gpu_study.py --out "$run/out" --workspace "$run/ws" "$@" >> "$run/log" 2>&1 < /dev/null &
  echo $! > "$run/pid"
  echo "started gpu_study.py (pid $(cat "$run/pid"))"
else
  echo "gpu_study.py already started (pid $(cat "$run/pid")): waiting for it"
fi
deadline=$((SECONDS + ${WAIT:-570}))
while [ $SECONDS -lt $deadline ] && kill -0 "$(cat "$run/pid")" 2>/dev/null; do sleep 2; done
kill -0 "$(cat "$run/pid")" 2>/dev/null && echo "still running: call again to collect" || echo "finished"
for f in gpu_study.md gpu_study.json gpu_util.csv automl_run.log; do
  [ -f "$run/out/$f" ] && cp "$run/out/$f" "$OUT/"
done
cp "$run/log" "$OUT/gpu_study_log.txt"
handed=$(cd "$run/out" && ls -d handoff handoff.log 2>/dev/null)
[ -n "$handed" ] && tar czf "$OUT/handoff.tgz" -C "$run/out" --exclude='*.onnx' --exclude='*.pth' $handed
[ -d "$run/ws" ] && tar czf "$OUT/trials.tgz" -C "$run/ws" --exclude='*.pth' --exclude='*.onnx' --exclude='datasets' \
  --exclude='cache' . 2>/dev/null
tail -45 "$run/log"
