"""The any-scalar target: ``Σ W ⊙ out``, ``W`` of the output's shape per image (a .npy file,
an array in the API), for every output the other kinds do not cover."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..grad import Head
from .base import OutputInfo, Target, TargetKind, TargetOptions, finished, finite


class WeightsKind(TargetKind):
    """A weighted sum of the output, with weights of its shape."""

    name = "any"
    title = "a weighted sum Σ W ⊙ output, W of the output's shape"
    options = ("weights",)
    usage = "--target-kind any --target-weights FILE.npy"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        return None

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        return Head("output", flatten=False)

    @classmethod
    def fixed(cls, out: OutputInfo, opts: TargetOptions) -> bool:
        return True  # W is given

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        if opts.weights is None:
            raise InputError("an 'any' target needs its weights: --target-weights FILE.npy "
                             f"of the output's shape {list(s.shape)} (weights= in the API)")
        w = np.asarray(opts.weights)
        if w.shape != s.shape and w.shape == (1, *s.shape):
            w = w[0]
        if w.shape != s.shape:
            raise InputError(f"the target weights have shape {list(w.shape)}; output "
                             f"{out.name!r} has {list(s.shape)} per image")
        w = finite(w, "the target weights")
        if not w.any():
            raise InputError("the target weights are all zeros; the target would be 0")
        return finished(cls.name, w, s)
