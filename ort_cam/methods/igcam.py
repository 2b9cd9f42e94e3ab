"""Integrated Grad-CAM (Sattarzadeh et al. 2021; METHODS.md eqs 12, 13, 23)."""

from __future__ import annotations

import numpy as np

from .base import CamMethod


class IntegratedGradCam(CamMethod):
    """``paper``: L = (1/m) Σ_{l=1..m} ReLU(Σ_k (Σ_ij G_l[k]) · (A_l[k] − A_0[k])), no 1/Z.
    ``notebook``: Σ_{l=0..m−1} of plain Grad-CAM maps of x_l (the authors' notebook)."""

    name = "igcam"
    title = "Integrated Grad-CAM"

    def __init__(self, state, options):
        super().__init__(state, options)
        self.total: np.ndarray | None = None

    def update(self, ls, a, g):
        if self.options.igcam_variant == "paper":
            keep = ls >= 1
            s = g[keep].sum(axis=(2, 3))  # [b, K]
            maps = np.einsum("bk,bkij->bij", s, a[keep] - self.state.a0[None])
        else:
            keep = ls <= self.state.m - 1
            s = g[keep].mean(axis=(2, 3))
            maps = np.einsum("bk,bkij->bij", s, a[keep])
        part = np.maximum(maps, 0.0).sum(axis=0)
        self.total = part if self.total is None else self.total + part

    def finish(self) -> np.ndarray:
        if self.options.igcam_variant == "paper":
            return self.total / self.state.m
        return self.total
