"""Every target kind explained end to end (``Explainer`` with the kind detected from the
output) on the small models of tests/target_models.py, against torch autograd of the same
scalar (tests/target_reference.py, which never calls ort_cam): the target chosen at x must
be the reference's own choice (class and mask, anchors after NMS, CTC steps), and Grad-CAM,
HiResCAM, LayerCAM, Integrated Grad-CAM and RSI-Grad-CAM's raw maps and completeness gap must
match the float64 reference.

Tolerance: each quantity's float32 floor is measured on the spot (the reference run again in
float32 against float64); ort_cam may err by FACTOR times it plus ABS. FACTOR 10: two
float32 computations of one function with other kernels and summation orders differ by
amounts of the same order, not equal ones (tests/torch_reference.py measured ratios up to
4.6). ABS: 8 float32 ulps of the quantity's scale, for a floor that comes out near 0.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import target_models as tm  # noqa: E402
import target_reference as ref  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.errors import InputError, OrtCamError  # noqa: E402

FACTOR, ABS = 10.0, 8 * 2.0**-23
M = 8
METHODS = ["gradcam", "hirescam", "layercam", "igcam", "rsi"]


def _segment_scalar(out: np.ndarray):
    """The largest argmax region's class c and Σ over it of out[c] (SemanticSegmentationTarget)."""
    top = out[0].argmax(0)
    c = int(np.bincount(top.reshape(-1), minlength=out.shape[1]).argmax())
    mask = torch.from_numpy((top == c).astype(np.float64))
    return c, int(mask.sum()), lambda o: (o[:, c] * mask.to(o.dtype)).sum(dim=(1, 2))


def _probmap_scalar(out: np.ndarray):
    mask = torch.from_numpy((out[0, 0] > 0.5).astype(np.float64))
    return 0, int(mask.sum()), lambda o: (o[:, 0] * mask.to(o.dtype)).sum(dim=(1, 2))


def _cosine(v: np.ndarray):
    def scalar(o):
        t = torch.from_numpy(v).to(o.dtype)
        return torch.nn.functional.cosine_similarity(o, t[None], dim=1, eps=1e-8)
    return scalar


def _reference(name: str, out: np.ndarray, r, concept: np.ndarray):
    """The reference's own choice at x, checked against ort_cam's, and its scalar."""
    rec = r.target_record or {}
    if name in ("segmenter", "probmap"):
        c, area, scalar = (_segment_scalar if name == "segmenter" else _probmap_scalar)(out)
        assert (r.target, rec["mask_area"]) == (c, area)
        return scalar
    if name.startswith("detector"):
        obj = name == "detector_obj"
        anchors, classes = ref.choose_detections(out[0], obj, k=2)
        assert list(rec["anchors"]) == anchors and r.target in (None, *classes)
        return ref.detection_scalar(anchors, classes, obj)
    if name.startswith("crnn"):
        steps, tokens = ref.greedy_ctc(out[0], tm.CRNN_BLANK)
        assert (rec["steps"], rec["tokens"]) == (steps, tokens)
        return ref.sequence_scalar(steps, tokens)
    if name == "embedding":
        return _cosine(concept)
    if name == "multilabel":
        c = int(out[0].argmax())
        assert r.target == c
        return lambda o: o[:, c]
    sign = 1.0 if out[0, 0] > 0 else -1.0  # binary: the predicted category's ±logit
    assert r.target == int(sign > 0)
    return lambda o: sign * o[:, 0]


#: model -> (kind and score the explainer must detect, its target options)
CASES = {
    "segmenter": ("segment", "logit", {}),
    "probmap": ("segment", "output", {}),
    "detector": ("detection", "output", {"top_k": 2}),
    "detector_obj": ("detection", "objectness", {"top_k": 2, "objectness": True}),
    "crnn": ("sequence", "output", {}),
    "crnn_softmax": ("sequence", "output", {}),
    "embedding": ("embedding", "normalize", {}),
    "multilabel": ("class", "sigmoid", {}),
    "binary": ("binary", "binary", {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_kind_against_torch(tmp_path, name):
    kind, score, opts = CASES[name]
    model, path = tm.build_and_export(name, tmp_path / f"{name}.onnx")
    concept = np.random.default_rng(5).standard_normal(tm.EMBED_DIM)
    if name == "embedding":
        opts = {"concept": concept}
    ex = ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                           target=opts)
    assert (ex.target_kind, ex.score_mode) == (kind, score)
    x, x0 = tm.inputs(name, 1, seed=3), np.zeros((1, *tm.MODELS[name].input_shape), np.float32)
    r = ex.explain_array(x, baseline_array=x0, steps=M, methods=METHODS)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).double().numpy()
    scalar = _reference(name, out, r, concept)
    r64, r32 = ref.reference_maps(model, tm.MODELS[name].module, x, x0, M, scalar)
    np.testing.assert_allclose(r.score, r64["scores_path"][-1], rtol=1e-5)  # y at x
    for method in METHODS:
        floor = ref.rel_err(r32[method], r64[method])
        err = ref.rel_err(r[method].raw, r64[method])
        print(f"{name} {method}: err {err:.1e} floor {floor:.1e}")
        assert err <= FACTOR * floor + ABS, f"{method}: {err:.2e}, floor {floor:.2e}"
    gap, gap64, gap32 = r["rsi"].extras["completeness_gap"], r64["gap"], r32["gap"]
    # the gap's own scale: Σ |IG| / |Δy| (a float32 error of one ulp in each IG term)
    print(f"{name} gap {gap:.2e} ref {gap64:.2e} f32 {gap32:.2e}")
    assert abs(gap - gap64) <= FACTOR * abs(gap32 - gap64) + ABS * r64["spread"]


def test_the_cli_explains_a_detector_and_records_the_target(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from ort_cam.cli import main

    _, path = tm.build_and_export("detector", tmp_path / "d.onnx")
    img = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(img)
    res = CliRunner().invoke(main, [str(a) for a in (
        "explain", path, img, "--layer", tm.MODELS["detector"].layer, "--preprocess", "raw",
        "--scale", 1 / 255, "--steps", 2, "--top-k", 2, "--out", tmp_path / "o", "--no-cache")])
    assert res.exit_code == 0, res.output
    assert "output 'output' [N, 7, 80]: target detection" in res.output
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[0])
    assert rec["target_kind"] == "detection" and len(rec["target_record"]["anchors"]) == 2
    npz = np.load(tmp_path / "o" / "i.npz")
    assert npz["target_boxes"].shape == (2, 4)
    np.testing.assert_array_equal(npz["target_anchors"], rec["target_record"]["anchors"])
    assert (tmp_path / "o" / "i.png").stat().st_size > 0


@pytest.mark.parametrize("name, values, message", [
    ("segmenter", {"mask": np.ones((8, 8))}, "the mask is 8x8; the output's grid is 16x16"),
    ("detector", {"anchors": (80,)}, "anchor index 80 is out of range; the head has 80"),
    ("embedding", {"concept": np.ones(10)}, "the concept vector has 10 values; output "
                                            "'embedding' gives 320 per image"),
    ("any", {"weights": np.full((20,), np.nan)}, "the target weights: 20 NaN or inf"),
])
def test_bad_target_values_are_refused_in_one_line(tmp_path, name, values, message):
    model_name = "multilabel" if name == "any" else name
    _, path = tm.build_and_export(model_name, tmp_path / "m.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS[model_name].layer, quiet=True, cache=False,
                           target_kind="any" if name == "any" else None, target=values)
    with pytest.raises((InputError, OrtCamError)) as err:
        ex.explain_array(tm.inputs(model_name, 1), baseline_array="zeros", steps=2,
                         methods=["gradcam"])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name, kind", [("multilabel", "segment"), ("segmenter", "detection"),
                                        ("detector", "embedding")])
def test_a_wrong_kind_for_the_output_is_one_line(tmp_path, name, kind):
    _, path = tm.build_and_export(name, tmp_path / "m.onnx")
    with pytest.raises(OrtCamError) as err:
        ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, target_kind=kind)
    assert f"a {kind} target (--target-kind) does not fit output" in str(err.value)
    assert "\n" not in str(err.value)
