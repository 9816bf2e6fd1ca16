"""The ONNX file's runtime contract (docs/onnx_contract.md): ONNX Runtime's outputs, turned into
boxes by the numpy reference in ``dino.deploy``, are PyTorch's post-processed detections.

Tolerances (CPU, float32). Measured on the tiny trained model: scores differ by ~1e-7 and
boxes by ~2e-7 of the image side (ONNX Runtime sums in another order than PyTorch). The
test allows 1e-5 on scores and 1e-4 of the image side on boxes (0.1 px on a 1000 px
image): a hundred times the noise, and a hundred times below what a broken contract
does (another normalisation, softmax for sigmoid, boxes scaled by the wrong size move
scores or boxes by 1e-2 or more).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from dino.checkpoint import load_trained
from dino.cli import main
from dino.config import load_spec
from dino.deploy import normalize, postprocess, preprocess
from dino.models import PostProcess

SCORE_TOL = 1e-5
BOX_TOL = 1e-4  # of the image's longer side, in pixels
HEIGHT, WIDTH = 64, 80  # the export size: not the images' (they are stretched to it)
SIZES = [(64, 64), (90, 60), (50, 75)]  # (width, height) of the original images


@pytest.fixture(scope="module")
def exported(trained_shapes, tmp_path_factory):
    """A dynamic-batch export of the trained tiny model, its spec and the PyTorch model."""
    out = tmp_path_factory.mktemp("onnx_contract")
    onnx_file = out / "model.onnx"
    code = main(["export", "-e", str(trained_shapes["spec"]), f"export.input_height={HEIGHT}",
                 f"export.input_width={WIDTH}", "export.batch_size=-1", f"export.onnx_file={onnx_file}",
                 f"export.results_dir={out}"])
    assert code == 0
    spec, _ = load_spec(trained_shapes["spec"])
    model, _, post = load_trained(spec, str(trained_shapes["results"] / "train" / "dino_model_latest.pth"), "export")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    val = trained_shapes["data"].val.image_dir
    images = [Image.open(os.path.join(val, name)).convert("RGB").resize(size)
              for name, size in zip(sorted(os.listdir(val)), SIZES)]
    return {"file": onnx_file, "spec": spec, "model": model, "post": post, "session": session, "images": images}


def assert_same_detections(ref: dict, got: dict, side: float) -> None:
    """``got`` (numpy) holds ``ref``'s (torch) detections: the same sorted scores, and every
    detection with the same label and box, except where two scores are closer than the
    tolerance at the top-k boundary (then either may be the one kept)."""
    ref_scores, ref_labels, ref_boxes = (ref[k].numpy() for k in ("scores", "labels", "boxes"))
    assert got["scores"].shape == ref_scores.shape and got["boxes"].shape == ref_boxes.shape
    # the k best scores are the k best whatever the order of near-ties
    np.testing.assert_allclose(np.sort(got["scores"]), np.sort(ref_scores), rtol=0, atol=SCORE_TOL)
    assert np.all(np.diff(got["scores"]) <= 0), "scores must come best first"
    boundary = ref_scores.min() + 2 * SCORE_TOL
    unmatched = 0
    for score, label, box in zip(ref_scores, ref_labels, ref_boxes):
        same = ((got["labels"] == label) & (np.abs(got["scores"] - score) <= SCORE_TOL)
                & (np.abs(got["boxes"] - box).max(axis=1) <= BOX_TOL * side))
        if not same.any():
            assert score <= boundary, f"detection {label} {score:.6f} {box} has no counterpart"
            unmatched += 1
    assert unmatched <= 1


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_onnxruntime_through_the_reference_matches_pytorch(exported, batch):
    images = exported["images"][-batch:]
    aug = exported["spec"].dataset.augmentation
    inputs = np.stack([preprocess(im, HEIGHT, WIDTH, aug.input_mean, aug.input_std) for im in images])
    sizes = np.array([[im.height, im.width] for im in images])  # (h, w) of the originals

    logits, boxes = exported["session"].run(["pred_logits", "pred_boxes"], {"inputs": inputs})
    num_queries, num_classes = exported["spec"].model.num_queries, exported["spec"].dataset.num_classes
    assert logits.shape == (batch, num_queries, num_classes) and boxes.shape == (batch, num_queries, 4)
    got = postprocess(logits, boxes, sizes, exported["spec"].model.num_select)

    with torch.no_grad():
        x = torch.from_numpy(inputs)
        outputs = exported["model"](x, torch.zeros(x.shape[0], HEIGHT, WIDTH, dtype=torch.bool))
        ref = exported["post"](outputs, torch.from_numpy(sizes))
    assert len(got) == len(ref) == batch
    for r, g, (h, w) in zip(ref, got, sizes):
        assert len(r["scores"]) == exported["spec"].model.num_select
        assert_same_detections(r, g, max(h, w))
        assert r["boxes"].std() > 1.0  # trained boxes spread over the image: not a comparison of constants


def test_graph_layout_is_the_documented_one(exported):
    model = onnx.load(str(exported["file"]))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    q, k = exported["spec"].model.num_queries, exported["spec"].dataset.num_classes
    assert dims == {"inputs": ["batch", 3, HEIGHT, WIDTH], "pred_logits": ["batch", q, k], "pred_boxes": ["batch", q, 4]}
    aug = exported["spec"].dataset.augmentation
    inputs = preprocess(exported["images"][0], HEIGHT, WIDTH, aug.input_mean, aug.input_std)[None]
    logits, boxes = exported["session"].run(None, {"inputs": inputs})
    assert logits.min() < 0  # raw logits, not probabilities: sigmoid them
    assert 0 <= boxes.min() and boxes.max() <= 1  # sigmoid (cx, cy, w, h) relative to the input


def test_reference_postprocess_is_the_trainers_on_the_same_outputs():
    """The numpy function itself, on random outputs: what PostProcess returns, k below and at Q*K."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 4, generator=gen) * 3
    boxes = torch.rand(3, 7, 4, generator=gen) * 0.5 + 0.25
    sizes = torch.tensor([[480, 640], [100, 100], [333, 50]])
    for k in (5, 28):
        ref = PostProcess(k)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
        got = postprocess(logits.numpy(), boxes.numpy(), sizes.numpy(), num_select=k)
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(g["labels"], r["labels"].numpy())
            np.testing.assert_allclose(g["scores"], r["scores"].numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(g["boxes"], r["boxes"].numpy(), rtol=0, atol=1e-3)  # pixels of 640
    kept = postprocess(logits.numpy(), boxes.numpy(), sizes.numpy(), num_select=28, score_threshold=0.5)
    assert all((d["scores"] > 0.5).all() and len(d["scores"]) < 28 for d in kept)


def test_preprocess_is_the_trainers_resize_and_normalisation():
    """Same resize kernel (PIL bilinear, as torchvision's resize of a PIL image) and normalisation."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    theirs = F.normalize(F.to_tensor(F.resize(image, [48, 72], antialias=True)), mean, std).numpy()
    np.testing.assert_allclose(preprocess(image, 48, 72, mean, std), theirs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(normalize(np.asarray(image), mean, std), F.normalize(F.to_tensor(image), mean, std).numpy(),
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"RGB image \[H, W, 3\]"):
        normalize(np.zeros((4, 4), np.uint8))
