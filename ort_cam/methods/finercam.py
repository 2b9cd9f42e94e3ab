"""Finer-CAM (Zhang, Gu, Chowdhury, Mai, Carlyn, Berger-Wolf, Su, Chao 2025, "Finer-CAM:
Spotting the Difference Reveals Finer Details for Visual Explanation", CVPR,
arXiv:2501.11309), on Grad-CAM as the base method (pytorch-grad-cam's default).

Explain the target's score against its most similar classes instead of alone: with D the
``finer_compare`` classes whose scores are closest to y_c (|y_d − y_c| smallest, c itself
left out), p_d the class probabilities and α = ``finer_alpha``, the explained quantity is
pytorch-grad-cam's ``FinerWeightedTarget``

    T = Σ_{d∈D} p_d ( y_c − α y_d ) / ( Σ_{d∈D} p_d + 1e-9 )

and Grad-CAM runs on it: w_k = (1/Z) Σ_ij ∂T/∂A[k,i,j],  L = ReLU(Σ_k w_k A[k]).

As in pytorch-grad-cam the p_d are not held constant: ∂T/∂A includes ∂p_d/∂A. With the
chain rule ∂T/∂A = Σ_i (∂T/∂y_i) ∂y_i/∂A, so one run of the fused gradient model at x with
target weights ∂T/∂y gives it exactly. p = softmax(y) for ``score="logit"``; with
``score="probability"`` the scores are the probabilities, p = y.
"""

from __future__ import annotations

import numpy as np

from .common import spatial_sum, weights_map
from .run_based import ModelRuns, RunsMethod


def compared_classes(scores: np.ndarray, c: int, n: int) -> np.ndarray:
    """The ``n`` classes other than c whose scores are closest to y_c (stable order)."""
    order = np.argsort(np.abs(scores - scores[c]), kind="stable")
    return order[order != c][:n]


def finer_target_weights(y: np.ndarray, c: int, comp: np.ndarray, alpha: float,
                         logit: bool) -> np.ndarray:
    """∂T/∂y_i for T = Σ_d p_d (y_c − α y_d) / (Σ_d p_d + 1e-9), d in ``comp``."""
    if logit:
        e = np.exp(y - y.max())
        p = e / e.sum()
    else:
        p = y.astype(np.float64)
    pd, yd = p[comp], y[comp]
    den = pd.sum() + 1e-9
    t = float((pd * (y[c] - alpha * yd)).sum() / den)
    d = y[c] - alpha * yd - t  # ∂T/∂p_d = d_d / den
    dt_dp = np.zeros_like(p)
    dt_dp[comp] = d / den
    direct = np.zeros_like(p)  # ∂T/∂y with p held fixed
    direct[c] = pd.sum() / den
    direct[comp] -= alpha * pd / den
    if logit:  # through softmax: ∂p_j/∂y_i = p_j (δ_ij − p_i)
        return direct + p * dt_dp - p * float((p * dt_dp).sum())
    return direct + dt_dp


class FinerCam(RunsMethod):
    """Grad-CAM of the target against its most similar classes (1 gradient run at x)."""

    name = "finercam"
    title = "Finer-CAM"
    short = "Finer"
    color = "seagreen"
    cost = "1 gradient run at x (its own target weights)"

    def compute(self, runs: ModelRuns) -> np.ndarray:
        y, c = runs.scores(), runs.target
        comp = compared_classes(y, c, self.options.finer_compare)
        w = finer_target_weights(y, c, comp, self.options.finer_alpha,
                                 logit=runs.score_mode == "logit")
        a, g = runs.gradient_at_x(w)
        return weights_map(spatial_sum(g) / (g.shape[1] * g.shape[2]), a, self.options)
