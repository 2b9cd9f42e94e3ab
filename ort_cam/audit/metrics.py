"""Audit metrics (METHODS.md "Metrics"): pure functions over maps, images and boxes.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the map's grid, x1/y1 exclusive. Where a box is
taken, an H×W boolean mask (e.g. the union of several boxes, ``boxes_mask``) may be given instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A box's four numbers (a sequence or an array); where a region is taken, also an H×W bool mask.
Box = Sequence[float] | np.ndarray
#: Per-image scores or a curve's points: a sequence or a 1-D array.
Values = Sequence[float] | np.ndarray

#: Share of the map's pixels the ``mask`` explanation map keeps (Integrated Grad-CAM paper's
#: Table 1: the top 15%); ``top_label`` names it in tables and printouts.
MASK_TOP = 0.15
#: Steps of the deletion and insertion curves (s = 0..steps), unless asked otherwise.
DELETION_STEPS = 16


def top_label(top: float = MASK_TOP) -> str:
    """"top-15%" for ``top`` = 0.15: the mask explanation map's name."""
    return f"top-{100 * top:g}%"


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean H×W mask of ``box`` clipped to the grid."""
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((h, w), dtype=bool)
    mask[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    return mask


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Boolean H×W mask of the union of ``boxes``."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask |= box_mask(shape, box)
    return mask


def _region(shape: tuple[int, int], box: Box) -> np.ndarray:
    if isinstance(box, np.ndarray) and box.dtype == bool:
        if box.shape != tuple(shape):
            raise ValueError(f"region mask has shape {box.shape}, the map {tuple(shape)}")
        return box
    return box_mask(shape, box)


def pixel_energy(saliency: np.ndarray, box: Box) -> float:
    """Energy-based pointing game: Σ_B L / Σ L (nan for an all-zero map)."""
    total = float(saliency.sum())
    if total <= 0:
        return float("nan")
    return float(saliency[_region(saliency.shape, box)].sum()) / total


def region_scores(saliency: np.ndarray, box: Box,
                  thresholds: Sequence[float] = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1))
                  ) -> dict[str, list[float]]:
    """IoU, IoB and IoR of R = {L > t} against the box B, for each threshold t.

    IoU = |R∩B|/|R∪B|, IoB = |R∩B|/|B|, IoR = |R∩B|/|R| (nan when R is empty)."""
    b = _region(saliency.shape, box)
    nb = int(b.sum())
    out: dict[str, list[float]] = {"iou": [], "iob": [], "ior": []}
    for t in thresholds:
        r = saliency > t
        inter, union, nr = int((r & b).sum()), int((r | b).sum()), int(r.sum())
        out["iou"].append(inter / union if union else float("nan"))
        out["iob"].append(inter / nb if nb else float("nan"))
        out["ior"].append(inter / nr if nr else float("nan"))
    return out


def bbox_score(saliency: np.ndarray, box: Box) -> float:
    """Schulz et al. 2020: with n = |B|, the share of the n highest pixels inside B
    (ties broken by pixel order, so the count is always exactly n)."""
    b = _region(saliency.shape, box).reshape(-1)
    n = int(b.sum())
    if n == 0:
        return float("nan")
    top = np.argsort(-saliency.reshape(-1), kind="stable")[:n]
    return float(b[top].sum()) / n


def explanation_map(pixels: np.ndarray, saliency: np.ndarray, kind: str = "soft",
                    top: float = MASK_TOP) -> np.ndarray:
    """E in pixel space: ``soft`` = L ⊙ I per channel (RSI paper); ``mask`` = I on the top
    ``top`` share of pixels of L, black elsewhere (Integrated Grad-CAM paper's Table 1)."""
    img = pixels.astype(np.float64)
    if kind == "soft":
        return img * saliency[..., None]
    if kind != "mask":
        raise ValueError(f"unknown explanation map {kind!r}; use soft or mask")
    flat = saliency.reshape(-1)
    k = int(round(top * flat.size))
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return img * keep.reshape(saliency.shape)[..., None]


def average_drop(y: Values, o: Values) -> float:
    """(1/N) Σ max(0, Y_c − O_c) / Y_c, as a proportion (×100 for %)."""
    ya, oa = np.asarray(y, float), np.asarray(o, float)
    return float(np.mean(np.maximum(0.0, ya - oa) / ya))


def increase_in_confidence(y: Values, o: Values) -> float:
    """(1/N) Σ 1(Y_c < O_c)."""
    return float(np.mean(np.asarray(y, float) < np.asarray(o, float)))


#: IoU/IoB/IoR thresholds t of the papers' localisation metrics.
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))
DARK_EPS = tuple(10.0 ** -k for k in range(2, 13))


def dark_counts(raw_maps: Sequence[np.ndarray], eps: Sequence[float] = DARK_EPS
                ) -> dict[float, int]:
    """How many maps are dark at each ε (max L − min L < ε, §4.3.2)."""
    ranges = np.array([float(m.max() - m.min()) for m in raw_maps])
    return {float(e): int((ranges < e).sum()) for e in eps}


def deletion_insertion_orders(saliency: np.ndarray, steps: int) -> list[np.ndarray]:
    """Masks (True = pixel taken from the image) for RISE-style curves: step s keeps the
    ceil(s/steps · N) most salient pixels, s = 0..steps (ties by pixel order)."""
    flat = saliency.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    masks = []
    for s in range(steps + 1):
        k = int(np.ceil(s / steps * flat.size))
        m = np.zeros(flat.size, dtype=bool)
        m[order[:k]] = True
        masks.append(m.reshape(saliency.shape))
    return masks


def curve_auc(values: Values) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    v = np.asarray(values, float)
    return float(((v[1:] + v[:-1]) / 2).sum() / (len(v) - 1))


def deletion_insertion_images(pixels: np.ndarray, saliency: np.ndarray, steps: int,
                              deleted: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """RISE-style image sequences (s = 0..steps, float pixels): ``deletion[s]`` is the image
    with its ceil(s/steps · N) most salient pixels set to ``deleted``; ``insertion[s]`` is a
    ``deleted`` canvas with those pixels taken from the image."""
    img = pixels.astype(np.float64)
    masks = np.stack(deletion_insertion_orders(saliency, steps))[..., None]
    deletion = np.where(masks, deleted, img[None])
    insertion = np.where(masks, img[None], deleted)
    return deletion, insertion
