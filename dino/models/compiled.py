"""Opt-in ``torch.compile`` of the detector's hot modules (``train.compile``).

An eager step of DINO is bound by launching thousands of small kernels. Compiling the
pieces that run the same code on the same shapes every step fuses them: the ResNet
body, every encoder layer and every decoder layer (instances of one class share one
compiled graph). The parts around them (query selection's top-k, denoising queries,
the matcher's one host transfer) stay eager, so a data-dependent step never breaks a
graph. Modules are compiled in place (``nn.Module.compile``): parameter names and
checkpoints are unchanged.

Shapes must repeat for this to pay off: the trainer pads batches to a few fixed sizes
(``dataset.augmentation.fixed_padding``); a new denoising-query count makes the decoder
layers recompile once with a dynamic query axis.
"""

from __future__ import annotations

from torch import nn

from dino.models import graph_breaks
from dino.models.dino import DINO


def compile_hot_modules(model: DINO, **compile_kwargs) -> list[str]:
    """Compile the backbone body, encoder layers and decoder layers of ``model`` in place.

    Returns the names of the compiled modules. ``compile_kwargs`` go to ``torch.compile``.
    The fused attention's launch and self-check become graph breaks first
    (``graph_breaks.apply``).
    """
    graph_breaks.apply()
    targets: list[tuple[str, nn.Module]] = [("backbone.0.body", model.backbone[0].body)]
    targets += [(f"encoder.layers.{i}", layer) for i, layer in enumerate(model.encoder.layers)]
    targets += [(f"decoder.layers.{i}", layer) for i, layer in enumerate(model.decoder.layers)]
    for _, module in targets:
        module.compile(**compile_kwargs)
    return [name for name, _ in targets]
