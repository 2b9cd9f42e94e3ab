"""How alike two saliency maps are, as Adebayo et al. 2018 ("Sanity Checks for Saliency Maps")
measure it, in NumPy (the runtime needs neither SciPy nor scikit-image; the tests hold these
equal to ``scipy.stats.spearmanr``, ``skimage.metrics.structural_similarity`` and
``skimage.feature.hog``):

- Spearman rank correlation of the two maps, with and without absolute values (ties get
  their average rank, as ``scipy.stats.rankdata``);
- SSIM (Wang et al. 2004) with scikit-image's defaults: a 7×7 uniform window, K1 = 0.01,
  K2 = 0.03, the sample covariance, the mean over the window positions that lie wholly
  inside the map; ``data_range`` 1, the range of a normalised map;
- the Pearson correlation of the maps' HOG features (scikit-image's ``hog`` defaults: 9
  orientations over 0..180°, cells of 8×8 pixels, blocks of 3×3 cells, L2-Hys).

A similarity of a constant map is undefined: NaN (as SciPy's).
"""

from __future__ import annotations

import numpy as np

SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03
HOG_ORIENTATIONS, HOG_CELL, HOG_BLOCK = 9, 8, 3
#: The names of the similarities ``similarities`` returns, in order.
NAMES = ("spearman_abs", "spearman", "ssim", "hog")


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened ``x``, ties given the mean of their ranks."""
    v = np.asarray(x, np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    starts = np.concatenate([[True], s[1:] != s[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(s)]]) - 1
    ranks = np.empty(len(v))
    ranks[order] = (first[group] + last[group]) / 2.0 + 1.0
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the flattened ``a`` and ``b``; NaN when either is constant."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray, absolute: bool = False) -> float:
    """Spearman rank correlation of two maps (of |a| and |b| with ``absolute``)."""
    if absolute:
        a, b = np.abs(a), np.abs(b)
    return pearson(rank_average(a), rank_average(b))


def _box_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean over every window of w samples per axis that lies wholly inside ``x`` (1-D or
    2-D): [n − w + 1] or [H − w + 1, W − w + 1]."""
    out = x
    for axis in range(x.ndim):
        c = np.cumsum(out, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        n = c.shape[axis]
        out = np.take(c, range(w, n), axis=axis) - np.take(c, range(0, n - w), axis=axis)
    return out / (w ** x.ndim)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity of two maps (or two 1-D signals), as scikit-image's
    ``structural_similarity`` with its defaults computes it."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = SSIM_WINDOW
    if min(x.shape) < w:
        raise ValueError(f"SSIM needs at least {w} samples per axis (got {x.shape})")
    cov = w ** x.ndim / (w ** x.ndim - 1.0)  # the sample covariance
    ux, uy = _box_mean(x, w), _box_mean(y, w)
    vx = cov * (_box_mean(x * x, w) - ux * ux)
    vy = cov * (_box_mean(y * y, w) - uy * uy)
    vxy = cov * (_box_mean(x * y, w) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def hog(image: np.ndarray) -> np.ndarray:
    """HOG features of a 2-D map, as scikit-image's ``hog`` with its defaults: centred
    gradients (0 on the border), each pixel's magnitude voting for the bin of its unsigned
    orientation in its cell, cell means, 3×3-cell blocks normalised by L2-Hys."""
    x = np.asarray(image, np.float64)
    g_row, g_col = np.zeros_like(x), np.zeros_like(x)
    g_row[1:-1, :] = x[2:, :] - x[:-2, :]
    g_col[:, 1:-1] = x[:, 2:] - x[:, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    c, nb = HOG_CELL, HOG_ORIENTATIONS
    rows, cols = x.shape[0] // c, x.shape[1] // c
    if rows < HOG_BLOCK or cols < HOG_BLOCK:
        raise ValueError(f"HOG needs maps of at least {HOG_BLOCK * c}x{HOG_BLOCK * c} pixels "
                         f"(got {x.shape})")
    width = 180.0 / nb
    bins = np.minimum((orientation // width).astype(int), nb - 1)
    votes = np.zeros((rows * c, cols * c, nb))
    np.put_along_axis(votes, bins[:rows * c, :cols * c, None],
                      magnitude[:rows * c, :cols * c, None], axis=2)
    hist = votes.reshape(rows, c, cols, c, nb).sum(axis=(1, 3)) / (c * c)
    b = HOG_BLOCK
    blocks = np.stack([hist[r:r + b, q:q + b] for r in range(rows - b + 1)
                       for q in range(cols - b + 1)])
    eps = 1e-5
    out = blocks / np.sqrt((blocks ** 2).sum(axis=(1, 2, 3), keepdims=True) + eps ** 2)
    out = np.minimum(out, 0.2)
    out = out / np.sqrt((out ** 2).sum(axis=(1, 2, 3), keepdims=True) + eps ** 2)
    return out.ravel()


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the two maps' HOG features."""
    return pearson(hog(a), hog(b))


def similarities(a: np.ndarray, b: np.ndarray, dark: bool = False) -> dict[str, float]:
    """Every similarity of NAMES between two normalised maps of the same size; all NaN when
    ``dark`` (either map is dark, range below ε: its normalised values rank rounding noise,
    so no similarity says anything about it)."""
    if dark:
        return dict.fromkeys(NAMES, float("nan"))
    return {"spearman_abs": spearman(a, b, absolute=True), "spearman": spearman(a, b),
            "ssim": ssim(a, b), "hog": hog_similarity(a, b)}
