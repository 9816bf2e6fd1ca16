"""Optimizer, learning-rate groups and schedule from ``train.optim``.

Groups follow TAO (selection by name substring): parameters whose name contains one of
``model.backbone_names`` get the backbone rate; those containing one of
``model.linear_proj_names`` (deformable attention's sampling offsets / reference points)
get ``lr * lr_linear_proj_mult``; the rest get ``lr``.

TAO's ``lr_backbone`` default (2e-5, a tenth of ``lr``) is meant to fine-tune a
pretrained backbone. A backbone starting from random weights has nothing to preserve and
is as untrained as the head; measured on a from-scratch run, backbone lr 2e-5 with frozen
norms stays near 0 mAP50 while lr/2 with trainable norms reaches 0.9. So when no
pretrained weights are loaded, the backbone rate is raised to at least
``lr * scratch_backbone_lr_mult`` (0.5 by default; 0 keeps ``lr_backbone`` as given).
"""

from __future__ import annotations

import dataclasses

import torch

from dino.config.model import ModelConfig
from dino.config.spec import OptimConfig


@dataclasses.dataclass(frozen=True)
class LrPlan:
    lr: float
    lr_backbone: float
    lr_linear_proj: float
    note: str  # one line for the status log: what was chosen and why


def plan_learning_rates(optim: OptimConfig, backbone_random: bool) -> LrPlan:
    lr_backbone = optim.lr_backbone
    if backbone_random and optim.scratch_backbone_lr_mult > 0:
        floor = optim.lr * optim.scratch_backbone_lr_mult
        if lr_backbone < floor:
            note = (f"backbone starts from random weights: lr_backbone raised from {optim.lr_backbone:g} to "
                    f"{floor:g} (lr {optim.lr:g} x scratch_backbone_lr_mult {optim.scratch_backbone_lr_mult:g}); "
                    "set train.optim.scratch_backbone_lr_mult=0 to keep it")
            lr_backbone = floor
        else:
            note = f"backbone starts from random weights; lr_backbone {lr_backbone:g} kept (>= lr x {optim.scratch_backbone_lr_mult:g})"
    else:
        note = f"lr_backbone {lr_backbone:g} as given" + ("" if backbone_random else " (pretrained backbone)")
    lr_proj = optim.lr * optim.lr_linear_proj_mult
    return LrPlan(optim.lr, lr_backbone, lr_proj, f"learning rates: lr {optim.lr:g}, linear proj {lr_proj:g}; {note}")


def param_groups(model: torch.nn.Module, cfg: ModelConfig, plan: LrPlan) -> list[dict]:
    """Three groups (empty ones dropped), each tagged with ``name`` for logging."""
    groups = {"backbone": [], "linear_proj": [], "rest": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if any(key in name for key in cfg.backbone_names):
            groups["backbone"].append(p)
        elif any(key in name for key in cfg.linear_proj_names):
            groups["linear_proj"].append(p)
        else:
            groups["rest"].append(p)
    lrs = {"backbone": plan.lr_backbone, "linear_proj": plan.lr_linear_proj, "rest": plan.lr}
    return [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps]


def build_optimizer(model: torch.nn.Module, cfg: ModelConfig, optim: OptimConfig, plan: LrPlan) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, plan)
    if optim.optimizer == "SGD":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    # fused: one kernel for all parameters instead of a few per tensor list (CUDA only)
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if optim.lr_scheduler == "StepLR":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.lr_step_size, gamma=optim.lr_decay)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(optim.lr_steps), gamma=optim.lr_decay)


def freeze(model: torch.nn.Module, prefixes: list[str]) -> list[str]:
    """``train.freeze``: stop gradients of parameters under each module prefix; return
    the prefixes that matched nothing (reported as skipped, as TAO does)."""
    unmatched = []
    for prefix in prefixes:
        hit = False
        for name, p in model.named_parameters():
            if name == prefix or name.startswith(prefix + "."):
                p.requires_grad_(False)
                hit = True
        if not hit:
            unmatched.append(prefix)
    return unmatched
