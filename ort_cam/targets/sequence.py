"""The sequence target: per-step scores [N, T, V] (text recognisers read with CTC, a
captioner's head). The greedy decoding at x: ``k_t = argmax_v out[t, v]``, the steps kept
where ``k_t`` is not the blank (default index 0, as Paddle's and most CTC heads) and differs
from ``k_{t−1}``; target ``Σ_{t kept} out[t, k_t]`` (the output as given: probabilities where
the graph ends in a Softmax), or one chosen step (its decoded token, or ``--target``'s).
"Why did it read this word, this letter." No peer library offers it."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, OrtCamError
from ..grad import Head
from .base import OutputInfo, Target, TargetKind, TargetOptions, class_index, finished


def greedy_ctc(s: np.ndarray, blank: int) -> tuple[list[int], list[int]]:
    """(kept steps, their tokens) of the greedy CTC decoding of per-step scores [T, V]."""
    k = np.argmax(s, axis=1)
    steps = [t for t in range(len(k)) if k[t] != blank and (t == 0 or k[t] != k[t - 1])]
    return steps, [int(k[t]) for t in steps]


class SequenceKind(TargetKind):
    """The kept steps' scores of a greedy CTC decoding, or one step's."""

    name = "sequence"
    title = "the greedy CTC decoding's kept steps (or one step) of scores [N, T, V]"
    options = ("step", "blank")
    usage = "--target-kind sequence [--step T [--target TOKEN]] [--blank B]"

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        if len(out.shape) != 2 or out.shape[1] < 2:
            return f"it is not per-step scores [T, V] per image (it has {list(out.shape)})"
        return None

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        return out.shape[1]

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        return Head("output", flatten=False)

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        n_steps, vocab = s.shape
        if not 0 <= opts.blank < vocab:
            raise InputError(f"--blank {opts.blank} is out of range; the vocabulary has "
                             f"{vocab} tokens")
        w = np.zeros(s.shape, np.float32)
        if opts.step is not None:
            if not 0 <= opts.step < n_steps:
                raise InputError(f"--step {opts.step} is out of range; the output has "
                                 f"{n_steps} steps (0..{n_steps - 1})")
            token = (int(np.argmax(s[opts.step])) if opts.target in (None, "top1")
                     else class_index(opts.target, vocab, labels, "token"))
            steps, tokens = [opts.step], [token]
        else:
            if opts.target not in (None, "top1"):
                raise OrtCamError("--target picks a token at one step: give --step too")
            steps, tokens = greedy_ctc(s, opts.blank)
            if not steps:
                raise OrtCamError("the greedy decoding at this image is empty (every step is "
                                  "the blank or a repeat); pick one step with --step")
        w[steps, tokens] = 1.0
        return finished(cls.name, w, s, steps=tuple(steps), tokens=tuple(tokens),
                        index=tokens[0] if len(tokens) == 1 else None)
