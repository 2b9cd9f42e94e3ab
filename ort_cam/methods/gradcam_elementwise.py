"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``; no paper of its own).

    L = ReLU( Σ_k ReLU( G_m[k] ⊙ A_m[k] ) )

HiResCAM with each unit's contribution clipped at 0 before the channel sum.
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import channel_map


class GradCamElementwise(CamMethod):
    """ReLU(Σ_k ReLU(G ⊙ A)) at x (l = m); ``eigen_smooth``: first component of ReLU(G ⊙ A)."""

    name = "gradcam_elementwise"
    title = "Grad-CAM element-wise"
    short = "GC-elem"
    color = "tab:purple"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        return channel_map(np.maximum(gm * am, 0.0), self.options)
