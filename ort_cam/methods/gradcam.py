"""Grad-CAM (METHODS.md eqs 1, 2, 3, 21): the l = m slice of the shared path."""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import weights_map


class GradCam(CamMethod):
    name = "gradcam"
    title = "Grad-CAM"
    short = "Grad-CAM"
    color = "tab:blue"
    default = True
    needs_path = False  # the l = m slice only
    cost = AT_X

    def finish(self) -> np.ndarray:
        g = self.state.g_end
        if self.options.gradcam_weights == "positive":
            g = np.maximum(g, 0.0)
        weights = g.mean(axis=(1, 2))  # (1/Z) Σ_ij
        return weights_map(weights, self.state.a_end, self.options)  # eigen_smooth: PC1
