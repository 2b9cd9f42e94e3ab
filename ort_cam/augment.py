"""``aug_smooth``: test-time augmentation of an explanation, as pytorch-grad-cam's
(``ttach``: horizontal flip × the input scaled by 0.9, 1, 1.1; six inputs).

Each augmentation T is linear in model space, so the explanation of T(x) starts from T(x0):
the path is T of x's path. Every augmented explanation is for the class chosen on x itself.
Its normalised input-resolution map is flipped back, the six are averaged, and the mean is
normalised again (pytorch-grad-cam returns the mean as it is; it differs by that final
scaling). The raw layer-resolution maps stay those of x itself: a flip does not map a
layer's grid onto itself exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .maps import normalize
from .result import Explanation


@dataclass(frozen=True)
class Augmentation:
    flip: bool
    factor: float

    def apply(self, x: np.ndarray, width_axis: int) -> np.ndarray:
        out = np.flip(x, axis=width_axis) if self.flip else x
        return np.ascontiguousarray((out.astype(np.float64) * self.factor).astype(x.dtype))

    def undo(self, saliency: np.ndarray) -> np.ndarray:
        """An H×W map of the augmented input, back on x's grid."""
        return saliency[:, ::-1] if self.flip else saliency


#: ttach's order: the flip outermost; the identity (no flip, factor 1) is the second.
AUGMENTATIONS = tuple(Augmentation(flip, factor) for flip in (False, True)
                      for factor in (0.9, 1.0, 1.1))
IDENTITY = AUGMENTATIONS[1]


def combine(results: Sequence[Explanation], eps: float) -> Explanation:
    """x's explanation (``results`` in ``AUGMENTATIONS`` order) with every method's ``map``
    replaced by the normalised mean of the augmented maps, flipped back."""
    base = results[AUGMENTATIONS.index(IDENTITY)]
    for name, res in base.methods.items():
        mean = np.mean([aug.undo(r[name].map) for aug, r in zip(AUGMENTATIONS, results)],
                       axis=0)
        res.map = normalize(mean, eps)
    for key in ("run", "reduce", "total"):
        if key in base.timings:
            base.timings[key] = sum(r.timings.get(key, 0.0) for r in results)
    return base
