"""Map post-processing (METHODS.md eqs 25, 26): bilinear upsampling, normalisation, darkness."""

from __future__ import annotations

import numpy as np


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights with half-pixel centres (align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def upsample(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an h×w map to ``size`` = (H, W) bilinearly, half-pixel centres, as PIL/cv2/torch
    (``align_corners=False``) do."""
    raw = np.asarray(raw, dtype=np.float64)
    return _interp_matrix(raw.shape[0], size[0]) @ raw @ _interp_matrix(raw.shape[1], size[1]).T


def normalize(m: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(L − min L) / (max L − min L + ε)."""
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo + eps)


def is_dark(raw: np.ndarray, eps: float = 1e-8) -> bool:
    """The paper's dark heatmap (§4.3.2): max L − min L < ε, so the normalised map peaks
    below 0.5."""
    return float(raw.max() - raw.min()) < eps
