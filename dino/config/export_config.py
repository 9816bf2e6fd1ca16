"""The ``export`` section of TAO's DINO spec (``spec_template_export.yaml``) for ``dino export``.

Names and defaults are TAO's, so a TAO export spec loads unchanged. ``verify`` is ours.
Which fields are accepted but not acted on is listed in ``dino.config.spec.IGNORED_FIELDS``.
"""

from __future__ import annotations

import dataclasses

# "???" is TAO's (OmegaConf's) "must be set" marker; here it means "use the default".
UNSET = ("", "???")


@dataclasses.dataclass
class ExportConfig:
    results_dir: str = ""  # default: <results_dir>/export
    gpu_id: int = 0  # ignored: the graph is traced on the CPU
    checkpoint: str = "???"  # "" or "???": the latest checkpoint of the train dir
    onnx_file: str = "???"  # "" or "???": <export dir>/<checkpoint name>.onnx
    on_cpu: bool = False  # ignored: the exported graph has no device-specific op
    input_channel: int = 3  # the backbone takes RGB: only 3
    input_width: int = 960  # fixed input size of the ONNX graph (normalised image)
    input_height: int = 544
    opset_version: int = 17  # grid_sample (deformable attention) needs >= 16
    batch_size: int = -1  # -1: dynamic batch axis (TAO); N >= 1: fixed batch N
    verbose: bool = False  # print the traced graph
    format: str = "onnx"  # only onnx
    serialize_nvdsinfer: bool = False  # ignored: no DeepStream config is written
    # ours: run the file with ONNX Runtime on a random input and compare with PyTorch
    verify: bool = True
