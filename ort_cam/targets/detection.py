"""The detection target: a YOLO-style raw head before NMS, ``[N, 4+C, A]`` (YOLOv8 and
later), ``[N, A, 5+C]`` with objectness (YOLOv5, YOLOX), or either transposed; boxes as
(cx, cy, w, h) in the input's pixels. ``Σ_{a ∈ S} score(a, c_a)``, score = ``out[4+c, a]``,
or ``obj · cls`` where the head has objectness (as those models' own post-processing ranks
boxes). The anchors S are chosen at x, on the host: by index; the top-k after a NumPy NMS
(class by class; score ≥ conf, IoU ≤ iou: defaults 1, 0.25, 0.45); or the best-scoring anchor
whose box matches a given box by IoU > 0.5 (and the given class), optionally plus the IoU of
its box with the given one (``box_iou``, as pytorch-grad-cam's FasterRCNNBoxScoreTarget adds
IoU and score: the head then appends the IoU rows, ``grad.transforms.IOU_ROWS``, and W
carries the box). The gradient is taken through the raw head, as a user of the model runs
it; NMS stays outside the graph.

Rows past 4(+1)+C (ultralytics' mask coefficients or keypoints, where the metadata's
``names`` says how many classes there are) are left out of the scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError, OrtCamError
from ..grad import Head
from ..grad.spec import IOU_ROWS
from .base import OutputInfo, Target, TargetKind, TargetOptions, class_index, finished

#: A given box matches an anchor's box above this IoU (pytorch-grad-cam's box target: 0.5).
MATCH_IOU = 0.5
LAYOUTS = ("channels", "anchors")


@dataclass(frozen=True)
class Layout:
    """Where the 4(+1)+C axis is (per image: 0 channels, 1 anchors), whether the head has an
    objectness row, and how many class rows follow the box (and objectness)."""

    axis: int
    objectness: bool
    n_classes: int


def layout(out: OutputInfo, opts: TargetOptions) -> Layout:
    """The head's layout: the flags, else a Concat of box rows and scores, else the smaller
    axis; objectness from the flag, the Concat, the metadata's class count, else from the
    layout as the common exports have it (channels first: none; anchors first: objectness)."""
    if out.boxes or opts.boxes_output is not None:  # scores beside a box output: [4+C, A]
        return Layout(0, False, out.shape[score_axis(out, opts)])
    a, b = out.shape
    axis = 0 if a <= b else 1
    pieces: tuple[int, ...] = ()
    if out.box_concat is not None:
        pieces, axis = out.box_concat
    if opts.layout is not None:
        axis = LAYOUTS.index(opts.layout)
    rows = out.shape[axis]
    objectness = opts.objectness
    if objectness is None and len(pieces) >= 2 and pieces[0] == 1:
        objectness = True
    elif objectness is None and out.n_names is not None:
        objectness = rows - 5 == out.n_names and rows - 4 != out.n_names
    elif objectness is None:
        objectness = axis == 1
    n_classes = rows - 4 - int(objectness)
    if out.n_names is not None and 0 < out.n_names <= n_classes:
        n_classes = out.n_names
    return Layout(axis, bool(objectness), n_classes)


def score_axis(out: OutputInfo, opts: TargetOptions) -> int:
    """The class axis of scores [A, C] / [C, A] beside a box output: ``--head-layout`` (its
    channels: [C, A]), else the smaller axis."""
    if opts.layout is not None:
        return 0 if opts.layout == "channels" else 1
    return 0 if out.shape[0] <= out.shape[1] else 1


def xyxy(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) rows to (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of every (x0, y0, x1, y1) row of ``boxes`` with ``box``."""
    x0, y0 = np.maximum(boxes[:, 0], box[0]), np.maximum(boxes[:, 1], box[1])
    x1, y1 = np.minimum(boxes[:, 2], box[2]), np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1],
                                                                         0, None)  # noqa: E731
    union = area(boxes) + area(box) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float,
        limit: int | None = None) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, class by class (a box suppresses only
    boxes of its class whose IoU with it exceeds ``threshold``), best score first; with
    ``limit``, the first ``limit`` of them (greedy: the same as the whole list cut there)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(scores), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        if limit is not None and len(keep) >= limit:
            break
        same = classes == classes[i]
        suppressed |= same & (iou(boxes, boxes[i]) > threshold)
    return np.asarray(keep, dtype=np.int64)


class DetectionKind(TargetKind):
    """Chosen anchors' class scores of a YOLO-style raw head."""

    name = "detection"
    title = "chosen anchors' scores of a YOLO-style head [N, 4+C, A] / [N, A, 5+C]"
    options = ("box", "anchors", "top_k", "conf", "iou", "objectness", "layout", "box_iou",
               "boxes_output", "box_format")
    usage = ("--target-kind detection [--anchors I,J | --top-k K | --box X0,Y0,X1,Y1 "
             "[--box-iou]] [--target CLASS]")

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        if len(out.shape) != 2:
            return f"it has {len(out.shape)} axes per image, not a head [4+C, A]"
        if out.boxes:  # scores [A, C] beside a box output
            return None
        if min(out.shape) < 5:
            return "neither of its axes holds 4 box rows and class scores"
        return None

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        return layout(out, opts).n_classes

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        lay = layout(out, opts)
        if opts.boxes_output is not None:
            if opts.box_format not in ("xyxy", "cxcywh"):
                raise OrtCamError(f"unknown box format {opts.box_format!r}; use xyxy or cxcywh")
            return Head("output", axis=score_axis(out, opts) + 1, flatten=False,
                        iou=opts.box_iou, boxes=opts.boxes_output, box_format=opts.box_format)
        if lay.objectness:
            return Head("objectness", axis=lay.axis + 1, flatten=False, iou=opts.box_iou)
        return Head("output", axis=lay.axis + 1 if opts.box_iou else 1, flatten=False,
                    iou=opts.box_iou)

    @classmethod
    def fixed(cls, out: OutputInfo, opts: TargetOptions) -> bool:
        """Anchors given by index with a given class (else each anchor's class is its best
        at x)."""
        return opts.anchors is not None and opts.target not in (None, "top1")

    @classmethod
    def seeded(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions, target: Target,
               built: TargetOptions, on_demand: bool = False) -> bool:
        """The fused model seeds a zero row with the best anchor and its best class (by the
        layout it was ``built`` with): ``target`` where it is the top-1 left by NMS with no
        class, anchors or box given, and the same W (S finite: ArgMax and np.argmax agree on
        ties, not on NaN)."""
        rows = seed_rows_of(out, built)
        if (rows is None or opts.anchors is not None or opts.box is not None
                or opts.top_k != 1 or opts.target not in (None, "top1")
                or not np.isfinite(s).all()):
            return False
        axis, n_classes = rows[0] - 1, rows[1]
        scores = np.moveaxis(s, axis, 0)[4:4 + n_classes]
        a = int(np.argmax(scores.max(axis=0)))
        seed = np.zeros(np.moveaxis(s, axis, 0).shape, np.float32)
        seed[4 + int(np.argmax(scores[:, a])), a] = 1.0
        return np.array_equal(np.moveaxis(seed, 0, axis), target.weights)

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        lay = layout(out, opts)
        if opts.box_iou and opts.box is None:
            raise OrtCamError("--box-iou adds the IoU of the matched anchor's box with a given "
                              "box: give --box X0,Y0,X1,Y1 too (in the API, box=)")
        rows = s if lay.axis == 0 else s.T  # [4+C(+extra), A]
        boxes = xyxy(rows[:4].T.astype(np.float64))
        scores = rows[4:4 + lay.n_classes].astype(np.float64)
        c = None if opts.target in (None, "top1") else class_index(
            opts.target, lay.n_classes, labels)
        anchors = _anchors(boxes, scores, c, opts)
        classes = [int(np.argmax(scores[:, a])) if c is None else c for a in anchors]
        w = np.zeros(rows.shape, np.float32)
        for a, k in zip(anchors, classes):
            w[4 + k, a] = 1.0
        chosen = boxes[list(anchors)] if opts.box is None else np.asarray([opts.box], float)
        overlap = 0.0
        if opts.box_iou:  # the IoU row, and the box in W (grad.transforms: IOU_ROWS)
            r = len(rows) - IOU_ROWS
            w[r, list(anchors)] = 1.0
            w[r + 1:r + IOU_ROWS, 0] = chosen[0]
            overlap = float(np.sum(iou(boxes[list(anchors)], chosen[0])))
        target = finished(cls.name, w if lay.axis == 0 else w.T, s,
                          index=classes[0] if len(set(classes)) == 1 else None,
                          boxes=chosen, anchors=tuple(anchors))
        if not opts.box_iou:
            return target
        # S's IoU row at x was computed against W = 0 (the run that chose): its value at x is
        # the score's plus the IoU with the box, worked out here
        score = sum(float(rows[4 + k, a]) for a, k in zip(anchors, classes))
        return replace(target, value=score + overlap)


def _anchors(boxes: np.ndarray, scores: np.ndarray, c: int | None,
             opts: TargetOptions) -> list[int]:
    """The anchors to explain: given, matched to a box, or the top-k left by NMS."""
    n = scores.shape[1]
    best = scores.max(axis=0) if c is None else scores[c]
    if opts.anchors is not None:
        bad = [a for a in opts.anchors if not 0 <= a < n]
        if bad or not opts.anchors:
            raise InputError(f"anchor index {bad[0] if bad else '(none)'} is out of range; the "
                             f"head has {n} anchors (0..{n - 1})")
        return [int(a) for a in opts.anchors]
    if opts.box is not None:
        overlap = iou(boxes, np.asarray(opts.box, np.float64))
        matched = np.flatnonzero(overlap > MATCH_IOU)
        if not len(matched):
            raise OrtCamError(f"no anchor's box overlaps the box {list(opts.box)} by IoU > "
                              f"{MATCH_IOU} at this image (best {overlap.max():.2f}); check "
                              "that the box is in the input's pixels (x0,y0,x1,y1)")
        return [int(matched[np.argmax(best[matched])])]
    if opts.top_k < 1:
        raise InputError(f"--top-k must be at least 1 (got {opts.top_k})")
    cand = np.flatnonzero(best >= opts.conf)
    if not len(cand):
        raise OrtCamError(f"no box scores >= {opts.conf} at this image (best "
                          f"{best.max():.3g}); lower --conf, or pick anchors or a box")
    cls_of = np.argmax(scores[:, cand], axis=0) if c is None else np.full(len(cand), c)
    keep = nms(boxes[cand], best[cand], cls_of, opts.iou, limit=opts.top_k)
    return [int(cand[i]) for i in keep[:opts.top_k]]


def seed_rows_of(out: OutputInfo, opts: TargetOptions) -> tuple[int, int] | None:
    """Where the fused model of a detection head read with ``opts`` seeds a zero row of W
    with the top-1 anchor (``grad.heads``): the axis of S's 4+C rows (batch axis counted)
    and C; None where it does not (the IoU head)."""
    if opts.box_iou or len(out.shape) != 2:
        return None
    lay = layout(out, opts)
    return lay.axis + 1, lay.n_classes
