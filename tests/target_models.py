"""Small torch models of the kinds that are not ``[N, C]`` softmax classifiers (issue 19's
targets): a YOLO-style detector, a CRNN text recogniser, a multi-label tagger, a one-logit
binary classifier, an embedding model, a segmenter and a one-channel probability map.

Random weights, seeded: He-normal convs and Linears (torch's default initialisation shrinks
the activations layer after layer), the last layer's weights times ``GAIN`` and its bias
set so that each of its outputs has mean 0 over a seeded batch of standard-normal inputs
(``inputs``): else a random bias dominates, and every step of the CRNN reads one symbol,
the binary logit has one sign, the probability map stays under 0.5. CPU; a few ms per
forward pass.

Each entry of ``MODELS`` names the factory, the input shape (without the batch), the output
names, the ONNX tensor of the inner layer to explain (``Spec.layer``, as the legacy
TorchScript exporter names it) and the torch module that outputs it (``Spec.module``);
``export`` writes the model with a dynamic batch axis (and nothing else dynamic).
``build(name)`` returns the float32 model in eval mode. tests/test_target_models.py checks
that the exports compute the torch models and that each layer name holds its module's output.

    detector      x [N,3,32,32] -> 3 convs (SiLU; strides 2, 2, 1): layer [N,16,8,8] = P3; a
                  stride-2 conv P4 (4x4) -> per scale 1x1 convs: box (4), [obj (1)], cls (C)
                  -> [N, 4+C, 80] (YOLOv8-like, DFL-free: box = cx, cy, w, h in pixels,
                  centre (sigmoid + cell) x stride, size (2 sigmoid)^2 x 2 stride;
                  cls = sigmoid) or [N, 5+C, 80] with objectness (YOLOv5-like)
    crnn          x [N,3,16,48] -> 3 convs + 2 pools -> ReLU [N,32,4,12] = layer -> MaxPool
                  (4,1) -> [N,12,32] -> BiLSTM(16) -> Linear(32, V=7) -> log_softmax
                  (or softmax): [N, T=12, V], blank = 0
    multilabel    x [N,3,16,16] -> 2 convs (layer [N,16,8,8]) -> GAP -> Linear(20) -> Sigmoid:
                  [N, 20]
    binary        x [N,3,16,16] -> 2 convs -> GAP -> Linear(1): [N, 1] (one logit)
    embedding     x [N,3,16,16] -> 2 convs -> GAP -> Linear(320): [N, 320]
    segmenter     x [N,3,16,16] -> conv, conv stride 2: layer [N,16,8,8] -> 1x1 conv (C=4)
                  -> bilinear x2 upsampling: [N, 4, 16, 16] (logits)
    probmap       the same trunk -> 1x1 conv (1) -> upsampling -> Sigmoid: [N, 1, 16, 16]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Detector: classes, input side, anchors (8x8 at stride 4 and 4x4 at stride 8).
DET_CLASSES = 3
DET_SIZE = 32
DET_ANCHORS = 8 * 8 + 4 * 4
#: CRNN: vocabulary (blank = 0 plus 6 symbols), input H x W, time steps (W / 4).
CRNN_VOCAB = 7
CRNN_BLANK = 0
CRNN_HW = (16, 48)
CRNN_STEPS = 12
EMBED_DIM = 320
SEG_CLASSES = 4
#: Scale of the last layer's weights (default init gives near-uniform scores).
GAIN = 2.0


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, padding=k // 2)


class Detector(nn.Module):
    """YOLO-style detector with two scales and a decoupled, DFL-free head (see the module
    docstring). ``objectness`` adds a sigmoid objectness row after the box (YOLOv5's layout
    without anchors)."""

    def __init__(self, classes: int = DET_CLASSES, objectness: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(_conv(3, 8, s=2), nn.SiLU(), _conv(8, 16, s=2), nn.SiLU(),
                                      _conv(16, 16), nn.SiLU())
        self.down = nn.Sequential(_conv(16, 16, s=2), nn.SiLU())
        self.objectness = objectness
        rows = 4 + int(objectness) + classes
        self.heads = nn.ModuleList([nn.Conv2d(16, rows, 1) for _ in range(2)])
        grids, strides = [], []
        for side, stride in ((DET_SIZE // 4, 4), (DET_SIZE // 8, 8)):
            ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            grids.append(torch.stack([xs, ys]).reshape(2, -1).float())
            strides.append(torch.full((1, side * side), float(stride)))
        self.register_buffer("grid", torch.cat(grids, 1))  # [2, A] cell x, y
        self.register_buffer("stride", torch.cat(strides, 1))  # [1, A]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.backbone(x)
        p4 = self.down(p3)
        raw = torch.cat([h(p).flatten(2) for h, p in zip(self.heads, (p3, p4), strict=True)], 2)
        xy = (raw[:, 0:2].sigmoid() + self.grid) * self.stride
        wh = (2.0 * raw[:, 2:4].sigmoid()) ** 2 * (2.0 * self.stride)  # YOLOv5's form
        return torch.cat([xy, wh, raw[:, 4:].sigmoid()], 1)


class CRNN(nn.Module):
    """Small CNN + bidirectional LSTM + Linear: [N, T, V] log-probabilities (or
    probabilities with ``softmax``), blank = 0."""

    def __init__(self, vocab: int = CRNN_VOCAB, hidden: int = 16, softmax: bool = False):
        super().__init__()
        self.cnn = nn.Sequential(
            _conv(3, 8), nn.ReLU(), nn.MaxPool2d(2),           # 8 x 24
            _conv(8, 16), nn.ReLU(), nn.MaxPool2d(2),          # 4 x 12
            _conv(16, 32), nn.ReLU(), nn.MaxPool2d((4, 1)))    # 1 x 12
        self.rnn = nn.LSTM(32, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, vocab)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x).squeeze(2).permute(0, 2, 1)  # [N, T, 32]
        y = self.fc(self.rnn(f)[0])
        return y.softmax(-1) if self.softmax else y.log_softmax(-1)


class SmallCNN(nn.Module):
    """Two convs (the second = the layer), global average pooling, one Linear of ``out``
    outputs, then ``Sigmoid`` if ``sigmoid``."""

    def __init__(self, out: int, sigmoid: bool = False):
        super().__init__()
        self.features = nn.Sequential(_conv(3, 8), nn.ReLU(), _conv(8, 16, s=2), nn.ReLU())
        self.fc = nn.Linear(16, out)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.features(x).mean((2, 3)))
        return y.sigmoid() if self.sigmoid else y


class Segmenter(nn.Module):
    """conv, conv stride 2 (the layer), 1x1 conv to ``classes`` maps, bilinear x2 upsampling
    (half-pixel); ``Sigmoid`` at the end if ``sigmoid`` (a one-channel probability map)."""

    def __init__(self, classes: int = SEG_CLASSES, sigmoid: bool = False):
        super().__init__()
        self.features = nn.Sequential(_conv(3, 8), nn.ReLU(), _conv(8, 16, s=2), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.interpolate(self.classifier(self.features(x)), scale_factor=2.0,
                                      mode="bilinear", align_corners=False)
        return y.sigmoid() if self.sigmoid else y


@dataclass(frozen=True)
class Spec:
    """One model: its factory, input [C, H, W], output names and the layer to explain (the
    ONNX tensor the legacy exporter gives the module's output)."""

    factory: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    outputs: tuple[str, ...]
    layer: str
    module: str  # the torch module whose output the layer is


MODELS: dict[str, Spec] = {
    "detector": Spec(lambda: Detector(), (3, DET_SIZE, DET_SIZE), ("output",),
                     "/backbone/backbone.5/Mul_output_0", "backbone"),
    "detector_obj": Spec(lambda: Detector(objectness=True), (3, DET_SIZE, DET_SIZE),
                         ("output",), "/backbone/backbone.5/Mul_output_0", "backbone"),
    "crnn": Spec(lambda: CRNN(), (3, *CRNN_HW), ("output",),
                 "/cnn/cnn.7/Relu_output_0", "cnn.7"),
    "crnn_softmax": Spec(lambda: CRNN(softmax=True), (3, *CRNN_HW), ("output",),
                         "/cnn/cnn.7/Relu_output_0", "cnn.7"),
    "multilabel": Spec(lambda: SmallCNN(20, sigmoid=True), (3, 16, 16), ("probs",),
                       "/features/features.3/Relu_output_0", "features"),
    "binary": Spec(lambda: SmallCNN(1), (3, 16, 16), ("logit",),
                   "/features/features.3/Relu_output_0", "features"),
    "embedding": Spec(lambda: SmallCNN(EMBED_DIM), (3, 16, 16), ("embedding",),
                      "/features/features.3/Relu_output_0", "features"),
    "segmenter": Spec(lambda: Segmenter(), (3, 16, 16), ("out",),
                      "/features/features.3/Relu_output_0", "features"),
    "probmap": Spec(lambda: Segmenter(1, sigmoid=True), (3, 16, 16), ("prob",),
                    "/features/features.3/Relu_output_0", "features"),
}


LAST = {Detector: "heads", CRNN: "fc", SmallCNN: "fc", Segmenter: "classifier"}


def build(name: str, seed: int = 0) -> nn.Module:
    """``MODELS[name]`` with weights drawn from torch's default initialisation under ``seed``
    (the global RNG is left as it was), the last layer's weights times ``GAIN``, float32,
    eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name].factory().eval()
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    last = model.get_submodule(LAST[type(model)])
    _centre(model, list(last) if isinstance(last, nn.ModuleList) else [last],
            torch.from_numpy(inputs(name, 8, seed=1000 + seed)))
    return model


def _centre(model: nn.Module, lasts: list[nn.Module], x: torch.Tensor) -> None:
    """Scale the weights of the layers ``lasts`` by ``GAIN``, and shift their biases so that
    each output channel has mean 0 over ``x``."""
    means: dict[int, torch.Tensor] = {}

    def hook(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
        dims = [d for d in range(out.dim()) if d != (1 if isinstance(mod, nn.Conv2d) else
                                                     out.dim() - 1)]
        means[id(mod)] = out.mean(dims)

    with torch.no_grad():
        for mod in lasts:
            mod.weight.mul_(GAIN)
        handles = [mod.register_forward_hook(hook) for mod in lasts]
        model(x)
        for h in handles:
            h.remove()
        for mod in lasts:
            mod.bias.sub_(means[id(mod)])


def export(model: nn.Module, name: str, path: Path, opset: int = 17,
           shape: tuple[int, int, int] | None = None) -> Path:
    """Export ``model`` (built for ``MODELS[name]``) with the legacy exporter: input ``x``
    [N, C, H, W] (``shape`` [C, H, W], default the spec's: the CRNN reads any width, T =
    W / 4), the spec's outputs, the batch axis dynamic."""
    spec = MODELS[name]
    axes = {n: {0: "N"} for n in ("x", *spec.outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *(shape or spec.input_shape)), str(path),
                          dynamo=False,
                          opset_version=opset, input_names=["x"],
                          output_names=list(spec.outputs), dynamic_axes=axes)
    return path


def build_and_export(name: str, path: Path, seed: int = 0, opset: int = 17
                     ) -> tuple[nn.Module, Path]:
    """``build(name, seed)`` and its export to ``path``."""
    model = build(name, seed)
    return model, export(model, name, path, opset)


def inputs(name: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal inputs [batch, C, H, W] float32 for ``MODELS[name]``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *MODELS[name].input_shape)).astype(np.float32)
