"""``dino train``: one training run from a parsed :class:`Spec` to checkpoints and status lines.

Everything a user can get wrong (data, spec values, paths) is checked before the first
training step. The run resumes from ``train.resume_training_checkpoint_path`` or else
from ``<train dir>/dino_model_latest.pth`` (rewritten after every epoch), so a killed run
restarted with the same command continues where it stopped. SIGTERM ends the run where
it is (a batch arriving from a loader worker, and an epoch's status line with its
checkpoint, are finished first) with a FAILURE line and one line on stderr.

With ``train.num_gpus`` > 1 the process launches one worker per device
(:mod:`dino.ddp_launch`); each worker runs this same loop as one DDP rank
(:mod:`dino.distributed`): its share of
every epoch (DistributedSampler), its shard of the validation set, rank 0 alone writing.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import sys
import time

import torch

from dino.checkpoint import (
    BestCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_dir_of,
)
from dino.config import Spec, SpecError
from dino.data import build_dataset, check_batch, log_data_policy, pad_multiple, train_loader, val_loader
from dino.ddp_launch import launch
from dino.distributed import (
    RANK_SEED_STRIDE,
    SINGLE,
    DistContext,
    all_mean,
    broadcast_from_main,
    context_from_env,
    convert_sync_bn,
    gather_to_main,
    process_group,
    rank_gpu_ids,
    rank_rng_state,
    rank_status,
    restore_rank_rng,
    seed_everything,
    sync_buffers,
    wrap_ddp,
)
from dino.engine import AUTOCAST_DTYPES, COCO_EVALUATOR, evaluate, train_one_epoch
from dino.models.cuda_graphs import install_training_graphs
from dino.models.ms_deform_attn import self_check_seconds
from dino.optim import build_optimizer, build_scheduler, freeze, plan_learning_rates
from dino.runtime import Interrupted, SignalGuard, cuda_allocator_defaults, log, select_device
from dino.startup import StartupClock, warm_trainer
from dino.status_log import StatusLog


def build_model(spec: Spec, device: torch.device, status: StatusLog):
    """Model, criterion, post-processor with pretrained weights (if any) loaded; spec
    mistakes surface as SpecError. Returns also whether the backbone starts random."""
    from dino.models import build_dino, load_pretrained_backbone

    try:
        # initialised where it trains: on the CPU, an R50 DINO's random init took up to 3.3 s
        # of a trial's start-up beside three packed neighbours' data loaders (an H200's 16 cores)
        with torch.device(device):
            model, criterion, post = build_dino(spec.model, spec.dataset.num_classes)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    backbone_random = True
    if spec.model.pretrained_backbone_path:
        _require_file(spec.model.pretrained_backbone_path, "model.pretrained_backbone_path")
        load_pretrained_backbone(model, spec.model.pretrained_backbone_path)
        status.write(f"Loaded backbone weights from {spec.model.pretrained_backbone_path}")
        backbone_random = False
    if spec.train.pretrained_model_path:
        _require_file(spec.train.pretrained_model_path, "train.pretrained_model_path")
        loaded, skipped = load_weights(model, model_state(load_checkpoint(spec.train.pretrained_model_path)))
        if loaded == 0:
            raise SpecError(f"train.pretrained_model_path {spec.train.pretrained_model_path}: no tensor matches "
                            "this model's names and shapes")
        status.write(f"Loaded {loaded} tensors from {spec.train.pretrained_model_path}; "
                     f"{len(skipped)} left as initialised" + (f" (e.g. {', '.join(skipped[:4])})" if skipped else ""))
        backbone_random = False
    return model.to(device), criterion.to(device), post, backbone_random


def _require_file(path: str, field: str) -> None:
    if not os.path.isfile(path):
        raise SpecError(f"{field} not found: {path}")
    if not os.access(path, os.R_OK):
        raise SpecError(f"{field} is not readable: {path}")


def run_training(spec: Spec, ignored: list[str], status: StatusLog) -> None:
    """Train per ``spec``; raises SpecError / DataError for bad input, Interrupted on SIGTERM.

    ``train.num_gpus`` > 1 outside a DDP worker launches the workers and waits (the
    workers' errors come back as the same exceptions); inside one (RANK / WORLD_SIZE set,
    by our launcher or torchrun) this process trains as its rank."""
    ctx = context_from_env()
    if ctx is None and spec.train.num_gpus > 1:
        launch(spec, ignored, status, log=log)
        return
    ctx = ctx or SINGLE
    with SignalGuard() as guard:
        try:
            _train(spec, ignored, rank_status(status, ctx), guard, ctx)
        except Interrupted:
            raise
        except Exception as exc:  # e.g. a DataLoader worker killed by the same signal first
            if guard.received:
                raise Interrupted(guard.received) from exc
            raise


def _quiet(*_args, **_kwargs) -> None:
    """The stdout of ranks other than 0."""


def _train(spec: Spec, ignored: list[str], status: StatusLog, guard: SignalGuard, ctx: DistContext) -> None:
    t = spec.train
    say = log if ctx.is_main else _quiet
    train_dir = train_dir_of(spec)
    if ignored:
        text = "; ".join(ignored)
        say(f"Ignored spec fields (accepted, not used by this trainer): {text}", file=sys.stderr)
        status.write(f"Ignored spec fields (accepted, not used by this trainer): {text}", verbosity="WARNING")
    cuda_allocator_defaults()
    seed_everything(t.seed)  # the same on every rank: identical initial weights
    torch.backends.cudnn.benchmark = t.cudnn.benchmark
    torch.backends.cudnn.deterministic = t.cudnn.deterministic
    device = select_device(rank_gpu_ids(ctx, t.gpu_ids), "train.gpu_ids")
    if device.type == "cpu" and t.precision == "fp16":
        raise SpecError("train.precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
    with process_group(ctx, device):
        _fit(spec, status, guard, ctx, device, train_dir, say)


def _fit(spec: Spec, status: StatusLog, guard: SignalGuard, ctx: DistContext, device: torch.device, train_dir: str,
         say) -> None:
    t, d = spec.train, spec.dataset
    startup = StartupClock()
    startup.mark("spec" if warm_trainer() else "imports and spec")  # a warm trainer imported before its launch
    train_ds = build_dataset(d.train_data_sources, d, True, "dataset.train_data_sources")
    check_batch(train_ds, d.batch_size, ctx.world_size, "dataset.train_data_sources")
    val_ds = build_dataset(d.val_data_sources, d, False, "dataset.val_data_sources")
    for ds in (train_ds, val_ds):
        log_data_policy(ds, say, status)
    startup.mark("datasets")
    model, criterion, post, backbone_random = build_model(spec, device, status)
    startup.mark("model")
    model, synced = convert_sync_bn(model, ctx, device)
    if synced:
        status.write("Trainable batch norms synchronised across processes (SyncBatchNorm)")
    unmatched = freeze(model, t.freeze)
    if unmatched:
        status.write(f"train.freeze: no parameters under {unmatched}; skipped", status="SKIPPED", verbosity="WARNING")
    plan = plan_learning_rates(t.optim, backbone_random)
    optimizer = build_optimizer(model, spec.model, t.optim, plan)
    scheduler = build_scheduler(optimizer, t.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    say(plan.note)
    status.write(plan.note)

    start_epoch, step, resumed_best = 0, 0, None
    if t.resume_training_checkpoint_path:
        _require_file(t.resume_training_checkpoint_path, "train.resume_training_checkpoint_path")
    resume = broadcast_from_main(ctx, t.resume_training_checkpoint_path or latest_checkpoint(train_dir))
    if resume:
        ckpt = load_checkpoint(resume)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise SpecError(f"cannot resume from {resume}: it does not match this spec's model/optimizer "
                            f"({str(exc).splitlines()[0]}); use a new results_dir to start over") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        if ctx.enabled:
            restore_rank_rng(ctx, ckpt, device, t.seed, start_epoch)
        else:
            set_rng_state(ckpt["rng"])
        status.kpi = dict(ckpt.get("kpi", {}))
        resumed_best = ckpt.get("best")
        say(f"Resuming from {resume}: epoch {ckpt['epoch']} finished, step {step}")
        status.write(f"Resuming training from {resume} (epoch {ckpt['epoch']} finished, step {step})")
    elif ctx.rank:
        seed_everything(t.seed + RANK_SEED_STRIDE * ctx.rank)  # other augmentation / denoising draws than rank 0's
    best = BestCheckpoint(train_dir, t.best_checkpoint_metric, resumed_best)
    if resume and ctx.is_main:
        best.repair(resume, start_epoch - 1)

    fixed_size = t.compile and device.type == "cuda"
    if fixed_size:
        from dino.models.compiled import compile_hot_modules

        compiled = compile_hot_modules(model)
        status.write(f"train.compile: torch.compile of {len(compiled)} modules (backbone body, encoder and decoder "
                     "layers); batches padded to fixed sizes" if d.augmentation.fixed_padding else
                     f"train.compile: torch.compile of {len(compiled)} modules; dataset.augmentation.fixed_padding "
                     "is false, so every new batch size recompiles", verbosity="INFO")
        fixed_size = d.augmentation.fixed_padding
    graphs, graphs_note = install_training_graphs(model, device, AUTOCAST_DTYPES[t.precision],
                                                  enabled=t.cuda_graphs, decoder=t.cuda_graphs_decoder,
                                                  # a pass over the annotations, only for the decoder's slots
                                                  max_boxes=train_ds.max_boxes() if t.cuda_graphs_decoder else 0,
                                                  distributed=ctx.enabled,
                                                  compiled=t.compile)
    say(graphs_note)
    status.write(graphs_note)
    net = wrap_ddp(model, ctx, device)  # trains; ``model`` (the same weights) evaluates and is saved
    pin, multiple = d.pin_memory and device.type == "cuda", pad_multiple(device)
    steps_per_epoch = len(train_ds) // ctx.world_size // d.batch_size  # per rank: each sees 1/world of the data
    last = t.num_epochs - 1
    startup.mark("optimizer and resume")
    status.write("Starting Training Loop.", status="STARTED")
    for epoch in range(start_epoch, t.num_epochs):
        began, timings = time.time(), {}
        say(f"Epoch {epoch}/{last}")
        loader = train_loader(train_ds, d, t.seed, epoch, pin, rank=ctx.rank, world_size=ctx.world_size,
                              fixed_size=fixed_size, multiple=multiple)
        stats = train_one_epoch(net, criterion, loader, optimizer, scaler, device, t.precision, t.clip_grad_norm,
                                log=say, startup=startup if epoch == start_epoch else None)
        if epoch == start_epoch:
            phases = {**startup.phases(), "of which attention self-check": round(self_check_seconds(), 2)}
            warm = warm_trainer()
            ahead = f"; warm trainer: imports and warm-up took {warm['warm_s']:.1f} s before the launch" if warm else ""
            say(f"Start-up: {startup.summary()}; attention self-check {self_check_seconds():.1f} s{ahead}; "
                f"COCO evaluation by {COCO_EVALUATOR}")
            for part in graphs:
                say(part.summary(stats["steps"]))
            status.write(f"Start-up: {startup.summary()}{ahead}", startup=phases,
                         **({"warm_trainer": {"warm_s": round(warm["warm_s"], 2)}} if warm else {}))
        stats["train_loss"] = all_mean(ctx, stats["train_loss"], device)
        scheduler.step()
        step += stats["steps"]
        validated = False
        if (epoch + 1) % t.validation_interval == 0 or epoch == last:
            sync_buffers(model, ctx)
            res = evaluate(model, criterion, post,
                           val_loader(val_ds, d, d.batch_size, pin, rank=ctx.rank, world_size=ctx.world_size,
                                      fixed_size=fixed_size, multiple=multiple),
                           val_ds.coco, device, t.precision,
                           gather=functools.partial(gather_to_main, ctx) if ctx.enabled else None)
            if res is not None:  # rank 0
                timings = {"validation_s": round(res["predict_s"], 2), "coco_eval_s": round(res["coco_s"], 2)}
                say(f"Validation mAP : {res['mAP']}")
                say(f"Validation mAP50 : {res['mAP50']}")
                status.kpi = {"val_mAP": str(res["mAP"]), "val_mAP50": str(res["mAP50"]), "val_loss": res["loss"]}
                status.write("Eval metrics generated.")
                validated = True
        status.kpi["train_loss"] = stats["train_loss"]
        elapsed = time.time() - began
        eta = datetime.timedelta(seconds=elapsed * (last - epoch))
        if device.type == "cuda":  # what this process holds of the card: the orchestrator packs trials by it
            timings["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
        rng = gather_to_main(ctx, rank_rng_state(device)) if ctx.enabled else None  # every rank's stream
        if not ctx.is_main:
            continue
        improved = best.offer(status.kpi, epoch, step, validated)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                 "rng": rng[0] if rng else rng_state(), "kpi": dict(status.kpi), "num_classes": d.num_classes,
                 "model_config": dataclasses.asdict(spec.model), "world_size": ctx.world_size,
                 "best": best.state()}
        if rng:
            state["rng_ranks"] = rng
        # the epoch's status line and its checkpoint together: a stop signal cannot leave an
        # epoch reported done that the rerun trains again (DDP: it came during the rng gather)
        with guard.critical():
            status.write("Training loop in progress", epoch=epoch, max_epoch=last, step=step,
                         max_step=steps_per_epoch * t.num_epochs, time_per_epoch=str(datetime.timedelta(seconds=elapsed)),
                         time_per_step=str(datetime.timedelta(seconds=stats["time_per_step"])), eta=str(eta), **timings)
            path = save_checkpoint(state, train_dir, (epoch + 1) % t.checkpoint_interval == 0 or epoch == last)
            best.keep(path)
        if improved and best.best is not None:
            status.write(f"Best checkpoint: epoch {epoch}, {best.metric} {best.best.value}",
                         best_checkpoint=best.best.as_dict())
        say(f"Epoch {epoch}/{last} done: train_loss {stats['train_loss']:.4f}  "
            f"time {datetime.timedelta(seconds=round(elapsed))}  eta {datetime.timedelta(seconds=round(eta.total_seconds()))}"
            f"  checkpoint {os.path.basename(path)}")
    status.write("Training loop complete.")
