"""``train.cuda_graphs``: the trainer's rule, the per-shape capture policy (CPU), and on a
GPU that graphed training steps give the eager steps' losses and gradients.

The GPU test runs in the GPU check (``bench/gpu_check.sh``, its ``kernel_tests`` rows,
which fail on a skip); CI has no GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dino.config.model import ModelConfig
from dino.engine import to_fp32
from dino.models import build_dino, cuda_graphs
from dino.models.cuda_graphs import GraphedEncode, install_training_graphs, training_graphs

from dino_test_utils import TINY_MODEL

CUDA = torch.device("cuda")


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_dino(ModelConfig(**TINY_MODEL), 3)


def test_rule_graphs_one_gpu_only():
    model = _tiny()[0]
    assert install_training_graphs(model, torch.device("cpu"), None)[0] is None
    assert install_training_graphs(model, CUDA, None, enabled=False)[0] is None
    assert install_training_graphs(model, CUDA, None, distributed=True)[0] is None
    assert install_training_graphs(model, CUDA, None, compiled=True)[0] is None
    assert training_graphs(model) is None  # none of those installed anything
    graphs, note = install_training_graphs(model, CUDA, torch.bfloat16)
    assert training_graphs(model) is graphs and graphs.autocast_dtype == torch.bfloat16
    assert "train.cuda_graphs" in note and str(cuda_graphs.TRAIN_GRAPHS) in note


def _batch(size: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, size, size, generator=gen)
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[1, :, size // 2:] = True
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.25, 0.5, 0.3, 0.3]])}]
    return images, masks, targets


def test_installed_on_cpu_tensors_trains_eagerly_and_identically():
    (plain, criterion, _), (graphed, _, _) = _tiny(), _tiny()
    graphs = GraphedEncode(graphed, None).install()
    images, masks, targets = _batch()
    losses = []
    for model in (plain, graphed):
        model.train()
        torch.manual_seed(1)  # the denoising queries' draws
        losses.append(criterion(model(images, masks, targets), targets)["loss"])
    assert torch.equal(losses[0], losses[1])
    assert graphs.replays == 0 and graphs.last_path is None


class _Recorder:
    """Stands in for ``_EncodeGraphs`` (which needs a GPU): records the captured shapes."""

    captured: list[tuple] = []

    def __init__(self, encode, params, images, masks, autocast):
        _Recorder.captured.append(tuple(images.shape))


def test_capture_policy_second_sighting_and_at_most_max_graphs(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "_EncodeGraphs", _Recorder)
    _Recorder.captured = []
    graphs = GraphedEncode(_tiny()[0], None, max_graphs=2)
    shapes = [32, 32, 64, 32, 96, 64, 96, 96, 128]
    got = [graphs._entry(torch.zeros(1, 3, s, s), torch.zeros(1, s, s, dtype=torch.bool)) is not None
           for s in shapes]
    # 32: seen, captured, cached; 64: seen, captured; 96 and 128: over the two-graph budget, eager
    assert got == [False, True, False, True, False, True, False, False, False]
    assert _Recorder.captured == [(1, 3, 32, 32), (1, 3, 64, 64)]


def test_a_failed_capture_warns_once_and_trains_eagerly_after(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "_EncodeGraphs", broken)
    graphs = GraphedEncode(_tiny()[0], None)
    images, masks = torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            assert graphs._entry(images, masks) is None
    assert graphs.disabled
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "CUDA graph capture of the encoder in training failed" in messages[0]
    assert "capture failed" in graphs.summary(4)


def test_environment_switch_disables_capture(monkeypatch):
    monkeypatch.setenv("DINO_CUDA_GRAPHS", "0")
    monkeypatch.setattr(cuda_graphs, "_EncodeGraphs", _Recorder)
    _Recorder.captured = []
    graphs = GraphedEncode(_tiny()[0], None)
    for _ in range(3):
        graphs._entry(torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool))
    assert _Recorder.captured == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the GPU check runs it")
@pytest.mark.parametrize("dtype, tolerance", [(None, 1e-3), (torch.bfloat16, 2e-2)])
def test_graphed_steps_match_eager_steps_on_the_gpu(dtype, tolerance):
    """Five SGD steps over two input shapes (A A B B A) in lockstep: before each step the
    graphed model gets the eager model's weights (copied in place, as an optimizer step
    writes them), then both take the same batch. Every step's loss and every gradient
    agree to ``tolerance`` of its scale (the backward kernel's atomic adds sum in another
    order), and the graphed model replayed from the second sighting of each shape on."""
    (eager, criterion, _), (graphed, _, _) = _tiny(), _tiny(seed=1)
    eager.to(CUDA).train()
    graphed.to(CUDA).train()
    graphs = GraphedEncode(graphed, dtype).install()
    opt = torch.optim.SGD(eager.parameters(), lr=1e-2)
    for step, size in enumerate([64, 64, 96, 96, 64]):
        graphed.load_state_dict(eager.state_dict())  # in place: the graphs read these tensors
        images, masks, targets = _batch(size, seed=step)
        images, masks = images.to(CUDA), masks.to(CUDA)
        targets = [{k: v.to(CUDA) for k, v in t.items()} for t in targets]
        losses, grads = [], []
        for model in (eager, graphed):
            torch.manual_seed(100 + step)  # the denoising queries' draws, the same for both
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(images, masks, targets)
            loss = criterion(to_fp32(out), targets)["loss"]
            model.zero_grad(set_to_none=True)
            loss.backward()
            losses.append(float(loss))
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        assert abs(losses[0] - losses[1]) <= tolerance * abs(losses[0]), f"step {step}: loss {losses}"
        assert grads[0].keys() == grads[1].keys(), f"step {step}: parameters with gradients differ"
        assert any(n.startswith("backbone") for n in grads[0]), "no backbone gradient"
        for name, g in grads[0].items():
            err = (g - grads[1][name]).abs().max() / g.abs().max().clamp_min(1e-12)
            assert err <= tolerance, f"step {step} {name}: |grad diff| / scale {float(err):.2e}"
        opt.step()
    assert graphs.replays == 3 and graphs.last_path == "graph"  # steps 2, 4 and 5
