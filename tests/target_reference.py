"""Torch autograd references for the detection and sequence targets (METHODS.md, "Targets"),
for the models of tests/target_models.py.

Written from METHODS.md alone, never calling ort_cam: the target is chosen once, at x, on
the host (``choose_detections``: greedy class-by-class NMS; ``greedy_ctc``: blank and
repeats dropped) and then held fixed along the path x_l = x0 + (l/m)(x − x0), l = 0..m; the
scalar y_l = T(f(x_l)) is differentiated by torch autograd at the hooked module's output A_l
(``path_reference``), and the maps are formed with plain loops (``maps``):

- at x (l = m): Grad-CAM (mean weights), HiResCAM, LayerCAM raw maps;
- along the path: Integrated Grad-CAM (the paper's eq 23), RSI-Grad-CAM (trapezoid rule,
  guided selection) and its completeness gap |Σ IG − (y_m − y_0)| / |y_m − y_0|.

The scalars (batch-wise, one per path point):

    detection  Σ_{(a, c) ∈ S} out[4 + c, a]            (YOLOv8 layout [N, 4+C, A])
               Σ_{(a, c) ∈ S} out[4, a] · out[5 + c, a]  (with objectness [N, 5+C, A])
    sequence   Σ_{(t, k) ∈ S} out[t, k]                 ([N, T, V], the output as given)

As in tests/torch_reference.py and tests/test_methods_torch.py, the reference runs in float64
and again in float32 (a float32 copy of the model fed the float32 path inputs onnxruntime
gets); the float32 run's error against float64 is each quantity's noise floor, and ``rel_err``
measures errors relative to the reference's largest magnitude.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Scalar = Callable[[torch.Tensor], torch.Tensor]  # model output [N, ...] -> [N]
EPS = 1e-8


# --- choosing the target at x (host side) ----------------------------------------------------
def greedy_ctc(scores: np.ndarray, blank: int = 0) -> tuple[list[int], list[int]]:
    """(steps, tokens) kept by greedy CTC decoding of per-step scores [T, V]: k_t = argmax,
    kept where k_t != blank and k_t != k_{t-1}."""
    k = scores.argmax(axis=1)
    steps = [t for t in range(len(k)) if k[t] != blank and (t == 0 or k[t] != k[t - 1])]
    return steps, [int(k[t]) for t in steps]


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _scores_and_boxes(out: np.ndarray, objectness: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor class scores [C, A] (obj·cls with objectness) and boxes [A, 4] as
    (x0, y0, x1, y1), from one image's raw head [4(+1)+C, A] of (cx, cy, w, h) boxes."""
    boxes = out[:4].T.astype(np.float64)
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    return (out[5:] * out[4] if objectness else out[4:]).astype(np.float64), xyxy


def match_box(out: np.ndarray, box: Sequence[float], objectness: bool = False,
              threshold: float = 0.5) -> tuple[list[int], list[int]]:
    """([anchor], [class]) for a given box (x0, y0, x1, y1): among the anchors whose box
    overlaps it by IoU > ``threshold``, the one with the highest class score, and that class
    (pytorch-grad-cam's box target matches at 0.5); empty lists when none overlaps."""
    cls, xyxy = _scores_and_boxes(out, objectness)
    best = cls.max(axis=0)
    matched = [a for a in range(len(best)) if _iou_xyxy(xyxy[a], np.asarray(box)) > threshold]
    if not matched:
        return [], []
    a = max(matched, key=lambda i: best[i])
    return [a], [int(cls[:, a].argmax())]


def choose_detections(out: np.ndarray, objectness: bool = False, k: int = 1,
                      conf: float = 0.25, iou: float = 0.45) -> tuple[list[int], list[int]]:
    """(anchors, classes) of the top-``k`` detections of one image's raw head [4(+1)+C, A]:
    each anchor's best class by its score (obj·cls with objectness), scores >= ``conf``,
    greedy NMS class by class at IoU ``iou``, best first."""
    cls, xyxy = _scores_and_boxes(out, objectness)
    best, label = cls.max(axis=0), cls.argmax(axis=0)
    kept: list[int] = []
    for a in np.argsort(-best, kind="stable"):
        if best[a] < conf or len(kept) == k:
            break
        if all(label[b] != label[a] or _iou_xyxy(xyxy[a], xyxy[b]) <= iou for b in kept):
            kept.append(int(a))
    return kept, [int(label[a]) for a in kept]


# --- the scalars --------------------------------------------------------------------------
def detection_scalar(anchors: Sequence[int], classes: Sequence[int],
                     objectness: bool = False) -> Scalar:
    """T(out) for a raw head [N, 4(+1)+C, A]: the chosen anchors' class scores (times their
    objectness where the head has it), summed."""
    first = 5 if objectness else 4

    def scalar(out: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(out.shape[0], dtype=out.dtype)
        for a, c in zip(anchors, classes, strict=True):
            score = out[:, first + c, a]
            total = total + (score * out[:, 4, a] if objectness else score)
        return total

    return scalar


def sequence_scalar(steps: Sequence[int], tokens: Sequence[int]) -> Scalar:
    """T(out) for per-step scores [N, T, V]: Σ out[t, k_t] over the kept steps."""

    def scalar(out: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(out.shape[0], dtype=out.dtype)
        for t, k in zip(steps, tokens, strict=True):
            total = total + out[:, t, k]
        return total

    return scalar


# --- the path -----------------------------------------------------------------------------
@dataclass
class PathRef:
    """One precision's run along the path, as float64 tensors: A_l, G_l = dy_l/dA_l [m+1, K,
    h, w] and y_l [m+1]."""

    a: torch.Tensor
    g: torch.Tensor
    y: torch.Tensor


def path_inputs(x: np.ndarray, x0: np.ndarray, m: int) -> torch.Tensor:
    """x_l = x0 + (l/m)(x − x0), l = 0..m, in float64 ([m+1, ...]; x, x0 are [1, ...])."""
    x64, x064 = torch.from_numpy(x).double()[0], torch.from_numpy(x0).double()[0]
    return torch.stack([x064 + (l / m) * (x64 - x064) for l in range(m + 1)])


def path_reference(model: torch.nn.Module, module: str, x: np.ndarray, x0: np.ndarray, m: int,
                   scalar: Scalar, bits: int, layer_path: np.ndarray | None = None) -> PathRef:
    """A, G, y along the path, the model (a float32 module, left unchanged) run in float64
    (``bits`` 64) or float32 (32: a float32 copy fed the float32 path inputs). With
    ``layer_path`` ([m+1, ...], another engine's A_l), the layer's output is replaced by it:
    the head above the layer is then evaluated along that engine's own layer path."""
    xs = path_inputs(x, x0, m)
    net = copy.deepcopy(model).eval()
    net = net.double() if bits == 64 else net.float()
    xs = xs if bits == 64 else xs.float()
    seen: dict[str, torch.Tensor] = {}

    def keep(_m, _i, out):
        if layer_path is not None:
            out = torch.from_numpy(np.asarray(layer_path)).to(out.dtype).requires_grad_()
        seen.update(a=out)
        return out

    hook = net.get_submodule(module).register_forward_hook(keep)
    try:
        y = scalar(net(xs))
    finally:
        hook.remove()
    # Eval mode: the path points do not interact, so d(Σ_l y_l)/dA_l = dy_l/dA_l.
    (g,) = torch.autograd.grad(y.sum(), [seen["a"]])
    return PathRef(seen["a"].detach().double(), g.double(), y.detach().double())


# --- the maps (METHODS.md) ----------------------------------------------------------------
def _relu(t: torch.Tensor) -> torch.Tensor:
    return torch.clamp(t, min=0.0)


def maps(p: PathRef) -> dict[str, np.ndarray | float]:
    """Raw layer-resolution maps of Grad-CAM, HiResCAM, LayerCAM (at x), Integrated Grad-CAM
    (paper), RSI-Grad-CAM (trapezoid, guided), the completeness gap, Σ |IG| / |Δy| and the
    score path."""
    a, g, m = p.a, p.g, p.a.shape[0] - 1
    out: dict[str, np.ndarray | float] = {
        "gradcam": _relu((g[m].mean(dim=(1, 2))[:, None, None] * a[m]).sum(0)).numpy(),
        "hirescam": _relu((g[m] * a[m]).sum(0)).numpy(),
        "layercam": _relu((_relu(g[m]) * a[m]).sum(0)).numpy(),
    }
    total = torch.zeros_like(a[0, 0])
    for l in range(1, m + 1):  # eq 23: (1/m) Σ ReLU(Σ_k (Σ_ij G_l) (A_l − A_0))
        total += _relu((g[l].sum(dim=(1, 2))[:, None, None] * (a[l] - a[0])).sum(0))
    out["igcam"] = (total / m).numpy()
    ig = torch.zeros_like(a[0])
    for l in range(1, m + 1):
        ig += (g[l] + g[l - 1]) / 2 * (a[l] - a[l - 1])
    keep = (a[m] > 0) & (ig > 0) & (a[m] - a[0] > 0)
    w = (keep * ig).sum(dim=(1, 2)) / (ig.shape[1] * ig.shape[2])
    out["rsi"] = _relu((w[:, None, None] * a[m]).sum(0)).numpy()
    dy = float(p.y[-1] - p.y[0])
    out["gap"] = abs(float(ig.sum()) - dy) / abs(dy)
    out["spread"] = float(ig.abs().sum()) / abs(dy)  # Σ |IG| / |Δy|: the gap's error scale
    out["scores_path"] = p.y.numpy()
    return out


def reference_maps(model: torch.nn.Module, module: str, x: np.ndarray, x0: np.ndarray, m: int,
                   scalar: Scalar) -> tuple[dict, dict]:
    """``maps`` in float64 and in float32 (the floor's run)."""
    return (maps(path_reference(model, module, x, x0, m, scalar, 64)),
            maps(path_reference(model, module, x, x0, m, scalar, 32)))


def rel_err(ours: np.ndarray | float, ref: np.ndarray | float) -> float:
    """max |ours − ref| / max |ref| (0 when both are zero, inf when only the reference is)."""
    o, r = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert o.shape == r.shape, (o.shape, r.shape)
    scale = np.abs(r).max()
    if scale == 0:
        return 0.0 if not o.any() else float("inf")
    return float(np.abs(o - r).max() / scale)


def assert_near_reference(r, r64: dict, r32: dict, methods: Sequence[str], label: str,
                          factor: float, abs_: float) -> dict[str, float]:
    """An explanation ``r`` against ``reference_maps``: every method's raw map within
    ``factor`` times its float32 floor (the float32 run's error against float64) plus
    ``abs_``, and RSI's completeness gap within ``factor`` times the float32 run's gap error
    plus ``abs_`` of the gap's own scale (``spread``). Returns each method's tolerance."""
    tolerances = {}
    for method in methods:
        floor = rel_err(r32[method], r64[method])
        err = rel_err(r[method].raw, r64[method])
        print(f"{label} {method}: err {err:.1e} floor {floor:.1e}")
        tolerances[method] = factor * floor + abs_
        assert err <= tolerances[method], f"{method}: {err:.2e}, floor {floor:.2e}"
    gap, gap64, gap32 = r["rsi"].extras["completeness_gap"], r64["gap"], r32["gap"]
    print(f"{label} gap {gap:.2e} ref {gap64:.2e} f32 {gap32:.2e}")
    assert abs(gap - gap64) <= factor * abs(gap32 - gap64) + abs_ * r64["spread"]
    return tolerances
