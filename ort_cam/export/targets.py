"""The target inside the exported explainer, for the kinds other than class and binary.

Every such target is ``y = Σ W ⊙ S`` (``../shared/METHODS.md``, "Targets"): the fused gradient
graph takes ``W`` as an input, so one graph serves every target of its kind. The explainer
builds ``W`` in the graph at the input x (the Loop's iteration 0, from S(x)) out of plain
inputs the caller feeds, carries it through the path, and outputs it (``weights``):

- segment: ``target_index`` (−1: the class with the largest argmax region at x, class 0 left
  out where the labels call it background) and ``target_mask`` [R, W] on the output's grid
  (R = 0: the pixels whose argmax is the class at x; R = H: the mask given). A one-channel
  map takes ``target_mask`` alone (R = 0: ``p > threshold`` at x, the threshold fixed at
  export);
- embedding: ``concept`` [D] (W = concept / ‖concept‖: the cosine);
- detection: ``anchors`` [K] (K = 0: the best-scoring anchor at x, which is the top-1 box
  after NMS, refused under ``conf``) and ``target_index`` (−1: each anchor's own top class);
  NMS for k > 1 stays on the host: feed its anchors. With the +IoU term (``box_iou``,
  fixed at export) ``box`` [1, 4] (x0, y0, x1, y1) instead of ``anchors``: the best-scoring
  anchor whose box overlaps it by IoU > 0.5, plus that IoU, as ``targets.detection`` picks;
- sequence: ``step`` (−1: every kept step of the greedy CTC decoding at x, the blank fixed
  at export) and ``target_index`` (the token at that step, −1: its top token);
- any: ``target_weights`` of S's shape, used as given.

A value the graph sees only at run time and cannot use (an anchor out of range, NaN, an empty
mask, a mask of the wrong number of rows) fails the run at a node whose name says what is
wrong (``explainer/anchors_must_be_in_0_to_79``), as ``baseline`` does; shapes fixed at export
(the mask's width, the concept's length, the weights' shape) are checked by the engine when
the input is fed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..grad.spec import IOU_ROWS
from ..targets import OutputInfo, TargetOptions
from ..targets.detection import MATCH_IOU, layout
from ..targets.segment import BACKGROUND, class_axis, grid, one_channel
from .ops import F64, Ops, Tensor

TARGET_IN, MASK_IN, CONCEPT_IN = "target_index", "target_mask", "concept"
ANCHORS_IN, STEP_IN, WEIGHTS_IN, BOX_IN = "anchors", "step", "target_weights", "box"
#: The first dimension of ``target_mask``: 0 (the default mask) or the grid's height.
MASK_ROWS, ANCHOR_COUNT = "mask_rows", "anchor_count"
#: The kinds an explainer can take (class and binary are graph.py's own class target).
EXPORT_KINDS = ("class", "binary", "segment", "embedding", "detection", "sequence", "any")


@dataclass
class Picked:
    """W chosen at x (S's shape, S's dtype), the class it explains (int64; −1: none, or
    several) and the checks that must hold: (bad, node name) with ``bad`` a bool scalar."""

    w: Tensor
    index: Tensor
    checks: list[tuple[Tensor, str]] = field(default_factory=list)


@dataclass(frozen=True)
class GraphTarget:
    """A target kind as the explainer graph builds it: its inputs and how W is picked.

    Attributes:
        kind: the target kind.
        out: the output as the kinds read it.
        s_shape: S's shape per image; dtype: S's dtype.
        opts: the export's target options (layout, objectness, threshold, conf, blank).
        labels: the class names, where the model stores them (segment: background).
    """

    kind: str
    out: OutputInfo
    s_shape: tuple[int, ...]
    dtype: np.dtype
    opts: TargetOptions
    labels: tuple[str, ...] | None = None

    def inputs(self) -> list[gs.Variable]:
        """The explainer's inputs for this target, in order."""
        i64, f32 = np.int64, np.float32
        if self.kind == "segment":
            h, w = grid(self.out)
            mask = gs.Variable(MASK_IN, f32, [MASK_ROWS, w])
            return [mask] if one_channel(self.out) else [gs.Variable(TARGET_IN, i64, []), mask]
        if self.kind == "embedding":
            return [gs.Variable(CONCEPT_IN, f32, [int(np.prod(self.s_shape))])]
        if self.kind == "detection":
            pick = (gs.Variable(BOX_IN, f32, [1, 4]) if self.opts.box_iou
                    else gs.Variable(ANCHORS_IN, i64, [ANCHOR_COUNT]))
            return [pick, gs.Variable(TARGET_IN, i64, [])]
        if self.kind == "sequence":
            return [gs.Variable(STEP_IN, i64, []), gs.Variable(TARGET_IN, i64, [])]
        return [gs.Variable(WEIGHTS_IN, f32, list(self.s_shape))]

    def defaults(self) -> dict[str, np.ndarray]:
        """The inputs' defaults (``optional_inputs``): −1 indices, no mask rows, no anchors;
        a concept and weights have none."""
        values: dict[str, np.ndarray] = {}
        for v in self.inputs():
            if v.dtype == np.int64 and not v.shape:
                values[v.name] = np.array(-1, np.int64)
            elif v.name in (MASK_IN, ANCHORS_IN):
                values[v.name] = np.zeros((0, *v.shape[1:]), v.dtype)
        return values

    def pick(self, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
        """W at x from ``s`` (S at x, per image) and the fed inputs ``ins``."""
        return _PICK[self.kind](self, op, s, ins)

    def record(self) -> dict[str, object]:
        """What the export fixed of the target (the model's metadata)."""
        rec: dict[str, object] = {"kind": self.kind, "inputs": [v.name for v in self.inputs()]}
        if self.kind == "segment" and one_channel(self.out):
            rec["threshold"] = self.opts.threshold
        if self.kind == "detection":
            lay = layout(self.out, self.opts)
            rec.update(layout=("channels", "anchors")[lay.axis], objectness=lay.objectness,
                       classes=lay.n_classes, conf=self.opts.conf, box_iou=self.opts.box_iou)
        if self.kind == "sequence":
            rec["blank"] = self.opts.blank
        return rec


def guard(op: Ops, bad: Tensor, name: str) -> Tensor:
    """An int64 0 that fails the run at the node ``explainer/<name>`` where the bool scalar
    ``bad`` is true: an Add of Range(0, 2) and Range(0, 2 + bad), whose shapes broadcast only
    when bad is 0 (a shape check every engine makes at run time)."""
    off = op.cast(bad, np.int64)
    g = op.b.op("Add", op.arange(0, 2), op.arange(0, op.b.op("Add", off, op.i64(2))))
    g.inputs[0].name = f"explainer/{name}"
    return op.b.op("ReduceMin", op.concat([op.b.ints([0]), g], 0), keepdims=0)


def checked(op: Ops, picked: Picked, first: Tensor) -> Tensor:
    """``picked.w`` plus 0 from every check's guard (so that the checks run). A check fails
    only where the ones before it pass (one failure, the first: an index out of range also
    empties W), and only at iteration 0 (``first``): later iterations pick from a path
    point's S, and their W is not used."""
    zero, before = op.i64(0), op.logical_not(first)
    for bad, name in picked.checks:
        zero = op.b.op("Add", zero, guard(op, op.logical_and(bad, op.logical_not(before)),
                                          name))
        before = _or(op, before, bad)
    return op.add(picked.w, op.cast(zero, op.b.dtype(picked.w) or np.float32))


# --- helpers -------------------------------------------------------------------------------
def _or(op: Ops, *xs: Tensor) -> Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = op.b.op("Or", out, x)
    return out


def _any(op: Ops, x: Tensor) -> Tensor:
    """Whether any element of the bool tensor ``x`` is true (false when it is empty)."""
    n = op.b.op("ReduceSum", op.reshape(op.cast(x, np.int64), [-1]), keepdims=0)
    return op.greater(n, op.i64(0))


def _out_of(op: Ops, i: Tensor, lo: int, hi: int) -> Tensor:
    """Whether any of the int64 values ``i`` lies outside lo..hi−1."""
    return _any(op, _or(op, op.less(i, op.i64(lo)), op.b.op("GreaterOrEqual", i, op.i64(hi))))


def _nonfinite(op: Ops, x: Tensor) -> Tensor:
    """Whether ``x`` holds NaN or inf (x · 0 is 0 for every finite x)."""
    return _any(op, op.logical_not(op.equal(op.mul(op.cast(x, F64), 0.0), op.const(0.0))))


def _empty(op: Ops, w: Tensor) -> Tensor:
    return op.logical_not(_any(op, op.logical_not(op.equal(op.cast(w, F64), op.const(0.0)))))


def _hot(op: Ops, index: Tensor, n: int, axis_shape: list[int]) -> Tensor:
    """bool ``arange(n) == index``, the arange shaped ``axis_shape`` (one −1)."""
    return op.equal(op.reshape(op.arange(0, n), axis_shape), index)


def _single_index(op: Ops, w: Tensor, axis: int) -> Tensor:
    """The index along the other axis of a 2-D W when W has one nonzero entry, else −1."""
    per = op.sum(op.cast(w, F64), [axis])
    one = op.equal(op.b.op("ReduceSum", op.cast(op.greater(per, 0.0), np.int64), keepdims=0),
                   op.i64(1))
    return op.where(one, op.argmax(per, 0), op.i64(-1))


def given_or_default(op: Ops, given: Tensor, default: Tensor, r: int
                     ) -> tuple[Tensor, Tensor]:
    """(the fed ``given`` [R, ...], else ``default`` [r, ...] where it has no rows; the check
    that it has 0 or r rows)."""
    rows = op.take(op.shape(given), 0)
    bad = op.logical_and(op.logical_not(op.equal(rows, op.i64(0))),
                         op.logical_not(op.equal(rows, op.i64(r))))
    stacked = op.concat([default, given], 0)
    # rows start .. start + r − 1, start = the given's rows (0 or r)
    index = op.b.op("Add", op.arange(0, r), op.minimum(rows, op.i64(r)))
    return op.take(stacked, index), bad


# --- the kinds -----------------------------------------------------------------------------
def _mask(t: GraphTarget, op: Ops, default: Tensor, ins: dict[str, Tensor]
          ) -> tuple[Tensor, list[tuple[Tensor, str]]]:
    h, _ = grid(t.out)
    given = op.cast(ins[MASK_IN], t.dtype)
    mask, rows_bad = given_or_default(op, given, default, h)
    return mask, [(rows_bad, f"target_mask_rows_must_be_0_or_{h}"),
                  (_nonfinite(op, ins[MASK_IN]), "target_mask_must_be_finite")]


def _segment(t: GraphTarget, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
    h, w = grid(t.out)
    if one_channel(t.out):
        plane = op.reshape(s, [h, w])
        p = plane if t.out.final_op == "Sigmoid" else op.b.op("Sigmoid", plane)
        default = op.cast(op.greater(p, op.const(t.opts.threshold, t.dtype)), t.dtype)
        mask, checks = _mask(t, op, default, ins)
        wt = op.reshape(mask, list(t.s_shape))
        checks.append((_empty(op, wt), "target_must_not_be_empty"))
        return Picked(wt, op.i64(0), checks)
    axis = class_axis(t.out)
    n = t.s_shape[axis]
    cf = s if axis == 0 else op.transpose(s, [2, 0, 1])  # [C, H, W]
    hits = op.equal(op.unsqueeze(op.argmax(cf, 0), [0]), op.reshape(op.arange(0, n), [n, 1, 1]))
    counts = op.sum(op.cast(hits, np.int64), [1, 2])
    if t.labels and t.labels[0].strip().lower() in BACKGROUND:  # segment.largest_region
        others = _any(op, op.greater(op.rows(counts, 1, n), op.i64(0)))
        drop = op.logical_and(_hot(op, op.i64(0), n, [-1]), others)
        counts = op.where(drop, op.i64(-1), counts)
    req = ins[TARGET_IN]
    c = op.where(op.equal(req, op.i64(-1)), op.argmax(counts, 0), req)
    hot = op.cast(_hot(op, c, n, [n, 1, 1]), t.dtype)  # [C, 1, 1]
    default = op.sum(op.mul(hot, op.cast(hits, t.dtype)), [0])  # the argmax mask of c
    mask, checks = _mask(t, op, default, ins)
    wt = op.mul(hot, op.unsqueeze(mask, [0]))
    if axis != 0:
        wt = op.transpose(wt, [1, 2, 0])
    checks += [(_out_of(op, c, 0, n), f"target_index_must_be_-1_or_0_to_{n - 1}"),
               (_empty(op, wt), "target_must_not_be_empty")]
    return Picked(wt, c, checks)


def _embedding(t: GraphTarget, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
    v = op.cast(ins[CONCEPT_IN], F64)
    norm = op.sqrt(op.b.op("ReduceSum", op.mul(v, v), keepdims=0))
    wt = op.reshape(op.cast(op.div(v, norm), t.dtype), list(t.s_shape))
    return Picked(wt, op.i64(-1), [(_nonfinite(op, ins[CONCEPT_IN]), "concept_must_be_finite"),
                                   (op.equal(norm, op.const(0.0)), "concept_must_not_be_zero")])


def _detection(t: GraphTarget, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
    lay = layout(t.out, t.opts)
    rows = s if lay.axis == 0 else op.transpose(s, [1, 0])  # [4(+extra)+C(+IoU rows), A]
    n_rows = t.s_shape[lay.axis] - (IOU_ROWS if t.opts.box_iou else 0)
    n_anchors, nc = t.s_shape[1 - lay.axis], lay.n_classes
    scores = op.cast(op.b.op("Slice", rows, op.b.ints([4]), op.b.ints([4 + nc]),
                             op.b.ints([0])), F64)  # [C, A]
    req = ins[TARGET_IN]
    per_anchor = op.where(op.equal(req, op.i64(-1)), op.argmax(scores, 0), req)  # [A]
    cls_hot = op.equal(op.reshape(op.arange(0, nc), [nc, 1]), per_anchor)  # [C, A]
    best = op.sum(op.mul(scores, op.cast(cls_hot, F64)), [0])  # each anchor's class score
    if t.opts.box_iou:
        chosen, box, checks = _by_box(t, op, rows, best, ins[BOX_IN])
    else:
        chosen, checks = _by_anchors(t, op, best, ins[ANCHORS_IN])
    w_cls = op.mul(op.cast(cls_hot, t.dtype), op.unsqueeze(chosen, [0]))  # [C, A]
    parts = [op.zeros([4, n_anchors], t.dtype), w_cls]
    if n_rows > 4 + nc:  # mask coefficients, keypoints: no score
        parts.append(op.zeros([n_rows - 4 - nc, n_anchors], t.dtype))
    if t.opts.box_iou:  # the IoU row at the anchor, the box at anchor 0 (grad.transforms)
        at_0 = op.cast(_hot(op, op.i64(0), n_anchors, [1, -1]), t.dtype)
        parts += [op.unsqueeze(chosen, [0]), op.mul(op.unsqueeze(box, [1]), at_0)]
    wt = op.concat(parts, 0)
    checks.insert(0, (_out_of(op, req, -1, nc), f"target_index_must_be_-1_or_0_to_{nc - 1}"))
    return Picked(wt if lay.axis == 0 else op.transpose(wt, [1, 0]),
                  _single_index(op, w_cls, 1), checks)


def _by_anchors(t: GraphTarget, op: Ops, best: Tensor, given: Tensor
                ) -> tuple[Tensor, list[tuple[Tensor, str]]]:
    """The fed anchors ([A], S's dtype), else the best-scoring one (refused under conf)."""
    n_anchors = t.s_shape[1 - layout(t.out, t.opts).axis]
    top = op.argmax(best, 0)
    none_given = op.equal(op.take(op.shape(given), 0), op.i64(0))
    hits = op.equal(op.unsqueeze(given, [1]), op.reshape(op.arange(0, n_anchors), [1, -1]))
    chosen = op.cast(op.greater(op.sum(op.cast(hits, F64), [0]), 0.0), t.dtype)
    chosen = op.where(none_given, op.cast(_hot(op, top, n_anchors, [-1]), t.dtype), chosen)
    low = op.logical_and(none_given, op.less(op.take(best, top), op.const(t.opts.conf)))
    return chosen, [(_out_of(op, given, 0, n_anchors), f"anchors_must_be_in_0_to_{n_anchors - 1}"),
                    (low, f"no_box_scores_at_least_{t.opts.conf:g}_feed_anchors")]


def _by_box(t: GraphTarget, op: Ops, rows: Tensor, best: Tensor, given: Tensor
            ) -> tuple[Tensor, Tensor, list[tuple[Tensor, str]]]:
    """The best-scoring anchor whose box overlaps the fed box (x0, y0, x1, y1) by IoU > 0.5
    (``targets.detection``'s match, in float64), and the box in S's dtype."""
    n_anchors = t.s_shape[1 - layout(t.out, t.opts).axis]
    box = op.take(op.cast(given, F64), 0)  # [1, 4] (a static shape, checked when fed)
    b0, b1, b2, b3 = (op.take(box, i) for i in range(4))
    cx, cy, w, h = (op.take(op.cast(rows, F64), i) for i in range(4))  # [A] each
    x0, y0 = op.sub(cx, op.div(w, 2.0)), op.sub(cy, op.div(h, 2.0))
    x1, y1 = op.add(cx, op.div(w, 2.0)), op.add(cy, op.div(h, 2.0))
    inter = op.mul(op.relu(op.sub(op.minimum(x1, b2), op.maximum(x0, b0))),
                   op.relu(op.sub(op.minimum(y1, b3), op.maximum(y0, b1))))
    area = op.mul(op.relu(op.sub(x1, x0)), op.relu(op.sub(y1, y0)))
    union = op.sub(op.add(area, op.mul(op.relu(op.sub(b2, b0)), op.relu(op.sub(b3, b1)))),
                   inter)
    positive = op.greater(union, 0.0)
    overlap = op.where(positive, op.div(inter, op.where(positive, union, op.const(1.0))),
                       op.const(0.0))
    matched = op.greater(overlap, MATCH_IOU)
    anchor = op.argmax(op.where(matched, best, op.const(-np.inf)), 0)
    return (op.cast(_hot(op, anchor, n_anchors, [-1]), t.dtype), op.cast(box, t.dtype),
            [(_nonfinite(op, given), "box_must_be_finite"),
             (op.logical_not(_any(op, matched)), f"no_anchor_matches_the_box_by_iou_{MATCH_IOU}")])


def _sequence(t: GraphTarget, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
    n_steps, vocab = t.s_shape
    k = op.argmax(s, 1)  # [T]
    prev = op.concat([op.b.ints([-1]), op.rows(k, 0, n_steps - 1)], 0)
    keep = op.logical_and(op.logical_not(op.equal(k, op.i64(t.opts.blank))),
                          op.logical_not(op.equal(k, prev)))
    tokens = op.reshape(op.arange(0, vocab), [1, vocab])
    every = op.logical_and(op.equal(op.unsqueeze(k, [1]), tokens), op.unsqueeze(keep, [1]))
    step, req = ins[STEP_IN], ins[TARGET_IN]
    at_step = _hot(op, step, n_steps, [-1])
    k_at = op.b.op("ReduceSum", op.mul(op.cast(at_step, np.int64), k), keepdims=0)
    token = op.where(op.equal(req, op.i64(-1)), k_at, req)
    one = op.logical_and(op.unsqueeze(at_step, [1]), op.equal(tokens, token))
    all_steps = op.equal(step, op.i64(-1))
    wt = op.where(all_steps, op.cast(every, t.dtype), op.cast(one, t.dtype))
    checks = [(_out_of(op, step, -1, n_steps), f"step_must_be_-1_or_0_to_{n_steps - 1}"),
              (_out_of(op, req, -1, vocab), f"target_index_must_be_-1_or_0_to_{vocab - 1}"),
              (op.logical_and(all_steps, op.logical_not(op.equal(req, op.i64(-1)))),
               "target_index_needs_a_step"),
              (_empty(op, wt), "target_must_not_be_empty")]
    return Picked(wt, _single_index(op, wt, 0), checks)


def _weights(t: GraphTarget, op: Ops, s: Tensor, ins: dict[str, Tensor]) -> Picked:
    wt = op.cast(ins[WEIGHTS_IN], t.dtype)
    return Picked(wt, op.i64(-1), [(_nonfinite(op, ins[WEIGHTS_IN]),
                                    "target_weights_must_be_finite"),
                                   (_empty(op, wt), "target_weights_must_not_be_all_zero")])


_PICK: dict[str, Callable[[GraphTarget, Ops, Tensor, dict[str, Tensor]], Picked]] = {
    "segment": _segment, "embedding": _embedding, "detection": _detection,
    "sequence": _sequence, "any": _weights,
}
