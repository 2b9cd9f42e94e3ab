"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader, Balasubramanian 2018, "Grad-CAM++: Generalized
Gradient-Based Visual Explanations for Deep Convolutional Networks", WACV, eqs 10 and 19).

The paper weights each unit's positive gradient by

    α_kij = ∂²Y/∂A²_kij / ( 2 ∂²Y/∂A²_kij + Σ_ab A_kab ∂³Y/∂A³_kij )        (eq 10)

and assumes an exponential score, Y = exp(S) with S the class score, through a network that
is piecewise linear above the layer (so ∂²S/∂A² = 0). Then ∂ⁿY/∂Aⁿ = exp(S) Gⁿ with
G = ∂S/∂A, and exp(S) cancels in α (eq 19), which is pytorch-grad-cam's closed form:

    α_kij = G² / ( 2 G² + (Σ_ab A_kab) G³ )     where G ≠ 0, else 0
    w_k   = Σ_ij α_kij · ReLU(G_kij)
    L     = ReLU( Σ_k w_k A_m[k] )

with S the score of the explainer's ``score`` mode (``logit`` is the paper's S). Where the
head is not piecewise linear (softmax scores, SiLU, sigmoid gates) the closed form is what
is computed, not the exact higher derivatives: pytorch-grad-cam does the same.

Two differences from the paper's formulas, shared with pytorch-grad-cam:
- the paper's eq 19 weighs ReLU(∂Y/∂A) = exp(S)·ReLU(G); the positive constant exp(S) is
  left out (it would overflow for large logits, and the normalised map does not change);
- a denominator that is 0 where G ≠ 0 gives α = 0 (the paper leaves it undefined).

Deviation of pytorch-grad-cam 1.5.7 from the paper: it adds ε = 1e-6 to the denominator. With
layer gradients of the order of 1e-3 (2G² ~ 1e-6) that changes α by tens of per cent;
``gradcampp_eps=1e-6`` reproduces it, the default 0 is the paper.
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import spatial_sum, weights_map


def gradcampp_weights(a: np.ndarray, g: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """w_k = Σ_ij α_kij ReLU(G_kij), α = G²/(2G² + (Σ_ab A_kab) G³ + eps), 0 where G = 0."""
    g2 = g * g
    denom = 2.0 * g2 + spatial_sum(a)[:, None, None] * g2 * g + eps
    alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=(g != 0) & (denom != 0))
    return spatial_sum(alpha * np.maximum(g, 0.0))


class GradCamPlusPlus(CamMethod):
    """Grad-CAM++ in its closed form for an exponential score, at x (l = m)."""

    name = "gradcampp"
    title = "Grad-CAM++"
    short = "GC++"
    color = "tab:gray"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        weights = gradcampp_weights(am, gm, self.options.gradcampp_eps)
        return weights_map(weights, am, self.options)
