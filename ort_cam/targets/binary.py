"""The binary target: a one-logit classifier ([N] or [N, 1]), whose softmax is constant (1:
every map dark). Its head gives ``[−z, z]`` (``z`` the logit, before a final Sigmoid), so
class 1 is ``+z`` and class 0 is ``−z`` (pytorch-grad-cam's BinaryClassifierOutputTarget),
and the default class is the predicted one (the sign of z)."""

from __future__ import annotations

import numpy as np

from ..grad import Head
from .base import OutputInfo, Target, TargetKind, TargetOptions, class_index, finished


class BinaryKind(TargetKind):
    """±logit of a one-logit classifier: +z for class 1, −z for class 0."""

    name = "binary"
    title = "±logit of a one-logit classifier [N] or [N, 1]"
    usage = "--target-kind binary [--target 0|1]"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        if int(np.prod(out.shape, dtype=np.int64)) != 1:
            return f"it has {int(np.prod(out.shape))} values per image, not one logit"
        return None

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        return 2

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        return Head("binary")

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        spec = opts.target
        named = labels if labels is not None and len(labels) == 2 else None
        c = int(np.argmax(s)) if spec in (None, "top1") else class_index(spec, 2, named)
        w = np.zeros(2, np.float32)
        w[c] = 1.0
        return finished(cls.name, w, s, index=c)
