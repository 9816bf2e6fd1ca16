"""``dino export``: a trained tiny checkpoint -> ONNX file that ONNX Runtime runs like PyTorch;
bad input exits 2 with a FAILURE line."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from dino.cli import main
from dino.config import load_spec
from dino.export import InferenceGraph, load_detector

from dino_test_utils import read_status, run_dino, tiny_spec, write_spec

# hidden 32, 10 queries: the smallest DINO with every part present (4 levels: 3 backbone
# stages + a strided conv)
MODEL = {"hidden_dim": 32, "num_queries": 10, "num_select": 10, "dim_feedforward": 64, "dn_number": 4,
         "num_feature_levels": 4}
SIZE = ["export.input_height=64", "export.input_width=96"]


@pytest.fixture(scope="module")
def trained(shapes_small, tmp_path_factory):
    """A spec file and its results dir holding one epoch of training."""
    root = tmp_path_factory.mktemp("export")
    spec = tiny_spec(shapes_small, root / "results", model=MODEL, train={"num_epochs": 1})
    path = write_spec(root / "spec.yaml", spec)
    proc = run_dino("train", "-e", str(path))
    assert proc.returncode == 0, proc.stderr
    return path, root / "results"


def torch_outputs(spec_path, checkpoint, inputs):
    spec, _ = load_spec(spec_path)
    graph = InferenceGraph(load_detector(spec, str(checkpoint)))
    with torch.no_grad():
        return graph(inputs)


def shape_of(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_export_cli_writes_onnx_that_onnxruntime_runs_like_pytorch(trained):
    spec_path, results = trained
    proc = run_dino("export", "-e", str(spec_path), *SIZE)
    assert proc.returncode == 0, proc.stderr
    onnx_file = results / "export" / "dino_model_latest.onnx"  # default: named after the checkpoint
    assert f"ONNX file : {onnx_file}" in proc.stdout
    lines = read_status(results, "export")
    assert [line["status"] for line in (lines[0], lines[-1])] == ["STARTED", "SUCCESS"]
    verified = [line for line in lines if "max_abs_diff" in line]
    assert len(verified) == 1 and verified[0]["max_abs_diff"]["boxes"] < 1e-3

    model = onnx.load(str(onnx_file))
    assert [(v.name, shape_of(v)) for v in (*model.graph.input, *model.graph.output)] == [
        ("inputs", ["batch", 3, 64, 96]), ("pred_logits", ["batch", 10, 3]), ("pred_boxes", ["batch", 10, 4])]

    # our own comparison, at a batch size the export did not see
    inputs = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(123))
    logits, boxes = torch_outputs(spec_path, results / "train" / "dino_model_latest.pth", inputs)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    ort_logits, ort_boxes = (torch.from_numpy(a) for a in session.run(None, {"inputs": inputs.numpy()}))
    assert ort_logits.shape == (3, 10, 3) and ort_boxes.shape == (3, 10, 4)
    torch.testing.assert_close(ort_boxes, boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(ort_logits.sigmoid(), logits.sigmoid(), atol=1e-3, rtol=0)
    assert boxes.std() > 1e-3  # trained boxes vary: the comparison is not of constants


def test_fixed_batch_named_checkpoint_and_file(trained, tmp_path, capsys):
    spec_path, results = trained
    (checkpoint,) = (results / "train").glob("model_epoch_*.pth")
    onnx_file = tmp_path / "out" / "det.onnx"
    code = main(["export", "-e", str(spec_path), *SIZE, "export.batch_size=2", "export.opset_version=16",
                 f"export.checkpoint={checkpoint}", f"export.onnx_file={onnx_file}", f"export.results_dir={tmp_path}"])
    assert code == 0, capsys.readouterr().err
    model = onnx.load(str(onnx_file))
    assert model.opset_import[0].version == 16
    assert shape_of(model.graph.input[0]) == [2, 3, 64, 96]
    assert shape_of(model.graph.output[1]) == [2, 10, 4]
    assert read_status(tmp_path, "")[-1]["status"] == "SUCCESS"  # export.results_dir
    assert not list(onnx_file.parent.glob("*.tmp*"))


@pytest.mark.parametrize("overrides, message", [
    (["export.checkpoint=/nonexistent/model.pth"], "export.checkpoint not found: /nonexistent/model.pth"),
    (["export.opset_version=13"], "export.opset_version=13 must be in 16..20"),
    (["export.format=xdl"], "only 'onnx' is supported"),
    (["export.input_channel=1"], "export.input_channel=1"),
    (["dataset.num_classes=5"], "it was trained with dataset.num_classes=3"),
])
def test_bad_input_exits_2_with_failure_line(trained, tmp_path, capsys, overrides, message):
    spec_path, _ = trained
    code = main(["export", "-e", str(spec_path), *SIZE, f"export.results_dir={tmp_path}", *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    lines = read_status(tmp_path, "")
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "FAILURE"
    assert message in lines[-1]["message"]


def test_no_trained_checkpoint_exits_2(shapes_small, tmp_path, capsys):
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec(shapes_small, tmp_path / "results", model=MODEL))
    code = main(["export", "-e", str(spec_path)])
    assert code == 2
    assert "no checkpoint to export: set export.checkpoint=" in capsys.readouterr().err
    lines = read_status(tmp_path / "results", "export")
    assert lines[-1]["status"] == "FAILURE" and "no checkpoint to export" in lines[-1]["message"]
    assert not (tmp_path / "results" / "export" / "dino_model_latest.onnx").exists()


def test_tao_export_section_loads(tmp_path):
    """TAO's spec_template_export.yaml section: every field parses; the three with no
    meaning here are reported as ignored."""
    section = {"results_dir": "", "gpu_id": 0, "checkpoint": "???", "onnx_file": "???", "on_cpu": False,
               "input_channel": 3, "input_width": 960, "input_height": 544, "opset_version": 17, "batch_size": -1,
               "verbose": False, "format": "onnx", "serialize_nvdsinfer": False}
    spec, ignored = load_spec(write_spec(tmp_path / "s.yaml", {"export": section}))
    assert (spec.export.input_height, spec.export.input_width, spec.export.batch_size) == (544, 960, -1)
    assert [i.split(":")[0] for i in ignored] == ["export.gpu_id", "export.on_cpu", "export.serialize_nvdsinfer"]


# -- why the verification pins the encoder's proposal selection --------------------------
# On the GPU every export of a GPU-trained checkpoint failed its verification (boxes
# 0.43 apart) while scores agreed to 2e-3: ONNX Runtime and PyTorch ranked near-tied
# encoder proposals in another order, and each rank seeds its own decoder query.

R18 = {"backbone": "resnet_18"}  # the smoke profile's sizes of DINO (300 queries, 4 levels)


@pytest.fixture(scope="module")
def r18_graph():
    from dino.config.model import ModelConfig
    from dino.models import build_dino

    torch.manual_seed(0)
    model, _, _ = build_dino(ModelConfig(**R18), 5)
    return InferenceGraph(model)


def _memory_noise(graph, eps: float):
    """Multiplies the encoder output by (1 + eps * noise): rounding-level drift (the top
    scores of a ResNet-18 DINO lie about 1e-6 apart)."""
    gen = torch.Generator().manual_seed(5)
    return graph.detector.encoder.register_forward_hook(
        lambda module, args, out: out * (1 + eps * torch.randn(out.shape, generator=gen)))


def test_rounding_level_noise_reorders_proposals_and_moves_whole_boxes(r18_graph):
    from dino.export import pinned_selection

    inputs = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    selection = r18_graph.detector.query_selection
    with torch.no_grad(), pinned_selection(selection, None) as seen:
        logits, boxes = r18_graph(inputs)
    order = seen["scores"].topk(selection.num_queries, dim=1).indices
    handle = _memory_noise(r18_graph, 1e-5)
    try:
        with torch.no_grad():
            _, noisy_boxes = r18_graph(inputs)
            with pinned_selection(selection, order):
                _, pinned_boxes = r18_graph(inputs)
    finally:
        handle.remove()
    assert (noisy_boxes - boxes).abs().max() > 0.05  # the cause: whole boxes move
    assert (pinned_boxes - boxes).abs().max() < 1e-4  # with the same selection they agree


def test_export_of_a_drifted_model_verifies_with_pinned_selection_where_per_query_comparison_fails(r18_graph, tmp_path):
    """An exported graph against a PyTorch model 1e-5 away from it, as a GPU-trained
    checkpoint is from ONNX Runtime's arithmetic: the per-query comparison fails as it did
    on the GPU, the pinned one passes and says how many ranks were reordered."""
    import dataclasses

    from dino.config.export_config import ExportConfig
    from dino.export import compare_with_onnxruntime, export_onnx, verification_problem

    path = str(tmp_path / "r18.onnx")
    example = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    export_onnx(r18_graph, example, path, dataclasses.replace(ExportConfig(), batch_size=-1, input_height=160,
                                                              input_width=160))
    inputs = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    exact = compare_with_onnxruntime(path, r18_graph, inputs)
    assert verification_problem(exact) is None and exact["boxes"] < 1e-4
    handle = _memory_noise(r18_graph, 1e-5)
    try:
        drifted = compare_with_onnxruntime(path, r18_graph, inputs)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        _, ort_boxes = session.run(None, {"inputs": inputs.numpy()})
        with torch.no_grad():
            _, boxes = r18_graph(inputs)
    finally:
        handle.remove()
    assert (torch.from_numpy(ort_boxes) - boxes).abs().max() > 0.05  # what the old verification compared
    assert verification_problem(drifted) is None, drifted
    assert drifted["reordered"] > 0 and drifted["boxes"] < 1e-3


def test_verification_rejects_real_differences():
    from dino.export import verification_problem

    good = {"boxes": 1e-5, "scores": 1e-5, "logits": 1e-4, "proposal_scores": 2e-5, "selection_gap": 3e-5,
            "reordered": 2}
    assert verification_problem(good) is None
    assert "outputs differ" in verification_problem({**good, "boxes": 2e-3})
    assert "outputs differ" in verification_problem({**good, "scores": 2e-3})
    assert "proposal scores" in verification_problem({**good, "proposal_scores": 2e-3})
    # ONNX Runtime picked a proposal PyTorch ranks lower than the scores' difference explains
    assert "selects proposals" in verification_problem({**good, "selection_gap": 1e-4})
