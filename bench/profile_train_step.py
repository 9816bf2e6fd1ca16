"""Where a training step of our DINO spends its time, and how many operators it launches.

GPU (default): torch.profiler over a few steps of DINO-4scale R50 (batch 4, 800x800,
bf16): the top operators by device time and by host time, and how often the host
waited for the device.

CPU (``--device cpu``): a mid-size configuration (ResNet-18, 256 px, batch 2, the full
6+6-layer transformer) to count the aten operators a step dispatches, per phase
(forward+loss, backward, optimizer). On the GPU the step is bound by launching these
ops, so the count is the proxy for the eager overhead that can be tested without a GPU.
``--graphed encoder`` / ``encoder+decoder`` counts what stays eager when those parts
replay from CUDA graphs (``train.cuda_graphs``, ``train.cuda_graphs_decoder``): each
graphed part is one node that copies its inputs and output gradients into fixed
buffers, as a replay does, and returns outputs computed once (``FrozenPart``).

    python bench/profile_train_step.py [--dtype fp32] [--steps 5] [--rows 40] [--no-decoder-graphs]
    python bench/profile_train_step.py --device cpu [--json] [--graphed encoder+decoder]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_speed import OUR_CONFIGS, OurDino, make_batch  # noqa: E402

from dino.config.model import ModelConfig  # noqa: E402
from dino.models.cuda_graphs import training_path  # noqa: E402
from dino.models.ms_deform_attn import attention_paths, force_impl  # noqa: E402

CPU_CONFIG = ModelConfig(backbone="resnet_18", return_interm_indices=[2, 3, 4], num_feature_levels=4)


def _phase_op_counts(prof) -> dict[str, int]:
    """aten operators dispatched from Python per phase (nested calls of an op not counted)."""
    counts: Counter = Counter()
    for evt in prof.events():
        if not evt.name.startswith("aten::"):
            continue
        parent = evt.cpu_parent
        if parent is not None and parent.name.startswith("aten::"):
            continue  # dispatched by another aten op, not by our code
        while parent is not None and parent.name not in ("forward+loss", "backward", "optimizer"):
            parent = parent.cpu_parent
        counts[parent.name if parent is not None else "other"] += 1
    return dict(counts)


class _FrozenReplay(torch.autograd.Function):
    """A graphed part's replay as the host sees it: the inputs copied into fixed buffers,
    fixed outputs handed back detached; in backward the output gradients copied into
    fixed buffers. No kernel of the part itself (those are the graph's)."""

    @staticmethod
    def forward(ctx, part, *inputs):
        for static, value in zip(part.inputs, inputs):
            if static is not None:
                static.copy_(value)
        ctx.part = part
        return tuple(o.detach() for o in part.outputs)

    @staticmethod
    def backward(ctx, *grads):
        part = ctx.part
        for static, grad in zip(part.grads, grads):
            static.copy_(grad) if grad is not None else static.zero_()
        return (None, *(None for _ in part.inputs))


class FrozenPart:
    """Stands in for ``encode`` or ``decode_queries`` in the CPU count of ``--graphed``:
    its outputs computed once by the eager method, replayed by ``_FrozenReplay``. Only
    for counting the eager remainder's operators: the outputs do not follow the inputs."""

    def __init__(self, eager, tensor_outputs: int):
        self.eager, self.tensor_outputs = eager, tensor_outputs
        self.inputs = self.outputs = self.extra = self.grads = None

    def __call__(self, *args):
        tensors = [a if isinstance(a, torch.Tensor) or a is None else None for a in args]
        if self.outputs is None:
            with torch.no_grad():
                result = self.eager(*args)
            self.outputs = tuple(o.float() if o.is_floating_point() else o for o in result[:self.tensor_outputs])
            self.extra = result[self.tensor_outputs:]
            self.inputs = tuple(None if t is None else t.detach().clone() for t in tensors)
            self.grads = tuple(torch.empty_like(o) for o in self.outputs)
            self.outputs = tuple(o.requires_grad_(o.is_floating_point()) for o in self.outputs)
        out = _FrozenReplay.apply(self, *tensors)
        return (*out, *self.extra)


def cpu_profile(args) -> int:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    adapter = OurDino(CPU_CONFIG, device)
    if args.gpu_sampler:  # count the ops of the GPU's one-call canvas sampler on the CPU
        force_impl(adapter.model, "canvas")
    opt = torch.optim.AdamW(adapter.model.parameters(), lr=1e-4, fused=True)  # as the trainer on CUDA
    images, targets = make_batch(2, args.size, device, torch.Generator().manual_seed(0))
    model = adapter.model
    if "encoder" in args.graphed:  # memory, mask, valid_ratios (+ the level shapes)
        model.encode = FrozenPart(model.encode, 3)
    if "decoder" in args.graphed:  # logits, boxes, interm logits, interm boxes; the trainer's slots
        model.decode_queries = FrozenPart(model.decode_queries, 4)
        model.denoising_slots = model.denoising.slots_for(max(len(t["labels"]) for t in targets))

    def step():
        return _train_step(adapter, opt, images, targets)

    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_ms = (time.perf_counter() - t0) / args.steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    counts = _phase_op_counts(prof)
    row = {"device": "cpu", "gpu_sampler": args.gpu_sampler, "graphed": args.graphed, "threads": args.threads,
           "size": args.size, "batch": 2, "backbone": CPU_CONFIG.backbone,
           "step_ms": round(step_ms, 1), "ops_per_step": sum(counts.values()), "ops_by_phase": counts}
    print(json.dumps(row))
    if not args.json:
        print(prof.key_averages().table(sort_by="count", row_limit=args.rows))
    return 0


def _train_step(adapter, opt, images, targets, autocast_dtype=None):
    """forward+loss, backward, optimizer: each phase a named profiler range."""
    use_amp = autocast_dtype is not None and autocast_dtype != torch.float32
    with torch.autocast("cuda", dtype=autocast_dtype or torch.float32, enabled=use_amp):
        with record_function("forward+loss"):
            loss = adapter.loss(images, targets)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss


def gpu_profile(args) -> int:
    device = torch.device("cuda")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    adapter = OurDino(OUR_CONFIGS[args.config], device, autocast_dtype=None if dtype == torch.float32 else dtype,
                      cuda_graphs=not args.eager_training,  # the trainer's path unless --eager-training
                      decoder_graphs=not args.no_decoder_graphs)
    opt = adapter.optimizer()
    gen = torch.Generator().manual_seed(0)
    images, targets = make_batch(4, args.size, device, gen)

    def step():
        return _train_step(adapter, opt, images, targets, autocast_dtype=dtype)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) / args.steps * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    # device-side events, minus the GPU copies of our own record_function ranges
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and e.name not in ("forward+loss", "backward", "optimizer")]
    busy_ms = sum(e.device_time_total for e in kernels) / 1e3 / args.steps
    table = prof.key_averages()
    print(table.table(sort_by="cuda_time_total", row_limit=args.rows))
    print(table.table(sort_by="cpu_time_total", row_limit=args.rows))
    syncs = [e for e in table if "synchronize" in e.key.lower() or e.key in ("aten::item", "aten::_local_scalar_dense", "aten::nonzero")]
    for e in syncs:
        print(f"host waits: {e.key} x{e.count // args.steps}/step, {e.cpu_time_total / args.steps / 1e3:.1f} ms/step")
    print(json.dumps({"profile": args.config, "dtype": args.dtype, "msda": attention_paths(adapter.model),
                      "training_path": training_path(adapter.model),
                      "wall_ms_per_step": round(wall_ms, 1), "gpu_kernel_ms_per_step": round(busy_ms, 1),
                      "kernels_per_step": len(kernels) // args.steps, "gpu_busy_fraction_of_unprofiled_wall": round(busy_ms / wall_ms, 3)}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, help="profiled (GPU) or timed (CPU) steps; default 5 / 2")
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--size", type=int, help="image side; default 800 (GPU) / 256 (CPU)")
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    ap.add_argument("--json", action="store_true", help="CPU: only the JSON line")
    ap.add_argument("--gpu-sampler", action="store_true", help="CPU: use the GPU's one-call canvas sampler")
    ap.add_argument("--config", default="dino_4scale_r50")
    ap.add_argument("--eager-training", action="store_true", help="GPU: train.cuda_graphs=false's step")
    ap.add_argument("--no-decoder-graphs", action="store_true", help="GPU: train.cuda_graphs_decoder=false's step")
    ap.add_argument("--graphed", default="none", choices=["none", "encoder", "encoder+decoder"],
                    help="CPU: count only what stays eager when these parts replay from CUDA graphs")
    args = ap.parse_args()
    if args.device == "cpu":
        args.steps = args.steps or 2
        args.size = args.size or 256
        return cpu_profile(args)
    args.steps = args.steps or 5
    args.size = args.size or 800
    return gpu_profile(args)


if __name__ == "__main__":
    sys.exit(main())
