"""What the fused model differentiates, on top of a model output: ``S = transform(output)``,
and the scalar ``y = Σ W ⊙ S`` per image, ``W`` an input of S's shape (``target_weights``).

A target that is linear in a transformed output (a class score, ±logit, a masked sum of a
segmentation map, chosen anchors of a detection head, the cosine to a concept vector, any
weighted sum) is one ``W`` on one of these transforms, so one gradient graph serves every
target of its kind: only ``W`` changes (``../shared/METHODS.md``, "Targets").

The transforms (``Head.transform``):

- ``probability``: softmax over the class axis (the model's own Softmax where it ends in one;
  refused where it ends in a Sigmoid: a softmax over sigmoid outputs is no probability);
- ``logit``: the input of the model's final Softmax, LogSoftmax or Sigmoid, else the output;
- ``sigmoid``: the model's own final Sigmoid, else the sigmoid of the logits (multi-label);
- ``rest``: ``logit + log softmax(logit)`` (pytorch-grad-cam's ClassifierOutputReST);
- ``binary``: ``[−z, z]`` for a one-logit classifier (``z`` the logit): class 1 is ``+z``,
  class 0 ``−z`` (BinaryClassifierOutputTarget), so the top-1 class is the predicted one;
- ``output``: the output as it is (segmentation probability maps, detection heads without
  objectness, sequence scores, any weighted sum);
- ``normalize``: ``out / max(‖out‖, 1e-8)`` over the feature axis: with ``W`` the unit concept
  vector, ``Σ W ⊙ S`` is the cosine similarity (SimilarityToConceptTarget); at an output of
  0 (a black baseline through a network without biases) S is 0 and its gradient that of
  ``out / 1e-8``, finite;
- ``objectness``: a detection head with objectness ``[N, 5+C, A]`` (``axis`` 1) or
  ``[N, A, 5+C]`` (``axis`` 2): the four box rows kept, the objectness row dropped and each
  class row multiplied by it, ``[N, 4+C, A]``: a box's class score is ``obj · cls``.

The class readings (probability, logit, sigmoid, rest, binary) give ``[N, C]``, the output
flattened past the batch axis; with ``Head.flatten`` False (segmentation maps) probability,
logit and sigmoid keep the output's shape and work over ``axis``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OrtCamError
from .spec import SCORE_MODES as SCORE_MODES  # (its home is spec; named here as before)
from .spec import TRANSFORMS as TRANSFORMS
from .spec import Head
from .table import VjpContext

#: The smallest norm ``normalize`` divides by (torch's CosineSimilarity eps).
NORM_EPS = 1e-8
_PASS_THROUGH = ("Identity", "Flatten", "Reshape", "Squeeze")
_FINAL = ("Softmax", "LogSoftmax", "Sigmoid")


def final_op(out: gs.Tensor, ops: tuple[str, ...] = _FINAL) -> gs.Node | None:
    """The last node of type ``ops`` before ``out``, through shape-only ops; else None."""
    t = out
    while t.inputs:
        node = t.inputs[0]
        if node.op in ops:
            return node
        if node.op not in _PASS_THROUGH:
            return None
        t = node.inputs[0]
    return None


def _logits(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    """The input of the output's final Softmax/LogSoftmax/Sigmoid, else the output. A map must
    keep its shape: logits behind a reshape are refused there."""
    node = final_op(out)
    if node is None:
        return out
    logits = node.inputs[0]
    if not head.flatten and ctx.shape(logits) != ctx.shape(out):
        raise OrtCamError(f"the logits of output {out.name!r} come before a reshape "
                          f"(their shape {list(ctx.shape(logits)[1:])}, the output's "
                          f"{list(ctx.shape(out)[1:])}); use --score probability")
    return logits


def _flat(ctx: VjpContext, t: gs.Tensor, head: Head) -> gs.Tensor:
    if head.flatten and ctx.rank(t) != 2:
        return ctx.b.op("Flatten", t, axis=1)
    return t


def softmax_axis(node: gs.Node, ctx: VjpContext) -> int:
    """The (non-negative) axis of a Softmax/LogSoftmax node (opset >= 13: default -1)."""
    return int(node.attrs.get("axis", -1)) % ctx.rank(node.inputs[0])


def _probability(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    node = final_op(out)
    if node is not None and node.op == "Sigmoid":
        raise OrtCamError(f"output {out.name!r} ends in a Sigmoid (multi-label or binary "
                          "scores): a softmax over them is no class probability; use --score "
                          "sigmoid (or logit)")
    b = ctx.b
    if node is not None and (head.flatten or softmax_axis(node, ctx) == head.axis % ctx.rank(out)):
        base = out if node.op == "Softmax" else b.op("Exp", out)
        return _flat(ctx, base, head)
    base = _flat(ctx, _logits(ctx, out, head), head)
    return b.op("Softmax", base, axis=-1 if head.flatten else head.axis)


def _sigmoid(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    node = final_op(out)
    if node is not None and node.op == "Sigmoid":
        return _flat(ctx, out, head)
    return ctx.b.op("Sigmoid", _flat(ctx, _logits(ctx, out, head), head))


def _rest(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    logits = _flat(ctx, _logits(ctx, out, head), head)
    return ctx.b.op("Add", logits, ctx.b.op("LogSoftmax", logits, axis=-1 if head.flatten
                                             else head.axis))


def _binary(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    z = _logits(ctx, out, head)
    shape = ctx.shape(z)
    if int(np.prod(shape[1:], dtype=np.int64)) != 1:
        raise OrtCamError(f"output {out.name!r} has {list(shape[1:])} values per image; a "
                          "binary target takes one logit per image ([N] or [N, 1])")
    b = ctx.b
    z = b.unsqueeze(z, [1]) if len(shape) == 1 else _flat(ctx, z, Head())
    return b.op("Concat", b.op("Neg", z), z, axis=1)


def _normalize(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    """``out / max(‖out‖, eps)``, the norm taken as ``sqrt(max(Σ out², eps²))``: the same
    value and gradient, finite where the output is 0 (the square root's slope at 0 is
    infinite, and the Max that picks eps would pass it 0: 0 · inf is NaN)."""
    b = ctx.b
    x = _flat(ctx, out, Head())
    squares = b.reduce("ReduceSum", b.op("Mul", x, x), [1])
    norm = b.op("Sqrt", b.op("Max", squares, ctx.scalar(NORM_EPS**2, x)))
    return b.op("Div", x, norm)


def _objectness(ctx: VjpContext, out: gs.Tensor, head: Head) -> gs.Tensor:
    shape = ctx.shape(out)
    if len(shape) != 3 or head.axis not in (1, 2) or shape[head.axis] < 6:
        raise OrtCamError(f"output {out.name!r} {['N', *shape[1:]]} is no detection head with "
                          "objectness [N, 5+C, A] or [N, A, 5+C]")
    b, axis, n = ctx.b, head.axis, shape[head.axis]

    def part(lo: int, hi: int) -> gs.Tensor:
        return b.op("Slice", out, b.ints([lo]), b.ints([hi]), b.ints([axis]))

    return b.op("Concat", part(0, 4), b.op("Mul", part(4, 5), part(5, n)), axis=axis)


_ATTACH = {
    "probability": _probability, "sigmoid": _sigmoid, "rest": _rest, "binary": _binary,
    "normalize": _normalize, "objectness": _objectness,
    "logit": lambda ctx, out, head: _flat(ctx, _logits(ctx, out, head), head),
    "output": lambda ctx, out, head: _flat(ctx, out, head) if head.flatten else out,
}


def attach_target(graph: gs.Graph, ctx: VjpContext, head: Head, output: str) -> gs.Tensor:
    """S = ``head.transform`` of ``output``, appended to ``graph`` through ``ctx.b``."""
    return _ATTACH[head.transform](ctx, graph.tensors()[output], head)
