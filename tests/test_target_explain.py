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
    # the gap's own scale (spread): Σ |IG| / |Δy| (a float32 error of one ulp in each IG term)
    ref.assert_near_reference(r, r64, r32, METHODS, name, FACTOR, ABS)


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


def test_several_targets_of_one_image_share_runs_and_give_the_maps_one_by_one(tmp_path):
    """Several segment targets of one image (one class each, over the whole grid) explained
    by one explain_many call, x run once for all of them (fed each one's W: the class and the
    box fix it, so that run is each path's last point), the rest of their paths packed into
    one shared run (too few points to build the prefix and head for: tests/
    test_target_paths.py walks them together), give the very maps of explaining each alone."""
    from PIL import Image

    _, path = tm.build_and_export("segmenter", tmp_path / "s.onnx")
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "i.png")
    ex = ort_cam.Explainer(path, tm.MODELS["segmenter"].layer, quiet=True, cache=False,
                           preprocess={"preset": "raw", "scale": 1 / 255})
    specs = [{"target": c, "box": (0, 0, 16, 16)} for c in range(tm.SEG_CLASSES)]
    assert ex.pack_size(8) >= len(specs)
    runs: list[int] = []
    real = ex.runner.run
    ex.runner.run = lambda feeds: runs.append(len(feeds["x"])) or real(feeds)
    together = ex.explain_many([tmp_path / "i.png"], targets=specs, steps=8)
    assert runs == [len(specs), len(specs) * 8], "every x at once, then every path at once"
    for spec, r in zip(specs, together):
        alone = ex.explain(tmp_path / "i.png", target=spec, steps=8)
        assert r.target == alone.target == spec["target"]
        assert r.target_record == alone.target_record
        for name in ("gradcam", "igcam", "rsi"):
            np.testing.assert_array_equal(r[name].raw, alone[name].raw)


class TorchTargetRuns:
    """ort_cam's ``ModelRuns`` on a torch model for a target scalar (the layer module's output
    replaced by a forward hook, as tests/test_methods_gradcam_lib.py's TorchRuns): ort_cam's
    run-based formulas run on torch, float32 or float64, to compare the feeds of a target of
    another kind with."""

    def __init__(self, model, module: str, x: np.ndarray, scalar, dtype):
        self.model = __import__("copy").deepcopy(model).to(dtype).eval()
        self.mod, self.scalar, self.dtype = self.model.get_submodule(module), scalar, dtype
        self.x = torch.from_numpy(x).to(dtype)
        self.target, self.batch, self.score_mode = -1, 32, "output"

    def _forward(self, xs, acts=None, seen=None):
        def hook(_m, _i, out):
            if seen is not None:
                seen.append(out)
            return acts

        handle = self.mod.register_forward_hook(hook)
        try:
            return self.model(xs)
        finally:
            handle.remove()

    def activation(self):
        seen: list = []
        with torch.no_grad():
            self._forward(self.x, seen=seen)
        return seen[0][0].double().numpy()

    def baseline_activation(self):
        seen: list = []
        with torch.no_grad():
            self._forward(torch.zeros_like(self.x), seen=seen)
        return seen[0][0].double().numpy()

    def head_scores(self, acts):
        a = torch.from_numpy(acts).to(self.dtype)
        with torch.no_grad():
            return self.scalar(self._forward(self.x.expand(len(a), -1, -1, -1), a)).double().numpy()

    def head_gradients(self, acts):
        a = torch.from_numpy(acts).to(self.dtype).requires_grad_(True)
        y = self.scalar(self._forward(self.x.expand(len(a), -1, -1, -1), a))
        (g,) = torch.autograd.grad(y.sum(), a)
        return y.detach().double().numpy(), g.double().numpy()

    def input_size(self):
        return tuple(self.x.shape[2:])

    def masked_scores(self, masks):
        xs = self.x * torch.from_numpy(masks).to(self.dtype)[:, None]
        with torch.no_grad():
            return self.scalar(self.model(xs)).double().numpy()


@pytest.mark.parametrize("name", ["segmenter", "detector"])
def test_run_based_methods_take_a_target_of_another_kind(tmp_path, name):
    """Ablation-CAM, Score-CAM and Layer IG run the head (or the model) for a segment or a
    detection target: their maps equal ort_cam's formulas run on torch with the same scalar
    (float64; the float32 run is the floor)."""
    from ort_cam.methods import METHODS as REGISTRY
    from ort_cam.methods import MethodOptions
    from ort_cam.methods.run_based import run_method

    model, path = tm.build_and_export(name, tmp_path / "m.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1)
    x = tm.inputs(name, 1, seed=3)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).double().numpy()
    if name == "segmenter":
        _, _, scalar = _segment_scalar(out)
    else:
        scalar = ref.detection_scalar(*ref.choose_detections(out[0], False, k=1))
    methods = ["ablationcam", "scorecam", "layerig"]
    r = ex.explain_array(x, baseline_array="zeros", steps=4, methods=methods)
    opts = MethodOptions()
    for method in methods:
        r64, r32 = (run_method(REGISTRY[method], 4, opts, TorchTargetRuns(
            model, tm.MODELS[name].module, x, scalar, dtype))[0]
                    for dtype in (torch.float64, torch.float32))
        floor, err = ref.rel_err(r32, r64), ref.rel_err(r[method].raw, r64)
        print(f"{name} {method}: err {err:.1e} floor {floor:.1e} max {np.abs(r64).max():.2e}")
        assert err <= FACTOR * floor + ABS, f"{method}: {err:.2e}, floor {floor:.2e}"


def test_a_cached_explainer_reads_the_target_as_the_first_did(tmp_path, monkeypatch):
    """The prepared-model cache keeps the reading (kind, head, the output as the kinds read
    it): an explainer from the cache chooses the same target and gives the same maps; a
    detection layout flag is part of the key (another one is a miss)."""
    from ort_cam import cache

    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "cache"))
    _, path = tm.build_and_export("detector", tmp_path / "d.onnx")
    layer, x = tm.MODELS["detector"].layer, tm.inputs("detector", 1, seed=3)
    cold = ort_cam.Explainer(path, layer, quiet=True)
    warm = ort_cam.Explainer(path, layer, quiet=True)
    assert not cold.cache_hit and warm.cache_hit and warm.reading == cold.reading
    a, b = (ex.explain_array(x, baseline_array="zeros", steps=4, methods=["rsi"])
            for ex in (cold, warm))
    assert a.target_record == b.target_record
    np.testing.assert_array_equal(a["rsi"].raw, b["rsi"].raw)
    other = ort_cam.Explainer(path, layer, quiet=True, target={"objectness": True})
    assert not other.cache_hit and other.score_mode == "objectness"


def test_the_cli_reads_target_files(tmp_path):
    """--mask (an image's nonzero pixels, on the output's grid), --concept-image, --concept;
    a mask of the wrong size and an unreadable concept are one line."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from ort_cam.cli import main

    def explain(name: str, *extra):
        _, path = tm.build_and_export(name, tmp_path / f"{name}.onnx")
        return CliRunner().invoke(main, [str(a) for a in (
            "explain", path, img, "--layer", tm.MODELS[name].layer, "--preprocess", "raw",
            "--scale", 1 / 255, "--steps", 2, "--methods", "gradcam", "--no-cache", "--force",
            "--out", tmp_path / name, *extra)])

    img = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(img)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    res = explain("segmenter", "--mask", tmp_path / "mask.png", "--target", 2)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "segmenter" / "results.jsonl").read_text())
    assert rec["target_record"]["mask_area"] == 24 and rec["target"] == 2
    Image.fromarray(mask[:8]).save(tmp_path / "small.png")
    res = explain("segmenter", "--mask", tmp_path / "small.png")
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == (
        "Error: the mask is 8x16; the output's grid is 16x16: give a mask of that size "
        "(or a box)")
    res = explain("embedding", "--concept-image", img)
    assert res.exit_code == 0, res.output  # the image against its own embedding: cosine 1
    rec = json.loads((tmp_path / "embedding" / "results.jsonl").read_text())
    assert rec["score"] == pytest.approx(1.0, abs=1e-6)
    (tmp_path / "bad.npy").write_text("not an array")
    res = explain("embedding", "--concept", tmp_path / "bad.npy")
    assert res.exit_code == 1 and "cannot read" in res.output.strip().splitlines()[-1]
