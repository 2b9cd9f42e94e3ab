"""The embedding target: an image encoder's output [N, D] (CLIP-style encoders, re-
identification, a backbone's pooled features): ``cos(out, v)``, ``v`` a concept vector (a file,
or another image's embedding) (pytorch-grad-cam's SimilarityToConceptTarget, from its
embeddings tutorial). The head normalises the output (``S = out / ‖out‖``) and W is the unit
concept vector, so ``Σ W ⊙ S`` is the cosine."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..grad import Head
from .base import OutputInfo, Target, TargetKind, TargetOptions, finished, finite


class EmbeddingKind(TargetKind):
    """The cosine similarity of the embedding to a concept vector."""

    name = "embedding"
    title = "cosine similarity of an embedding [N, D] to a concept vector"
    options = ("concept",)
    usage = "--target-kind embedding --concept FILE.npy"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        if len(out.squeezed) != 1 or out.squeezed[0] < 2:
            return f"it is not one vector [D] per image (it has {list(out.shape)})"
        return None

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        return Head("normalize")

    @classmethod
    def fixed(cls, out: OutputInfo, opts: TargetOptions) -> bool:
        return True  # W is the unit concept vector

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        d = s.size
        if opts.concept is None:
            raise InputError("an embedding target needs a concept vector: --concept FILE.npy "
                             "(concept= or concept_image= in the API)")
        v = finite(np.asarray(opts.concept).reshape(-1), "the concept vector")
        if v.size != d:
            raise InputError(f"the concept vector has {v.size} values; output {out.name!r} "
                             f"gives {d} per image: give a vector of that length")
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            raise InputError("the concept vector is all zeros; its cosine is undefined")
        return finished(cls.name, (v / norm).reshape(s.shape), s)
