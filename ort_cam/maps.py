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


def to_photo(raw: np.ndarray, model_size: tuple[int, int],
             geometry: tuple[float, float, float, float], photo_size: tuple[int, int],
             eps: float = 1e-8) -> np.ndarray:
    """The map on the photo's own pixel grid (``photo_size`` = (width, height)), the resize,
    crop or letterbox undone: each photo pixel's centre goes to the model input by
    ``geometry`` (``Preprocess.geometry``: x · sx + dx, y · sy + dy), then to the layer grid
    with half-pixel centres, where ``raw`` is sampled bilinearly as ``upsample`` samples it.
    Normalised with the min and max of the map at the model's input size (so the two agree);
    NaN where the photo fell outside the model's input (outside a centre crop)."""
    sx, sy, dx, dy = geometry
    (hm, wm), (w0, h0) = model_size, photo_size
    h, w = raw.shape
    up = upsample(raw, model_size)
    lo, hi = float(up.min()), float(up.max())
    mx = (np.arange(w0) + 0.5) * sx + dx  # model-input coordinates, pixel edges at integers
    my = (np.arange(h0) + 0.5) * sy + dy
    rows, cols = _sample_matrix(my, hm, h), _sample_matrix(mx, wm, w)
    out = rows @ np.asarray(raw, np.float64) @ cols.T
    out = (out - lo) / (hi - lo + eps)
    outside = ((my < 0) | (my > hm))[:, None] | ((mx < 0) | (mx > wm))[None, :]
    return np.where(outside, np.nan, out)


def _sample_matrix(coords: np.ndarray, n_model: int, n_layer: int) -> np.ndarray:
    """[len(coords), n_layer] bilinear weights at model-input coordinates ``coords``."""
    src = np.clip(coords * (n_layer / n_model) - 0.5, 0.0, n_layer - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_layer - 1)
    frac = src - lo
    m = np.zeros((len(coords), n_layer))
    np.add.at(m, (np.arange(len(coords)), lo), 1.0 - frac)
    np.add.at(m, (np.arange(len(coords)), hi), frac)
    return m


def normalize(m: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(L − min L) / (max L − min L + ε)."""
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo + eps)


def is_dark(raw: np.ndarray, eps: float = 1e-8) -> bool:
    """The paper's dark heatmap (§4.3.2): max L − min L < ε, so the normalised map peaks
    below 0.5."""
    return float(raw.max() - raw.min()) < eps
