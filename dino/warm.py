"""``dino warm``: a trainer process started ahead of its job, which it then becomes.

A cold ``dino train`` spends 8-11 s importing (torch, triton, scipy, pycocotools) and,
on a GPU, several more in its first step creating the CUDA context, loading cuBLAS and
cuDNN and running the fused attention's self-check (``bench/README.md``). None of that
depends on the job, so an orchestrator can have it done while other trials train, and
hand the next job to a process that is ready.

The protocol (the local launcher's side is ``automl.launchers.warm``):

1. The orchestrator starts ``dino warm --like <spec.yaml>`` with the very environment
   its next job will have (``CUDA_VISIBLE_DEVICES`` included), stdin and stdout piped.
2. The process imports the training path and runs one training step and one
   inference forward of the ``--like`` spec's model (random weights, random images) on
   the device the spec would train on, then frees what it allocated and resets the
   peak-memory counters, so a trial's reported peak is its own.
3. It prints :data:`READY` on stdout. A warm-up that fails ends the process (exit 1)
   before that line: it is never used, and the job starts cold.
4. It reads one JSON line from stdin (:func:`hand_over_message`); end of input (the
   orchestrator gone) ends it.
5. It becomes the job: stdout and stderr appended to the job's log, stdin from
   /dev/null, the job's working directory, then ``dino`` with the job's arguments. Its
   exit code is the job's, its process (and group) id the one the orchestrator records.

The trainer seeds every generator at its start, so the warm-up's draws do not change
what the job computes; the job's start-up line is timed from the hand-off
(``dino.startup.handed_over``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

READY = "dino-warm: ready"
TASKS = ("train",)  # the jobs a warm trainer takes over


def hand_over_message(argv: list[str], cwd: str, log_path: str, launched_at: float) -> str:
    """The line the orchestrator writes to a ready warm trainer's stdin."""
    return json.dumps({"argv": list(argv), "cwd": cwd, "log_path": log_path, "launched_at": launched_at}) + "\n"


def warm_up(spec_path: str) -> str:
    """One training step and one inference forward of ``spec_path``'s model on the device
    it would train on (CUDA only with a single visible GPU and ``train.num_gpus`` 1);
    returns what was warmed, on one line. Raises what the step raised."""
    import torch

    from dino.config import load_spec
    from dino.engine import autocast
    from dino.models import build_dino
    from dino.optim import build_optimizer, plan_learning_rates
    from dino.runtime import cuda_allocator_defaults

    spec, _ = load_spec(spec_path)
    cuda = spec.train.num_gpus == 1 and torch.cuda.is_available() and torch.cuda.device_count() == 1
    if cuda:
        cuda_allocator_defaults()
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    precision = spec.train.precision if cuda or spec.train.precision != "fp16" else "fp32"
    # small images: the kernels and libraries load the same, in a fraction of a real step
    side = min(spec.dataset.augmentation.test_random_resize, 320 if cuda else 128)
    batch = 2
    with torch.device(device):  # as the trainer builds it (dino.train.build_model)
        model, criterion, _post = build_dino(spec.model, spec.dataset.num_classes)
    model.to(device).train()
    criterion.to(device).train()
    optimizer = build_optimizer(model, spec.model, spec.train.optim, plan_learning_rates(spec.train.optim, True))
    images = torch.rand(batch, 3, side, side, device=device)
    masks = torch.zeros(batch, side, side, dtype=torch.bool, device=device)
    label = min(1, spec.dataset.num_classes - 1)
    targets = [{"labels": torch.tensor([label], device=device),
                "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]], device=device)} for _ in range(batch)]
    with autocast(device, precision):
        outputs = model(images, masks, targets)
    loss = criterion(outputs, targets)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        model(images, masks)
    del model, criterion, optimizer, outputs, loss, images, masks, targets
    gc.collect()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    where = torch.cuda.get_device_name(device) if cuda else "cpu"
    return f"one {precision} training step of {spec.model.backbone} at {side} px on {where}"


def _become(message: dict, warm_s: float) -> int:
    """Turn this process into the job ``message`` describes; returns its exit code."""
    from dino.cli import main
    from dino.startup import handed_over

    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(message["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    argv = [str(a) for a in message.get("argv") or ()]
    if not argv or argv[0] not in TASKS:
        print(f"error: a warm trainer takes over {' or '.join(TASKS)} jobs, not {argv!r}", file=sys.stderr, flush=True)
        return 2
    os.chdir(message["cwd"])
    handed_over(float(message["launched_at"]), warm_s)
    sys.argv = ["dino", *argv]
    return main(argv)


def serve(spec_path: str) -> int:
    """``dino warm --like SPEC``: warm up, say :data:`READY`, wait for the job, become it."""
    began = time.time()
    try:
        import dino.engine  # noqa: F401 - the training path's imports, evaluation's included
        import dino.train  # noqa: F401

        what = warm_up(spec_path)
    except Exception as exc:  # noqa: BLE001 - any failure: this process is not used
        print(f"dino-warm: warm-up failed, not used ({type(exc).__name__}: {exc})", flush=True)
        return 1
    warm_s = time.time() - began
    print(f"dino-warm: {what}; {warm_s:.1f} s with the imports", flush=True)
    print(READY, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the orchestrator went away before it had a job for us
    return _become(json.loads(line), warm_s)
