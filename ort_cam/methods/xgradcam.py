"""XGrad-CAM (Fu, Hu, Dong, Guo, Gao, Li 2020, "Axiom-based Grad-CAM: Towards Accurate
Visualization and Explanation of CNNs", BMVC, eq 12).

    w_k = Σ_ij ( A_m[k,i,j] / Σ_ab A_m[k,a,b] ) · G_m[k,i,j]
    L   = ReLU( Σ_k w_k A_m[k] )

The gradient averaged with the activation's own spatial distribution as the weights.

Deviation of pytorch-grad-cam 1.5.7 from the paper: it divides by Σ_ab A + 1e-7. Here the
paper's quotient is taken as it is, with w_k = 0 for a channel whose Σ_ab A is exactly 0 (then
every A[k,i,j] of a ReLU layer is 0 too, and the channel adds nothing). For channels with
Σ A ≫ 1e-7 the two agree to ~1e-7/Σ A relative.
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import spatial_sum, weights_map


class XGradCam(CamMethod):
    """w_k = Σ_ij A G / Σ_ij A, L = ReLU(Σ_k w_k A) at x (l = m)."""

    name = "xgradcam"
    title = "XGrad-CAM"
    short = "XGrad"
    color = "tab:pink"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        total = spatial_sum(am)
        num = spatial_sum(am * gm)
        weights = np.divide(num, total, out=np.zeros_like(num), where=total != 0)
        return weights_map(weights, am, self.options)
