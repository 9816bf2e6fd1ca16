"""The GPU study benchmark: a whole ``automl run`` on a GPU, and where its time went.

    python bench/gpu_study.py --out DIR [--workspace W] [-- automl run args...]
    (default: ``automl run --profile smoke``, the 10-trial GPU smoke study)

Records, from the GPU (NVML, every 0.5 s), the study's storage and each trial's
``status.json``:

* wall time of the study, and the GPU busy fraction over it (samples with utilisation
  above zero) and the mean utilisation;
* each trial's start-up (the trainer's ``Start-up`` line: launch to first step), warm
  trainers (``job.json``'s ``warm``) apart from cold starts
  and the idle gaps (GPU at 0 % for 1 s or more) with what was happening then;
* the time from the study's start until the best value first reached 0.8, and the best;
* for pruned trials, the seconds from the prune decision until the job was gone;
* every trial's curve, parameters, state and slot.

With ``--handoff``, the best trial is then handed over as a user would
(``automl best --evaluate <the study's val split> --export <out>/handoff --infer <its
images>``): the ONNX export and its verification, the scores and the pictures, timed, with
the folder's ``metrics.json`` kept in the result.

Writes ``gpu_study.json`` and ``gpu_study.md`` (the table) into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class GpuSampler(threading.Thread):
    """Utilisation (%) and memory used (MiB) of every GPU, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self._halt = interval, [], threading.Event()
        self.source = "none"

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.source = "nvml"
            while not self._halt.is_set():
                now = time.time()
                util = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                mem = [pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in handles]
                self.samples.append((now, util, mem))
                self._halt.wait(self.interval)
        except Exception:  # noqa: BLE001 - no NVML: try nvidia-smi, else record nothing
            if shutil.which("nvidia-smi") is None:
                return
            self.source = "nvidia-smi"
            while not self._halt.is_set():
                now = time.time()
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
                rows = [line.split(",") for line in out.strip().splitlines() if "," in line]
                self.samples.append((now, [float(r[0]) for r in rows], [float(r[1]) for r in rows]))
                self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def status_lines(results_dir: Path) -> list[dict]:
    path = results_dir / "train" / "status.json"
    lines = []
    if path.exists():
        for raw in path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                pass
    return lines


def line_time(line: dict) -> float | None:
    """A status line's local date/time as epoch seconds (one-second resolution)."""
    try:
        m, d, y = (int(x) for x in line["date"].split("/"))
        hh, mm, ss = (int(x) for x in line["time"].split(":"))
        return datetime.datetime(y, m, d, hh, mm, ss).timestamp()
    except (KeyError, ValueError):
        return None


def idle_gaps(samples: list, start: float, end: float, min_s: float = 1.0) -> list[tuple[float, float]]:
    """(start, seconds) of runs of samples where every GPU is at 0 %, within [start, end]."""
    gaps, run_start, last = [], None, None
    for t, util, _ in samples:
        if t < start or t > end:
            continue
        if max(util or [0]) == 0:
            run_start = t if run_start is None else run_start
            last = t
        elif run_start is not None:
            if t - run_start >= min_s:
                gaps.append((run_start, t - run_start))
            run_start = None
    if run_start is not None and last - run_start >= min_s:
        gaps.append((run_start, last - run_start))
    return gaps


def analyse(storage: str, study_name: str, started: float, ended: float, samples: list) -> dict:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials, first_08, queued = [], None, []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":  # an interrupted trial queued to resume: its attributes are the original's
            queued.append(t.number)
            continue
        results_dir = Path(t.user_attrs.get("results_dir", ""))
        lines = status_lines(results_dir) if t.user_attrs.get("results_dir") else []
        startup = next((line for line in lines if "startup" in line), None)
        epochs = [line for line in lines if "epoch" in line and "kpi" in line]
        for line in epochs:
            value = float(line["kpi"].get("val_mAP50", "nan"))
            at = line_time(line)
            if value >= 0.8 and at is not None and (first_08 is None or at < first_08):
                first_08 = at
        trials.append({
            "number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "interrupted": bool(t.user_attrs.get("interrupted")),
            "curve": {int(k): v for k, v in sorted(t.intermediate_values.items())},
            "device": t.user_attrs.get("device"), "slot": t.user_attrs.get("slot"),
            "packed_with": t.user_attrs.get("packed_with"),
            "start": t.datetime_start.timestamp() if t.datetime_start else None,
            "end": t.datetime_complete.timestamp() if t.datetime_complete else None,
            "startup_s": round(sum(v for k, v in startup["startup"].items() if not k.startswith("of which")), 2)
            if startup else None,
            "startup_phases": startup["startup"] if startup else None,
            "warm": job_record(results_dir).get("warm") if t.user_attrs.get("results_dir") else None,
            "warm_s": (startup.get("warm_trainer") or {}).get("warm_s") if startup else None,
            "prune_epoch": t.user_attrs.get("prune_epoch"), "stop_s": t.user_attrs.get("stop_seconds"),
            "epoch_s": [line.get("time_per_epoch") for line in epochs],
            "validation_s": [line.get("validation_s") for line in epochs],
            "coco_eval_s": [line.get("coco_eval_s") for line in epochs],
        })
    in_study = [s for s in samples if started <= s[0] <= ended]
    busy = sum(1 for s in in_study if max(s[1] or [0]) > 0) / max(len(in_study), 1)
    mean_util = sum(max(s[1] or [0]) for s in in_study) / max(len(in_study), 1)
    gaps = idle_gaps(samples, started, ended)
    values = [t["value"] for t in trials if t["value"] is not None and t["state"] == "COMPLETE"]
    return {
        "wall_s": round(ended - started, 1),
        "gpu_busy_fraction": round(busy, 3), "gpu_mean_util": round(mean_util, 1), "samples": len(in_study),
        "peak_memory_mib": max((max(s[2] or [0]) for s in in_study), default=None),
        "idle_gaps": [{"at_s": round(a - started, 1), "seconds": round(b, 1)} for a, b in gaps],
        "idle_s": round(sum(b for _, b in gaps), 1),
        "time_to_0.8_s": round(first_08 - started, 1) if first_08 else None,
        "best_value": max(values) if values else None,
        "counts": counts(trials), "queued_resumes": queued,
        "trials": trials,
    }


def job_record(results_dir: Path) -> dict:
    """The launcher's ``job.json`` of the trial's last job (``warm``: handed to a warm trainer)."""
    try:
        return json.loads((results_dir / "job.json").read_text())
    except (OSError, ValueError):
        return {}


def _span(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]:.1f} .. {ordered[-1]:.1f} s, median {ordered[len(ordered) // 2]:.1f} s ({len(values)} trials)"


def counts(trials: list[dict]) -> dict[str, int]:
    """States, with the trials the study's timeout interrupted apart from real failures."""
    out = {s: sum(1 for t in trials if t["state"] == s and not t.get("interrupted")) for s in ("COMPLETE", "PRUNED", "FAIL")}
    out["INTERRUPTED"] = sum(1 for t in trials if t.get("interrupted"))
    return out


def table(result: dict, card: str, command: str) -> str:
    r = result
    warm = [t["startup_s"] for t in r["trials"] if t["startup_s"] is not None and t.get("warm")]
    cold = [t["startup_s"] for t in r["trials"] if t["startup_s"] is not None and not t.get("warm")]
    stops = [t["stop_s"] for t in r["trials"] if t["stop_s"] is not None and t["state"] == "PRUNED"]
    c = r["counts"]
    lines = [f"# GPU study benchmark ({card})", "", f"`{command}`", "",
             "| measure | value |", "|---|---|",
             f"| wall time | {r['wall_s']:.0f} s" + (f" (stopped by --timeout {r['timeout_s']:.0f} s)" if r.get("timed_out")
                                                      else "") + " |",
             f"| trials | {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, {c.get('INTERRUPTED', 0)} "
             f"interrupted by the timeout (queued to resume: {len(r.get('queued_resumes', []))}) |",
             f"| best val_mAP50 | {r['best_value'] if r['best_value'] is None else round(r['best_value'], 4)} |",
             f"| time until the best first reached 0.8 | {r['time_to_0.8_s']} s |",
             f"| GPU busy (samples above 0 %) | {100 * r['gpu_busy_fraction']:.1f} % ({r['samples']} samples) |",
             f"| GPU mean utilisation | {r['gpu_mean_util']:.1f} % |",
             f"| idle gaps of 1 s or more | {len(r['idle_gaps'])}, {r['idle_s']} s in all |",
             f"| per-trial start-up (launch to first step), handed to a warm trainer | {_span(warm)} |",
             f"| per-trial start-up (launch to first step), started cold | {_span(cold)} |",
             f"| prune decision to job gone | {', '.join(f'{s:.1f}' for s in stops) or '-'} s |",
             f"| peak GPU memory | {r['peak_memory_mib']} MiB |", "",
             "| trial | state | value | epochs | start-up s | warm | slot | curve |", "|---|---|---|---|---|---|---|---|"]
    for t in r["trials"]:
        curve = " ".join(f"{v:.3f}" for v in t["curve"].values())
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        state = "INTERRUPTED" if t.get("interrupted") else t["state"]
        lines.append(f"| {t['number']} | {state} | {value} | {len(t['curve'])} | {t['startup_s']} | "
                     f"{'yes' if t.get('warm') else 'no'} | {t['slot'] or t['device']} | {curve} |")
    h = r.get("handoff")
    if h:
        m = h.get("metrics") or {}
        scores = ", ".join(f"{k} {m[k]:.4f}" for k in ("mAP50", "mAP") if isinstance(m.get(k), (int, float)))
        lines += ["", f"Hand-off (`{h.get('command', '')}`): exit {h.get('exit_code')}, {h.get('wall_s')} s; "
                      f"{scores or h.get('error', 'no metrics')}; files: {', '.join(h.get('files', [])) or '-'}"]
    return "\n".join(lines) + "\n"


def handoff(ws: Path, out: Path) -> dict:
    """``automl best --evaluate/--export/--infer`` on the study's own validation split."""
    vals = sorted(ws.glob("datasets/*/val"))
    if not vals:
        return {"error": f"no generated validation split under {ws / 'datasets'}"}
    folder = out / "handoff"
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "automl", "best", "--workspace", str(ws), "--evaluate", str(vals[0]),
               "--export", str(folder), "--infer", str(vals[0] / "images")]
    started = time.time()
    with open(out / "handoff.log", "w") as log:
        rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}).returncode
    result: dict = {"exit_code": rc, "wall_s": round(time.time() - started, 1),
                    "command": " ".join(["automl", "best", *command[4:]])}
    metrics = folder / "metrics.json"
    if metrics.is_file():
        result["metrics"] = json.loads(metrics.read_text())
    result["files"] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_study_out"))
    ap.add_argument("--workspace", default="/tmp/gpu_study_ws")
    ap.add_argument("--study-name", default="dino-smoke")
    ap.add_argument("--timeout", type=float, default=560, help="kill the study after this many seconds")
    ap.add_argument("--handoff", action="store_true", help="then hand the best trial over (automl best --export)")
    args = ap.parse_args(argv)
    out, ws = Path(args.out), Path(args.workspace)
    out.mkdir(parents=True, exist_ok=True)
    run_args = extra or ["--profile", "smoke"]
    command = [sys.executable, "-m", "automl", "run", *run_args, "--workspace", str(ws)]
    sampler = GpuSampler()
    sampler.start()
    time.sleep(1.0)
    started = time.time()
    with open(out / "automl_run.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"})
        timed_out = False
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.terminate()
            rc = proc.wait(timeout=60)
    ended = time.time()
    time.sleep(1.0)
    sampler.stop()
    result = analyse(f"sqlite:///{ws / 'study.db'}", args.study_name, started, ended, sampler.samples)
    result.update(exit_code=rc, command=" ".join(["automl", "run", *run_args]), gpu_sampler=sampler.source,
                  timeout_s=args.timeout, timed_out=timed_out)
    try:
        import torch

        card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        card = "unknown"
    result["card"] = card
    if args.handoff:
        result["handoff"] = handoff(ws, out)
    (out / "gpu_study.json").write_text(json.dumps(result, indent=1))
    (out / "gpu_study.md").write_text(table(result, card, result["command"]))
    with open(out / "gpu_util.csv", "w") as fh:
        for t, util, mem in sampler.samples:
            fh.write(f"{t - started:.2f},{','.join(str(u) for u in util)},{','.join(f'{m:.0f}' for m in mem)}\n")
    print(table(result, card, result["command"]))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
