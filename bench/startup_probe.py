"""Where a GPU study's first seconds go, before its first trial trains.

The study benchmark (``gpu_study.py``) shows the GPU idle for the first ~25 s of a smoke
study and trial 0 waiting for its warm trainer. This probe times the pieces one by one,
on the machine it runs on:

1. ``nvidia-smi``'s GPU query (the orchestrator's only device probe), three times;
2. ``automl run --profile smoke`` in this process, up to its first trial: the time to
   the warm trainers' start and to the staged data, with the real code and wrappers
   that only take the time;
3. a warm trainer (``dino warm --like`` the study's spec, pinned to GPU 0 and with the
   study's kernel cache, as the orchestrator starts it), alone, twice: with an empty
   Triton cache (what a fresh workspace pays) and with the cache the first one filled.
   Its ready line says where its seconds went.

    python3 bench/startup_probe.py --workspace /tmp/probe_ws [--out startup_probe.json]

Prints one line per measure and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_nvidia_smi(times: int = 3) -> list[float]:
    if shutil.which("nvidia-smi") is None:
        return []
    took = []
    for _ in range(times):
        began = time.perf_counter()
        subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                       capture_output=True, check=False)
        took.append(round(time.perf_counter() - began, 2))
    return took


def study_until_first_trial(workspace: Path, began: float) -> dict[str, float]:
    """Run ``automl run --profile smoke`` here until the study would start its first trial."""
    import automl.study.runner as runner

    stamps: dict[str, float] = {"imports": round(time.perf_counter() - began, 2)}
    prestart, prepare = runner.prestart_warm_trainers, runner.prepare_data

    def timed_prestart(*args, **kwargs):
        stamps["warm trainers started"] = round(time.perf_counter() - began, 2)
        return prestart(*args, **kwargs)

    class Reached(Exception):
        pass

    def timed_prepare(*args, **kwargs):
        stamps["data staging began"] = round(time.perf_counter() - began, 2)
        prepare(*args, **kwargs)
        stamps["data staged"] = round(time.perf_counter() - began, 2)
        raise Reached  # the study would start trial 0 now; its spares are stopped on the way out

    runner.prestart_warm_trainers, runner.prepare_data = timed_prestart, timed_prepare
    from automl.cli import main

    sys.argv = ["automl", "run", "--profile", "smoke", "--workspace", str(workspace)]
    try:
        main()
    except Reached:
        pass
    return stamps


def warm_trainer(like: Path, env: dict[str, str]) -> dict[str, object]:
    """Start ``dino warm --like`` alone; seconds to its ready line, and what it printed."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dino.cli", "warm", "--like", str(like)], input=b"",
                          capture_output=True, env=env, check=False, timeout=300)
    return {"ready_s": round(time.perf_counter() - began, 2), "exit": proc.returncode,
            "said": proc.stdout.decode(errors="replace").strip().splitlines()[:3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    began = time.perf_counter()
    shutil.rmtree(args.workspace, ignore_errors=True)
    result: dict[str, object] = {"nvidia_smi_s": time_nvidia_smi()}
    print(f"nvidia-smi query: {result['nvidia_smi_s']} s", flush=True)
    began = time.perf_counter()
    result["study"] = study_until_first_trial(args.workspace, began)
    print(f"automl run --profile smoke, seconds from this process's start: {result['study']}", flush=True)
    like = next(args.workspace.glob("*/warm_like.yaml"))
    cache = args.workspace / "cache" / "triton"
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "TORCHINDUCTOR_CACHE_DIR": str(cache.parent / "inductor"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env["CUDA_VISIBLE_DEVICES"] = "0"
    for name in ("empty kernel cache", "kernel cache filled"):
        if name.startswith("empty"):
            shutil.rmtree(cache, ignore_errors=True)
        result[name] = warm_trainer(like, env)
        print(f"warm trainer, {name}: {result[name]}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
