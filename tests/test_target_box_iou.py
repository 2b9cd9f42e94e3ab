"""The detection target's "+IoU" term (``box_iou``, ``--box-iou``): for a given box b, the
matched anchor a's score plus IoU(box_a(x_l), b), as pytorch-grad-cam's
FasterRCNNBoxScoreTarget adds IoU and score (METHODS.md, "Targets"). The IoU is built in ONNX
on the head's box rows (grad/transforms.py, ``Head.iou``), so it is differentiated too.

Against torch autograd of the same scalar (tests/target_reference.py's detection scalar plus
torchvision's ``box_iou`` of the anchor's (cx, cy, w, h) box turned into corners), on the
YOLO-style detectors of tests/target_models.py: without objectness, with it, and with the head
transposed ([N, A, 4+C]); y at x and the raw maps of Grad-CAM, HiResCAM, LayerCAM, Integrated
Grad-CAM and RSI-Grad-CAM, and RSI's gap. Tolerance as tests/test_target_explain.py's: each
quantity's float32 floor measured on the spot (the reference again in float32), ort_cam within
FACTOR = 10 times it plus 8 float32 ulps (measured: at most 2.9x the floor). The same target
without the IoU term is 0.70 to 0.99 off the reference (relative), so a term left out fails.
(The exported explainer with the term: tests/test_export_targets.py.)
"""

from __future__ import annotations

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


class Transposed(nn.Module):
    """A detector whose head is [N, A, 4(+1)+C] (the anchors-first layout)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).transpose(1, 2)


def _model(name: str, transposed: bool, folder):
    model = tm.build(name)
    layer, module = tm.MODELS[name].layer, tm.MODELS[name].module
    if transposed:
        model = Transposed(model).eval()
        layer, module = "/m" + layer, "m." + module
    path = tm.export(model, name, folder / f"{name}{'_t' if transposed else ''}.onnx")
    return model, path, layer, module


def _box_near_the_best_anchor(out: np.ndarray, objectness: bool) -> tuple[float, ...]:
    """A box (x0, y0, x1, y1) shifted by 0.5 to 1 pixel off the top detection's own box."""
    a = ref.choose_detections(out, objectness, k=1)[0][0]
    cx, cy, w, h = (float(v) for v in out[:4, a])
    return (cx - w / 2 + 1.0, cy - h / 2 - 0.5, cx + w / 2 + 0.5, cy + h / 2 + 1.0)


def _scalar(anchors, classes, objectness: bool, box, transposed: bool):
    base = ref.detection_scalar(anchors, classes, objectness)
    given = torch.tensor([box], dtype=torch.float64)

    def scalar(o: torch.Tensor) -> torch.Tensor:
        o = o.transpose(1, 2) if transposed else o
        b = o[:, :4, anchors[0]]
        corners = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
        return base(o) + torchvision.ops.box_iou(corners, given.to(o.dtype))[:, 0]
    return scalar


@pytest.mark.parametrize("name, transposed", [("detector", False), ("detector_obj", False),
                                              ("detector", True)],
                         ids=["yolov8-like", "objectness", "anchors-first"])
def test_the_iou_term_against_torch(tmp_path, name, transposed):
    objectness = name == "detector_obj"
    model, path, layer, module = _model(name, transposed, tmp_path)
    x, x0 = tm.inputs(name, 1, seed=3), np.zeros((1, *tm.MODELS[name].input_shape), np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).double().numpy()[0]
    out = out.T if transposed else out  # [4(+1)+C, A]
    box = _box_near_the_best_anchor(out, objectness)
    anchors, classes = ref.match_box(out, box, objectness)
    assert anchors, "the box overlaps its anchor by IoU > 0.5"
    opts = {"box": box, "box_iou": True, **({"objectness": True} if objectness else {})}
    if transposed:  # no Concat of box rows at its end: the layout said
        opts.update(kind="detection", layout="anchors", objectness=objectness)
    ex = ort_cam.Explainer(path, layer, quiet=True, cache=False, threads=1, target=opts)
    r = ex.explain_array(x, baseline_array=x0, steps=M, methods=METHODS)
    assert r.target_record["anchors"] == anchors and r.target == classes[0]
    r64, r32 = ref.reference_maps(model, module, x, x0, M,
                                  _scalar(anchors, classes, objectness, box, transposed))
    # y at x: the score plus the IoU (both the record's host value and the graph's)
    np.testing.assert_allclose([r.score, r.ym, r.y0], [r64["scores_path"][-1],
                                                        r64["scores_path"][-1],
                                                        r64["scores_path"][0]], rtol=1e-5)
    plain = ort_cam.Explainer(path, layer, quiet=True, cache=False, threads=1,
                              target={k: v for k, v in opts.items() if k != "box_iou"}
                              ).explain_array(x, baseline_array=x0, steps=M, methods=METHODS)
    tolerances = ref.assert_near_reference(r, r64, r32, METHODS, name, FACTOR, ABS)
    for method, tol in tolerances.items():  # without the IoU term: far off
        assert ref.rel_err(plain[method].raw, r64[method]) > 100 * tol, method


def test_box_iou_is_refused_in_one_line_where_it_cannot_apply(tmp_path):
    _, path = tm.build_and_export("detector", tmp_path / "d.onnx")
    layer, x = tm.MODELS["detector"].layer, tm.inputs("detector", 1)
    ex = ort_cam.Explainer(path, layer, quiet=True, cache=False, target={"box_iou": True})
    with pytest.raises(OrtCamError, match="give --box X0,Y0,X1,Y1 too") as err:
        ex.explain_array(x, baseline_array="zeros", steps=2, methods=["gradcam"])
    plain = ort_cam.Explainer(path, layer, quiet=True, cache=False)
    with pytest.raises(OrtCamError, match="cannot change the kind, the score or box_iou"):
        plain.explain_array(x, baseline_array="zeros", steps=2, methods=["gradcam"],
                            target={"box": (1, 1, 9, 9), "box_iou": True})
    with pytest.raises(OrtCamError, match="--box is not fixed at export: .* or box") as exported:
        export_explainer(path, layer, steps=2, input_kind="tensor", baseline="zeros",
                         target={"box_iou": True, "box": (1, 1, 9, 9)}, cache=False)
    _, seg = tm.build_and_export("segmenter", tmp_path / "s.onnx")
    with pytest.raises(OrtCamError, match="--box-iou does not apply to a segment target"):
        ort_cam.Explainer(seg, tm.MODELS["segmenter"].layer, quiet=True, cache=False,
                          target={"box_iou": True})
    assert "\n" not in str(err.value) + str(exported.value)
