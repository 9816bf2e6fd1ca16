"""A trainer for orchestration tests that speaks the TAO contract without a model.

``scripted_trainer.py -e spec.yaml``: reads the spec, writes TAO status.json lines and
``Validation mAP50 : v`` per epoch, checkpoints as the bundled trainer names them (every
``train.checkpoint_interval`` epochs and the last, the ``dino_model_latest.pth`` alias
each epoch, ``model_best.pth`` + ``model_best.json`` for ``train.best_checkpoint_metric``),
resumes from the latest one, and fails like a real job on request. A checkpoint file
holds the text ``epoch <e>``. Its mAP50 curve is a deterministic function of
``train.optim.lr`` (best near 3e-4), so tests know which trials are weak. Each trained
epoch prints ``TRAINED EPOCH <e>`` so tests can check nothing is redone.

Environment: ``SCRIPTED_EPOCH_SECONDS`` (0.4), ``SCRIPTED_DIP_FROM=E`` (values from
epoch E on are halved, so the best epoch is not the last), ``SCRIPTED_HANG_AT_EPOCH=E``
(stop writing anything at epoch E, as a hung job does), ``SCRIPTED_SLOW_LR=lr`` (the trial
of that lr takes 8 times as long an epoch).

For packing tests: ``JOB START <t>`` / ``JOB END <t>`` (``time.time()``) bracket the run;
``SCRIPTED_PEAK_MIB`` adds ``peak_gpu_memory_mib`` to every epoch line, as the real
trainer does on a GPU; with ``SCRIPTED_OOM_BESIDE=<dir>`` a job started while an earlier
one is still running (both registered in that folder) fails with a CUDA OOM, as a trial
that finds the card already full would; with ``SCRIPTED_PACK_DIR=<dir>`` every job
registers there, and one whose lr makes it run out of memory first waits (up to 3 s) for
a neighbour to appear, so that its failure happens beside one.
``scripted_trainer.py evaluate -e spec.yaml`` and ``export`` answer like the trainer's
tasks (a held-out score that is a function of the lr; an ONNX stand-in file).
``scripted_trainer.py inference -e spec.yaml dataset.infer_data_sources.json_file=F ...``
writes ``<results_dir>/inference/predictions.json`` with one detection per image listed
in F (:data:`SCRIPTED_DETECTION`), as ``dino inference`` would.
"""

import atexit
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import yaml


def status(path: Path, **line) -> None:
    line.setdefault("date", time.strftime("%-m/%-d/%Y"))
    line.setdefault("time", time.strftime("%-H:%-M:%-S"))
    line.setdefault("verbosity", "INFO")
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def _register(folder: Path) -> Path:
    """This job's entry in ``folder`` (removed when it exits)."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"{time.time_ns():020d}-{os.getpid()}"
    mine.touch()
    atexit.register(lambda: mine.unlink(missing_ok=True))
    return mine


def _others_alive(folder: Path, mine: Path, earlier_only: bool) -> bool:
    for other in sorted(folder.iterdir()):
        if other == mine or (earlier_only and other.name > mine.name):
            continue
        try:
            os.kill(int(other.name.split("-")[1]), 0)
            return True
        except (ProcessLookupError, ValueError):
            continue
    return False


def quality_of(spec: dict) -> float:
    return math.exp(-((math.log10(float(spec["train"]["optim"]["lr"]) / 3e-4)) ** 2))


def evaluate(spec: dict) -> int:
    """``evaluate -e spec``: the held-out score of the spec's lr, as TAO's kpi ``test_mAP50``
    (``SCRIPTED_EVAL_FAIL=1``: the job crashes like a broken checkpoint)."""
    out = Path(spec["evaluate"]["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if not Path(spec["evaluate"]["checkpoint"]).exists() or os.environ.get("SCRIPTED_EVAL_FAIL") == "1":
        print("RuntimeError: cannot load the checkpoint", flush=True)
        return 1
    if not Path(spec["dataset"]["test_data_sources"]["json_file"]).exists():
        print("FileNotFoundError: held-out annotations", flush=True)
        return 1
    value = quality_of(spec) * float(os.environ.get("SCRIPTED_HOLDOUT_FACTOR", "0.9"))
    status(out / "status.json", status="SUCCESS", message="Test metrics generated.",
           kpi={"test_mAP": f"{value / 2:.4f}", "test_mAP50": f"{value:.4f}"})
    print(f"Test mAP50 : {value:.4f}", flush=True)
    return 0


def export() -> int:
    """``scripted_trainer.py export -e spec.yaml export.checkpoint=C export.onnx_file=F``:
    F gets C's text, so a test sees which checkpoint was exported."""
    args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
    checkpoint = Path(args["export.checkpoint"])
    Path(args["export.onnx_file"]).write_text(f"exported {checkpoint.parent.parent.name}/{checkpoint.name}: "
                                              + checkpoint.read_text())
    return 0


SCRIPTED_DETECTION = {"category_id": 1, "bbox": [4.0, 4.0, 12.0, 10.0], "score": 0.9}


def inference() -> int:
    args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
    listing = json.loads(Path(args["dataset.infer_data_sources.json_file"]).read_text())
    out = Path(args["results_dir"]) / "inference"
    out.mkdir(parents=True, exist_ok=True)
    detections = [{"image_id": im["id"], **SCRIPTED_DETECTION} for im in listing["images"]]
    (out / "predictions.json").write_text(json.dumps(detections))
    print(f"Predictions : {out / 'predictions.json'}", flush=True)
    return 0


def main() -> int:
    task = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "train"
    print(f"JOB START {time.time():.3f}", flush=True)
    for name in ("OMP_NUM_THREADS", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        print(f"ENV {name}={os.environ.get(name, '')}", flush=True)
    atexit.register(lambda: print(f"JOB END {time.time():.3f}", flush=True))
    if task == "export":
        return export()
    if task == "inference":
        return inference()
    spec = yaml.safe_load(Path(sys.argv[sys.argv.index("-e") + 1]).read_text())
    if task == "evaluate":
        return evaluate(spec)
    results = Path(spec["results_dir"]) / "train"
    results.mkdir(parents=True, exist_ok=True)
    log = results / "status.json"
    epochs = int(spec["train"]["num_epochs"])
    lr = float(spec["train"]["optim"]["lr"])
    seconds = float(os.environ.get("SCRIPTED_EPOCH_SECONDS", "0.4"))
    if "SCRIPTED_SLOW_LR" in os.environ and math.isclose(lr, float(os.environ["SCRIPTED_SLOW_LR"]), rel_tol=1e-6):
        seconds *= 8  # one trial that trains much longer than the others
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    for source in spec["dataset"]["train_data_sources"]:
        if not Path(source["json_file"]).exists():
            print(f"FileNotFoundError: [Errno 2] No such file or directory: '{source['json_file']}'")
            return 1
    beside = os.environ.get("SCRIPTED_OOM_BESIDE")
    if beside and _others_alive(Path(beside), _register(Path(beside)), earlier_only=True):
        time.sleep(0.2)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 4.00 GiB (GPU 0; the card is "
              "shared)", flush=True)
        status(log, status="FAILURE", message="CUDA out of memory")
        return 1
    if lr > 2e-2 and (pack := os.environ.get("SCRIPTED_PACK_DIR")):
        # a job that blows up whatever runs beside it: wait (3 s at most) for a neighbour first
        mine, deadline = _register(Path(pack)), time.monotonic() + 3
        while not _others_alive(Path(pack), mine, earlier_only=False) and time.monotonic() < deadline:
            time.sleep(0.05)
    elif (pack := os.environ.get("SCRIPTED_PACK_DIR")):
        _register(Path(pack))
    if lr > 2e-2:  # a setting that blows up the GPU, as a real job would report it
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        status(log, status="FAILURE", message="CUDA out of memory")
        return 1
    latest = results / "dino_model_latest.pth"
    start = int(latest.read_text().split()[1]) + 1 if latest.exists() else 0
    if start:
        print(f"resuming from epoch {start}", flush=True)
    interval = int(spec["train"].get("checkpoint_interval", 1))
    best_metric = spec["train"].get("best_checkpoint_metric", "")
    best_record = results / "model_best.json"
    best = json.loads(best_record.read_text())["value"] if best_record.exists() else None
    dip_from = int(os.environ.get("SCRIPTED_DIP_FROM", "1000000"))
    hang_at = int(os.environ.get("SCRIPTED_HANG_AT_EPOCH", "-1"))
    status(log, status="STARTED", message="Starting training")
    quality = quality_of(spec)
    kpi = {}
    for epoch in range(start, epochs):
        if epoch == hang_at:
            while True:
                time.sleep(1)
        time.sleep(seconds)
        value = quality * (1 - math.exp(-(epoch + 1) / 2)) * (0.5 if epoch >= dip_from else 1.0)
        kpi = {"val_mAP": f"{value / 2:.4f}", "val_mAP50": f"{value:.4f}", "val_loss": 1 - value}
        print(f"TRAINED EPOCH {epoch}", flush=True)
        print(f"Validation mAP50 : {value:.4f}", flush=True)
        extra = {"peak_gpu_memory_mib": int(os.environ["SCRIPTED_PEAK_MIB"])} if "SCRIPTED_PEAK_MIB" in os.environ else {}
        status(log, status="RUNNING", message="Train and validation metrics generated.", epoch=epoch,
               max_epoch=epochs - 1, kpi=kpi, **extra)
        step = (epoch + 1) * 10
        latest.write_text(f"epoch {epoch}")  # first: a kill in between never makes an epoch run twice
        if (epoch + 1) % interval == 0 or epoch == epochs - 1:
            (results / f"model_epoch_{epoch:03d}_step_{step}.pth").write_text(f"epoch {epoch}")
        if best_metric:
            current = float(kpi[best_metric])
            if best is None or (current < best if best_metric == "val_loss" else current > best):
                best = current
                (results / "model_best.pth").write_text(f"epoch {epoch}")
                best_record.write_text(json.dumps({"metric": best_metric, "value": current, "epoch": epoch,
                                                   "step": step, "checkpoint": "model_best.pth"}))
    status(log, status="SUCCESS", message="Training finished successfully.", kpi=kpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
