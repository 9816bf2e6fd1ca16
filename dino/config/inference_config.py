"""The ``inference`` section of TAO's DINO spec (``spec_template_inference.yaml``) for ``dino inference``.

Names and defaults are TAO's, so a TAO inference spec loads unchanged. The images and the
class names come from ``dataset.infer_data_sources`` (``image_dir`` list, ``classmap``;
``json_file`` is ours). Which fields are accepted but not acted on is listed in
``dino.config.spec.IGNORED_FIELDS``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class InferenceConfig:
    num_gpus: int = 1  # one process on gpu_ids[0]; > 1 is reported and runs as 1
    gpu_ids: list[int] = dataclasses.field(default_factory=lambda: [0])
    num_nodes: int = 1  # ignored
    checkpoint: str = "???"  # "" or "???": the latest checkpoint of the train dir
    trt_engine: str = ""  # ignored: no TensorRT
    results_dir: str = ""  # default: <results_dir>/inference
    batch_size: int = -1  # -1: dataset.batch_size
    conf_threshold: float = 0.5  # detections scoring below are neither written nor drawn
    is_internal: bool = False  # ignored
    # ignored: the PyTorch model takes any size, so images are resized as in validation
    # (shorter side dataset.augmentation.test_random_resize); the ONNX size is export.*
    input_width: int = 640
    input_height: int = 640
    outline_width: int = 3  # box outline in pixels of the drawn image
    color_map: dict[str, str] = dataclasses.field(default_factory=dict)  # class name -> PIL colour ("red", "#00ff00")
