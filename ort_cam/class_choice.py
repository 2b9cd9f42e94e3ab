"""Which class to explain: a class index, a label name, the top-1 class or the K-th ranked one,
chosen from the scores of x."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import OrtCamError


def resolve_target(spec, scores: np.ndarray, labels: Sequence[str] | None) -> int:
    """Class index for ``spec``: None/"top1" (default), an index, "top:K" (K-th ranked, 1-based)
    or a label name."""
    n = scores.shape[-1]
    if spec is None or spec == "top1":
        return int(np.argmax(scores))
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
        idx = int(spec)
        if not 0 <= idx < n:
            raise OrtCamError(f"target {idx} is out of range; the model has {n} classes")
        return idx
    if isinstance(spec, str) and spec.startswith("top:"):
        k = spec[4:]
        if not k.isdigit() or not 1 <= int(k) <= n:
            raise OrtCamError(f"bad target {spec!r}; use top:K with 1 <= K <= {n}")
        return int(np.argsort(-scores, kind="stable")[int(k) - 1])
    if isinstance(spec, str) and labels:
        lowered = [lab.lower() for lab in labels]
        if spec.lower() in lowered:
            return lowered.index(spec.lower())
        import difflib

        close = difflib.get_close_matches(spec, labels, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise OrtCamError(f"unknown label {spec!r}{hint}")
    raise OrtCamError(f"bad target {spec!r}; use top1, a class index, top:K or a label name"
                      + ("" if labels else " (with a labels file)"))


def fixed_target(spec, n_classes: int, labels: Sequence[str] | None) -> int | None:
    """The class of ``spec`` when it does not depend on the scores (an index or a label), else
    None (top-1 or top:K, chosen from the scores of x)."""
    if spec is None or (isinstance(spec, str) and (spec == "top1" or spec.startswith("top:"))):
        return None
    return resolve_target(spec, np.zeros(n_classes), labels)
