"""Torch autograd as the reference for transformer layers: token layers [N, T, C] (ViT) and
channels-last layers [N, h, w, C] (Swin), used by tests/test_transformers.py and
tools/check_transformers.py.

A torchvision model with seeded random weights (its classifier rescaled so that the logits are
not flat: torchvision starts ViT's head at zero) is exported by the TorchScript exporter. For a
torch module whose output is the layer, the ONNX tensor is found by value; ort_cam's fused
model gives the layer and d Σ w·score / d layer, as its NCHW grid for a token layer (the
extra tokens left out) and as it is for an NHWC layer. The reference is torch autograd in
float64 on the same weights, rearranged the same way; the same computation in float32 torch
measures the float32 noise floor. Errors are relative to the reference's largest magnitude.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tolerance as margin

from ort_cam.grad import fused_model
from ort_cam.graph import LoadedModel, load_model, view_layer
from ort_cam.runtime import session_options

CPU = ["CPUExecutionProvider"]
#: ort_cam's error may be tolerance(floor) (tests/tolerance.py: 10x the float32 torch floor
#: plus 1e-6, as in torch_reference: two float32 computations of one function err by similar
#: amounts, not equal ones).


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


def rescale_head(linear, rng_seed: int = 0) -> None:
    """Weights ~ N(0, (3/√C)²), bias ~ N(0, 1): logits spread by a few units."""
    import torch

    g = torch.Generator().manual_seed(rng_seed)
    c = linear.weight.shape[1]
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) * 3 / c ** 0.5)
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=g))


def export(net, size: int, path: Path) -> Path:
    import torch

    torch.onnx.export(net, torch.randn(1, 3, size, size), str(path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def run_all(lm: LoadedModel, x: np.ndarray, ranks: tuple[int, ...] = (3, 4)
            ) -> dict[str, np.ndarray]:
    """Every float tensor of rank in ``ranks`` with the batch on axis 0, for input x (one
    onnxruntime run)."""
    proto = copy.deepcopy(lm.proto)
    have = {o.name for o in proto.graph.output}
    names = [n for n, s in lm.shapes.items() if n not in have and len(s) in ranks
             and s[0] == lm.shapes[lm.input_names[0]][0]
             and str(lm.dtypes[n]).startswith("float") and n not in lm.input_names]
    from onnx import helper

    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    sess = ort.InferenceSession(proto.SerializeToString(), session_options(), providers=CPU)
    outs = sess.run(None, {lm.input_names[0]: x})
    return dict(zip([o.name for o in sess.get_outputs()], outs, strict=True))


def module_output(net, module: str, x: np.ndarray) -> np.ndarray:
    """The output of ``module`` of the torch ``net`` for input x (float32, no gradient)."""
    import torch

    held = {}
    handle = dict(net.named_modules())[module].register_forward_hook(
        lambda m, i, o: held.update(a=o))
    with torch.no_grad():
        net(torch.from_numpy(x))
    handle.remove()
    return held["a"].numpy()


def find_tensor(values: dict[str, np.ndarray], want: np.ndarray) -> str:
    """The name of the tensor whose value is ``want`` (float32 rounding apart)."""
    best = min((rel_err(v, want), name) for name, v in values.items() if v.shape == want.shape)
    assert best[0] < 1e-5, f"no ONNX tensor holds the module's output (closest {best})"
    return best[1]


@dataclass
class Reference:
    """Torch's layer activation and gradient (float64 and float32), as ort_cam lays them out."""

    act: np.ndarray
    grad64: np.ndarray
    grad32: np.ndarray
    scores64: np.ndarray


def torch_reference(net, module, x: np.ndarray, w: np.ndarray, score: str, to_grid
                    ) -> Reference:
    """d Σ w·score / d (module's output), in float64 and float32, through ``to_grid``."""
    import torch

    out = {dtype: _autograd(net, module, x, w, score, to_grid, dtype)
           for dtype in (torch.float64, torch.float32)}
    a64, g64, s64 = out[torch.float64]
    return Reference(a64, g64, out[torch.float32][1], s64)


def _autograd(net, module: str, x: np.ndarray, w: np.ndarray, score: str, to_grid, dtype
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer, its gradient, scores) of ``net`` in ``dtype``, through ``to_grid``."""
    import torch

    model = copy.deepcopy(net).to(dtype)
    held = {}

    def hook(m, i, o):
        held["a"] = o
        o.retain_grad()

    handle = dict(model.named_modules())[module].register_forward_hook(hook)
    logits = model(torch.from_numpy(x).to(dtype))
    handle.remove()
    scores = torch.softmax(logits, -1) if score == "probability" else logits
    (scores * torch.from_numpy(w).to(dtype)).sum().backward()
    return (to_grid(held["a"].detach()).numpy(), to_grid(held["a"].grad).numpy(),
            scores.detach().numpy())


@dataclass
class LayerResult:
    """ort_cam against torch at one layer: max relative errors and their tolerances."""

    module: str
    tensor: str
    layout: str
    grid: tuple[int, int]
    extra: int
    act: float
    grad: float
    floor: float
    scores: float

    @property
    def tolerance(self) -> float:
        return margin.tolerance(self.floor)


def check_layer(lm: LoadedModel, net, module: str, tensor: str, x: np.ndarray, w: np.ndarray,
                score: str) -> LayerResult:
    """ort_cam's fused model at ``tensor`` against torch autograd at ``module``."""
    viewed, view = view_layer(lm, tensor)
    sess = ort.InferenceSession(fused_model(viewed, view.tensor, score).SerializeToString(),
                                session_options(), providers=CPU)
    a, scores, grad = sess.run(None, {lm.input_names[0]: x, "target_weights": w})
    extra, (h, ww) = view.extra_tokens, view.grid

    def to_grid(t):
        if tensor in viewed.viewed:  # tokens [N, T, C] -> [N, C, h, w]
            return t[:, extra:, :].reshape(t.shape[0], h, ww, t.shape[2]).permute(0, 3, 1, 2)
        return t

    ref = torch_reference(net, module, x, w, score, to_grid)
    layout = "tokens" if tensor in viewed.viewed else view.layout
    return LayerResult(module, tensor, layout, view.grid, extra, rel_err(a, ref.act),
                       rel_err(grad, ref.grad64), rel_err(ref.grad32, ref.grad64),
                       rel_err(scores, ref.scores64))


def gradcam_reference(ref_act: np.ndarray, ref_grad: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k mean_ij(G_k) A_k) of one sample (NCHW)."""
    weights = ref_grad[0].mean(axis=(1, 2))
    return np.maximum(np.tensordot(weights, ref_act[0], axes=1), 0.0)


def load(path: Path) -> LoadedModel:
    return load_model(path)
