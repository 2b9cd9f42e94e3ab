"""The detection target with a given box and the sequence target (greedy CTC, and one chosen
step), end to end: the YOLO-style detectors and the CRNN of tests/target_models.py explained
by ``Explainer`` against torch autograd of the same scalar (tests/target_reference.py, which
never calls ort_cam). The target ort_cam chooses at x must be the reference's own choice
(the best-scoring anchor matching the box; the kept steps and their tokens), and the raw maps
of Grad-CAM, HiResCAM, LayerCAM (at x), Integrated Grad-CAM and RSI-Grad-CAM (along the
path), the score path and RSI's completeness gap must match the float64 reference.

Tolerances, per quantity, from the float32 floor measured on the spot (the reference run
again in float32, fed the float32 path inputs onnxruntime gets, against float64; as
tests/test_methods_gradcam_lib.py's ``_check`` and tests/test_methods_torch.py do):
ort_cam may err by FACTOR times the floor plus ABS_FLOOR. FACTOR 10: two float32 computations
of one function by other kernels err by amounts of one size but not equal ones
(tests/test_methods_torch.py measured ratios up to 4.6; the largest here is printed with
``pytest -s``); ABS_FLOOR: ~8 float32 ulps of the quantity's largest magnitude, for a floor
that a float32 run hits almost exactly by luck. The completeness gap is compared on its own
scale, Σ |IG| / |Δy| (its error is that of the sum Σ IG, bounded by Σ |IG|).

The detectors' scores are sigmoids, and onnxruntime's float32 Sigmoid (MLAS's) is accurate to
~2 ulps of 1 in absolute terms, not relative ones (torch's is correctly rounded): the rule's
σ' = σ(1 − σ) then carries a relative error of up to ~1e-7 / (σ(1 − σ)), 1.5e-5 at σ = 0.996,
which scales G (and every map at x) as a whole and which a torch float32 run does not show.
So the detection cases' map and gap floors also take that error, measured on the spot:
onnxruntime's float32 σ(1 − σ) against float64's at every sigmoid the chosen score reads, at
every point of the path (``_sigmoid_floor``; 1.5e-5 and 6.2e-6 here, where torch's float32
floors are 7e-7). An exp-based σ' = e/(1 + e)², e = exp(−|z|), would bring the error down to
torch's (measured 4.7e-7 on the detector), at 6 element-wise nodes per Sigmoid instead of 2.

The CRNN's fast cases explain 16x48 inputs (T = 12 steps) over m = 16; the slow one a
16x192 input (T = 48) over m = 32.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")

import target_models as tm  # noqa: E402
import target_reference as ref  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.runtime import session_for  # noqa: E402

FACTOR = 10.0
ABS_FLOOR = 1e-6
M = 16
METHODS = ["gradcam", "hirescam", "layercam", "igcam", "rsi"]
#: (case, quantity) -> (error, floor): printed by test_report (pytest -s).
ERRORS: dict[tuple[str, str], tuple[float, float]] = {}


def _explainer(path, name: str, target: dict) -> ort_cam.Explainer:
    return ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                             target=target)


def _output(model, x: np.ndarray) -> np.ndarray:
    """The model's output at x (batch 1 -> one image), float64 torch."""
    with torch.no_grad():
        return model.double()(torch.from_numpy(x).double())[0].numpy()


def _check(case: str, r, model, module: str, x: np.ndarray, x0: np.ndarray, m: int,
           scalar: ref.Scalar, extra_floor: float = 0.0) -> None:
    """Every map, the score path and the gap of ``r`` against the reference's; the floors of
    the maps and the gap at least ``extra_floor`` (a float32 error of onnxruntime's in G that
    torch's run does not show; the score path does not go through G)."""
    r64, r32 = ref.reference_maps(model, module, x, x0, m, scalar)
    quantities = [(method, r[method].raw, r64[method], r32[method]) for method in METHODS]
    quantities.append(("scores_path", r.scores_path, r64["scores_path"], r32["scores_path"]))
    for what, ours, want, f32 in quantities:
        floor = ref.rel_err(f32, want)
        err, floor = ref.rel_err(ours, want), floor if what == "scores_path" else max(
            floor, extra_floor)
        ERRORS[case, what] = (err, floor)
        assert err <= FACTOR * floor + ABS_FLOOR, f"{case} {what}: {err:.2e}, floor {floor:.2e}"
    scale = max(1.0, float(r64["spread"]))
    err, floor = (abs(r.completeness_gap - r64["gap"]) / scale,
                  max(abs(float(r32["gap"]) - r64["gap"]) / scale, extra_floor))
    ERRORS[case, "gap"] = (err, floor)
    assert err <= FACTOR * floor + ABS_FLOOR, f"{case} gap: {err:.2e}, floor {floor:.2e}"


# --- detection with a given box -------------------------------------------------------------
def _ort_sigmoid(z: np.ndarray) -> np.ndarray:
    """onnxruntime's float32 Sigmoid of ``z`` (a one-node model)."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["z"], ["y"])], "sigmoid",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return session_for(model).run(None, {"z": z.astype(np.float32)})[0]


def _sigmoid_floor(model, x: np.ndarray, x0: np.ndarray, m: int, rows: list[int],
                   anchors: list[int]) -> float:
    """The largest relative error of onnxruntime's float32 σ(1 − σ) (as the Sigmoid rule
    forms it from the forward's σ) against float64's, over the head's ``rows`` at the
    ``anchors``, at every path point: the pre-sigmoid values z come from the float64 model
    (σ⁻¹ of its output, exact enough in float64 for |z| < 30)."""
    with torch.no_grad():
        out = model.double()(ref.path_inputs(x, x0, m)).numpy()  # [m+1, rows, A]
    p = np.concatenate([out[:, rows, a] for a in anchors], axis=None)
    z = np.log(p) - np.log1p(-p)
    want = p * (1 - p)
    y = _ort_sigmoid(z)
    got = y * (np.float32(1) - y)
    return float(np.max(np.abs(got.astype(np.float64) - want) / want))


@pytest.mark.parametrize("name", ["detector", "detector_obj"])
def test_detection_box_target_against_torch(tmp_path, name):
    """The box: the top detection's box at x moved by (1, -1) px; ort_cam must explain the
    best-scoring anchor whose box overlaps it by IoU > 0.5, as the reference chooses it."""
    obj = name == "detector_obj"
    model, path = tm.build_and_export(name, tmp_path / f"{name}.onnx")
    x = tm.inputs(name, batch=1, seed=11)
    x0 = np.zeros_like(x)
    out = _output(model, x)
    (top,), _ = ref.choose_detections(out, obj, k=1, conf=0.0)
    cx, cy, w, h = out[:4, top]
    box = (cx - w / 2 + 1, cy - h / 2 - 1, cx + w / 2 + 1, cy + h / 2 - 1)
    anchors, classes = ref.match_box(out, box, obj)
    assert anchors, "the moved box matches no anchor (the test's own premise)"
    ex = _explainer(path, name, {"box": box, "objectness": obj})
    r = ex.explain_array(x, baseline_array=x0, steps=M, methods=METHODS)
    assert r.target_kind == "detection" and list(r.target_record["anchors"]) == anchors
    assert r.target == classes[0]
    rows = [4, 5 + classes[0]] if obj else [4 + classes[0]]
    sig = _sigmoid_floor(model, x, x0, M, rows, anchors)
    ERRORS[f"{name}/box", "σ' (ort)"] = (sig, sig)
    _check(f"{name}/box", r, model.float(), tm.MODELS[name].module, x, x0, M,
           ref.detection_scalar(anchors, classes, obj), extra_floor=sig)


# --- sequence -------------------------------------------------------------------------------
def _crnn_case(tmp_path, name: str, target: dict, width: int | None, seed: int, m: int):
    """Explain one CRNN input; check the choice and every quantity against the reference."""
    model = tm.build(name)
    spec = tm.MODELS[name]
    shape = spec.input_shape if width is None else (*spec.input_shape[:2], width)
    path = tm.export(model, name, tmp_path / f"{name}.onnx", shape=shape)
    x = np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)
    x0 = np.zeros_like(x)
    out = _output(model, x)
    if "step" in target:
        steps, tokens = [target["step"]], [int(out[target["step"]].argmax())]
    else:
        steps, tokens = ref.greedy_ctc(out, tm.CRNN_BLANK)
    r = _explainer(path, name, target).explain_array(x, baseline_array=x0, steps=m,
                                                      methods=METHODS)
    assert r.target_kind == "sequence"
    assert (r.target_record["steps"], r.target_record["tokens"]) == (steps, tokens)
    label = f"{name}/{'step' if 'step' in target else 'ctc'}/T{out.shape[0]}"
    _check(label, r, model.float(), spec.module, x, x0, m, ref.sequence_scalar(steps, tokens))


@pytest.mark.parametrize("name", ["crnn", "crnn_softmax"])
def test_sequence_target_against_torch(tmp_path, name):
    _crnn_case(tmp_path, name, {}, None, seed=21, m=M)


def test_sequence_one_step_against_torch(tmp_path):
    _crnn_case(tmp_path, "crnn", {"step": 5}, None, seed=22, m=M)


@pytest.mark.slow
def test_sequence_target_long_line_against_torch(tmp_path):
    """A 4x wider line (T = 48 steps: the unrolled LSTM gradient has 48 steps per
    direction), over m = 32."""
    _crnn_case(tmp_path, "crnn", {}, 4 * tm.CRNN_HW[1], seed=23, m=32)


def test_report(capsys):
    with capsys.disabled():
        for (case, what), (err, floor) in sorted(ERRORS.items()):
            ratio = err / floor if floor else float("nan")
            print(f"{case:28s} {what:12s} error {err:.2e} floor {floor:.2e} ratio {ratio:.2f}")
