"""The segment target: a semantic segmenter's map [N, C, H, W] (or [N, H, W, C] where its
Softmax says so), or a one-channel probability map [N, 1, H, W] (text detectors, saliency,
binary masks): ``Σ_hw M[h, w] · s[c, h, w]`` (pytorch-grad-cam's SemanticSegmentationTarget).

- the class c: given, else the class with the largest argmax region at x (class 0 left out
  when its label says background and another class has pixels);
- the mask M: given ([H, W] on the output's grid), a box on that grid, else the pixels whose
  argmax is c at x; for one channel, ``p > threshold`` (p the output where it ends in a
  Sigmoid, else its sigmoid);
- the score s: the logits (pgc's, the default where the output ends in no Softmax) or the
  softmax over C per pixel (the default where it ends in one).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, OrtCamError
from ..grad import Head
from ..grad.spec import map_seeded
from .base import (
    OutputInfo,
    Target,
    TargetKind,
    TargetOptions,
    class_index,
    finished,
    finite,
)

BACKGROUND = ("background", "__background__", "bg", "_background_")


def class_axis(out: OutputInfo) -> int:
    """The per-image class axis of a map: the last where the map's Softmax runs over it
    (NHWC), else the first."""
    last = len(out.shape) - 1
    return last if len(out.shape) == 3 and out.softmax_axis == last else 0


def one_channel(out: OutputInfo) -> bool:
    return len(out.shape) == 2 or out.shape[class_axis(out)] == 1


def grid(out: OutputInfo) -> tuple[int, int]:
    """(H, W) of the map."""
    if len(out.shape) == 2:
        return out.shape[0], out.shape[1]
    axis = class_axis(out)
    h, w = (d for i, d in enumerate(out.shape) if i != axis)
    return h, w


class SegmentKind(TargetKind):
    """A class's score summed over a mask of a segmentation map."""

    name = "segment"
    title = "a class's score over a mask of a map [N, C, H, W] (or [N, 1, H, W] probabilities)"
    scores = ("logit", "probability")
    options = ("mask", "box", "threshold")
    usage = "--target-kind segment [--target CLASS] [--mask FILE | --box X0,Y0,X1,Y1]"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        if len(out.shape) not in (2, 3):
            return f"it has {len(out.shape)} axes per image, not a map [C, H, W]"
        if min(grid(out)) < 2:
            return "its grid is not two-dimensional"
        return None

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        return None if one_channel(out) else out.shape[class_axis(out)]

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        if one_channel(out):
            if opts.score is not None:
                raise OrtCamError("--score does not apply to a one-channel map: its target "
                                  "is the map as given over the mask p > threshold")
            return Head("output", flatten=False)
        default = "probability" if out.final_op in ("Softmax", "LogSoftmax") else "logit"
        return Head(opts.score or default, axis=class_axis(out) + 1, flatten=False)

    @classmethod
    def fixed(cls, out: OutputInfo, opts: TargetOptions) -> bool:
        """A given mask (or box) with a given class (a one-channel map has none to give)."""
        given_mask = opts.mask is not None or opts.box is not None
        return given_mask and (one_channel(out) or opts.target not in (None, "top1"))

    @classmethod
    def seeded(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions, target: Target,
               built: TargetOptions, on_demand: bool = False) -> bool:
        """A model that computes its map on demand seeds a zero row with the class of the
        largest argmax region (background not left out) over its argmax mask
        (``grad.heads._map_seed``): ``target`` where it has that W, i.e. where its mask is
        the argmax mask (none given) of that class (S finite: ArgMax and np.argmax agree on
        ties, not on NaN)."""
        if not on_demand or one_channel(out) or opts.mask is not None or opts.box is not None:
            return False
        if not map_seeded(cls.head(out, built), len(out.shape)) or not np.isfinite(s).all():
            return False
        counts = target.found.get("region_counts")  # (``choose`` worked them out from s)
        return counts is not None and target.index == int(np.argmax(counts))

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        if one_channel(out):
            return _one_channel(s, out, opts)
        axis = class_axis(out)
        sc = np.moveaxis(s, axis, 0)
        top = np.argmax(sc, axis=0)
        counts = np.bincount(top.reshape(-1), minlength=len(sc))
        if opts.target in (None, "top1"):
            c = largest_region(counts, labels)
        else:
            c = class_index(opts.target, len(sc), labels)
        mask = given_mask(opts, top.shape)
        if mask is None:
            mask = top == c
            if not mask.any():
                raise OrtCamError(f"no pixel's argmax is class {c} at this image, so its "
                                  "default mask is empty; give a mask or a box, or another class")
        w = np.zeros(sc.shape, np.float32)
        w[c] = mask
        target = finished(cls.name, np.moveaxis(w, 0, axis), s, index=c, mask=mask != 0)
        target.found["region_counts"] = counts  # (``seeded`` reads them)
        return target


def largest_region(counts: np.ndarray, labels: list[str] | None) -> int:
    """The class with the most argmax pixels (``counts`` per class); class 0 left out when
    its label says background and another class has pixels."""
    counts = counts.copy()
    if labels and labels[0].strip().lower() in BACKGROUND and counts[1:].any():
        counts[0] = -1
    return int(np.argmax(counts))


def given_mask(opts: TargetOptions, hw: tuple[int, int]) -> np.ndarray | None:
    """The mask the user gave ([H, W], finite), or their box's, on the output grid ``hw``."""
    if opts.mask is not None and opts.box is not None:
        raise OrtCamError("give a mask or a box, not both")
    h, w = hw
    if opts.mask is not None:
        mask = np.asarray(opts.mask)
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != (h, w):
            raise InputError(f"the mask is {'x'.join(map(str, mask.shape))}; the output's grid "
                             f"is {h}x{w}: give a mask of that size (or a box)")
        mask = finite(mask, "the mask").astype(np.float32)
        if not mask.any():
            raise InputError("the mask is empty (all zeros); mark the pixels to explain")
        return mask
    if opts.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in opts.box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise InputError(f"the box {list(opts.box)} is not inside the output's {h}x{w} "
                             "grid (x0 < x1 <= W, y0 < y1 <= H)")
        mask = np.zeros((h, w), np.float32)
        mask[y0:y1, x0:x1] = 1.0
        return mask
    return None


def _one_channel(s: np.ndarray, out: OutputInfo, opts: TargetOptions) -> Target:
    if opts.target not in (None, "top1", 0, "0"):
        raise OrtCamError("a one-channel map has no class to pick; give a mask or a box")
    plane = s.reshape(grid(out))
    mask = given_mask(opts, grid(out))
    if mask is None:
        p = plane if out.final_op == "Sigmoid" else 1.0 / (1.0 + np.exp(-plane))
        mask = (p > opts.threshold).astype(np.float32)
        if not mask.any():
            raise OrtCamError(f"no pixel of the map has p > {opts.threshold} at this image; "
                              "lower --threshold, or give a mask or a box")
    return finished("segment", mask.reshape(s.shape), s, index=0, mask=mask != 0)
