"""Models as users are handed them: exported with a fixed batch of 1, the exporters' defaults.

Each factory builds a torch model with seeded random weights (nothing is downloaded); ``export``
writes it the three ways the tests compare:

    dynamo    ``torch.onnx.export(model, (x,), path)``, the command torch's documentation
              shows (torch >= 2.9: the torch.export-based exporter, which needs onnxscript):
              a fixed batch of 1, ``Reshape`` targets with ``allowzero=1``
    legacy    the TorchScript exporter (``dynamo=False``) without ``dynamic_axes``: a fixed
              batch of 1, the batch folded into ``Constant`` targets and constants
    dynamic   the TorchScript exporter with a dynamic batch axis: the reference of legacy
    dynamo_dynamic  torch's default exporter with a dynamic batch (``dynamic_shapes``, an
              example batch of 2): the reference of dynamo (the same ops, so that the maps
              differ by nothing but the batch)

    resnet_tiny   torchvision's ResNet with one BasicBlock per stage (resnet18's layers and
                  its ``torch.flatten`` head), 10 classes, 64x64
    resnet18      torchvision's resnet18, 1000 classes, 224x224 (the slow twin)
    view_net      resnet_tiny whose forward ends in ``f.view(f.size(0), -1)``
    vit           a DeiT/ViT-style timm VisionTransformer with a class token: 32x32, patch
                  8 (a 4x4 grid), width 32, 2 blocks, 10 classes
    yolo          a YOLOv8-style detector head: two scales (8x8, 4x4 at 64x64), per scale a box
                  branch of 4x16 DFL bins and a class branch, ``view(1, no, -1)`` and the DFL's
                  ``view(1, 4, 16, A)``, anchors and strides as constants: [N, 4 + 3, 80]
    mixed         a batch-1 constant concatenated on the batch axis and averaged with the
                  features: no batch can be given to it (``x`` and a learned memory mixed)
    levit         timm's levit_128s (random init) at 224x224: stage tokens [N, 49, 256]
    levit_tiny    the same at 112x112 with one block per stage: stage tokens [N, 16, 256]
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

WAYS = ("dynamo", "legacy", "dynamic", "dynamo_dynamic")
#: The dynamic-batch export each fixed-batch one is compared with.
REFERENCE = {"dynamo": "dynamo_dynamic", "legacy": "dynamic"}
YOLO_CLASSES, YOLO_BINS = 3, 16


def resnet_tiny() -> nn.Module:
    import torchvision

    return torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                     num_classes=10)


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None)


class ViewNet(nn.Module):
    """``resnet_tiny``'s layers, its forward ending in ``f.view(f.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet_tiny()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.net
        f = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        f = r.avgpool(r.layer4(r.layer3(r.layer2(r.layer1(f)))))
        f = f.view(f.size(0), -1)
        return r.fc(f)


def vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=10)


class Yolo(nn.Module):
    """A YOLOv8-style detector: backbone to two scales, per scale a box branch (4 x 16 DFL
    bins) and a class branch, decoded as Ultralytics' Detect head decodes them."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        c, bins = 16, YOLO_BINS
        self.p3 = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.SiLU(), nn.Conv2d(c, c, 3, 2, 1),
                                nn.SiLU(), nn.Conv2d(c, c, 3, 2, 1), nn.SiLU())
        self.p4 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.SiLU())
        self.box = nn.ModuleList([nn.Conv2d(c, 4 * bins, 1) for _ in range(2)])
        self.cls = nn.ModuleList([nn.Conv2d(c, YOLO_CLASSES, 1) for _ in range(2)])
        self.dfl = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1)
        points, strides = [], []
        for stride in (8, 16):
            side = size // stride
            ys, xs = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5,
                                    indexing="ij")
            points.append(torch.stack([xs, ys], -1).view(-1, 2))
            strides.append(torch.full((side * side, 1), float(stride)))
        self.register_buffer("anchors", torch.cat(points).transpose(0, 1).unsqueeze(0))
        self.register_buffer("strides", torch.cat(strides).transpose(0, 1))
        self.no = 4 * bins + YOLO_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(x)
        feats = [torch.cat([self.box[i](f), self.cls[i](f)], 1)
                 for i, f in enumerate((p3, self.p4(p3)))]
        b = feats[0].shape[0]
        x_cat = torch.cat([f.view(b, self.no, -1) for f in feats], 2)
        box, cls = x_cat.split((4 * YOLO_BINS, YOLO_CLASSES), 1)
        a = box.shape[2]
        dist = self.dfl(box.view(b, 4, YOLO_BINS, a).transpose(2, 1).softmax(1)).view(b, 4, a)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class Mixed(nn.Module):
    """Two convs whose features are concatenated on the batch axis with a learned [1, 8, h, w]
    memory and averaged over it: a batch-1 constant mixed into values, not into a shape."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.memory = nn.Parameter(torch.rand(1, 8, size, size))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.cat([self.conv(x), self.memory], 0).mean(0, keepdim=True)
        return self.fc(f.mean((2, 3)))


def levit() -> nn.Module:
    import timm

    return timm.create_model("levit_128s", pretrained=False)


def levit_tiny() -> nn.Module:
    import timm

    return timm.create_model("levit_128s", pretrained=False, img_size=112, depth=(1, 1, 1))


#: name -> (factory, input side)
MODELS = {
    "resnet_tiny": (resnet_tiny, 64), "resnet18": (resnet18, 224), "view_net": (ViewNet, 64),
    "vit": (vit, 32), "yolo": (Yolo, 64), "mixed": (Mixed, 16), "levit": (levit, 224),
    "levit_tiny": (levit_tiny, 112),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """``MODELS[name]`` with seeded random weights, eval mode (the global RNG kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name][0]().eval()
        for mod in model.modules():  # non-trivial batch-norm statistics
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model


def example(name: str, seed: int = 0) -> np.ndarray:
    side = MODELS[name][1]
    return np.random.default_rng(seed).standard_normal((1, 3, side, side)).astype(np.float32)


def export(model: nn.Module, way: str, path: Path, side: int) -> Path:
    """Write ``model`` to ``path`` the ``way`` of ``WAYS`` (see the module docstring)."""
    x = torch.randn(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if way == "dynamo":
            torch.onnx.export(model, (x,), str(path))
        elif way == "legacy":
            torch.onnx.export(model, (x,), str(path), dynamo=False)
        elif way == "dynamo_dynamic":
            torch.onnx.export(model, (torch.cat([x, x]),), str(path), input_names=["x"],
                              output_names=["y"],
                              dynamic_shapes=({0: torch.export.Dim("N")},))
        elif way == "dynamic":
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
        else:
            raise ValueError(f"unknown export way {way!r}")
    return path
