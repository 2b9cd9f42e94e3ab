"""The target references of tests/target_reference.py, checked on their own: the choices by
hand, the scalars against the output read directly, and the path's A, G, y against each
other through the completeness identity (Σ IG → y_m − y_0 as the path is refined)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # in the test extras; skip cleanly without it

import target_models as tm  # noqa: E402
import target_reference as ref  # noqa: E402


def test_greedy_ctc_by_hand():
    argmax = [0, 3, 3, 0, 3, 2, 2, 0, 0, 1]
    scores = np.eye(5)[argmax] + 0.01
    assert ref.greedy_ctc(scores) == ([1, 4, 5, 9], [3, 3, 2, 1])
    # blank 3: the 0 after a blank is a new token, not a repeat
    assert ref.greedy_ctc(scores, blank=3) == ([0, 3, 5, 7, 9], [0, 0, 2, 0, 1])


def test_choose_detections_by_hand():
    """Anchors 0 and 1 overlap (IoU 0.6) with the same class: NMS keeps the better, 1; anchor
    2 overlaps 1 as much but is of another class; anchor 3 is under ``conf``."""
    boxes = np.array([[10, 10, 10, 10], [12, 10, 10, 10], [12, 10, 10, 10], [40, 40, 5, 5]],
                     float).T  # cx, cy, w, h: IoU(0, 1) = 80 / 120
    cls = np.array([[0.8, 0.9, 0.1, 0.1], [0.1, 0.1, 0.7, 0.2]])
    head = np.concatenate([boxes, cls])
    assert ref.choose_detections(head, k=3) == ([1, 2], [0, 1])
    assert ref.choose_detections(head, k=3, iou=0.7) == ([1, 0, 2], [0, 0, 1])
    assert ref.choose_detections(head, k=1) == ([1], [0])
    obj = np.array([[1.0, 0.5, 1.0, 1.0]])  # objectness halves anchor 1: anchor 0 wins
    assert ref.choose_detections(np.concatenate([boxes, obj, cls]), True, k=1) == ([0], [0])
    # a box (x0, y0, x1, y1) over anchors 1 and 2 (IoU 1) and 0 (0.67): anchor 1 scores best
    assert ref.match_box(head, (7, 5, 17, 15)) == ([1], [0])
    assert ref.match_box(head, (7, 5, 17, 15), threshold=0.7) == ([1], [0])
    assert ref.match_box(head, (35, 35, 45, 45)) == ([], [])  # IoU with anchor 3: 0.25
    with_obj = np.concatenate([boxes, obj, cls])  # obj·cls: 0.8, 0.45, 0.7 (class 1), 0.2
    assert ref.match_box(with_obj, (7, 5, 17, 15), True) == ([0], [0])
    assert ref.match_box(with_obj, (7, 5, 17, 15), True, threshold=0.7) == ([2], [1])


def test_scalars_read_the_output():
    out = torch.arange(2 * 8 * 5, dtype=torch.float64).reshape(2, 8, 5)
    got = ref.detection_scalar([1, 3], [0, 2])(out)
    assert torch.equal(got, out[:, 4, 1] + out[:, 6, 3])
    got = ref.detection_scalar([1, 3], [0, 2], objectness=True)(out)
    assert torch.equal(got, out[:, 4, 1] * out[:, 5, 1] + out[:, 4, 3] * out[:, 7, 3])
    assert torch.equal(ref.sequence_scalar([0, 4], [2, 1])(out), out[:, 0, 2] + out[:, 4, 1])


@pytest.mark.parametrize("name", ["detector", "detector_obj", "crnn"])
def test_completeness_closes_as_the_path_is_refined(name):
    """Σ IG ≈ y_m − y_0 holds only if A, G and y of the path belong together. The detectors
    are smooth (SiLU, sigmoid) above and below the layer, so the trapezoid rule's error falls
    as 1/m²: at m = 32 the gap is at most 1/8 of m = 8's (measured: 1/16, 6e-4 and 2e-4). The
    CRNN has ReLUs below the layer and a MaxPool above it (kinks along the path), so its gap
    does not fall monotonically (measured 4e-4..8e-3 for m = 8..256): under 1% at both m.
    A G off by a factor or from another layer leaves gaps of order 1."""
    model = tm.build(name)
    x = tm.inputs(name, batch=1, seed=5)
    with torch.no_grad():
        out = model(torch.from_numpy(x))[0].numpy()
    if name.startswith("detector"):
        anchors, classes = ref.choose_detections(out, name == "detector_obj", k=2, conf=0.0)
        scalar = ref.detection_scalar(anchors, classes, name == "detector_obj")
    else:
        scalar = ref.sequence_scalar(*ref.greedy_ctc(out))
    spec = tm.MODELS[name]
    x0 = np.zeros_like(x)
    coarse = ref.maps(ref.path_reference(model, spec.module, x, x0, 8, scalar, 64))
    fine = ref.maps(ref.path_reference(model, spec.module, x, x0, 32, scalar, 64))
    smooth = name.startswith("detector")
    assert fine["gap"] < 1e-2 and coarse["gap"] < 1e-2, (coarse["gap"], fine["gap"])
    assert not smooth or fine["gap"] <= coarse["gap"] / 8, (coarse["gap"], fine["gap"])
    with torch.no_grad():
        direct = float(scalar(model.double()(torch.from_numpy(x).double()))[0])
    assert np.isclose(fine["scores_path"][-1], direct, rtol=1e-12)
