"""``train.cuda_graphs`` and ``train.cuda_graphs_decoder``: the trainer's rule, the
per-shape capture policy (CPU), and on a GPU that graphed training steps (backbone and
encoder, and with them the decoder) give the eager steps' losses and gradients.

The GPU test runs in the GPU check (``bench/gpu_check.sh``, its ``kernel_tests`` rows,
which fail on a skip); CI has no GPU.
"""

from __future__ import annotations

import pytest
import torch

from dino.config.model import ModelConfig
from dino.engine import to_fp32
from dino.models import build_dino, cuda_graphs
from dino.models.cuda_graphs import (
    GraphedDecode,
    GraphedEncode,
    install_training_graphs,
    training_graphs,
    training_path,
)

from dino_test_utils import TINY_MODEL, read_status, run_dino, tiny_spec, write_spec

CUDA = torch.device("cuda")


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_dino(ModelConfig(**TINY_MODEL), 3)


def test_rule_graphs_one_gpu_only():
    model = _tiny()[0]
    for decoder in (False, True):
        assert install_training_graphs(model, torch.device("cpu"), None, decoder=decoder)[0] == []
        assert install_training_graphs(model, CUDA, None, distributed=True, decoder=decoder)[0] == []
        assert install_training_graphs(model, CUDA, None, compiled=True, decoder=decoder)[0] == []
    assert install_training_graphs(model, CUDA, None, enabled=False)[0] == []
    assert training_graphs(model) == [] and model.denoising_slots is None  # none of those installed anything
    graphs, note = install_training_graphs(model, CUDA, torch.bfloat16)
    assert training_graphs(model) == graphs and [type(g) for g in graphs] == [GraphedEncode]
    assert graphs[0].autocast_dtype == torch.bfloat16
    assert "train.cuda_graphs" in note and str(cuda_graphs.TRAIN_GRAPHS) in note and "decoder" not in note
    assert model.denoising_slots is None  # the encoder's graphs leave the denoising layout alone


def test_rule_decoder_graphs_fix_the_denoising_slots_from_the_most_boxes_an_image_has():
    model = _tiny()[0]  # dn_number 5
    graphs, note = install_training_graphs(model, CUDA, None, decoder=True, max_boxes=7)
    assert [type(g) for g in graphs] == [GraphedEncode, GraphedDecode] and training_graphs(model) == graphs
    assert model.denoising_slots == graphs[1].slots == 14  # 2 x max(5, 7)
    assert "train.cuda_graphs_decoder" in note and "14 slots" in note
    small = _tiny()[0]
    graphs, _ = install_training_graphs(small, CUDA, None, decoder=True, max_boxes=2)
    assert small.denoising_slots == graphs[1].slots == 10  # 2 x max(5, 2)
    off = _tiny()[0]  # train.cuda_graphs=false turns every training graph off, the decoder's too
    graphs, note = install_training_graphs(off, CUDA, None, enabled=False, decoder=True, max_boxes=2)
    assert graphs == [] and off.denoising_slots is None and "train.cuda_graphs is false" in note


def test_the_trainer_reads_the_decoder_setting_and_trains_eagerly_on_the_cpu(shapes_small, tmp_path):
    """The setting reaches the trainer's rule (through the spec, with the training set's
    most boxes an image) and a CPU run says it trains eagerly, then trains."""
    spec = tiny_spec(shapes_small, tmp_path / "results", train={"num_epochs": 1, "cuda_graphs_decoder": True})
    run = run_dino("train", "-e", str(write_spec(tmp_path / "spec.yaml", spec)))
    assert run.returncode == 0, run.stderr[-2000:]
    status = read_status(tmp_path / "results")
    assert "training runs eagerly (CUDA graphs need a GPU)" in [line["message"] for line in status]
    assert status[-1]["status"] == "SUCCESS"


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
    graphs = [GraphedEncode(graphed, None).install(), GraphedDecode(graphed, None, slots=None).install()]
    images, masks, targets = _batch()
    losses = []
    for model in (plain, graphed):
        model.train()
        torch.manual_seed(1)  # the denoising queries' draws
        losses.append(criterion(model(images, masks, targets), targets)["loss"])
    assert torch.equal(losses[0], losses[1])
    assert all(g.replays == 0 and g.last_path is None for g in graphs)
    assert training_path(graphed) == "eager"


class _Recorder:
    """Stands in for ``_TrainingGraphs`` (which needs a GPU): records the captured
    signatures' first input shape."""

    captured: list[tuple] = []

    def __init__(self, fn, detector, inputs, autocast, shared):
        _Recorder.captured.append(tuple(inputs[0].shape))


def _encode_entry(graphs: GraphedEncode, images: torch.Tensor, masks: torch.Tensor):
    inputs = (images, masks)
    return graphs._entry(cuda_graphs._signature(inputs), graphs._fn, inputs)


def test_capture_policy_second_sighting_and_at_most_max_graphs(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "_TrainingGraphs", _Recorder)
    _Recorder.captured = []
    graphs = GraphedEncode(_tiny()[0], None, max_graphs=2)
    shapes = [32, 32, 64, 32, 96, 64, 96, 96, 128]
    got = [_encode_entry(graphs, torch.zeros(1, 3, s, s), torch.zeros(1, s, s, dtype=torch.bool)) is not None
           for s in shapes]
    # 32: seen, captured, cached; 64: seen, captured; 96 and 128: over the two-graph budget, eager
    assert got == [False, True, False, True, False, True, False, False, False]
    assert _Recorder.captured == [(1, 3, 32, 32), (1, 3, 64, 64)]


def test_a_failed_capture_stops_the_run_and_says_how_to_train_without_graphs(monkeypatch):
    """Not a silent fallback: after a failed capture CUDA's random generator is still in
    capture mode, and the next denoising draw failed with 'Offset increment outside graph
    capture' (seen on an H200)."""
    def broken(*_args, **_kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "_TrainingGraphs", broken)
    graphs = GraphedEncode(_tiny()[0], None)
    images, masks = torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool)
    assert _encode_entry(graphs, images, masks) is None  # first sighting: eager
    with pytest.raises(RuntimeError, match=r"capture of the backbone and encoder in training failed "
                                           r".*set train.cuda_graphs=false"):
        _encode_entry(graphs, images, masks)
    assert graphs.disabled and "capture failed" in graphs.summary(2)
    decode = GraphedDecode(_tiny()[0], None, slots=10)
    key = ("decode",)
    assert decode._entry(key, None, (images,)) is None
    with pytest.raises(RuntimeError, match=r"capture of the query selection and decoder in training failed "
                                           r".*set train.cuda_graphs_decoder=false"):
        decode._entry(key, None, (images,))


@pytest.mark.parametrize("slots", [10, None])
def test_decoder_signature_holds_over_target_layouts_only_with_fixed_slots(monkeypatch, slots):
    """What decides whether a decoder graph is replayed: with fixed denoising slots every
    batch of one image size is one signature, whatever its boxes; with each batch's own
    layout (no slots) the signature follows the targets. (Keys only: capture needs a GPU.)"""
    model = _tiny()[0]  # dn_number 5: 10 slots hold up to 5 boxes an image
    graphs = GraphedDecode(model, None, slots=slots).install()
    keys = []
    monkeypatch.setattr(GraphedDecode, "_active", lambda self, tensor: True)
    monkeypatch.setattr(GraphedDecode, "_entry", lambda self, key, fn, inputs: keys.append(key))  # None: eager
    model.train()
    images, masks, _ = _batch()
    layouts = [[2, 1], [1, 1], [3, 2], [5, 0]]  # 2 groups of 2 x 2, 5 of 2 x 1, 1 of 2 x 3, 1 of 2 x 5
    for counts in layouts:
        targets = [{"labels": torch.ones(n, dtype=torch.long), "boxes": torch.full((n, 4), 0.3)} for n in counts]
        model(images, masks, targets)
    assert len(keys) == len(layouts) and graphs.last_path == "eager"
    if slots:
        assert len(set(keys)) == 1
        levels, memory, _, _, dn_tgt, dn_ref, attn_mask = keys[0]
        assert dn_tgt[0] == (2, 10, 64) and dn_ref[0] == (2, 10, 4) and attn_mask[0] == (30, 30)
        assert memory[3] and dn_tgt[3] and not dn_ref[3]  # the inputs that carry a gradient
    else:  # one signature per layout size: 8, 10, 6 and again 10 queries
        assert len(set(keys)) == 3


class _Replayed:
    """Stands in for a ``_TrainingGraphs`` entry (capture needs a GPU) with the same
    buffers: replaying its "forward graph" writes ``y = (m * w).sum(-1)`` and ``z = 2 d``
    into fixed outputs from the fixed inputs, its "backward graph" the gradients of
    ``m``, ``d`` and ``w`` from the fixed output gradients; the middle input is absent."""

    def __init__(self):
        self.w = torch.nn.Parameter(torch.randn(3))
        m, d = torch.zeros(2, 3, requires_grad=True), torch.zeros(2, requires_grad=True)
        self.inputs, self.grad_inputs, self.params = (m, None, d), [0, 2], [self.w]
        self.outputs, self.differentiable = (torch.zeros(2), torch.zeros(2)), (True, True)
        self.grad_outputs = (torch.zeros(2), torch.zeros(2))
        self.input_grads, self.param_grads = (torch.zeros(2, 3), torch.zeros(2)), (torch.zeros(3),)
        self.forward_graph = type("G", (), {"replay": lambda _: self._forward()})()
        self.backward_graph = type("G", (), {"replay": lambda _: self._backward()})()

    def _forward(self):
        (m, _, d), w = self.inputs, self.w.detach()
        self.outputs[0].copy_((m.detach() * w).sum(-1))
        self.outputs[1].copy_(d.detach() * 2)

    def _backward(self):
        (m, _, _), (gy, gz), w = self.inputs, self.grad_outputs, self.w.detach()
        self.input_grads[0].copy_(gy[:, None] * w)
        self.input_grads[1].copy_(gz * 2)
        self.param_grads[0].copy_((gy[:, None] * m.detach()).sum(0))


def test_a_replay_node_routes_gradients_to_its_inputs_and_parameters_in_order():
    entry = _Replayed()
    m, d = torch.randn(2, 3, requires_grad=True), torch.randn(2, requires_grad=True)
    y, z = cuda_graphs._Replay.apply(entry, m, None, d, *entry.params)
    assert torch.equal(entry.inputs[0].detach(), m.detach())  # copied in, as a replay reads them
    (3 * y.sum() + z[0]).backward()  # z[1] unused: its gradient is 0, not stale
    w = entry.w.detach()
    assert torch.allclose(m.grad, 3 * w.expand(2, 3)) and torch.allclose(entry.w.grad, 3 * m.detach().sum(0))
    assert d.grad.tolist() == [2.0, 0.0]


def test_environment_switch_disables_capture(monkeypatch):
    monkeypatch.setenv("DINO_CUDA_GRAPHS", "0")
    monkeypatch.setattr(cuda_graphs, "_TrainingGraphs", _Recorder)
    _Recorder.captured = []
    graphs = GraphedEncode(_tiny()[0], None)
    for _ in range(3):
        _encode_entry(graphs, torch.zeros(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool))
    assert _Recorder.captured == []


def _step(model, criterion, batch, dtype, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward and backward of ``model`` on ``batch`` under ``dtype`` autocast: the
    loss and every parameter's gradient."""
    images, masks, targets = batch
    torch.manual_seed(seed)  # the denoising queries' draws, the same for every model
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(images, masks, targets)
    loss = criterion(to_fp32(out), targets)["loss"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worst(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The largest |gradient error| / scale over the parameters, and where."""
    errors = {n: float((g - reference[n]).abs().max() / reference[n].abs().max().clamp_min(1e-12))
              for n, g in grads.items()}
    name = max(errors, key=errors.get)
    return errors[name], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: the GPU check runs it")
@pytest.mark.parametrize("decoder", [False, True], ids=["encoder", "encoder+decoder"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_graphed_steps_match_eager_steps_on_the_gpu(dtype, decoder):
    """Six SGD steps over two input shapes (A A B B A B) in lockstep: before each step the
    graphed model gets the eager model's weights (copied in place, as an optimizer step
    writes them), then both take the same batch, and the graphed model replays from the
    second sighting of each shape on. A and B share one graph memory pool per graphed
    part, B captured after A: the last two steps replay each after the other's replay.
    With the decoder graphed too, the denoising queries sit in 10 slots (2 x dn_number 5),
    2 of them unused (2 groups of 2 x 2 boxes), in both models: only the graphs differ.

    fp32: the losses and every gradient agree to 1e-3 of their scale (the backward
    kernel's atomic adds sum in another order). bf16: rounding alone puts the eager bf16
    gradients a few percent from the fp32 ones, and other kernel choices inside a
    capture round differently, so the graphed bf16 step is held to the eager bf16 step's
    own distance from the fp32 step: at most twice it."""
    (eager, criterion, _), (graphed, _, _) = _tiny(), _tiny(seed=1)
    eager.to(CUDA).train()
    graphed.to(CUDA).train()
    graphs, _ = install_training_graphs(graphed, CUDA, dtype, decoder=decoder, max_boxes=2)
    assert [type(g) for g in graphs] == [GraphedEncode] + ([GraphedDecode] if decoder else [])
    eager.denoising_slots = graphed.denoising_slots
    opt = torch.optim.SGD(eager.parameters(), lr=1e-2)
    for step, size in enumerate([64, 64, 96, 96, 64, 96]):
        graphed.load_state_dict(eager.state_dict())  # in place: the graphs read these tensors
        images, masks, targets = _batch(size, seed=step)
        batch = (images.to(CUDA), masks.to(CUDA), [{k: v.to(CUDA) for k, v in t.items()} for t in targets])
        loss_g, grads_g = _step(graphed, criterion, batch, dtype, 100 + step)
        loss_e, grads_e = _step(eager, criterion, batch, dtype, 100 + step)
        assert grads_g.keys() == grads_e.keys(), f"step {step}: parameters with gradients differ"
        assert any(n.startswith("backbone") for n in grads_e), "no backbone gradient"
        assert "denoising.label_enc.weight" in grads_e, "no gradient through the denoising queries"
        if dtype is None:
            assert abs(loss_g - loss_e) <= 1e-3 * abs(loss_e), f"step {step}: loss {loss_e} eager, {loss_g} graphed"
            err, name = _worst(grads_g, grads_e)
            assert err <= 1e-3, f"step {step} {name}: |grad diff| / scale {err:.2e}"
        else:
            loss_r, grads_r = _step(eager, criterion, batch, None, 100 + step)  # the fp32 reference
            assert abs(loss_g - loss_r) <= 2 * abs(loss_e - loss_r) + 1e-3 * abs(loss_r), \
                f"step {step}: loss {loss_r} fp32, {loss_e} bf16 eager, {loss_g} bf16 graphed"
            (err_g, name_g), (err_e, name_e) = _worst(grads_g, grads_r), _worst(grads_e, grads_r)
            assert err_g <= 2 * err_e + 1e-3, (f"step {step}: graphed bf16 {err_g:.2e} ({name_g}) from fp32, "
                                               f"eager bf16 {err_e:.2e} ({name_e})")
        _step(eager, criterion, batch, dtype, 100 + step)  # the eager model's own gradients for its step
        opt.step()
    assert training_path(graphed) == ("graph+decoder" if decoder else "graph")
    part_pools = []
    for part in graphs:
        assert part.replays == 4 and part.last_path == "graph", part.summary(6)  # steps 2, 4, 5 and 6
        pools = {graph.pool() for g in part._graphs.values() for graph in (g.forward_graph, g.backward_graph)}
        assert len(part._graphs) == 2 and len(pools) == 1, f"{part.part}: {len(pools)} memory pools for 2 shapes"
        part_pools.append(pools.pop())
    assert len(set(part_pools)) == len(graphs), "the encoder and the decoder share a memory pool"
