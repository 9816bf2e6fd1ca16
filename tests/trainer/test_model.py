"""The whole detector on CPU at tiny sizes: shapes, gradients, denoising isolation,
post-processing, backbone loading, config errors, and a short over-fit run."""

import dataclasses

import pytest
import torch
import torchvision

from dino.config.model import ModelConfig
from dino.models import build_dino, load_pretrained_backbone
from dino.models.dn_components import ContrastiveDenoising, DenoisingMeta
from dino.models.resnet import FrozenBatchNorm2d

NUM_CLASSES = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**overrides) -> ModelConfig:
    base = dict(backbone="resnet_tiny", hidden_dim=32, nheads=4, enc_layers=2, dec_layers=2, dim_feedforward=64,
                num_queries=20, num_select=15, dn_number=6, return_interm_indices=[2, 3, 4], num_feature_levels=4)
    base.update(overrides)
    return ModelConfig(**base)


def _batch(size=(64, 80)):
    """Two images; the second is padded (valid 48x64) and has no boxes."""
    h, w = size
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, h, w, generator=gen)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[1, 48:, :] = True
    masks[1, :, 64:] = True
    images[1][masks[1].expand(3, -1, -1)] = 0
    targets = [
        {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.7, 0.3, 0.2]])},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    return images, masks, targets


def test_forward_backward_shapes_finite_losses_and_every_parameter_trains():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model, criterion, _ = build_dino(cfg, NUM_CLASSES)
    images, masks, targets = _batch()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(2):  # zero-initialised heads hide some gradients at step 0
        out = model(images, masks, targets)
        losses = criterion(out, targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()

    assert out["pred_logits"].shape == (2, cfg.num_queries, NUM_CLASSES)
    assert out["pred_boxes"].shape == (2, cfg.num_queries, 4)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    assert out["interm_outputs"]["pred_boxes"].shape == (2, cfg.num_queries, 4)
    meta = out["dn_meta"]
    assert meta.max_boxes == 2 and meta.num_groups == cfg.dn_number // 2
    assert out["dn_outputs"][-1]["pred_logits"].shape == (2, meta.pad_size, NUM_CLASSES)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox_dn"] > 0
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert silent == []
    assert model.backbone[0].body.conv1.weight.grad.abs().sum() > 0


def test_batch_without_any_box_trains_without_denoising():
    model, criterion, _ = build_dino(tiny_cfg(), NUM_CLASSES)
    model.train()
    images, masks, _ = _batch()
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    out = model(images, masks, empty)
    assert "dn_outputs" not in out
    losses = criterion(out, empty)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["loss_bbox_dn"].item() == 0.0
    # every parameter is still part of the graph (DDP without find_unused_parameters)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_matching_queries_never_see_denoising_queries():
    """The attention mask must make the matching part independent of the dn queries."""
    torch.manual_seed(0)
    model, _, _ = build_dino(tiny_cfg(), NUM_CLASSES)
    model.train()
    images, masks, targets = _batch()
    other = [{"labels": torch.tensor([0, 2, 2, 1]), "boxes": torch.rand(4, 4) * 0.4 + 0.1}, targets[1]]
    with torch.no_grad():
        a = model(images, masks, targets)
        b = model(images, masks, other)
        c = model(images, masks, None)
    assert a["dn_meta"].pad_size != b["dn_meta"].pad_size
    for x in (b, c):
        assert torch.allclose(a["pred_logits"], x["pred_logits"], atol=1e-5)
        assert torch.allclose(a["pred_boxes"], x["pred_boxes"], atol=1e-6)


def test_denoising_groups_and_noise():
    torch.manual_seed(0)
    meta = DenoisingMeta(num_groups=3, max_boxes=2)
    mask = ContrastiveDenoising.attention_mask(meta, num_queries=5, device=torch.device("cpu"))
    assert mask.shape == (17, 17)
    assert mask[12:, :12].all() and not mask[12:, 12:].any()  # matching sees no dn, sees itself
    assert not mask[:12, 12:].any()  # dn queries see the matching ones
    for g in range(3):
        block = slice(4 * g, 4 * g + 4)
        assert not mask[block, block].any() and mask[block, :12].sum() == 4 * 8

    dn = ContrastiveDenoising(num_classes=5, hidden_dim=8, dn_number=100, label_noise_ratio=0.0, box_noise_scale=1.0)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    tgt, ref, _, meta = dn([{"labels": torch.tensor([3]), "boxes": boxes}], num_queries=5)
    assert meta.num_groups == 100 and tgt.shape == (1, 200, 8)
    noisy = ref.sigmoid().view(100, 2, 4)  # [group, pos/neg, box]
    corners = torchvision.ops.box_convert(noisy, "cxcywh", "xyxy")
    half_sizes = torch.tensor([0.1, 0.2, 0.1, 0.2])
    corner_shift = (corners - torchvision.ops.box_convert(boxes, "cxcywh", "xyxy")).abs() / half_sizes
    # positives move each corner by < 1 half-size, negatives by 1..2 half-sizes (where the
    # noised corners neither crossed, which collapses the box, nor hit the image border)
    assert (corner_shift[:, 0] < 1 + 1e-4).all()
    intact = (noisy[:, 1, 2:] > 1e-3).all(-1) & (corners[:, 1] > 1e-4).all(-1) & (corners[:, 1] < 1 - 1e-4).all(-1)
    assert intact.sum() > 20
    neg = corner_shift[:, 1][intact]
    assert (neg > 1 - 1e-4).all() and (neg < 2 + 1e-4).all()
    assert torch.equal(tgt[0, 0], dn.label_enc.weight[3])  # no label noise asked


def test_eval_outputs_and_postprocessor_ordering():
    cfg = tiny_cfg()
    model, _, post = build_dino(cfg, NUM_CLASSES)
    model.eval()
    images, masks, targets = _batch()
    with torch.no_grad():
        out = model(images, masks, targets)
        results = post(out, torch.tensor([[480, 640], [300, 400]]))
    assert "dn_outputs" not in out
    assert len(results) == 2
    for res, (h, w) in zip(results, [(480, 640), (300, 400)]):
        assert res["scores"].shape == (cfg.num_select,) and res["labels"].shape == (cfg.num_select,)
        assert res["boxes"].shape == (cfg.num_select, 4)
        assert (res["scores"][:-1] >= res["scores"][1:]).all()
        assert res["labels"].dtype == torch.int64 and res["labels"].max() < NUM_CLASSES
        assert (res["boxes"][:, 2:] >= res["boxes"][:, :2]).all()
        centres = (res["boxes"][:, :2] + res["boxes"][:, 2:]) / 2
        assert (centres[:, 0] <= w).all() and (centres[:, 1] <= h).all()
    # the top score is the best sigmoid over all queries and classes of that image
    assert results[0]["scores"][0] == pytest.approx(out["pred_logits"][0].sigmoid().max().item())


def test_autocast_bf16_forward_is_finite():
    model, criterion, _ = build_dino(tiny_cfg(), NUM_CLASSES)
    images, masks, targets = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, masks, targets)
        losses = criterion(out, targets)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])


def test_backbone_levels_names_and_norms():
    model, _, _ = build_dino(tiny_cfg(return_interm_indices=[1, 2, 3, 4], num_feature_levels=4), NUM_CLASSES)
    images, masks, targets = _batch()
    out = model(images, masks, targets)
    assert out["pred_boxes"].shape == (2, 20, 4)
    names = [n for n, _ in model.named_parameters()]
    backbone = [n for n in names if "backbone.0" in n]
    assert backbone and all(n.startswith("backbone.0.body.") for n in backbone)
    assert any("sampling_offsets" in n for n in names)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())  # auto + no weights = bn

    frozen, _, _ = build_dino(tiny_cfg(backbone_norm="frozen_bn", train_backbone=False), NUM_CLASSES)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.backbone.modules())
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    frozen.train()
    assert not frozen.backbone[0].body.training


def test_load_pretrained_backbone(tmp_path):
    cfg = tiny_cfg(backbone="resnet_18", pretrained_backbone_path="x")
    model, _, _ = build_dino(cfg, NUM_CLASSES)
    assert isinstance(model.backbone[0].body.bn1, FrozenBatchNorm2d)  # auto + weights = frozen_bn
    assert not model.backbone[0].body.layer1[0].conv1.weight.requires_grad  # stem and layer1 frozen
    assert model.backbone[0].body.layer2[0].conv1.weight.requires_grad
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, path)
    load_pretrained_backbone(model, path)
    assert torch.equal(model.backbone[0].body.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    assert torch.equal(model.backbone[0].body.bn1.running_var, resnet.bn1.running_var)

    tiny, _, _ = build_dino(tiny_cfg(), NUM_CLASSES)
    with pytest.raises(ValueError, match="resnet_tiny"):
        load_pretrained_backbone(tiny, path)
    with pytest.raises(FileNotFoundError, match="pretrained_backbone_path"):
        load_pretrained_backbone(tiny, tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_pretrained_backbone(tiny, tmp_path / "junk.pth")


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(num_feature_levels=2), "num_feature_levels"),
        (dict(return_interm_indices=[0, 2]), "return_interm_indices"),
        (dict(backbone="resnet_101"), "model.backbone"),
        (dict(num_select=1000), "num_select"),
        (dict(hidden_dim=30), "hidden_dim"),
        (dict(two_stage_type="no"), "two_stage_type"),
        (dict(backbone_norm="gn"), "backbone_norm"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_dino(dataclasses.replace(tiny_cfg(), **overrides), NUM_CLASSES)


def _shapes_pair(size=48):
    """Two fixed images with coloured rectangles (class = colour channel)."""
    images = torch.full((2, 3, size, size), -1.0)
    targets = [
        {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.3, 0.25], [0.7, 0.65, 0.35, 0.4]])},
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.4, 0.5, 0.4]])},
    ]
    for b, t in enumerate(targets):
        for label, (cx, cy, w, h) in zip(t["labels"].tolist(), t["boxes"].tolist()):
            x0, x1 = int((cx - w / 2) * size), int((cx + w / 2) * size)
            y0, y1 = int((cy - h / 2) * size), int((cy + h / 2) * size)
            images[b, label, y0:y1, x0:x1] = 1.5
    return images, torch.zeros(2, size, size, dtype=torch.bool), targets


def test_overfits_two_images():
    torch.manual_seed(0)
    cfg = tiny_cfg(enc_layers=1, num_queries=10, num_select=10, dn_number=4)
    model, criterion, post = build_dino(cfg, 3)
    images, masks, targets = _shapes_pair()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(100):
        losses = criterion(model(images, masks, targets), targets)
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        history.append({k: losses[k].item() for k in ("loss", "loss_bbox", "loss_giou")})
    first, last = history[0], min(history[-5:], key=lambda h: h["loss"])
    assert last["loss"] < 0.4 * first["loss"], (first, last)
    assert last["loss_giou"] < 0.5 * first["loss_giou"], (first, last)

    model.eval()
    with torch.no_grad():
        results = post(model(images, masks), torch.tensor([[48, 48], [48, 48]]))
    best = results[1]
    assert best["labels"][0].item() == 0
    want = torch.tensor([12.0, 9.6, 36.0, 28.8])  # (0.25, 0.2, 0.75, 0.6) * 48
    assert (best["boxes"][0] - want).abs().max() < 6.0, best["boxes"][0]


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet_50"])
def test_the_detector_builds_on_whatever_device_the_trainer_asks_for(backbone):
    """The trainer builds the model inside ``torch.device(device)``, so that a GPU trial
    initialises on the GPU (a CPU init of R50 cost seconds of start-up when trials were
    packed). Built under the meta device, nothing may land on the CPU: a factory that
    pinned the CPU would break the GPU build (or silently initialise there)."""
    with torch.device("meta"):
        model, criterion, _ = build_dino(tiny_cfg(backbone=backbone), NUM_CLASSES)
    placed = {t.device.type for t in [*model.parameters(), *model.buffers(), *criterion.parameters(),
                                      *criterion.buffers()]}
    assert placed == {"meta"}
