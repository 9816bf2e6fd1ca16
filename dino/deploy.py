"""The ONNX file's runtime contract as code: what goes into ``dino export``'s graph and how its
outputs become boxes, with numpy only (PIL for the resize), so a deployer can read it,
copy the idea into any runtime, and check theirs against it. ``docs/onnx_contract.md``
explains it; ``tests/trainer/test_onnx_contract.py`` holds ONNX Runtime through these
functions to PyTorch's own post-processed detections.

Input ``inputs [B, 3, H, W]`` float32: RGB, resized to the export's ``H x W``
(``export.input_height`` x ``input_width``, aspect ratio not kept), scaled to [0, 1],
minus ``dataset.augmentation.input_mean``, divided by ``input_std``. Outputs
``pred_logits [B, Q, K]`` (raw logits: sigmoid, not softmax, gives each (query, class)
score) and ``pred_boxes [B, Q, 4]`` (cx, cy, w, h in [0, 1] of the input, hence also of the
original image, which the resize only scales).
"""

from __future__ import annotations

import numpy as np

# dataset.augmentation's defaults (ImageNet statistics); use the spec's own values.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


def normalize(rgb: np.ndarray, mean=DEFAULT_MEAN, std=DEFAULT_STD) -> np.ndarray:
    """``rgb [H, W, 3]`` uint8 -> ``[3, H, W]`` float32, ``(rgb / 255 - mean) / std``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(image, height: int, width: int, mean=DEFAULT_MEAN, std=DEFAULT_STD) -> np.ndarray:
    """A PIL image -> one ``[3, height, width]`` row of ``inputs``. Bilinear resize with PIL,
    the kernel the trainer's resize uses on PIL images, then :func:`normalize`."""
    from PIL import Image

    rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return normalize(np.asarray(rgb), mean, std)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function (``tanh`` form)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``[..., 4]`` (cx, cy, w, h) -> (x0, y0, x1, y1)."""
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def postprocess(pred_logits: np.ndarray, pred_boxes: np.ndarray, image_sizes, num_select: int = 300,
                score_threshold: float = 0.0) -> list[dict[str, np.ndarray]]:
    """The graph's outputs -> detections per image, as the trainer's post-processor makes them.

    Args:
        pred_logits: ``[B, Q, K]`` raw class logits; K = ``dataset.num_classes`` and the
            class index is the category id (TAO's convention).
        pred_boxes: ``[B, Q, 4]`` sigmoid (cx, cy, w, h) relative to the input.
        image_sizes: ``[B, 2]`` (height, width) of each *original* image, in pixels.
        num_select: detections kept per image before the threshold (``model.num_select``).
        score_threshold: then drop those scoring at or below it.
    Returns:
        B dicts: ``scores [k]`` descending, ``labels [k]`` int64 category ids,
        ``boxes [k, 4]`` (x0, y0, x1, y1) in pixels of the original image.

    Each query may yield several classes: the best ``num_select`` of all Q*K sigmoid
    scores are kept (top-k over the flattened query x class grid; no NMS), which is how
    DINO is evaluated.
    """
    logits, boxes = np.asarray(pred_logits, np.float32), np.asarray(pred_boxes, np.float32)
    sizes = np.asarray(image_sizes, np.float32).reshape(-1, 2)
    batch, n_queries, n_classes = logits.shape
    if boxes.shape != (batch, n_queries, 4) or len(sizes) != batch:
        raise ValueError(f"pred_boxes {boxes.shape} / image_sizes {sizes.shape} do not match pred_logits "
                         f"{logits.shape}: expected [{batch}, {n_queries}, 4] and [{batch}, 2]")
    k = min(num_select, n_queries * n_classes)
    scores = sigmoid(logits.reshape(batch, -1))  # [B, Q*K]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # the k best, unordered
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, 1)  # [B, k], best first
    out = []
    for b in range(batch):
        query, label = np.divmod(top[b], n_classes)
        h, w = sizes[b]
        xyxy = cxcywh_to_xyxy(boxes[b, query]) * np.array([w, h, w, h], np.float32)
        s = scores[b, top[b]]
        keep = s > score_threshold
        out.append({"scores": s[keep], "labels": label[keep].astype(np.int64), "boxes": xyxy[keep]})
    return out
