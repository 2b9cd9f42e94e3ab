"""LayerCAM (Jiang, Zhang, Hou, Cheng, Wei 2021, "LayerCAM: Exploring Hierarchical Class
Activation Maps for Localization", IEEE TIP 30, eq 4).

    L = ReLU( Σ_k ReLU( G_m[k] ) ⊙ A_m[k] )

each unit weighted by its own positive gradient.
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import channel_map


class LayerCam(CamMethod):
    """ReLU(Σ_k ReLU(G) ⊙ A) at x (l = m); ``eigen_smooth``: first component of ReLU(G) ⊙ A."""

    name = "layercam"
    title = "LayerCAM"
    short = "LayerCAM"
    color = "tab:brown"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        return channel_map(np.maximum(gm, 0.0) * am, self.options)
