"""A trainer for orchestration tests that speaks the TAO contract without a model.

``scripted_trainer.py -e spec.yaml``: reads the spec, writes TAO status.json lines and
``Validation mAP50 : v`` per epoch, a checkpoint file per epoch, resumes from the
latest one, and fails like a real job on request. Its mAP50 curve is a deterministic
function of ``train.optim.lr`` (best near 3e-4), so tests know which trials are weak.
Each trained epoch prints ``TRAINED EPOCH <e>`` so tests can check nothing is redone.

``scripted_trainer.py inference -e spec.yaml dataset.infer_data_sources.json_file=F ...``
writes ``<results_dir>/inference/predictions.json`` with one detection per image listed
in F (:data:`SCRIPTED_DETECTION`), as ``dino inference`` would.
"""

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
    if sys.argv[1:2] == ["inference"]:
        return inference()
    spec = yaml.safe_load(Path(sys.argv[sys.argv.index("-e") + 1]).read_text())
    results = Path(spec["results_dir"]) / "train"
    results.mkdir(parents=True, exist_ok=True)
    log = results / "status.json"
    epochs = int(spec["train"]["num_epochs"])
    lr = float(spec["train"]["optim"]["lr"])
    seconds = float(os.environ.get("SCRIPTED_EPOCH_SECONDS", "0.4"))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    for source in spec["dataset"]["train_data_sources"]:
        if not Path(source["json_file"]).exists():
            print(f"FileNotFoundError: [Errno 2] No such file or directory: '{source['json_file']}'")
            return 1
    if lr > 2e-2:  # a setting that blows up the GPU, as a real job would report it
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        status(log, status="FAILURE", message="CUDA out of memory")
        return 1
    done = sorted(int(p.stem.split("_")[2]) for p in results.glob("model_epoch_*_step_*.pth"))
    start = done[-1] + 1 if done else 0
    if start:
        print(f"resuming from epoch {start}", flush=True)
    status(log, status="STARTED", message="Starting training")
    quality = math.exp(-((math.log10(lr / 3e-4)) ** 2))
    kpi = {}
    for epoch in range(start, epochs):
        time.sleep(seconds)
        value = quality * (1 - math.exp(-(epoch + 1) / 2))
        kpi = {"val_mAP": f"{value / 2:.4f}", "val_mAP50": f"{value:.4f}", "val_loss": 1 - value}
        print(f"TRAINED EPOCH {epoch}", flush=True)
        print(f"Validation mAP50 : {value:.4f}", flush=True)
        status(log, status="RUNNING", message="Train and validation metrics generated.", epoch=epoch,
               max_epoch=epochs - 1, kpi=kpi)
        (results / f"model_epoch_{epoch:03d}_step_{(epoch + 1) * 10}.pth").write_bytes(b"ckpt")
    status(log, status="SUCCESS", message="Training finished successfully.", kpi=kpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
