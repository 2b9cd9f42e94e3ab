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

A detection head with ``Head.iou`` (``output`` or ``objectness``, R rows of (cx, cy, w, h)
boxes and scores) gets ``IOU_ROWS`` more rows: the IoU of every anchor's box with a given
box b (x0, y0, x1, y1; torchvision's ``box_iou``), then four rows of zeros. b is read from
``target_weights`` at those four rows of anchor 0 (they weigh zeros, so they add nothing to
Σ W ⊙ S): W with 1 at (R, a) adds IoU(box_a, b) to anchor a's score, differentiated through
the box rows (pytorch-grad-cam's FasterRCNNBoxScoreTarget adds IoU and score).

The class readings (probability, logit, sigmoid, rest, binary) give ``[N, C]``, the output
flattened past the batch axis; with ``Head.flatten`` False (segmentation maps) probability,
logit and sigmoid keep the output's shape and work over ``axis``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OrtCamError
from .spec import IOU_ROWS, Head
from .spec import SCORE_MODES as SCORE_MODES  # (its home is spec; named here as before)
from .spec import TRANSFORMS as TRANSFORMS
from .table import VjpContext

#: The smallest norm ``normalize`` divides by (torch's CosineSimilarity eps).
NORM_EPS = 1e-8
#: The least union the IoU of a detection head with ``Head.iou`` divides by (boxes of no area).
IOU_EPS = 1e-12
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


def attach_target(graph: gs.Graph, ctx: VjpContext, head: Head, output: str,
                  weights: gs.Tensor | None = None) -> gs.Tensor:
    """S = ``head.transform`` of ``output``, appended to ``graph`` through ``ctx.b``; with
    ``head.iou``, the IoU rows, whose box is read from ``weights`` (the target weights input,
    typed here)."""
    s = _ATTACH[head.transform](ctx, graph.tensors()[output], head)
    if head.boxes:
        s, head = _with_boxes(ctx, s, graph.tensors().get(head.boxes), head), Head(
            "output", axis=1, flatten=False, iou=head.iou)
    if not head.iou:
        return s
    if weights is None or head.transform not in ("output", "objectness"):
        raise OrtCamError("the IoU term applies to a detection head read as output or "
                          "objectness, with its target weights")
    return _box_iou(ctx, s, head, weights)


def _with_boxes(ctx: VjpContext, scores: gs.Tensor, boxes: gs.Tensor | None, head: Head
                ) -> gs.Tensor:
    """[N, 4+C, A]: the box output's (cx, cy, w, h) rows, then the scores' class rows."""
    b, shape = ctx.b, ctx.shape(scores)
    if boxes is None or len(shape) != 3 or head.axis not in (1, 2):
        raise OrtCamError(f"no box output {head.boxes!r} beside scores {scores.name!r} "
                          f"{['N', *shape[1:]]} [N, A, C] or [N, C, A]")
    cls = scores if head.axis == 1 else b.op("Transpose", scores, perm=[0, 2, 1])
    n_anchors, bshape = ctx.shape(cls)[2], ctx.shape(boxes)
    if tuple(bshape[1:]) == (4, n_anchors):
        rows = boxes
    elif tuple(bshape[1:]) == (n_anchors, 4):
        rows = b.op("Transpose", boxes, perm=[0, 2, 1])
    else:
        raise OrtCamError(f"box output {head.boxes!r} is {['N', *bshape[1:]]}; the scores have "
                          f"{n_anchors} anchors: give boxes [N, {n_anchors}, 4]")
    if head.box_format == "xyxy":
        def row(i: int) -> gs.Tensor:
            return b.op("Slice", rows, b.ints([i]), b.ints([i + 1]), b.ints([1]))
        two = ctx.scalar(2.0, rows)
        centre = [b.op("Div", b.op("Add", row(i), row(i + 2)), two) for i in (0, 1)]
        size = [b.op("Sub", row(i + 2), row(i)) for i in (0, 1)]
        rows = b.op("Concat", *centre, *size, axis=1)
    return b.op("Concat", rows, cls, axis=1)


def _box_iou(ctx: VjpContext, s: gs.Tensor, head: Head, weights: gs.Tensor) -> gs.Tensor:
    """S with the IoU row and four zero rows appended (see the module docstring)."""
    b, shape = ctx.b, ctx.shape(s)
    if len(shape) != 3 or head.axis not in (1, 2) or shape[head.axis] < 5:
        raise OrtCamError(f"output {s.name!r} {['N', *shape[1:]]} is no detection head "
                          "[N, 4+C, A] or [N, A, 4+C] for an IoU term")
    full = list(shape)
    full[head.axis] += IOU_ROWS
    b.declare(weights, ctx.dtype(s), full)
    flip = head.axis == 2
    rows = b.op("Transpose", s, perm=[0, 2, 1]) if flip else s  # [N, R, A]
    w = b.op("Transpose", weights, perm=[0, 2, 1]) if flip else weights
    r = shape[head.axis]

    def part(t: gs.Tensor, lo: int, hi: int, first: int | None = None) -> gs.Tensor:
        axes = [1] if first is None else [1, 2]
        return b.op("Slice", t, b.ints([lo] + ([0] if first else [])),
                    b.ints([hi] + ([first] if first else [])), b.ints(axes))

    given = part(w, r + 1, r + IOU_ROWS, 1)  # [N, 4, 1]: x0, y0, x1, y1
    gx0, gy0, gx1, gy1 = (part(given, i, i + 1) for i in range(4))
    half = [b.op("Div", part(rows, i, i + 1), ctx.scalar(2.0, s)) for i in (2, 3)]
    x0, y0 = (b.op("Sub", part(rows, i, i + 1), half[i]) for i in (0, 1))
    x1, y1 = (b.op("Add", part(rows, i, i + 1), half[i]) for i in (0, 1))
    iw = b.op("Relu", b.op("Sub", b.op("Min", x1, gx1), b.op("Max", x0, gx0)))
    ih = b.op("Relu", b.op("Sub", b.op("Min", y1, gy1), b.op("Max", y0, gy0)))
    inter = b.op("Mul", iw, ih)
    areas = b.op("Add", b.op("Mul", b.op("Sub", x1, x0), b.op("Sub", y1, y0)),
                 b.op("Mul", b.op("Sub", gx1, gx0), b.op("Sub", gy1, gy0)))
    union = b.op("Max", b.op("Sub", areas, inter), ctx.scalar(IOU_EPS, s))
    zeros = b.op("Mul", part(w, r + 1, r + IOU_ROWS), ctx.scalar(0.0, s))  # not on the path
    out = b.op("Concat", rows, b.op("Div", inter, union), zeros, axis=1)
    return b.op("Transpose", out, perm=[0, 2, 1]) if flip else out
