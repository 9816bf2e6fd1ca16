"""The GPU check: one device call (at most 10 minutes) that says PASS or FAIL for what CI
cannot see. Run it at the start and at the end of every session that touches code the GPU
runs, on the final code, and record its table in ``bench/README.md``.

    bash bench/gpu_check.sh                  # on the device: wheels, then this script
    python bench/gpu_check.py --out DIR [--sections kernels,kernel_tests,speed,smoke,fp16]

Rows:

* ``kernels``: the fused kernels' values and three gradients against the float64
  finite-difference arbiter (``msda_truth.py``), DINO-4scale's shapes (encoder and
  decoder, 320 and 800 px, batch 1 and 8, points inside and beyond [0, 1], float32 and
  bf16), within the self-check's tolerance; at kinks, one-sided derivatives.
* ``kernel_tests``: ``tests/trainer/test_ms_deform_attn_fused.py`` compiled on the GPU
  (``DINO_FUSED_TEST_DEVICE=cuda``): the interpreter cases without the interpreter; and
  ``tests/trainer/test_training_graphs.py``: graphed training steps against eager ones.
* ``speed``: ours beside ``hf_anchor.py``'s Deformable-DETR (its own ``bench`` function,
  rerun here), fp32 and bf16, training and inference, peak memory, and the paths that
  actually ran (attention, training and inference graphs, read from the model after the
  timed steps); a fallback fails.
* ``smoke``: a two-trial GPU ``automl run`` of the smoke profile (pruning off, one trial at a
  time, so the second is handed to a warm trainer) whose best model exports and verifies,
  then handed over (``automl best --evaluate --export --infer``, evaluate and inference on
  the GPU); the same R50 checkpoint again at a fixed batch, and an R18 trained on the GPU
  exported at a fixed and a dynamic batch.
* ``fp16``: a 2-epoch fp16 training run.

Writes ``gpu_check.md`` (the table), ``gpu_check.json`` and each step's log into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("kernels", "kernel_tests", "speed", "smoke", "fp16")


@dataclasses.dataclass
class Row:
    section: str
    check: str
    passed: bool
    detail: str


class Check:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.deadline, self.rows = out, time.monotonic() + budget_s, []
        self.info: dict[str, object] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, section: str, check: str, passed: bool, detail: str) -> None:
        self.rows.append(Row(section, check, bool(passed), detail))
        print(f"[{'PASS' if passed else 'FAIL'}] {section}: {check}: {detail}", flush=True)

    def run(self, name: str, cmd: list[str], limit: float, env: dict | None = None,
            background: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
        """Runs ``cmd`` with its output in ``<out>/<name>.log``, at most ``limit`` s (and
        never past the check's budget); rc 124 on a timeout."""
        log = open(self.out / f"{name}.log", "w")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        if background:
            proc.limit = min(limit, max(self.left(), 1.0))  # type: ignore[attr-defined]
            proc.started = time.monotonic()  # type: ignore[attr-defined]
            return proc
        return self.wait(proc, min(limit, max(self.left(), 1.0)), cmd)

    def wait(self, proc: subprocess.Popen, limit: float | None = None, cmd=None) -> subprocess.CompletedProcess:
        if limit is None:
            limit = proc.limit - (time.monotonic() - proc.started)  # type: ignore[attr-defined]
        try:
            rc = proc.wait(timeout=max(limit, 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = 124
        return subprocess.CompletedProcess(cmd or proc.args, rc)

    def log_tail(self, name: str, lines: int = 5) -> str:
        text = (self.out / f"{name}.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])[-600:]


def section_kernels(c: Check, args) -> None:
    jsonl = c.out / "msda_truth.jsonl"
    proc = c.run("kernels", [sys.executable, "bench/msda_truth.py", "--sizes", args.truth_sizes,
                             "--batches", args.truth_batches, "--out", str(jsonl)], 240)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    if not rows:
        c.add("kernels", "float64 arbiter", False, f"no results (exit {proc.returncode}): {c.log_tail('kernels')}")
        return
    for path, values in sorted({(r["path"], r["values"]) for r in rows if "kind" not in r}):
        mine = [r for r in rows if r["path"] == path and r["values"] == values and "kind" not in r]
        worst = {k: max(r[k] for r in mine) for k in mine[0] if k.startswith("err_")}
        ok = all(r["pass"] for r in mine)
        text = ", ".join(f"{k[4:].replace('_', ' ')} {v:.1e}" for k, v in worst.items())
        c.add("kernels", f"{path} ({values} values) vs float64, {len(mine)} cases", ok, f"worst |err|/scale: {text}")
    for path in sorted({r["path"] for r in rows if r.get("kind") == "kink"}):
        fractions = [r["kink_one_sided_fraction"] for r in rows if r.get("kind") == "kink" and r["path"] == path]
        c.add("kernels", f"{path} at kinks: a one-sided derivative", min(fractions) == 1.0,
              f"fraction of location gradients equal to one: min {min(fractions):.4f}")
    if proc.returncode not in (0, 1):
        c.add("kernels", "arbiter run completed", False, f"exit {proc.returncode}: {c.log_tail('kernels')}")


def section_kernel_tests(c: Check, args) -> None:
    proc = c.run("kernel_tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests/trainer/test_ms_deform_attn_fused.py", "tests/trainer/test_training_graphs.py"],
                 180, env={"DINO_FUSED_TEST_DEVICE": "cuda"})
    summary = c.log_tail("kernel_tests", 1)
    c.add("kernel_tests", "interpreter cases compiled on the GPU, graphed training steps against eager ones "
          "(pytest), none skipped",
          proc.returncode == 0 and "skipped" not in summary,
          c.log_tail("kernel_tests", 2))


HF_SNIPPET = """
import json, sys, torch
sys.path.insert(0, {anchors!r})
from hf_anchor import bench
for dtype in (torch.float32, torch.bfloat16):
    print(json.dumps(bench("deformable_detr_two_stage", 4, 800, 800, dtype)), flush=True)
"""


def _jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def section_speed(c: Check, args) -> None:
    # the host's own speed first: launch-bound steps follow it, so rows of two machines
    # compare only beside it (2026-12-04: the same code trained 40.5 and 32.4 img/s)
    proc = c.run("host_speed", [sys.executable, "bench/host_speed.py"], 60)
    host = next(iter(_jsonl(c.out / "host_speed.log")), None)
    c.add("speed", "host: one small operator dispatched (CPU) and launched (GPU) (info; compares hosts)",
          proc.returncode == 0 and host is not None,
          (f"{host['cpu_dispatch_us']} us a CPU dispatch, {host.get('cuda_launch_us', '-')} us a CUDA launch"
           if host else c.log_tail("host_speed")))
    c.info["host"] = host
    c.run("speed_hf", [sys.executable, "-c", HF_SNIPPET.format(anchors=str(Path(args.anchors).resolve()))], 150)
    hf = {("float32" if "float32" in r["dtype"] else "bfloat16"): r for r in _jsonl(c.out / "speed_hf.log")
          if "train_img_s" in r}
    runs = {"speed_ours": ["--size", "800", "--batch", "4"]}
    runs["speed_smoke_regime"] = ["--size", "320", "--batch", "8", "--dtypes", "bf16"]
    ours = {}
    for name, extra in runs.items():
        c.run(name, [sys.executable, "bench/model_speed.py", "--models", "dino_4scale_r50", "--no-hf", "--iters", "20",
                     "--warmup", "5", *([] if "--dtypes" in extra else ["--dtypes", "fp32,bf16"]), *extra,
                     "--out", str(c.out / "speed.jsonl")], 200)
        ours[name] = [r for r in _jsonl(c.out / f"{name}.log") if "model" in r and "torch" not in r]
    table = []
    for name, rows in ours.items():
        if not rows:  # the run ended before its first row (a crash, the deadline): a failure, not a gap
            c.add("speed", f"{name}: model_speed.py {' '.join(runs[name])}", False, f"no rows: {c.log_tail(name)}")
        for r in rows:
            if "error" in r:
                c.add("speed", f"{r['model']} {r['dtype']}", False, f"error: {r['error'][:200]}")
                continue
            base = hf.get(r["dtype"]) if name != "speed_smoke_regime" else None
            path = r.get("msda", [])
            detail = (f"train {r['train_img_s']} img/s, infer {r['infer_img_s']} img/s, train peak "
                      f"{r['train_peak_gib']} GiB, attention {','.join(path) or '?'}, inference "
                      f"{r.get('inference_path', '?')}, training {r.get('training_path', '?')}")
            if base:
                tr, inf = r["train_img_s"] / base["train_img_s"], r["infer_img_s"] / base["infer_img_s"]
                detail += (f"; HF {base['train_img_s']} / {base['infer_img_s']} img/s, {base['train_peak_gib']} GiB: "
                           f"{tr:.2f}x train, {inf:.2f}x infer")
                table.append({**r, "hf": base, "train_ratio": round(tr, 3), "infer_ratio": round(inf, 3)})
            else:
                table.append(r)
            regime = f"batch {r['batch']} at {r['size']} px"
            # the paths asked for: the fused kernels, training (backbone, encoder and decoder) and
            # inference replayed from CUDA graphs
            c.add("speed", f"{r['model']} {r['dtype']}, {regime}",
                  path == ["fused"] and r.get("inference_path") == "graph"
                  and r.get("training_path") == "graph+decoder", detail)
    if not hf:
        c.add("speed", "hf_anchor.py Deformable-DETR rerun", False, c.log_tail("speed_hf"))
    c.info["speed"] = {"hf": hf, "ours": table}


def _best_checkpoint(workspace: Path) -> tuple[Path | None, Path | None]:
    best = workspace / "dino-smoke" / "best.json"
    if not best.exists():
        return None, None
    data = json.loads(best.read_text())
    ckpt = data.get("checkpoint")
    spec = workspace / "dino-smoke" / "best_spec.yaml"
    return (Path(ckpt) if ckpt else None), (spec if spec.exists() else None)


def _export_cmd(spec: Path, checkpoint: Path, onnx: Path, batch: int, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "dino", "export", "-e", str(spec), f"export.checkpoint={checkpoint}",
            f"export.onnx_file={onnx}", f"export.results_dir={onnx.parent}", f"export.batch_size={batch}",
            "export.input_height=320", "export.input_width=320", *overrides]


def _verified(c: Check, name: str) -> tuple[bool, str]:
    text = (c.out / f"{name}.log").read_text(errors="replace")
    lines = [line for line in text.splitlines() if "ONNX Runtime vs PyTorch" in line or "does not reproduce" in line]
    ok = "ONNX file :" in text and not any("does not reproduce" in line for line in lines)
    return ok, (lines[-1] if lines else c.log_tail(name, 2))[:400]


def _last_line(path: Path) -> str:
    """The last non-blank line of a log that does not repeat CUDA's boilerplate advice."""
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(("CUDA kernel errors", "For debugging", "Compile with", "Search for"))]
    return f"{path.name}: {lines[-1][:200]}" if lines else f"{path.name}: empty"


def section_smoke(c: Check, args) -> None:
    import yaml

    ws = Path(args.workdir) / "smoke_ws"
    # a fresh study every time: on a machine still warm from an earlier call the old study
    # would be found complete and nothing trained (it happened once: bench/runs/2026-12-02-h200-session4)
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(Path(args.workdir) / "handoff_out", ignore_errors=True)
    # the smoke profile as it ships, with pruning off: one 2-epoch trial from scratch is
    # below any learning bar, and this row is about the GPU path and the export
    profile = yaml.safe_load((ROOT / "automl" / "profiles" / "smoke.yaml").read_text())
    profile["pruner"] = {"name": "none"}
    # two trials one after the other: the second is handed to the warm trainer started
    # beside the first (automl.launchers.warm), so the warm path runs on the GPU too
    profile["devices"] = {"trials_per_slot": 1}
    config = Path(args.workdir) / "smoke_check.yaml"
    config.write_text(yaml.safe_dump(profile))
    proc = c.run("smoke_study", [sys.executable, "-m", "automl", "run", "--config", str(config), "--n-trials", "2",
                                 "--fixed", f"train.num_epochs={args.smoke_epochs}", "--workspace", str(ws)], 330)
    checkpoint, spec = _best_checkpoint(ws)
    onnx = ws / "dino-smoke" / "best_model.onnx"
    export_log = ws / "dino-smoke" / "best_model.log"
    export_text = export_log.read_text(errors="replace") if export_log.exists() else ""
    verify = [line for line in export_text.splitlines() if "ONNX Runtime vs PyTorch" in line]
    c.add("smoke", f"2-trial GPU smoke study (R50, bf16, {args.smoke_epochs} epochs) exports its best model", proc.returncode == 0
          and onnx.exists(), (verify[-1] if verify else c.log_tail("smoke_study", 3))[:400])
    for log in sorted(ws.glob("dino-smoke/trial_*/stdout.log")):  # a fallback is a failure of what was asked
        text = log.read_text(errors="replace")
        fell_back = [line for line in text.splitlines() if "failed its self-check" in line
                     or "CUDA graph capture of the detector failed" in line
                     or ("CUDA graph capture of the " in line and " in training failed" in line)]
        # the last replay count of the backbone and encoder, then of the decoder
        last = []
        for setting in ("train.cuda_graphs", "train.cuda_graphs_decoder"):
            lines = [line for line in text.splitlines() if line.startswith(f"{setting}: ") and "steps replayed" in line]
            last.append(lines[-1] if lines else f"no {setting} line in the trial's log")
        graphed = all("steps replayed" in line and ": 0 of " not in line and "capture failed" not in line
                      for line in last)
        c.add("smoke", f"{log.parent.name}: fused attention, graphed training (encoder and decoder) and validation, "
              "no fallback", not fell_back and graphed,
              fell_back[0][:300] if fell_back else "; ".join(line[:200] for line in last))
    _packing_row(c, ws)
    startups: dict[str, dict] = {}
    c.info["startup"] = startups
    for status in sorted(ws.glob("dino-smoke/trial_*/train/status.json")):
        trial = status.parent.parent
        job = json.loads((trial / "job.json").read_text()) if (trial / "job.json").exists() else {}
        for line in status.read_text().splitlines():
            if '"startup"' in line:
                startups[trial.name] = {**json.loads(line)["startup"], "warm": job.get("warm")}
                c.add("smoke", f"{trial.name} start-up (info; {'warm trainer' if job.get('warm') else 'cold'})", True,
                      json.loads(line)["message"])
    second = ws / "dino-smoke" / "trial_0001" / "job.json"
    warm = second.exists() and json.loads(second.read_text()).get("warm") is True
    c.add("smoke", "trial_0001 was handed to a warm trainer (dino warm on the GPU)", warm,
          "job.json: warm" if warm else f"job.json {'says cold' if second.exists() else 'missing'}; "
          f"{c.log_tail('smoke_study', 2)[:300]}")
    jobs, r18_train = [], None
    r18_dir = Path(args.workdir) / "r18"
    if checkpoint and spec:
        jobs.append(("export_r50_fixed", c.run("export_r50_fixed", _export_cmd(spec, checkpoint, Path(args.workdir) /
                                                                              "r50_fixed" / "m.onnx", 1), 240,
                                               background=True)))
        # an R18 trained on the GPU, beside the hand-off (both fit the card; the check's
        # budget did not fit them one after the other)
        r18_train = c.run("train_r18", [sys.executable, "-m", "dino", "train", "-e", str(spec), f"results_dir={r18_dir}",
                                        "model.backbone=resnet_18", "train.num_epochs=1"], 200, background=True)
    else:
        c.add("smoke", "best checkpoint of the study", False, "no best.json / checkpoint")
    # the hand-off as a user runs it: evaluate and inference on the GPU, export on the CPU
    from gpu_study import handoff

    handed = handoff(ws, Path(args.workdir) / "handoff_out")
    scores = handed.get("metrics") or {}
    c.add("smoke", "hand-off: automl best --evaluate --export --infer (evaluate and inference on the GPU)",
          handed.get("exit_code") == 0 and isinstance(scores.get("mAP50"), (int, float)),
          f"exit {handed.get('exit_code')} in {handed.get('wall_s')} s; mAP50 {scores.get('mAP50')}, mAP "
          f"{scores.get('mAP')}" + ("" if handed.get("exit_code") == 0 else "; " + " | ".join(
              _last_line(log) for log in sorted((Path(args.workdir) / "handoff_out").glob("handoff/jobs/*/*.log")))))
    if r18_train is not None:
        train = c.wait(r18_train)
        r18_ckpt = r18_dir / "train" / "dino_model_latest.pth"
        if train.returncode == 0 and r18_ckpt.exists():
            for batch, label in ((1, "fixed"), (-1, "dynamic")):
                name = f"export_r18_{label}"
                cmd = _export_cmd(spec, r18_ckpt, Path(args.workdir) / name / "m.onnx", batch, "model.backbone=resnet_18")
                jobs.append((name, c.run(name, cmd, 240, background=True)))
        else:
            c.add("smoke", "R18 trained on the GPU (bf16, 1 epoch)", False,
                  f"exit {train.returncode}: {c.log_tail('train_r18')}")
    if args.fp16_beside:
        section_fp16(c, args)
    for name, job in jobs:
        c.wait(job)
        ok, detail = _verified(c, name)
        c.add("smoke", f"{name.replace('_', ' ')} batch: exports and verifies", ok, detail)


def _packing_row(c: Check, ws: Path) -> None:
    """Whether a graphed smoke trial's peak reserved memory lets the smoke study pack as
    many trials per card as ``devices.trials_per_slot: auto`` allows (its ceiling, 4)."""
    import torch

    from automl.config.run_config import DeviceSettings
    from automl.observe.memory import PeakMemoryReader
    from automl.study.packing import fitting_trials

    peaks = {trial.name: peak for trial in sorted(ws.glob("dino-smoke/trial_*"))
             if (peak := PeakMemoryReader(trial).poll()) is not None}
    defaults = DeviceSettings()
    card_mib = torch.cuda.get_device_properties(0).total_memory // 2**20
    peak = max(peaks.values()) if peaks else None
    fits = fitting_trials(card_mib, peak, defaults.memory_margin) if peak else 0
    c.info["peak_gpu_memory_mib"] = peaks
    c.add("smoke", f"graphed trials' peak reserved memory packs {defaults.max_trials_per_slot} trials on the card",
          fits >= defaults.max_trials_per_slot,
          f"peak {peak} MiB ({', '.join(f'{k} {v}' for k, v in peaks.items()) or 'no peak_gpu_memory_mib'}); "
          f"{fits} fit in {card_mib} MiB with {defaults.memory_margin:.0%} kept free")


def section_fp16(c: Check, args) -> None:
    proc = c.run("fp16", [sys.executable, "bench/convergence.py", "--out", str(Path(args.workdir) / "fp16"),
                          "--n-train", "200", "--size", "256", "--epochs", "2", "--set", "train.precision=fp16"], 150)
    rows = [r for r in _jsonl(c.out / "fp16.log") if "epoch" in r]
    c.add("fp16", "2-epoch fp16 training run", proc.returncode == 0 and len(rows) >= 2,
          json.dumps(rows[-1])[:300] if rows else c.log_tail("fp16"))


def write_table(c: Check, args) -> None:
    import platform

    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    lines = [f"# GPU check: {'PASS' if all(r.passed for r in c.rows) and c.rows else 'FAIL'}", "",
             f"{card}, torch {torch.__version__}, Python {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python bench/gpu_check.py "
             f"--sections {args.sections}`", "",
             "| section | check | result | detail |", "|---|---|---|---|"]
    for r in c.rows:
        lines.append(f"| {r.section} | {r.check} | {'PASS' if r.passed else '**FAIL**'} | "
                     f"{r.detail.replace('|', '/')} |")
    text = "\n".join(lines) + "\n"
    (c.out / "gpu_check.md").write_text(text)
    (c.out / "gpu_check.json").write_text(json.dumps({"card": card, "torch": torch.__version__,
                                                       "rows": [dataclasses.asdict(r) for r in c.rows],
                                                       "info": c.info}, indent=1))
    print("\n" + text, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--workdir", default="/tmp/gpu_check")
    ap.add_argument("--anchors", default=".anchors", help="a copy of ../shared/anchors (hf_anchor.py)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--budget", type=float, default=560, help="seconds for the whole check")
    ap.add_argument("--truth-sizes", default="320,800")
    ap.add_argument("--truth-batches", default="1,8")
    ap.add_argument("--smoke-epochs", type=int, default=3,
                    help="epochs of the smoke row's trial (3: past the 64 input shapes at which the per-shape caches "
                         "clear, which broke CUDA-graph validation once)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    chosen = args.sections.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    # the fp16 run shares the GPU with nothing timed: it runs beside the smoke's CPU exports
    args.fp16_beside = "fp16" in chosen and "smoke" in chosen
    c = Check(out, args.budget)
    for name in chosen:
        if name == "fp16" and args.fp16_beside:
            continue
        if c.left() < 20:
            c.add(name, "not run", False, "the check's time budget was spent")
            continue
        began = time.monotonic()
        try:
            globals()[f"section_{name}"](c, args)
        except Exception as exc:  # noqa: BLE001 - a broken section is a FAIL row, the table still gets written
            c.add(name, "section raised", False, f"{type(exc).__name__}: {exc}"[:400])
        print(f"# {name} took {time.monotonic() - began:.0f} s", flush=True)
    write_table(c, args)
    return 0 if c.rows and all(r.passed for r in c.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
