"""Integrated Grad-CAM (Sattarzadeh et al. 2021; METHODS.md eqs 12, 13, 23)."""

from __future__ import annotations

import numpy as np

from .base import CamMethod


class IntegratedGradCam(CamMethod):
    """``paper``: L = (1/m) Σ_{l=1..m} ReLU(Σ_k (Σ_ij G_l[k]) · (A_l[k] − A_0[k])), no 1/Z.
    ``notebook``: Σ_{l=0..m−1} of plain Grad-CAM maps of x_l (the authors' notebook)."""

    name = "igcam"
    title = "Integrated Grad-CAM"
    short = "IG-CAM"
    color = "tab:orange"
    default = True

    def __init__(self, state, options):
        super().__init__(state, options)
        self.total: np.ndarray | None = None
        self._buffer: np.ndarray | None = None

    def update(self, ls, a, g):
        # ls is a contiguous run of path indices: slice instead of masking (no copies).
        b, k = a.shape[:2]
        z = a.shape[2] * a.shape[3]
        if self.options.igcam_variant == "paper":
            lo = int(max(0, 1 - ls[0]))  # l >= 1
            s = g[lo:].sum(axis=(2, 3))  # [b, K]
            delta = self._scratch(a[lo:])  # (a new one per chunk: page faults)
            np.subtract(a[lo:], self.state.a_start[None], out=delta)
            delta = delta.reshape(b - lo, k, z)
        else:
            hi = int(min(len(ls), self.state.m - ls[0]))  # l <= m - 1
            s = g[:hi].mean(axis=(2, 3))
            delta = a[:hi].reshape(hi, k, z)
        maps = np.matmul(s[:, None, :], delta)[:, 0]  # Σ_k s[b,k]·Δ[b,k,z]
        part = np.maximum(maps, 0.0).sum(axis=0).reshape(a.shape[2:])
        self.total = part if self.total is None else self.total + part

    def _scratch(self, like: np.ndarray) -> np.ndarray:
        """A float64 array laid out as ``like`` (as numpy lays out the result of an operation
        on it, so the sums that follow round as before), kept for the walk's next chunks."""
        if self._buffer is None or self._buffer.shape[1:] != like.shape[1:] or (
                len(self._buffer) < len(like)):
            self._buffer = np.empty_like(like, dtype=np.float64)
        return self._buffer[:len(like)]

    def finish(self) -> np.ndarray:
        if self.total is None:  # the driver walks at least l = 0, 1 (m >= 1)
            raise RuntimeError("Integrated Grad-CAM finished before any path point")
        if self.options.igcam_variant == "paper":
            return np.asarray(self.total / self.state.m)
        return self.total
