"""Detectors that output boxes and scores as two tensors before NMS (``boxes_output``,
``--boxes-output``): the scores output [N, A, C] is explained, its box output [N, A, 4]
(x0, y0, x1, y1 by default, or cx, cy, w, h) is joined before it into one head [N, 4+C, A]
in the graph, and the detection target picks anchors from it as from a YOLO-style head: by
index, the top-k after a NumPy NMS on the host, or the anchor a given box matches by IoU
(optionally + that IoU, differentiated through the box output). ``ort-cam export`` takes
``--boxes-output`` too (tests/test_export_targets.py).

The model: tests/target_models.py's detector with its head split into ``boxes`` (corners)
and ``scores`` (sigmoid) [N, A, ...]. Against torch autograd of the same scalar, the
anchors chosen from the torch model's own outputs by tests/target_reference.py (which never
calls ort_cam): Grad-CAM, HiResCAM, LayerCAM, Integrated Grad-CAM and RSI-Grad-CAM raw maps
within FACTOR = 10 times each one's float32 floor measured on the spot plus 8 float32 ulps
(as tests/test_target_explain.py; measured at most 2.9x), y at x within 1e-5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import target_models as tm  # noqa: E402
import target_reference as ref  # noqa: E402
from torch import nn  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.errors import OrtCamError  # noqa: E402
from ort_cam.export import export_explainer  # noqa: E402

FACTOR, ABS = 10.0, 8 * 2.0**-23
M = 8
METHODS = ["gradcam", "hirescam", "layercam", "igcam", "rsi"]
LAYER, MODULE = "/m" + tm.MODELS["detector"].layer, "m." + tm.MODELS["detector"].module


class BoxesScores(nn.Module):
    """The detector's head as two outputs: boxes [N, A, 4] (x0, y0, x1, y1) and class
    scores [N, A, C]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.m(x)
        centre, size = out[:, :2], out[:, 2:4]
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1).transpose(1, 2)
        return boxes, out[:, 4:].transpose(1, 2)


def build_and_export(path) -> tuple[nn.Module, object]:
    """The detector split into boxes and scores (seed 0), exported to ``path``."""
    model = BoxesScores(tm.build("detector")).eval()
    axes = {n: {0: "N"} for n in ("x", "boxes", "scores")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, tm.DET_SIZE, tm.DET_SIZE), str(path),
                          dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["boxes", "scores"], dynamic_axes=axes)
    return model, path


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return build_and_export(tmp_path_factory.mktemp("boxes") / "boxes_scores.onnx")


def _head(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The torch model's boxes [A, 4] (corners) and the YOLO-style head [4+C, A] of
    (cx, cy, w, h) rows and scores that target_reference chooses from (float64)."""
    with torch.no_grad():
        boxes, scores = (t.double().numpy()[0] for t in model(torch.from_numpy(x)))
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    return boxes, np.concatenate([centre.T, size.T, scores.T])


def _scalar(anchors, classes, box=None):
    given = None if box is None else torch.tensor([box], dtype=torch.float64)

    def scalar(out) -> torch.Tensor:
        boxes, scores = out
        total = sum(scores[:, a, c] for a, c in zip(anchors, classes, strict=True))
        if given is not None:
            total = total + torchvision.ops.box_iou(boxes[:, anchors[0]],
                                                    given.to(boxes.dtype))[:, 0]
        return total
    return scalar


@pytest.mark.parametrize("how", ["top-k", "anchors", "box", "box+iou"])
def test_boxes_and_scores_against_torch(detector, how):
    model, path = detector
    x, x0 = tm.inputs("detector", 1, seed=3), np.zeros((1, 3, tm.DET_SIZE, tm.DET_SIZE),
                                                       np.float32)
    boxes, head = _head(model, x)
    opts: dict = {"boxes_output": "boxes"}
    box = None
    if how == "top-k":
        anchors, classes = ref.choose_detections(head, k=2)
        opts["top_k"] = 2
    elif how == "anchors":
        anchors = [5, 40]
        classes = [int(head[4:, a].argmax()) for a in anchors]
        opts["anchors"] = tuple(anchors)
    else:
        a = ref.choose_detections(head, k=1)[0][0]
        box = tuple(float(v) for v in boxes[a] + np.array([1.0, -0.5, 0.5, 1.0]))
        anchors, classes = ref.match_box(head, box)
        opts.update(box=box, box_iou=how == "box+iou")
    assert len(anchors) == (2 if how != "box" and how != "box+iou" else 1)
    ex = ort_cam.Explainer(path, LAYER, output="scores", quiet=True, cache=False, threads=1,
                           target=opts)
    assert ex.target_kind == "detection"
    r = ex.explain_array(x, baseline_array=x0, steps=M, methods=METHODS)
    assert r.target_record["anchors"] == anchors
    r64, r32 = ref.reference_maps(model, MODULE, x, x0, M,
                                  _scalar(anchors, classes, box if how == "box+iou" else None))
    np.testing.assert_allclose([r.score, r.ym, r.y0], [r64["scores_path"][-1],
                                                        r64["scores_path"][-1],
                                                        r64["scores_path"][0]], rtol=1e-5)
    ref.assert_near_reference(r, r64, r32, METHODS, how, FACTOR, ABS)


@pytest.mark.parametrize("target, message", [
    ({"boxes_output": "nothing"}, "--boxes-output 'nothing' is not another output of the "
                                  "model; it has boxes"),
    ({"boxes_output": "boxes", "kind": "segment"}, "--boxes-output belongs to a detection "
                                                   "target, not a segment one"),
])
def test_a_bad_box_output_is_refused_in_one_line(detector, target, message):
    _, path = detector
    with pytest.raises(OrtCamError) as err:
        ort_cam.Explainer(path, LAYER, output="scores", quiet=True, cache=False, target=target)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OrtCamError) as exported:
        export_explainer(path, LAYER, steps=2, input_kind="tensor", baseline="zeros",
                         output="scores", target=target, cache=False)
    assert message in str(exported.value) and "\n" not in str(exported.value)
