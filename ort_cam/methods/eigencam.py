"""Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal
Components", IJCNN, arXiv:2008.00299) and EigenGrad-CAM (pytorch-grad-cam's ``EigenGradCAM``).

Read A_m as a Z×K matrix M (one row per grid cell), centre each column, and project on the
first right singular vector v₁ of M = UΣVᵀ:

    Eigen-CAM:      L = ReLU( (M − mean M) v₁ )            M from A_m (no gradient, no class)
    EigenGrad-CAM:  the same with M from G_m ⊙ A_m          (class-specific)

Centring is pytorch-grad-cam's (the paper projects M itself); it is kept so that the two agree.
The sign of v₁ is arbitrary (LAPACK chooses it, and pytorch-grad-cam keeps that choice, so
its map can come out all zero after the ReLU). Here the sign is fixed: the projection is
oriented to correlate non-negatively with Σ_k of the matrix's channels (for Eigen-CAM the
channel sum of A, for EigenGrad-CAM the HiResCAM map before its ReLU).
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import first_component


class EigenCam(CamMethod):
    """ReLU of the first principal component of A at x (l = m); no gradient is read."""

    name = "eigencam"
    title = "Eigen-CAM"
    short = "Eigen"
    color = "tab:olive"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        return np.maximum(first_component(self.state.a_end), 0.0)


class EigenGradCam(CamMethod):
    """ReLU of the first principal component of G ⊙ A at x (l = m)."""

    name = "eigengradcam"
    title = "EigenGrad-CAM"
    short = "EigenGrad"
    color = "tab:cyan"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        am, gm = self.state.a_end, self.state.g_end
        return np.maximum(first_component(gm * am), 0.0)
