"""Learning-rate groups by name, the random-backbone rule, schedules, freezing."""

from __future__ import annotations

import pytest
import torch

from dino.config import ModelConfig, OptimConfig
from dino.optim import build_optimizer, build_scheduler, freeze, plan_learning_rates


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.ModuleList([torch.nn.Linear(2, 2)])  # names "backbone.0.*"
        self.attn = torch.nn.Module()
        self.attn.sampling_offsets = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)


def groups(opt):
    return {g["name"]: (g["lr"], len(g["params"])) for g in opt.param_groups}


def test_groups_follow_tao_names():
    opt = build_optimizer(Toy(), ModelConfig(), OptimConfig(), plan_learning_rates(OptimConfig(), backbone_random=False))
    assert groups(opt) == {"backbone": (2e-5, 2), "linear_proj": (pytest.approx(2e-5), 2), "rest": (2e-4, 2)}
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 1e-4


def test_random_backbone_gets_at_least_half_the_head_rate():
    plan = plan_learning_rates(OptimConfig(lr=1e-3, lr_backbone=2e-5), backbone_random=True)
    assert plan.lr_backbone == pytest.approx(5e-4) and "raised from 2e-05 to 0.0005" in plan.note
    assert plan_learning_rates(OptimConfig(lr=1e-3, lr_backbone=8e-4), True).lr_backbone == pytest.approx(8e-4)
    off = OptimConfig(lr=1e-3, lr_backbone=2e-5, scratch_backbone_lr_mult=0)
    assert plan_learning_rates(off, True).lr_backbone == pytest.approx(2e-5)
    assert plan_learning_rates(OptimConfig(lr=1e-3), backbone_random=False).lr_backbone == pytest.approx(2e-5)


def test_schedules_step_per_epoch():
    def lrs(cfg):
        opt = build_optimizer(Toy(), ModelConfig(), cfg, plan_learning_rates(cfg, False))
        sched, out = build_scheduler(opt, cfg), []
        for _ in range(5):
            out.append(opt.param_groups[-1]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs(OptimConfig(lr=1.0, lr_steps=[2, 4], lr_decay=0.5)) == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    sgd = OptimConfig(lr=1.0, optimizer="SGD", lr_scheduler="StepLR", lr_step_size=3, lr_decay=0.1)
    assert lrs(sgd) == pytest.approx([1, 1, 1, 0.1, 0.1])


def test_freeze_by_prefix_reports_unmatched():
    model = Toy()
    assert freeze(model, ["backbone.0", "nothing.here"]) == ["nothing.here"]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    opt = build_optimizer(model, ModelConfig(), OptimConfig(), plan_learning_rates(OptimConfig(), False))
    assert "backbone" not in groups(opt)
