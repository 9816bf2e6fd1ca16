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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the spec's module is imported with the model's, after the interpreter is up
    from dino.config.spec import Spec

READY = "dino-warm: ready"
TASKS = ("train",)  # the jobs a warm trainer takes over


def hand_over_message(argv: list[str], cwd: str, log_path: str, launched_at: float) -> str:
    """The line the orchestrator writes to a ready warm trainer's stdin."""
    return json.dumps({"argv": list(argv), "cwd": cwd, "log_path": log_path, "launched_at": launched_at}) + "\n"


def _device_and_precision(spec) -> tuple:
    """The device a job of ``spec`` trains on and its precision there: CUDA only with a
    single visible GPU and ``train.num_gpus`` 1; fp16 only on a GPU."""
    import torch

    from dino.runtime import cuda_allocator_defaults

    cuda = spec.train.num_gpus == 1 and torch.cuda.is_available() and torch.cuda.device_count() == 1
    if not cuda:
        return torch.device("cpu"), "fp32" if spec.train.precision == "fp16" else spec.train.precision
    cuda_allocator_defaults()
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)  # per thread
    return device, spec.train.precision


def warm_up(spec: Spec, check: AttentionCheck | None = None) -> str:
    """One training step and one inference forward of ``spec``'s model on the device
    it would train on (``_device_and_precision``); returns what was warmed and where its
    seconds went, on one line. ``check``: the attention check running beside it. Raises
    what the step raised."""
    import torch

    from dino.engine import autocast
    from dino.models import build_dino
    from dino.models.ms_deform_attn import self_check_seconds
    from dino.optim import build_optimizer, plan_learning_rates

    marks = [time.perf_counter()]
    device, precision = _device_and_precision(spec)
    cuda = device.type == "cuda"
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
    marks.append(time.perf_counter())  # device up, model built
    label = min(1, spec.dataset.num_classes - 1)
    targets = [{"labels": torch.tensor([label], device=device),
                "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]], device=device)} for _ in range(batch)]
    with autocast(device, precision):
        outputs = model(images, masks, targets)
    loss = criterion(outputs, targets)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if cuda:
        torch.cuda.synchronize(device)
    marks.append(time.perf_counter())  # one training step, the kernels' compile and check included
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        model(images, masks)
    del model, criterion, optimizer, outputs, loss, images, masks, targets
    gc.collect()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    marks.append(time.perf_counter())
    where = torch.cuda.get_device_name(device) if cuda else "cpu"
    build, step, infer = (b - a for a, b in zip(marks, marks[1:]))
    beside = f", {check.summary()}" if check is not None else ""
    return (f"one {precision} training step of {spec.model.backbone} at {side} px on {where} (device and model "
            f"{build:.1f} s, training step {step:.1f} s; attention self-check {self_check_seconds():.1f} s{beside}; "
            f"inference {infer:.1f} s)")


class AttentionCheck:
    """The fused attention's first-use check (``fused_usable``: its kernels' compile and
    their comparison with the reference) for every deformable attention of the spec's
    model, run in a thread from just after the model's imports.

    The compile was 6.1 s of a 21.7 s warm-up on an H200 host, the GPU idle meanwhile
    (``bench/startup_probe.py``). It runs mostly in Triton's C++ passes and in ptxas,
    which release the GIL (here, a compile beside a Python loop slowed the loop by 0.3 s
    of 1.0 s and itself not at all), so the thread was meant to overlap the rest of the
    warm-up: the optimizer's ``torch._dynamo`` import, the model build, the backbone's
    first forward. Measured in the 2026-12-04 study on the H200, it did not pay: the check
    took 12.9 s beside the warm-up (6.1 s alone) and the warm-up 21.8 s as before
    (``bench/runs/2026-12-04-h200-session2``). The warm-up's first attention call finds
    the verdict made or waits for it (``fused_usable`` holds a lock while it checks), so
    the result is the same either way; a thread that fails changes nothing."""

    def __init__(self, spec: Spec):
        import threading

        self.began = time.perf_counter()
        self.ended: float | None = None
        self.done = ""
        self.thread = threading.Thread(target=self._run, args=(spec,), name="attention-check", daemon=True)
        self.thread.start()

    def _run(self, spec: Spec) -> None:
        try:
            self.done = check_attention(spec)
        except Exception as exc:  # noqa: BLE001 - the warm-up's first call checks again and says why
            self.done = f"failed ({type(exc).__name__}: {exc})"
        finally:
            self.ended = time.perf_counter()

    def summary(self) -> str:
        """What the thread did and when it ended, from its start (waits for it)."""
        self.thread.join()
        assert self.ended is not None
        return f"in a thread beside the warm-up: {self.done}, done {self.ended - self.began:.1f} s after its start"


def check_attention(spec: Spec) -> str:
    """Run each distinct deformable attention of ``spec``'s model (built on the meta
    device: nothing allocated) forward on a few queries under the spec's precision, on its
    GPU: the real calls' compile-time constants and value dtype, so their verdicts (the
    check compiles and runs both kernels, forward and backward). Off the GPU there is
    nothing to compile (and Triton's CPU interpreter is not thread-safe). Returns what was
    checked."""
    import torch

    from dino.engine import autocast
    from dino.models import build_dino
    from dino.models.ms_deform_attn import MSDeformAttn, default_impl

    device, precision = _device_and_precision(spec)
    if device.type != "cuda" or default_impl(device) != "fused":
        return f"no fused attention to compile on {device.type}"
    with torch.device("meta"):
        model, _, _ = build_dino(spec.model, spec.dataset.num_classes)
    shapes = sorted({(m.d_model, m.n_levels, m.n_heads, m.n_points) for m in model.modules()
                     if isinstance(m, MSDeformAttn)})
    paths = set()
    for d_model, n_levels, n_heads, n_points in shapes:
        attention = MSDeformAttn(d_model, n_levels, n_heads, n_points).to(device)
        levels = [(max(1, 8 >> level), max(1, 8 >> level)) for level in range(n_levels)]
        tokens = sum(h * w for h, w in levels)
        with torch.no_grad(), autocast(device, precision):
            attention(torch.randn(1, 100, d_model, device=device), torch.rand(1, 100, n_levels, 2, device=device),
                      torch.randn(1, tokens, d_model, device=device), levels)
        paths.add(attention.last_impl)
    return f"{len(shapes)} attention shape(s) {shapes} in {precision}, path {', '.join(sorted(paths))}"


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
    from dino.startup import process_start_time

    began = process_start_time()  # the interpreter's start: ``dino.cli`` imported torch before this ran
    try:
        import dino.engine  # noqa: F401 - evaluation, and the model (below): what the attention check needs
        import dino.models  # noqa: F401
        from dino.config import load_spec

        spec, _ = load_spec(spec_path)  # parsed once, for the check and the warm-up
        check = AttentionCheck(spec)  # no imports of its own from here: the modules it uses are loaded
        import dino.train  # noqa: F401 - the rest of the training path

        imports_s = time.time() - began
        what = warm_up(spec, check)
    except Exception as exc:  # noqa: BLE001 - any failure: this process is not used
        print(f"dino-warm: warm-up failed, not used ({type(exc).__name__}: {exc})", flush=True)
        return 1
    warm_s = time.time() - began
    print(f"dino-warm: {what}; {warm_s:.1f} s with the imports ({imports_s:.1f} s)", flush=True)
    print(READY, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the orchestrator went away before it had a job for us
    return _become(json.loads(line), warm_s)
