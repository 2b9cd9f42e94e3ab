"""The CAM methods as ONNX: one table, ``ONNX_REDUCTIONS``, keyed by the registry's method
names (``ort_cam.methods.METHODS``). Each entry mirrors its NumPy method in
``ort_cam/methods/`` step for step, in float64: loop-carried states updated once per chunk of
the path inside the graph's Loop, then the raw map and the method's extras after it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import OrtCamError
from ..methods import MethodOptions
from ..methods.fem import Fem
from ..methods.gradcam import GradCam
from ..methods.gradcam_elementwise import GradCamElementwise
from ..methods.gradcampp import GradCamPlusPlus
from ..methods.hirescam import HiResCam
from ..methods.igcam import IntegratedGradCam
from ..methods.layercam import LayerCam
from ..methods.rsi import RsiGradCam
from ..methods.xgradcam import XGradCam
from ..result import GAP_UNDEFINED_REL
from .ops import Ops, Tensor


@dataclass
class Chunk:
    """One chunk of the path inside the loop body (float64, channels first).

    ``ls``: the chunk's path indices l (int64 [b]); ``a``/``g``: A_l and G_l [b, K, h, w];
    ``a0``: A_0 (known from the first chunk on); ``prev_a``/``prev_g``: A and G at the
    point before the chunk's first l (at l = 0: A_0 and G_0 themselves, so the pair across
    the boundary adds exactly 0).
    """

    ls: Tensor
    a: Tensor
    g: Tensor
    a0: Tensor
    prev_a: Tensor
    prev_g: Tensor


@dataclass
class Ends:
    """What is known after the Loop: A_0, A_m, G_m [K, h, w] and y_0, y_m (float64 scalars)."""

    a0: Tensor
    am: Tensor
    gm: Tensor
    y0: Tensor
    ym: Tensor


@dataclass(frozen=True)
class LayerDims:
    k: int
    h: int
    w: int


class OnnxReduction(ABC):
    """A method's reduction in ONNX. ``states`` are its loop-carried accumulators (name ->
    initial float64 value), ``update`` their new values after one chunk, ``finish`` the raw
    h×w map and the extras (names as the registry's ``extras``)."""

    name: ClassVar[str]
    extras: ClassVar[tuple[str, ...]] = ()
    #: option name -> the values this reduction implements.
    options: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: numeric options it reads, any value (baked into the graph as constants).
    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, opts: MethodOptions, m: int, dims: LayerDims):
        for option, done in self.options.items():
            value = getattr(opts, option)
            if value not in done:
                raise OrtCamError(f"{option}={value!r} has no ONNX reduction; "
                                  f"export supports {', '.join(done)}")
        self.opts, self.m, self.dims = opts, m, dims

    def states(self) -> dict[str, np.ndarray]:
        return {}

    def update(self, op: Ops, chunk: Chunk, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return state

    @abstractmethod
    def finish(self, op: Ops, ends: Ends,
               state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(raw map [h, w], extras by name)."""

    def weighted_map(self, op: Ops, weights: Tensor, a: Tensor) -> Tensor:
        """ReLU(Σ_k w_k A[k]) for weights [K] and A [K, h, w] (methods.base.weighted_map)."""
        d = self.dims
        flat = op.matmul(op.reshape(weights, [1, d.k]), op.reshape(a, [d.k, d.h * d.w]))
        return op.relu(op.reshape(flat, [d.h, d.w]))


def completeness_gap(op: Ops, ig_sum: Tensor, y0: Tensor, ym: Tensor) -> Tensor:
    """|Σ IG − (y_m − y_0)| / |y_m − y_0| (float64 scalars), NaN where ``result.gap_defined``
    says it is not defined: |y_m − y_0| ≤ GAP_UNDEFINED_REL · max(|y_0|, |y_m|), float32
    noise. Written as its negation, defined = |Δ| > noise: the two differ only where a
    comparison meets a NaN or an infinite end, and both give NaN there (Δ is NaN, or |Δ| =
    noise = inf). Where it is defined |Δ| > noise ≥ 0; elsewhere it divides by 1, not 0, so
    that no engine meets a division by zero (the reference evaluator warns of one)."""
    delta = op.sub(ym, y0)
    size = op.abs(delta)
    noise = op.mul(GAP_UNDEFINED_REL, op.maximum(op.abs(y0), op.abs(ym)))
    defined = op.greater(size, noise)
    quotient = op.div(op.abs(op.sub(ig_sum, delta)), op.where(defined, size, op.const(1.0)))
    return op.where(defined, quotient, op.const(np.nan))


class GradCamOnnx(OnnxReduction):
    """w_k = (1/Z) Σ_ij G_m (or of ReLU(G_m)); L = ReLU(Σ_k w_k A_m[k])."""

    name = GradCam.name
    options = {"gradcam_weights": ("mean", "positive")}

    def finish(self, op, ends, state):
        g = op.relu(ends.gm) if self.opts.gradcam_weights == "positive" else ends.gm
        return self.weighted_map(op, op.mean(g, [1, 2]), ends.am), {}


class IntegratedGradCamOnnx(OnnxReduction):
    """``paper``: (1/m) Σ_{l=1..m} ReLU(Σ_k (Σ_ij G_l[k]) · (A_l[k] − A_0[k]));
    ``notebook``: Σ_{l=0..m−1} ReLU(Σ_k mean_ij(G_l[k]) · A_l[k])."""

    name = IntegratedGradCam.name
    options = {"igcam_variant": ("paper", "notebook")}

    def states(self):
        return {"total": np.zeros((self.dims.h, self.dims.w))}

    def update(self, op, chunk, state):
        d, paper = self.dims, self.opts.igcam_variant == "paper"
        if paper:  # l >= 1, weights Σ_ij G, activations relative to A_0
            keep = op.greater(chunk.ls, op.i64(0))
            s = op.sum(chunk.g, [2, 3])
            delta = op.sub(chunk.a, op.unsqueeze(chunk.a0, [0]))
        else:  # l <= m - 1, weights mean_ij G, plain activations
            keep = op.less(chunk.ls, op.i64(self.m))
            s = op.mean(chunk.g, [2, 3])
            delta = chunk.a
        maps = op.matmul(op.reshape(s, [-1, 1, d.k]), op.reshape(delta, [-1, d.k, d.h * d.w]))
        kept = op.mul(op.relu(maps), op.reshape(op.cast(keep, np.float64), [-1, 1, 1]))
        part = op.reshape(op.sum(kept, [0, 1]), [d.h, d.w])
        return {"total": op.add(state["total"], part)}

    def finish(self, op, ends, state):
        total = state["total"]
        return (op.div(total, float(self.m)) if self.opts.igcam_variant == "paper"
                else total), {}


class RsiGradCamOnnx(OnnxReduction):
    """IG = Σ_{l=1..m} g_l · (A_l − A_{l−1}), g_l = G_l (riemann) or (G_l + G_{l−1})/2
    (trapezoid); w_k = (1/Z) Σ_ij S·IG; L = ReLU(Σ_k w_k A_m[k]); extra completeness_gap =
    |Σ IG − (y_m − y_0)| / |y_m − y_0|, NaN where y_m − y_0 is float32 noise
    (``completeness_gap``)."""

    name = RsiGradCam.name
    extras = ("completeness_gap",)
    options = {"rsi_rule": ("trapezoid", "riemann"),
               "rsi_selection": ("guided", "positive", "none")}

    def states(self):
        return {"ig": np.zeros((self.dims.k, self.dims.h, self.dims.w))}

    def update(self, op, chunk, state):
        # the chunk with the point before it: pairs (l−1, l) for every l of the chunk
        a = op.concat([op.unsqueeze(chunk.prev_a, [0]), chunk.a], 0)
        g = op.concat([op.unsqueeze(chunk.prev_g, [0]), chunk.g], 0)
        hi, lo = (1, np.iinfo(np.int64).max), (0, -1)
        g_hi = op.rows(g, *hi)
        gl = g_hi if self.opts.rsi_rule == "riemann" else op.mul(
            0.5, op.add(g_hi, op.rows(g, *lo)))
        part = op.sum(op.mul(gl, op.sub(op.rows(a, *hi), op.rows(a, *lo))), [0])
        return {"ig": op.add(state["ig"], part)}

    def finish(self, op, ends, state):
        ig = state["ig"]
        gap = completeness_gap(op, op.sum(ig, [0, 1, 2]), ends.y0, ends.ym)
        sel = self.opts.rsi_selection
        if sel == "none":
            kept = ig
        else:
            mask = op.greater(ig, 0.0)
            if sel == "guided":
                mask = op.logical_and(op.logical_and(op.greater(ends.am, 0.0), mask),
                                      op.greater(op.sub(ends.am, ends.a0), 0.0))
            kept = op.where(mask, ig, op.const(0.0))
        return self.weighted_map(op, op.mean(kept, [1, 2]), ends.am), {"completeness_gap": gap}


# --- the methods that read only l = m: A_m and G_m, after the Loop -----------------------------
class HiResCamOnnx(OnnxReduction):
    """L = ReLU(Σ_k G_m[k] ⊙ A_m[k])."""

    name = HiResCam.name

    def finish(self, op, ends, state):
        return op.relu(op.sum(op.mul(ends.gm, ends.am), [0])), {}


class GradCamElementwiseOnnx(OnnxReduction):
    """L = ReLU(Σ_k ReLU(G_m[k] ⊙ A_m[k]))."""

    name = GradCamElementwise.name

    def finish(self, op, ends, state):
        return op.relu(op.sum(op.relu(op.mul(ends.gm, ends.am)), [0])), {}


class LayerCamOnnx(OnnxReduction):
    """L = ReLU(Σ_k ReLU(G_m[k]) ⊙ A_m[k])."""

    name = LayerCam.name

    def finish(self, op, ends, state):
        return op.relu(op.sum(op.mul(op.relu(ends.gm), ends.am), [0])), {}


class XGradCamOnnx(OnnxReduction):
    """w_k = Σ_ij A_m G_m / Σ_ij A_m (0 where Σ_ij A_m = 0); L = ReLU(Σ_k w_k A_m[k])."""

    name = XGradCam.name

    def finish(self, op, ends, state):
        total = op.sum(ends.am, [1, 2])
        num = op.sum(op.mul(ends.am, ends.gm), [1, 2])
        zero = op.equal(total, op.const(0.0))
        safe = op.where(zero, op.const(1.0), total)
        weights = op.where(zero, op.const(0.0), op.div(num, safe))
        return self.weighted_map(op, weights, ends.am), {}


class GradCamPlusPlusOnnx(OnnxReduction):
    """α = G²/(2G² + (Σ_ab A) G³ + gradcampp_eps), 0 where G = 0 or the denominator is 0;
    w_k = Σ_ij α ReLU(G); L = ReLU(Σ_k w_k A_m[k]) (methods.gradcampp's closed form)."""

    name = GradCamPlusPlus.name
    reads = ("gradcampp_eps",)

    def finish(self, op, ends, state):
        a, g = ends.am, ends.gm
        g2 = op.mul(g, g)
        cubic = op.mul(op.mul(op.sum(a, [1, 2], keep=True), g2), g)
        denom = op.add(op.add(op.mul(2.0, g2), cubic), float(self.opts.gradcampp_eps))
        zero = op.const(0.0)
        ok = op.logical_and(op.logical_not(op.equal(g, zero)),
                            op.logical_not(op.equal(denom, zero)))
        alpha = op.where(ok, op.div(g2, op.where(ok, denom, op.const(1.0))), zero)
        weights = op.sum(op.mul(alpha, op.relu(g)), [1, 2])
        return self.weighted_map(op, weights, a), {}


class FemOnnx(OnnxReduction):
    """t_k = μ_k + fem_k·σ_k (mean and population std of A_m[k] over the grid);
    w_k = (1/Z) Σ_ij 1(A_m > t_k); L = ReLU(Σ_k w_k A_m[k]). A value within rounding of its
    threshold (a constant channel) may fall on the other side than in NumPy."""

    name = Fem.name
    reads = ("fem_k",)

    def finish(self, op, ends, state):
        a = ends.am
        mu = op.mean(a, [1, 2], keep=True)
        d = op.sub(a, mu)
        sigma = op.sqrt(op.mean(op.mul(d, d), [1, 2], keep=True))
        th = op.add(mu, op.mul(float(self.opts.fem_k), sigma))
        weights = op.mean(op.cast(op.greater(a, th), np.float64), [1, 2])
        return self.weighted_map(op, weights, a), {}


#: method name (as in ``ort_cam.methods.METHODS``) -> its ONNX reduction.
ONNX_REDUCTIONS: dict[str, type[OnnxReduction]] = {
    cls.name: cls for cls in (GradCamOnnx, IntegratedGradCamOnnx, RsiGradCamOnnx, HiResCamOnnx,
                              GradCamElementwiseOnnx, GradCamPlusPlusOnnx, XGradCamOnnx,
                              LayerCamOnnx, FemOnnx)
}
