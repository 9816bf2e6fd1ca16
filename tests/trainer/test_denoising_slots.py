"""Denoising queries in a fixed number of slots (``DINO.denoising_slots``, the decoder's
CUDA graphs need shapes that do not follow the targets): the unused slots change
nothing that is trained, the mask keeps them out of every other query's view, and a
batch whose layout does not fit keeps its own size."""

from __future__ import annotations

import pytest
import torch

from dino.config.model import ModelConfig
from dino.models import build_dino
from dino.models.dn_components import ContrastiveDenoising, DenoisingMeta

NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="resnet_tiny", hidden_dim=32, nheads=4, enc_layers=1, dec_layers=3, dim_feedforward=64,
                      num_queries=20, num_select=15, dn_number=6, return_interm_indices=[2, 3, 4],
                      num_feature_levels=3)
    return build_dino(cfg, NUM_CLASSES)


def _batch(boxes_per_image=(4, 1)):
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(len(boxes_per_image), 3, 64, 64, generator=gen)
    masks = torch.zeros(len(boxes_per_image), 64, 64, dtype=torch.bool)
    masks[-1, :, 48:] = True
    targets = [{"labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen),
                "boxes": torch.rand(n, 2, generator=gen).mul(0.5).add(0.25).repeat(1, 2).mul(
                    torch.tensor([1.0, 1.0, 0.4, 0.4]))} for n in boxes_per_image]
    return images, masks, targets


def test_mask_hides_the_unused_slots_from_every_other_query():
    meta = DenoisingMeta(num_groups=2, max_boxes=2, num_slots=11)
    assert (meta.pad_size, meta.slots) == (8, 11)
    mask = ContrastiveDenoising.attention_mask(meta, num_queries=5, device=torch.device("cpu"))
    assert mask.shape == (16, 16)
    assert mask[:8, 8:11].all() and mask[11:, 8:11].all()  # groups and matching queries never see them
    assert not mask[8:11, 8:11].any() and not mask[8:11, 11:].any()  # they see each other and the matching ones
    assert mask[8:11, :8].all()
    for g in range(2):  # the groups as without unused slots
        block = slice(4 * g, 4 * g + 4)
        assert not mask[block, block].any() and mask[block, :8].sum() == 4 * 4 and not mask[block, 11:].any()
    # without unused slots: the layout's own mask
    plain = ContrastiveDenoising.attention_mask(DenoisingMeta(2, 2), 5, torch.device("cpu"))
    assert torch.equal(plain, mask[[*range(8), *range(11, 16)]][:, [*range(8), *range(11, 16)]])


@pytest.mark.parametrize("dn_number", [1, 5, 6, 100])
def test_slots_for_holds_every_layout_up_to_that_many_boxes(dn_number):
    dn = ContrastiveDenoising(NUM_CLASSES, 8, dn_number=dn_number)
    for most in range(1, 40):
        slots = dn.slots_for(most)
        sizes = [DenoisingMeta(max(1, dn_number // m), m).pad_size for m in range(1, most + 1)]
        assert max(sizes) <= slots, (most, sizes, slots)
    assert dn.slots_for(1) == 2 * dn_number  # the bound is reached: one box an image fills every group


def test_a_layout_that_does_not_fit_keeps_its_own_size():
    dn = ContrastiveDenoising(NUM_CLASSES, 8, dn_number=2)
    targets = [{"labels": torch.tensor([1, 2, 3]), "boxes": torch.full((3, 4), 0.3)}]
    tgt, ref, mask, meta = dn(targets, num_queries=4, slots=dn.slots_for(2))  # 4 slots, 6 queries needed
    assert meta.slots == meta.pad_size == 6 and tgt.shape[1] == ref.shape[1] == 6 and mask.shape == (10, 10)


def _terms_and_grads(slots: int | None, boxes_per_image=(4, 1)):
    model, criterion, _ = _model()
    model.train()
    model.denoising_slots = slots
    images, masks, targets = _batch(boxes_per_image)
    torch.manual_seed(7)  # the denoising draws: the same for both layouts
    out = model(images, masks, targets)
    losses = criterion(out, targets)
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("slots", [12, 20])
def test_unused_slots_leave_every_loss_term_and_gradient_unchanged(slots):
    """Max 4 boxes, dn_number 6: one group of 8 queries, so 4 or 12 slots are unused."""
    out_own, terms_own, grads_own = _terms_and_grads(None)
    out_fixed, terms_fixed, grads_fixed = _terms_and_grads(slots)
    meta = out_fixed["dn_meta"]
    assert (meta.pad_size, meta.slots) == (8, slots) and out_own["dn_meta"].slots == 8
    assert out_fixed["dn_outputs"][0]["pred_logits"].shape == out_own["dn_outputs"][0]["pred_logits"].shape
    assert out_fixed["pred_logits"].shape == out_own["pred_logits"].shape == (2, 20, NUM_CLASSES)
    assert terms_own.keys() == terms_fixed.keys()
    for name, value in terms_own.items():
        assert torch.allclose(terms_fixed[name], value, rtol=1e-5, atol=1e-6), (name, value, terms_fixed[name])
    assert grads_own.keys() == grads_fixed.keys()
    # each gradient to 1e-4 of its own scale (measured: at most 1.2e-6), plus 1e-6 of the
    # largest: the biases ahead of a GroupNorm have a true gradient of 0, and theirs
    # (2e-8 to 6e-8) are rounding noise that differs between any two summation orders
    largest = max(float(g.abs().max()) for g in grads_own.values())
    for name, grad in grads_own.items():
        error = float((grads_fixed[name] - grad).abs().max())
        assert error <= 1e-4 * float(grad.abs().max()) + 1e-6 * largest, (name, error)
    # the unused slots' own outputs exist in the decoder and are not what was compared
    assert meta.slots > meta.pad_size


def test_fixed_slots_give_every_batch_the_same_decoder_shapes():
    model, _, _ = _model()
    model.train()
    model.denoising_slots = model.denoising.slots_for(4)
    seen = set()
    original = model.decode_queries

    def spy(memory, mask, valid_ratios, shapes, dn_tgt=None, dn_ref=None, attn_mask=None):
        seen.add((tuple(dn_tgt.shape), tuple(dn_ref.shape), tuple(attn_mask.shape)))
        return original(memory, mask, valid_ratios, shapes, dn_tgt, dn_ref, attn_mask)

    model.decode_queries = spy
    for counts in [(4, 1), (1, 1), (2, 3), (3, 0)]:
        images, masks, targets = _batch(counts)
        with torch.no_grad():
            model(images, masks, targets)
    assert seen == {((2, 12, 32), (2, 12, 4), (32, 32))}
