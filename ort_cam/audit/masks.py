"""Object masks of audit datasets, and how they move onto a model's grids.

- COCO segmentations (``CocoMask``): polygons (lists of x, y in pixel edges) or RLE
  (``{"size": [h, w], "counts": ...}``, compressed string or uncompressed list), decoded by
  pycocotools (the well-kept COCO reader; imported on first use, with a one-line error where
  it is missing: ``pip install 'ort_cam[coco]'``);
- VOC segmentation PNGs (``PngMask``): palette (or grey) images whose pixel values are class
  indices (SegmentationClass) or object ids (SegmentationObject); 0 is the background and
  255 the void border, neither belongs to an object.

A mask is an H×W boolean array on the original image's pixels. ``to_grid`` moves it onto a
grid that spans the model's input (the input itself, or a segmenter's output grid) the way
the preprocessing moves the pixels: each grid cell takes the mask's value at the original
pixel under its centre (nearest neighbour), False outside the image (a crop's or a
letterbox's border).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import OrtCamError
from ..preprocess import Preprocess

#: VOC segmentation PNGs: the values that are no object.
BACKGROUND, VOID = 0, 255


def coco_masks() -> Any:
    """``pycocotools.mask``, or a one-line error that says how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise OrtCamError("COCO masks (polygons, RLE) are decoded by pycocotools, which is not "
                          "installed: pip install 'ort_cam[coco]'") from None
    return mask


@dataclass(frozen=True, eq=False)
class CocoMask:
    """A COCO annotation's ``segmentation`` for an image of ``height`` × ``width`` pixels."""

    segmentation: Any = field(repr=False)
    height: int
    width: int

    def rle(self) -> Any:
        """The mask as one RLE (polygons merged), as pycocotools takes it."""
        mu = coco_masks()
        seg, h, w = self.segmentation, self.height, self.width
        if isinstance(seg, list):
            return mu.merge(mu.frPyObjects(seg, h, w))
        if isinstance(seg["counts"], list):
            return mu.frPyObjects(seg, h, w)
        return seg

    def decode(self) -> np.ndarray:
        """The H×W boolean mask."""
        return np.asarray(coco_masks().decode(self.rle()), dtype=bool)

    def area(self) -> int:
        """How many pixels the mask covers (without decoding it)."""
        return int(coco_masks().area(self.rle()))

    def describe(self) -> str:
        return json.dumps(self.segmentation, sort_keys=True)


@dataclass(frozen=True)
class PngMask:
    """The pixels of value ``value`` in the segmentation PNG ``path``."""

    path: Path
    value: int

    def decode(self) -> np.ndarray:
        return read_png(self.path) == self.value

    def area(self) -> int:
        return int(np.count_nonzero(self.decode()))

    def describe(self) -> str:
        return f"{self.path.name}:{self.value}"


@dataclass(frozen=True, eq=False)
class ArrayMask:
    """A mask held as its bits (a PNG's mask read by the driver of a Ray audit, for workers
    that cannot read the file)."""

    bits: bytes = field(repr=False)
    shape: tuple[int, int]

    @classmethod
    def of(cls, mask: np.ndarray) -> ArrayMask:
        return cls(np.packbits(mask.astype(bool).reshape(-1)).tobytes(),
                   (int(mask.shape[0]), int(mask.shape[1])))

    def decode(self) -> np.ndarray:
        h, w = self.shape
        flat = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=h * w)
        return flat.reshape(h, w).astype(bool)

    def area(self) -> int:
        return int(np.count_nonzero(self.decode()))

    def describe(self) -> str:
        import hashlib

        return hashlib.sha256(self.bits).hexdigest()


#: Any kind of mask an object may have.
Mask = CocoMask | PngMask | ArrayMask


def read_png(path: Path) -> np.ndarray:
    """A segmentation PNG's values (H×W, uint8): a palette image's indices (VOC's), or a
    grey image's values; anything else is refused in one line."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise OrtCamError(f"{path} is a {im.mode} image; segmentation PNGs are palette "
                                  "(P) or grey (L) images of class or object indices")
            return np.asarray(im)
    except OSError as exc:
        raise OrtCamError(f"cannot read segmentation PNG {path}: {exc}") from None


def to_grid(mask: np.ndarray, pre: Preprocess, grid: tuple[int, int]) -> np.ndarray:
    """``mask`` (the original image's H×W) on a ``grid`` (h, w) that spans the model's input
    as ``pre`` resizes, crops or letterboxes the image: each cell takes the mask at the
    original pixel under its centre, False where that lies outside the image."""
    h0, w0 = mask.shape
    sx, sy, dx, dy = pre.geometry((w0, h0))
    in_h, in_w = pre.size
    gh, gw = grid
    xs = ((np.arange(gw) + 0.5) * in_w / gw - dx) / sx
    ys = ((np.arange(gh) + 0.5) * in_h / gh - dy) / sy
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    col_ok, row_ok = (cols >= 0) & (cols < w0), (rows >= 0) & (rows < h0)
    out = mask[np.clip(rows, 0, h0 - 1)][:, np.clip(cols, 0, w0 - 1)]
    return out & row_ok[:, None] & col_ok[None, :]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1; x1/y1 exclusive) around a non-empty mask's pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
