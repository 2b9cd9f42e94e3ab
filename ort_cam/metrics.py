"""Audit metrics (METHODS.md "Metrics"): pure functions over maps, images and boxes.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the map's grid, x1/y1 exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = Sequence[int]


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean H×W mask of ``box`` clipped to the grid."""
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((h, w), dtype=bool)
    mask[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    return mask


def pixel_energy(saliency: np.ndarray, box: Box) -> float:
    """Energy-based pointing game: Σ_B L / Σ L (nan for an all-zero map)."""
    total = float(saliency.sum())
    if total <= 0:
        return float("nan")
    return float(saliency[box_mask(saliency.shape, box)].sum()) / total
