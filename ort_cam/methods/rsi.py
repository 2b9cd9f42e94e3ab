"""RSI-Grad-CAM (Lucas, Lerma et al. 2022; METHODS.md eqs 16–20, 24)."""

from __future__ import annotations

import numpy as np

from ..result import COMPLETENESS_GAP, gap_defined
from .base import CamMethod, weighted_map


class RsiGradCam(CamMethod):
    """IG[k,i,j] = Σ_{l=1..m} g_l · (A_l − A_{l−1}) (Riemann–Stieltjes, activations as the
    integrator), units selected by ``rsi_selection``, w_k = (1/Z) Σ_ij S·IG,
    L = ReLU(Σ_k w_k A_m[k]).

    Extra ``completeness_gap``: |Σ IG − (y_m − y_0)| / |y_m − y_0|, Σ IG over every unit (no
    selection); NaN where y_m − y_0 is float32 noise (``gap_defined``: the quotient would be
    rounding over rounding)."""

    name = "rsi"
    title = "RSI-Grad-CAM"
    short = "RSI"
    color = "tab:green"
    default = True
    extras = (COMPLETENESS_GAP,)

    def __init__(self, state, options):
        super().__init__(state, options)
        self.ig: np.ndarray | None = None
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, ls, a, g):
        st = self.state
        riemann = self.options.rsi_rule == "riemann"
        # pairs (l-1, l) inside the chunk ...
        part = None
        if len(a) >= 2:
            gl, da = self._scratch(a[1:])
            if riemann:
                gl = g[1:]
            else:
                np.add(g[1:], g[:-1], out=gl)
                np.multiply(gl, 0.5, out=gl)
            np.subtract(a[1:], a[:-1], out=da)
            part = np.einsum("bkij,bkij->kij", gl, da)
        # ... and the pair across the boundary with the previous chunk
        if st.prev_a is not None:
            g0 = g[0] if riemann else 0.5 * (g[0] + st.prev_g)
            edge = g0 * (a[0] - st.prev_a)
            part = edge if part is None else part + edge
        if part is not None:
            self.ig = part if self.ig is None else self.ig + part

    def _scratch(self, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two float64 arrays laid out as ``like`` (as numpy lays out the result of an
        operation on it, so the sums that follow round as before), kept for the walk's next
        chunks (a new one per chunk costs more in page faults than its arithmetic)."""
        n = len(like)
        if self._buffers is None or self._buffers[0].shape[1:] != like.shape[1:] or (
                len(self._buffers[0]) < n):
            self._buffers = (np.empty_like(like, dtype=np.float64),
                             np.empty_like(like, dtype=np.float64))
        return self._buffers[0][:n], self._buffers[1][:n]

    def finish(self) -> np.ndarray:
        st, ig = self.state, self.ig
        if ig is None:  # the driver walks at least one pair (l − 1, l) (m >= 1)
            raise RuntimeError("RSI-Grad-CAM finished before any pair of path points")
        am = st.a_end
        y0, ym = float(st.ys[0]), float(st.ys[-1])
        gap = abs(float(ig.sum()) - (ym - y0)) / abs(ym - y0) if gap_defined(y0, ym) else np.nan
        self.extra_values[COMPLETENESS_GAP] = float(gap)
        sel = self.options.rsi_selection
        if sel == "guided":
            mask = (am > 0) & (ig > 0) & (am - st.a_start > 0)
        elif sel == "positive":
            mask = ig > 0
        else:
            mask = np.ones_like(ig, dtype=bool)
        weights = np.where(mask, ig, 0.0).mean(axis=(1, 2))  # (1/Z) Σ_ij S·IG
        return weighted_map(weights, am)
