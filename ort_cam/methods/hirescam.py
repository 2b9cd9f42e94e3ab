"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", arXiv:2011.08891).

    L = ReLU( Σ_k G_m[k] ⊙ A_m[k] )

the element-wise product of gradient and activation summed over channels: Grad-CAM without the
spatial averaging of the gradient. For a head that is a global average pool followed by a
linear layer, HiResCAM equals Grad-CAM (the gradient is constant over the grid).
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import channel_map


#: What every method that reads only l = m of the shared pass costs.
class HiResCam(CamMethod):
    """ReLU(Σ_k G ⊙ A) at x (l = m); ``eigen_smooth``: first component of G ⊙ A."""

    name = "hirescam"
    title = "HiResCAM"
    short = "HiRes"
    color = "tab:red"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        return channel_map(gm * am, self.options)
