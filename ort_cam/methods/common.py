"""What the methods added after the three share: the channel reduction (a plain sum, or the
first principal component with ``eigen_smooth``) and the sign rule for principal components.

Every map is channels-first, ``[K, h, w]`` in, ``h×w`` out, float64.
"""

from __future__ import annotations

import numpy as np

from .base import MethodOptions


def first_component(arr: np.ndarray) -> np.ndarray:
    """Projection of the Z = h·w rows of ``arr`` ([K, h, w] as a Z×K matrix, each channel
    centred over space) on its first right singular vector: the h×w map σ₁u₁.

    An eigenvector's sign is arbitrary (LAPACK's choice differs between builds), so it is
    fixed here: the map is oriented to correlate non-negatively with Σ_k arr[k], the map the
    plain channel sum would give. NaNs are read as 0, as pytorch-grad-cam does.
    """
    k = arr.shape[0]
    x = np.nan_to_num(arr.reshape(k, -1).T)  # Z×K
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[0]
    return orient(proj, np.nan_to_num(arr).sum(axis=0).ravel()).reshape(arr.shape[1:])


def orient(proj: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``proj`` or ``−proj``, whichever has a non-negative inner product with ``reference``
    (the centred versions of both: the sign of a component, not its offset)."""
    r = reference - reference.mean()
    return -proj if float(np.dot(proj - proj.mean(), r)) < 0 else proj


def channel_map(weighted: np.ndarray, options: MethodOptions) -> np.ndarray:
    """ReLU(Σ_k weighted[k]); with ``eigen_smooth``, ReLU of its first principal component
    (``first_component``) instead of the sum."""
    if options.eigen_smooth:
        return np.maximum(first_component(weighted), 0.0)
    return np.maximum(weighted.sum(axis=0), 0.0)


def weights_map(weights: np.ndarray, a: np.ndarray, options: MethodOptions) -> np.ndarray:
    """ReLU(Σ_k w_k A[k]) for channel weights [K] and A [K, h, w] (``channel_map`` of w·A)."""
    if options.eigen_smooth:
        return channel_map(weights[:, None, None] * a, options)
    return np.maximum(np.tensordot(weights, a, axes=(0, 0)), 0.0)


def spatial_sum(a: np.ndarray) -> np.ndarray:
    """Σ_ij over the grid, per channel: [K, h, w] -> [K]."""
    return a.sum(axis=(1, 2))
