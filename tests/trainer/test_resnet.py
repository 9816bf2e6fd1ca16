"""Our ResNets and image transforms are torchvision's (names, shapes, initialisation,
numbers), so torchvision weights and earlier checkpoints load, while the trainer no
longer imports torchvision (its import cost a trial ~1.5 s of start-up)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from dino.data.transforms import Normalize, crop, hflip, resize
from dino.models.resnet import FrozenBatchNorm2d, build_resnet


@pytest.mark.parametrize("name, dilation", [("resnet_18", False), ("resnet_34", False), ("resnet_50", False),
                                            ("resnet_50", True)])
def test_same_weights_names_and_outputs_as_torchvision_for_a_seed(name, dilation):
    builders = {"resnet_18": torchvision.models.resnet18, "resnet_34": torchvision.models.resnet34,
                "resnet_50": torchvision.models.resnet50}
    kwargs = {"replace_stride_with_dilation": [False, False, True]} if dilation else {}
    torch.manual_seed(3)
    theirs = builders[name](weights=None, **kwargs)
    torch.manual_seed(3)
    ours = build_resnet(name, dilation=dilation)
    expected = {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    got = ours.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key  # bit-identical initialisation: same draws, same order
    x = torch.randn(1, 3, 96, 96)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(theirs.children())[:-2])(x)
        mine = ours.layer4(ours.layer3(ours.layer2(ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))))))
    assert torch.equal(feats, mine)


def test_frozen_batch_norm_is_torchvisions():
    from torchvision.ops import FrozenBatchNorm2d as Theirs

    ours, theirs = FrozenBatchNorm2d(5), Theirs(5)
    state = {"weight": torch.rand(5) + 0.5, "bias": torch.randn(5), "running_mean": torch.randn(5),
             "running_var": torch.rand(5) + 0.1, "num_batches_tracked": torch.tensor(7)}
    ours.load_state_dict(dict(state))
    theirs.load_state_dict(dict(state))
    x = torch.randn(2, 5, 4, 4)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_transforms_give_torchvisions_pixels_and_boxes():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    target = {"boxes": torch.tensor([[3.0, 4.0, 30.0, 20.0]])}
    assert np.array_equal(np.asarray(hflip(image, target)[0]), np.asarray(TF.hflip(image)))
    assert np.array_equal(np.asarray(crop(image, target, 2, 5, 20, 30)[0]), np.asarray(TF.crop(image, 2, 5, 20, 30)))
    for size in (24, 64):
        got = resize(image, target, size, None)[0]
        want = TF.resize(image, list(got.size[::-1]), antialias=True)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert torch.equal(Normalize(mean, std).to_tensor(image), TF.normalize(TF.to_tensor(image), mean, std))


def test_the_trainer_imports_no_torchvision():
    code = "import sys, dino.train, dino.cli, dino.inference; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
