"""The class target: one class of a classifier's scores [N, C] (pytorch-grad-cam's
ClassifierOutputTarget, ClassifierOutputSoftmaxTarget, ClassifierOutputReST).

The reading (``--score``): ``probability`` (softmax, the default), ``logit``, ``sigmoid`` (a
multi-label head, the default where the output ends in a Sigmoid: a softmax over sigmoid
outputs is no probability, and is refused) or ``rest`` (``logit + log softmax``).
"""

from __future__ import annotations

import numpy as np

from ..class_choice import resolve_target
from ..errors import OrtCamError
from ..grad import SCORE_MODES, Head
from .base import OutputInfo, Target, TargetKind, TargetOptions, finished


class ClassKind(TargetKind):
    """One class of class scores [N, C]: its probability, logit, sigmoid or ReST score."""

    name = "class"
    title = "a class of class scores [N, C]"
    scores = SCORE_MODES
    usage = "--target-kind class [--score probability|logit|sigmoid|rest] [--target CLASS]"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        shape = out.squeezed
        if len(shape) != 1:
            return f"it has {len(shape)} axes per image, not one score per class"
        if shape[0] == 1:
            return "it has one value per image: that is a binary classifier's logit"
        return None

    @classmethod
    def default_score(cls, out: OutputInfo) -> str:
        """sigmoid where the output ends in a Sigmoid (multi-label), else probability."""
        return "sigmoid" if out.final_op == "Sigmoid" else "probability"

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        return int(np.prod(out.shape))

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        score = opts.score or cls.default_score(out)
        if score == "probability" and out.final_op == "Sigmoid":
            raise OrtCamError(f"output {out.name!r} ends in a Sigmoid (a multi-label head): a "
                              "softmax over its outputs is no class probability; use --score "
                              "sigmoid (or logit)")
        return Head(score)

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        scores = s.reshape(-1)
        c = resolve_target(opts.target, scores, labels)
        w = np.zeros_like(scores)
        w[c] = 1.0
        return finished(cls.name, w.reshape(s.shape), s, index=c)
