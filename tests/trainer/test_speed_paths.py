"""The speed paths: the one-call canvas sampler against the per-level one, padding to
fixed sizes, and the opt-in torch.compile wrapping."""

import pytest
import torch

from dino.config.model import ModelConfig
from dino.data.loader import collate, fixed_canvas_sizes
from dino.models import build_dino
from dino.models.ms_deform_attn import MSDeformAttn, ms_deform_attn_core

from dino_test_utils import TINY_MODEL

TINY = dict(TINY_MODEL)


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(seed, shapes, dtype=torch.float64, spread=1.4):
    gen = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(2, tokens, 2, 3, generator=gen, dtype=dtype)
    # many locations outside [0, 1], some far outside: they must read zero, never a neighbour level
    loc = torch.rand(2, 5, 2, len(shapes), 3, 2, generator=gen, dtype=dtype) * spread - (spread - 1) / 2
    weights = torch.rand(2, 5, 2, len(shapes), 3, generator=gen, dtype=dtype)
    return value, loc, weights


@pytest.mark.parametrize("spread", [1.4, 6.0])
@pytest.mark.parametrize("shapes", [[(3, 4), (2, 2), (1, 3)], [(5, 5), (3, 3), (2, 2), (1, 1)], [(2, 6), (4, 3)]])
def test_canvas_sampler_equals_per_level_sampler_values_and_gradients(shapes, spread):
    value, loc, weights = _inputs(0, shapes, spread=spread)
    grads = []
    for canvas in (False, True):
        v, l, w = (t.clone().requires_grad_() for t in (value, loc, weights))
        out = ms_deform_attn_core(v, shapes, l, w, impl="canvas" if canvas else "per_level")
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), v.grad, l.grad, w.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12), (a - b).abs().max()


def test_module_canvas_path_matches_per_level_path(monkeypatch):
    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4), (2, 2)]
    tokens = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).double()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)  # offsets vary per query
    query, value = torch.randn(2, 7, 16, dtype=torch.float64), torch.randn(2, tokens, 16, dtype=torch.float64)
    mask = torch.zeros(2, tokens, dtype=torch.bool)
    mask[1, :10] = True
    for ref in (torch.rand(2, 7, 3, 2, dtype=torch.float64), torch.rand(2, 7, 3, 4, dtype=torch.float64)):
        expected = attn(query, ref, value, shapes, mask)
        assert attn.last_impl == "per_level"  # the CPU default
        attn.impl = "canvas"
        got = attn(query, ref, value, shapes, mask)
        attn.impl = None
        assert attn.last_impl == "canvas"
        assert torch.allclose(got, expected, atol=1e-12)


def test_fixed_padding_pads_every_batch_to_one_of_three_sizes():
    from dino.config.spec import AugmentationConfig

    aug = AugmentationConfig(scales=[64, 80], random_resize_max_size=120, test_random_resize=72)
    assert fixed_canvas_sizes(aug, train=True) == [(80, 120), (120, 80), (120, 120)]
    assert fixed_canvas_sizes(aug, train=False)[0] == (72, 120)
    sizes = fixed_canvas_sizes(aug, train=True)
    target = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    landscape = [(torch.ones(3, 64, 100), target), (torch.ones(3, 80, 90), target)]
    portrait = [(torch.ones(3, 120, 70), target)]
    mixed = landscape + portrait
    for batch, expected in ((landscape, (80, 120)), (portrait, (120, 80)), (mixed, (120, 120))):
        images, masks, _ = collate(batch, sizes)
        assert images.shape[-2:] == expected and masks.shape[-2:] == expected
        for (im, _), m, padded in zip(batch, masks, images):
            h, w = im.shape[1:]
            assert not m[:h, :w].any() and m.sum() == expected[0] * expected[1] - h * w
            assert torch.equal(padded[:, :h, :w], im) and padded.sum() == im.sum()
    # without sizes: the batch's own largest image, as before
    assert collate(landscape)[0].shape[-2:] == (80, 100)


@pytest.mark.slow
def test_compiled_modules_train_to_the_same_loss_as_eager():
    """torch.compile of the hot modules traces and trains to the eager loss and gradients.

    The ``aot_eager`` backend runs Dynamo's capture and AOT autograd (where a module would
    fail to compile) without inductor's C++ code generation, which takes minutes on this
    CPU; the GPU benchmark (bench/gpu_call_speed.sh) exercises inductor."""
    from dino.config.model import ModelConfig
    from dino.models import build_dino
    from dino.models.compiled import compile_hot_modules

    cfg = ModelConfig(backbone="resnet_tiny", hidden_dim=32, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64,
                      num_queries=10, num_select=10, dn_number=4, return_interm_indices=[2, 3, 4], num_feature_levels=4)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[1, 48:] = True
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]])},
               {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.4, 0.4, 0.3]])}]
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model, criterion, _ = build_dino(cfg, 5)
        names = compile_hot_modules(model, backend="aot_eager") if compiled else []
        torch.manual_seed(1)
        loss = criterion(model(images, masks, targets), targets)["loss"]
        loss.backward()
        results.append((loss.detach(), model.decoder.layers[0].cross_attn.value_proj.weight.grad.clone(),
                        sorted(model.state_dict())))
    assert names == ["backbone.0.body", "encoder.layers.0", "decoder.layers.0", "decoder.layers.1"]
    (eager_loss, eager_grad, eager_keys), (comp_loss, comp_grad, comp_keys) = results
    assert comp_keys == eager_keys  # checkpoints unchanged by compiling
    assert torch.allclose(comp_loss, eager_loss, rtol=1e-4)
    assert torch.allclose(comp_grad, eager_grad, rtol=1e-3, atol=1e-5)


def test_inference_runner_off_the_gpu_runs_the_model_eagerly_and_says_so():
    """On the CPU (and in training mode) the CUDA-graph runner is the plain forward; the
    graphed path itself runs only on a GPU (bench/gpu_check.py times it there)."""
    from dino.engine import inference_forward
    from dino.models.cuda_graphs import inference_runner

    torch.manual_seed(0)
    model, _, _ = build_dino(ModelConfig(**TINY), 3)
    model.eval()
    images, masks = torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    runner = inference_runner(model, None)
    assert inference_runner(model, None) is runner  # kept with the model across validation passes
    with torch.no_grad():
        expected = model(images, masks)
        for _ in range(3):  # a repeated shape would be captured on a GPU
            got = runner(images, masks)
    assert runner.last_path == "eager" and not runner._graphs
    assert torch.equal(got["pred_boxes"], expected["pred_boxes"])
    forward = inference_forward(model, torch.device("cpu"), "fp32")
    with torch.no_grad():
        assert torch.equal(forward(images, masks)["pred_logits"], expected["pred_logits"])


def test_every_per_shape_constant_cache_is_registered_and_survives_clearing_in_a_snapshot():
    """CUDA graphs replay addresses: what a graph read must outlive the bounded caches'
    clearing (an H200 study failed in its third epoch when it did not)."""
    from dino.models import constants, deformable_transformer, ms_deform_attn, ms_deform_attn_triton, position_encoding

    caches = constants.registered()
    for cache in (ms_deform_attn._LAYOUTS, ms_deform_attn_triton._LEVEL_TABLES, deformable_transformer._TOKEN_GRIDS,
                  position_encoding._FREQUENCIES, position_encoding._ORDERS):
        assert any(cache is c for c in caches)
    torch.manual_seed(0)
    model, _, _ = build_dino(ModelConfig(**TINY), 3)
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool))
    held = constants.snapshot()
    layout = ms_deform_attn.canvas_layout([(16, 16), (8, 8), (4, 4)], torch.device("cpu"), torch.float32)
    assert any(v is layout for v in held)
    for k in range(70):  # many input sizes: the cache clears itself
        ms_deform_attn.canvas_layout([(k + 1, 2)], torch.device("cpu"), torch.float32)
    assert not any(v is layout for v in ms_deform_attn._LAYOUTS.values())  # cleared from the cache...
    assert any(v is layout for v in held)  # ...but what a graph holds is still the same object


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_decoder_self_attention_equals_multihead_attention(mask_kind):
    """The decoder layer's lean self-attention (fewer launches) against
    ``nn.MultiheadAttention`` on the same parameters: values and gradients, with no mask,
    a bool mask (True = blocked) and the decoder's float mask."""
    from dino.models.deformable_transformer import DeformableDecoderLayer

    torch.manual_seed(0)
    layer = DeformableDecoderLayer(32, 64, 0.0, 2, 4, 2).train()
    tgt = torch.randn(2, 11, 32, requires_grad=True)
    pos = torch.randn(2, 11, 32)
    blocked = torch.rand(11, 11) < 0.3
    blocked.fill_diagonal_(False)  # every query sees itself: no all-blocked row
    mask = {"none": None, "bool": blocked,
            "float": torch.zeros(11, 11).masked_fill_(blocked, float("-inf"))}[mask_kind]
    got = layer._self_attention(tgt, pos, mask)
    (grad_got,) = torch.autograd.grad(got.square().sum(), tgt)
    want = layer.self_attn(tgt + pos, tgt + pos, tgt, attn_mask=mask, need_weights=False)[0]
    (grad_want,) = torch.autograd.grad(want.square().sum(), tgt)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-5, atol=1e-6)
    if mask_kind != "none":  # the mask is applied, not ignored
        free = layer._self_attention(tgt, pos, None)
        assert (free - got).abs().max() > 1e-3


def test_criterion_computes_half_precision_outputs_in_float32():
    """The trainer hands the criterion the model's bf16 outputs (no cast per tensor
    before stacking): the loss is the one of their float32 copies."""
    from dino.engine import to_fp32

    torch.manual_seed(0)
    model, criterion, _ = build_dino(ModelConfig(backbone="resnet_tiny", hidden_dim=32, nheads=4, enc_layers=1,
                                                 dec_layers=2, dim_feedforward=64, num_queries=12, num_select=12,
                                                 dn_number=4, return_interm_indices=[2, 3, 4],
                                                 num_feature_levels=4), 4)
    images, masks = torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
               {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, masks, targets)
    assert out["pred_logits"].dtype == torch.bfloat16  # the case under test
    half, full = criterion(out, targets), criterion(to_fp32(out), targets)
    assert half["loss"].dtype == torch.float32
    assert half.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(half[name], full[name], rtol=1e-6, atol=1e-7)
