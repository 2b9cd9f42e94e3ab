"""FEM, the Feature Explanation Method (Fuad, Martin, Giot, Bourqui, Benois-Pineau, Zemmari
2020, "Features understanding in 3D CNNs for actions recognition in video", IPTA).

A channel counts by how much of its grid lies above a k-sigma threshold:

    t_k = μ_k + k σ_k                     (mean and population std of A_m[k] over the grid)
    w_k = (1/Z) Σ_ij 1( A_m[k,i,j] > t_k )
    L   = ReLU( Σ_k w_k A_m[k] )

Activations only (no gradient, no class). k = ``fem_k`` (default 2, as pytorch-grad-cam).
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import weights_map


class Fem(CamMethod):
    """k-sigma channel weights times A at x (l = m)."""

    name = "fem"
    title = "FEM"
    short = "FEM"
    color = "darkgoldenrod"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        a = self.state.a_end
        th = a.mean(axis=(1, 2)) + self.options.fem_k * a.std(axis=(1, 2))
        weights = (a > th[:, None, None]).mean(axis=(1, 2))
        return weights_map(weights, a, self.options)
