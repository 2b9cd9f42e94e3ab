"""Baselines x0 for the path (METHODS.md "Notation")."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from .errors import InputError, OrtCamError
from .preprocess import ImageLike, Preprocess, load_image

BASELINES = ("black", "zeros", "blur", "noise")


def make_baseline(kind: ImageLike, pixels: np.ndarray, x: np.ndarray, pre: Preprocess, *,
                  blur_radius: float | None = None, seed: int = 0) -> np.ndarray:
    """x0 for an image whose resized pixels are ``pixels`` and model input ``x``.

    ``black`` (default): the all-zero pixel image pushed through the preprocessing, so after
    mean/std it is −mean/std, not 0. ``zeros``: 0 in model space. ``blur``: a Gaussian-blurred
    copy (radius default size/20). ``noise``: uniform 0..255 pixels from ``seed``. A path, PIL
    image or H×W×3 array: that image, resized like the input.
    """
    if isinstance(kind, str) and kind in BASELINES:
        if kind == "black":
            return pre.normalize(np.zeros_like(pixels))
        if kind == "zeros":
            return np.zeros_like(x)
        if kind == "blur":
            radius = blur_radius if blur_radius is not None else max(pixels.shape[:2]) / 20
            img = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius))
            return pre.normalize(np.asarray(img))
        rng = np.random.default_rng(seed)
        return pre.normalize(rng.integers(0, 256, size=pixels.shape).astype(np.uint8))
    if isinstance(kind, str) and not any(c in kind for c in "/\\.") :
        raise OrtCamError(f"unknown baseline {kind!r}; use {', '.join(BASELINES)} or an image path")
    try:
        return pre.normalize(pre.resize_image(load_image(kind)))
    except InputError as exc:
        raise InputError(f"baseline: {exc}") from exc
