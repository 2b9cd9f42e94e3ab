"""What a fused gradient model is asked for, with nothing built: the head on top of the model
output (``Head``, its transforms), the names the fused model's inputs and outputs have, and the
rule switches' defaults. It imports neither onnx nor onnx-graphsurgeon, so that code which only
runs a fused model (``ort-cam explain`` on a cached one) does not load them.

The transforms (``Head.transform``) are described in ``transforms.py``, which builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OrtCamError

#: The readings of a class output, what ``--score`` takes: the first is the default.
SCORE_MODES = ("probability", "logit", "sigmoid", "rest")
#: Every transform a head can put on top of an output.
TRANSFORMS = (*SCORE_MODES, "binary", "output", "normalize", "objectness")
#: Rows a detection head with ``Head.iou`` appends (``transforms``): the IoU row, then four
#: zero rows that carry the given box in W.
IOU_ROWS = 5
#: Names fixed by the head contract: the score output, the layer's gradient, the target input.
SCORES, GRAD, TARGET_WEIGHTS = "scores", "grad", "target_weights"
#: A fused model whose map is computed on demand (``grad.tail``): its bool input that asks for
#: S, its output y = Σ W ⊙ S per row (float64), the batch axis of its target weights, which
#: may hold one row for every input, and that of its ``scores``, empty where not asked for.
WANT_SCORES, TARGET_VALUE = "want_scores", "target_value"
WEIGHT_ROWS, ON_DEMAND_ROWS = "W_rows", "S_rows"
#: The module switches that change which ops a rule emits, at their defaults
#: (``ort_cam.grad.rule_switches`` reads them as set now): ``STRIDE1_AS_CONV`` in rules_nn.
RULE_SWITCHES = {"STRIDE1_AS_CONV": True}


@dataclass(frozen=True)
class Head:
    """S = ``transform`` of the model output; ``axis``: the class (or channel) axis of a map
    kept whole (``flatten`` False) or the 4(+1)+C axis of a detection head; ``iou``: a
    detection head with the IoU of every anchor's box with a given box appended (the box
    is read from ``target_weights``: ``transforms.IOU_ROWS``); ``boxes``: a detector's box
    output [N, A, 4] (or [N, 4, A]) joined before its scores (the output, [N, A, C] or
    [N, C, A], ``axis`` its class axis) into one head [N, 4+C, A] of (cx, cy, w, h) boxes,
    ``box_format`` saying how the box output holds them (xyxy or cxcywh)."""

    transform: str = "probability"
    axis: int = 1
    flatten: bool = True
    iou: bool = False
    boxes: str = ""
    box_format: str = "xyxy"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise OrtCamError(f"unknown score {self.transform!r}; use one of "
                              f"{', '.join(SCORE_MODES)}")

    def record(self) -> dict[str, object]:
        """The JSON form (the prepared-model cache and manifests record it)."""
        rec: dict[str, object] = {"transform": self.transform, "axis": self.axis,
                                  "flatten": self.flatten}
        if self.iou:  # (only then: the records of other heads read as before)
            rec["iou"] = True
        if self.boxes:
            rec.update(boxes=self.boxes, box_format=self.box_format)
        return rec

    @classmethod
    def of(cls, score: str | Head) -> Head:
        """``score`` as a head: a score mode names the class reading of that name."""
        return score if isinstance(score, Head) else cls(score)


def map_seeded(head: Head, rank: int) -> bool:
    """Whether a fused model that computes its map on demand seeds a zero row of W with the
    segment target's default (``heads._map_seed``): a map's logits or probabilities
    [N, C, H, W] (or NHWC) per image ``rank`` 3."""
    return (not head.flatten and head.transform in ("logit", "probability") and rank == 3
            and not head.iou and not head.boxes)
