"""Training and inference speed of our DINO-4scale beside Hugging Face's Deformable-DETR
family, on one device, random weights, synthetic batches (the setup of
``../shared/anchors/hf_anchor.py``: batch 4 at 800x800, fp32 and bf16, 8 boxes per image).

One JSON line per (model, dtype) and a table at the end. A training step is
forward + loss + backward + AdamW step; inference is a forward under ``no_grad``.
Hugging Face models are included when ``transformers`` is importable (``--no-hf`` skips).

    python bench/model_speed.py                      # CUDA, 800x800, batch 4
    python bench/model_speed.py --device cpu --size 256       # smoke check (fp32, 2 timed steps)
    python bench/model_speed.py --models dino_4scale_r50 --compile   # train.compile's path
    python bench/model_speed.py --models dino_4scale_r50 --eager-training   # train.cuda_graphs=false
    python bench/model_speed.py --models dino_4scale_r50 --no-decoder-graphs   # train.cuda_graphs_decoder=false

Our rows use the trainer's defaults on the device: the fused Triton deformable attention
(``DINO_MSDA_IMPL=pytorch`` for the canvas path; the row's ``msda`` key says which ran) and
fused AdamW. Results, with the card and the command of each: ``bench/README.md``. Latest,
one H100, batch 4, 800x800, 10 timed steps after 3 warm-up, HF in the same call:

    model                          dtype     train img/s  infer img/s  train GiB
    dino_4scale_r50 (ours)         fp32           21.00        89.51      10.79
    dino_4scale_r50 (ours)         bf16           27.91       140.80       7.06
    hf_deformable_detr_two_stage   fp32           18.85        57.70      11.23
    hf_deformable_detr_two_stage   bf16           19.24        67.96      10.46
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dino.config.model import ModelConfig  # noqa: E402
from dino.models import build_dino  # noqa: E402
from dino.models.cuda_graphs import install_training_graphs, training_path  # noqa: E402
from dino.models.ms_deform_attn import attention_paths  # noqa: E402

NUM_OBJECTS, NUM_CLASSES = 8, 4  # foreground classes; our DINO gets num_classes = 5 (TAO ids 1..4)

# DINO-4scale as in the paper: layer2..4 + one strided conv (strides 8..64);
# TAO's default spec: layer1..4 (strides 4..32, ~4x the encoder tokens).
OUR_CONFIGS = {
    "dino_4scale_r50": ModelConfig(return_interm_indices=[2, 3, 4], num_feature_levels=4),
    "dino_tao_default_r50": ModelConfig(return_interm_indices=[1, 2, 3, 4], num_feature_levels=4),
}


def make_batch(batch: int, size: int, device: torch.device, gen: torch.Generator):
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    targets = []
    for _ in range(batch):
        cxcy = torch.rand(NUM_OBJECTS, 2, generator=gen) * 0.6 + 0.2
        wh = torch.rand(NUM_OBJECTS, 2, generator=gen) * 0.2 + 0.05
        labels = torch.randint(1, NUM_CLASSES + 1, (NUM_OBJECTS,), generator=gen)
        targets.append({"labels": labels.to(device), "boxes": torch.cat([cxcy, wh], 1).to(device)})
    return images, targets


class OurDino:
    """Adapter: ``loss(images, targets)`` and ``infer(images)`` for our model."""

    def __init__(self, cfg: ModelConfig, device: torch.device, compile: bool = False,
                 autocast_dtype: torch.dtype | None = None, cuda_graphs: bool = True, decoder_graphs: bool = True):
        self.model, self.criterion, self.post = build_dino(cfg, NUM_CLASSES + 1)
        self.model.to(device)
        if compile:  # what train.compile does: backbone body, encoder and decoder layers
            from dino.models.compiled import compile_hot_modules

            compile_hot_modules(self.model)
        # the trainer's rule for train.cuda_graphs (backbone + encoder graphed on one GPU) and
        # train.cuda_graphs_decoder (the decoder too; every synthetic image has NUM_OBJECTS boxes)
        install_training_graphs(self.model, device, autocast_dtype, enabled=cuda_graphs, decoder=decoder_graphs,
                                max_boxes=NUM_OBJECTS, compiled=compile)
        self.masks = None
        self.forward = None

    def _masks(self, images):
        if self.masks is None or self.masks.shape[0] != images.shape[0]:
            self.masks = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.bool, device=images.device)
        return self.masks

    def optimizer(self):
        """AdamW as the trainer builds it (``dino.optim``): fused on CUDA."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=1e-4, fused=all(p.is_cuda for p in params) or None)

    def loss(self, images, targets):
        return self.criterion(self.model(images, self._masks(images), targets), targets)["loss"]

    def infer(self, images, precision: str = "fp32"):
        """The trainer's validation / ``dino inference`` forward (``dino.engine.inference_forward``:
        CUDA graphs on a GPU once a shape repeats)."""
        if self.forward is None:
            from dino.engine import inference_forward

            self.forward = inference_forward(self.model, images.device, precision)
        out = self.forward(images, self._masks(images))
        sizes = torch.tensor([images.shape[2:]] * images.shape[0], device=images.device)
        return self.post(out, sizes)


class HfModel:
    """Adapter for the configurations of ``hf_anchor.py``."""

    def __init__(self, name: str, device: torch.device):
        from transformers import ResNetConfig

        if name == "hf_deformable_detr_two_stage":
            from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

            cfg = DeformableDetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                                       backbone_config=ResNetConfig(out_features=["stage2", "stage3", "stage4"]),
                                       two_stage=True, with_box_refine=True, num_feature_levels=4,
                                       num_queries=300, two_stage_num_proposals=300, num_labels=NUM_CLASSES)
            self.model = DeformableDetrForObjectDetection(cfg)
        elif name == "hf_rt_detr_r50":
            from transformers import RTDetrConfig, RTDetrForObjectDetection

            self.model = RTDetrForObjectDetection(RTDetrConfig(num_labels=NUM_CLASSES))
        else:
            raise ValueError(name)
        self.model.to(device)

    def optimizer(self):
        """AdamW as the anchor script builds it."""
        return torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def loss(self, images, targets):
        labels = [{"class_labels": t["labels"] - 1, "boxes": t["boxes"]} for t in targets]
        return self.model(pixel_values=images, labels=labels).loss

    def infer(self, images, precision: str = "fp32"):
        return self.model(pixel_values=images)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, adapter_factory, args, dtype: torch.dtype, device: torch.device) -> dict:
    torch.manual_seed(0)
    adapter = adapter_factory(dtype)
    module = adapter.model
    opt = adapter.optimizer()
    gen = torch.Generator().manual_seed(0)
    images, targets = make_batch(args.batch, args.size, device, gen)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    module.train()
    w0 = time.perf_counter()  # warm-up time includes torch.compile's
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
            warm_s = t0 - w0
        with autocast:
            loss = adapter.loss(images, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.1)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    train_s = time.perf_counter() - t0
    train_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    module.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            if i == args.warmup:
                _sync(device)
                t1 = time.perf_counter()
            with autocast:
                adapter.infer(images, "fp32" if dtype == torch.float32 else "bf16")
    _sync(device)
    infer_s = time.perf_counter() - t1
    infer_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    result = {
        "model": name, "batch": args.batch, "warmup_s": round(warm_s, 1), "size": args.size, "dtype": str(dtype).removeprefix("torch."),
        "train_img_s": round(args.batch * args.iters / train_s, 2),
        "infer_img_s": round(args.batch * args.iters / infer_s, 2),
        "train_peak_gib": None if train_peak is None else round(train_peak, 2),
        "infer_peak_gib": None if infer_peak is None else round(infer_peak, 2),
        "last_loss": round(float(loss.detach()), 4),
    }
    if isinstance(adapter, OurDino):  # the path that ran, read from the model after the timed steps
        result["msda"] = attention_paths(module)
        result["training_path"] = training_path(module)
        result["inference_path"] = getattr(adapter.forward, "last_path", "eager")
    del adapter, module, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, help="timed steps (default 20 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--dtypes", help="fp32 and/or bf16, comma-separated (default both on CUDA, fp32 on CPU)")
    parser.add_argument("--models", default=",".join(OUR_CONFIGS) + ",hf_deformable_detr_two_stage,hf_rt_detr_r50")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face models")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    parser.add_argument("--eager-training", action="store_true",
                        help="our models trained eagerly (train.cuda_graphs=false; rows named <model>+eager); by "
                             "default the trainer's path: backbone, encoder and decoder from CUDA graphs on a GPU")
    parser.add_argument("--compile", action="store_true",
                        help="our models with train.compile's torch.compile wrapping (rows named <model>+compile; "
                             "compile time falls in the warm-up steps)")
    parser.add_argument("--no-decoder-graphs", action="store_true",
                        help="our models with train.cuda_graphs_decoder=false: the query selection and decoder "
                             "trained eagerly (rows named <model>+eager_decoder)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.iters is None:
        args.iters = 20 if device.type == "cuda" else 2
    if args.warmup is None:
        args.warmup = 5 if device.type == "cuda" else 1
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu for a smoke run")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if args.dtypes is None:
        args.dtypes = "fp32,bf16" if device.type == "cuda" else "fp32"
    try:
        chosen = [dtypes[d] for d in args.dtypes.split(",")]
    except KeyError as exc:
        parser.error(f"--dtypes: unknown {exc}; use fp32 and/or bf16")
    names = [n for n in args.models.split(",") if n]
    if not args.no_hf and any(n.startswith("hf_") for n in names):
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: skipping the hf_* anchors", file=sys.stderr)
            args.no_hf = True
    if args.no_hf:
        names = [n for n in names if not n.startswith("hf_")]
    unknown = [n for n in names if n not in OUR_CONFIGS and not n.startswith("hf_")]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(OUR_CONFIGS)} and hf_* anchors")

    header = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "return_interm_indices": {k: dataclasses.asdict(v)["return_interm_indices"] for k, v in OUR_CONFIGS.items()},
    }
    print(json.dumps(header), flush=True)
    rows = []
    for name in names:
        suffix = ""
        if name in OUR_CONFIGS:
            suffix = (("+compile" if args.compile else "") + ("+eager" if args.eager_training else "")
                      + ("+eager_decoder" if args.no_decoder_graphs else ""))
            factory = lambda dtype, name=name: OurDino(  # noqa: E731
                OUR_CONFIGS[name], device, args.compile, autocast_dtype=None if dtype == torch.float32 else dtype,
                cuda_graphs=not args.eager_training, decoder_graphs=not args.no_decoder_graphs)
        else:
            factory = lambda dtype, name=name: HfModel(name, device)  # noqa: E731
        for dtype in chosen:
            try:
                row = bench(name + suffix, factory, args, dtype, device)
            except Exception as exc:  # one failing configuration (OOM, missing package) must not hide the rest
                row = {"model": name, "dtype": str(dtype).removeprefix("torch."), "error": repr(exc)[:300]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({**header, **row}) + "\n")

    print(f"\n{'model':<36} {'dtype':<9} {'train img/s':>11} {'infer img/s':>11} {'train GiB':>9} {'infer GiB':>9}  "
          "attention / training / inference")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<36} {r['dtype']:<9} error: {r['error'][:60]}")
        else:
            print(f"{r['model']:<36} {r['dtype']:<9} {r['train_img_s']:>11} {r['infer_img_s']:>11} "
                  f"{str(r['train_peak_gib']):>9} {str(r['infer_peak_gib']):>9}  {','.join(r.get('msda', [])) or '-'} / "
                  f"{r.get('training_path', '-')} / {r.get('inference_path', '-')}")
    print(f"device: {header['device']}, batch {args.batch}, {args.size}x{args.size}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
