"""ResNet-18/34/50 as torchvision builds them, without importing torchvision.

Importing torchvision costs a trial about 1.5 s of its start-up (it pulls in
``torch._dynamo`` through ``torchvision.ops``), and the trainer needs nothing of it but
these classes. Module and parameter names, shapes, strides, dilation and initialisation
are torchvision's (``torchvision.models.resnet``, v1.5: the stride on the 3x3 conv of a
bottleneck), so torchvision ImageNet state dicts and checkpoints trained with the
torchvision classes load unchanged (``tests/trainer/test_resnet.py`` compares them).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (buffers, not parameters), as
    DETR-family detectors use with ImageNet weights: ``x * w / sqrt(var + eps) + b - mean * scale``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # a BatchNorm2d's counter has no meaning here
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if dilation > 1:
            raise ValueError("model.dilation needs bottleneck blocks; use model.backbone=resnet_50")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride and any dilation), 1x1 expand x4, and a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """Stem (7x7 conv, norm, ReLU, max pool) and ``layer1``..``layer4`` at strides 4..32;
    ``dilate_layer4`` keeps ``layer4`` at stride 16 (dilation 2), as torchvision's
    ``replace_stride_with_dilation=[False, False, True]``. No classifier: the detector
    takes the stages' maps (:class:`StageOutputs`)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, widths: tuple[int, ...] = (64, 128, 256, 512),
                 dilate_layer4: bool = False, torchvision_init: bool = True):
        super().__init__()
        self._norm, self.inplanes, self.dilation = norm_layer, widths[0], 1
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (width, count) in enumerate(zip(widths, layers)):
            self.add_module(f"layer{i + 1}", self._make_layer(block, width, count, stride=1 if i == 0 else 2,
                                                              dilate=dilate_layer4 and i == 3))
        if not torchvision_init:
            return
        # torchvision builds its 1000-class classifier here, drawing from the random stream:
        # drawing the same numbers keeps every seed's initial weights what they were with it
        nn.Linear(widths[-1] * block.expansion, 1000)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       self._norm(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation, self._norm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation, norm_layer=self._norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


ARCHITECTURES = {  # name -> (block, blocks per stage, widths)
    "resnet_18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet_34": (BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet_50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512)),
    # one block per stage, 8..64 channels: CPU tests and the CPU smoke profile (PyTorch's
    # default initialisation, which that profile was tuned with)
    "resnet_tiny": (BasicBlock, (1, 1, 1, 1), (8, 16, 32, 64)),
}


def build_resnet(name: str, norm_layer: type[nn.Module] = nn.BatchNorm2d, dilation: bool = False) -> ResNet:
    if name not in ARCHITECTURES:
        raise ValueError(f"model.backbone={name!r} is not supported; choose one of {sorted(ARCHITECTURES)}")
    block, layers, widths = ARCHITECTURES[name]
    if dilation and block is not Bottleneck:
        raise ValueError(f"model.dilation is only supported with model.backbone=resnet_50 (bottleneck blocks), "
                         f"not {name}")
    return ResNet(block, layers, norm_layer, widths, dilate_layer4=dilation, torchvision_init=name != "resnet_tiny")


class StageOutputs(nn.Module):
    """The ResNet up to its last selected stage; returns ``{name: map}`` for each of
    ``stages`` (``{"layer2": "0", ...}``, as torchvision's ``IntermediateLayerGetter``,
    whose submodule names the state dict keeps)."""

    def __init__(self, resnet: ResNet, stages: dict[str, str]):
        super().__init__()
        last = max(int(name.removeprefix("layer")) for name in stages)
        for name in ("conv1", "bn1", "relu", "maxpool", *(f"layer{i}" for i in range(1, last + 1))):
            self.add_module(name, getattr(resnet, name))
        self.stages = dict(stages)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.named_children():
            x = module(x)
            if name in self.stages:
                out[self.stages[name]] = x
        return out
