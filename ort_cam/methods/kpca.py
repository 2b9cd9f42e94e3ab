"""KPCA-CAM (Karmani, Sheikh, Basu, Morrison, Yildirim 2024, "KPCA-CAM: Visual Explainability
of Deep Computer Vision Models using Kernel-based Principal Component Analysis",
arXiv:2410.00267).

Eigen-CAM with a kernel: the Z = h·w grid cells of A_m are the samples (rows of the Z×K
matrix M, each column centred), κ a kernel over them, and the map is the first kernel
principal component:

    K_ij = κ(M_i, M_j);   K̃ = K − 1K − K1 + 1K1   (1 = the Z×Z matrix of 1/Z)
    K̃ v = λ v  (largest λ, ‖v‖ = 1);   L = ReLU( √max(λ, 0) · v )

as scikit-learn's ``KernelPCA(n_components=1).fit_transform`` computes it, which
pytorch-grad-cam calls. Kernels (scikit-learn's defaults: coef0 = 1, degree = 3, γ = 1/K):
sigmoid tanh(γ xᵀy + 1) (the default, as pytorch-grad-cam), rbf exp(−γ‖x − y‖²),
poly (γ xᵀy + 1)³, linear xᵀy, cosine xᵀy/(‖x‖‖y‖).

The sign of v is arbitrary; scikit-learn makes v's largest-magnitude entry positive. Here it is
oriented as for Eigen-CAM: non-negative correlation with the channel sum of A.
"""

from __future__ import annotations

import numpy as np

from .base import AT_X, CamMethod
from .common import orient


def kernel_matrix(x: np.ndarray, kernel: str, gamma: float | None) -> np.ndarray:
    """κ(x_i, x_j) for the rows of ``x`` (Z×K), with scikit-learn's default parameters."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    dot = x @ x.T
    if kernel == "sigmoid":
        return np.tanh(g * dot + 1.0)
    if kernel == "poly":
        return (g * dot + 1.0) ** 3
    if kernel == "rbf":
        sq = np.diag(dot)
        return np.exp(-g * np.maximum(sq[:, None] + sq[None, :] - 2.0 * dot, 0.0))
    if kernel == "cosine":
        norm = np.sqrt(np.diag(dot))
        norm[norm == 0] = 1.0
        return dot / np.outer(norm, norm)
    return dot  # linear


def kernel_component(a: np.ndarray, kernel: str = "sigmoid",
                     gamma: float | None = None) -> np.ndarray:
    """The first kernel principal component of A [K, h, w] as an h×w map (sign: ``orient``)."""
    k = a.shape[0]
    x = np.nan_to_num(a.reshape(k, -1).T)
    x = x - x.mean(axis=0)
    km = kernel_matrix(x, kernel, gamma)
    km = km - km.mean(axis=0) - km.mean(axis=1)[:, None] + km.mean()
    lam, vec = np.linalg.eigh(km)
    proj = vec[:, -1] * np.sqrt(max(float(lam[-1]), 0.0))
    return orient(proj, np.nan_to_num(a).sum(axis=0).ravel()).reshape(a.shape[1:])


class KpcaCam(CamMethod):
    """ReLU of the first kernel principal component of A at x (l = m); no gradient is read."""

    name = "kpcacam"
    title = "KPCA-CAM"
    short = "KPCA"
    color = "darkslateblue"
    cost = AT_X
    needs_path = False

    def finish(self) -> np.ndarray:
        opts = self.options
        return np.maximum(kernel_component(self.state.a_end, opts.kpca_kernel, opts.kpca_gamma),
                          0.0)
