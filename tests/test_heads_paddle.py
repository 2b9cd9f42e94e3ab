"""Gradient heads on a PaddlePaddle export: PaddleOCR's text-direction classifier.

The model (paddle2onnx, opset 11, input x [N,3,?,?]) comes from the rapidocr-onnxruntime
wheel (see model_sources.py); it is a MobileNetV3-small with hard-swish as Add/Clip/Mul/Div,
squeeze-excite blocks (GlobalAveragePool, 1x1 Convs, HardSigmoid, Mul), residual Adds, a
MaxPool, and a Reshape whose target is computed from Shape/Slice/Concat at run time.

Reference: float64 central finite differences of Σ w·score with respect to the layer tensor,
evaluated on the head cut out of the *original* file by onnx.utils.Extractor and run by
onnx.reference.ReferenceEvaluator in float64. Nothing of ort_cam's gradient rules, loader or
graph rewriting is used on the reference side.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_sources import paddle_cls_model
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.utils import Extractor

from ort_cam.grad import fused_model, list_layers, split_models
from ort_cam.graph import load_model
from ort_cam.runtime import session_for, session_options

INPUT_SHAPE = [3, 48, 192]  # how PaddleOCR runs the classifier
BATCH = 2
OUTPUTS = {"probability": "softmax_0.tmp_0", "logit": "linear_1.tmp_1"}
#: Cuts: the last conv block's hard-swish (head: MaxPool, GAP, computed Reshape, MatMul);
#: the SE-scaled tensor of the last block (head: 1x1 Conv, BN, residual Add, Conv, BN,
#: hard-swish, ...); the input of the last depthwise 5x5 conv (head: a whole SE block, whose
#: Mul joins two paths from the layer, plus all of the above).
LAYERS = ["hardswish_17.tmp_0", "tmp_8", "hardswish_15.tmp_0"]
SHAPES = {"hardswish_17.tmp_0": [200, 2, 96], "tmp_8": [200, 2, 96],
          "hardswish_15.tmp_0": [200, 2, 96]}
PADDLE_OPS = {
    "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div",
    "GlobalAveragePool", "HardSigmoid", "Identity", "MatMul", "MaxPool", "Mul", "Relu",
    "Reshape", "Shape", "Slice", "Softmax", "Add",
}
#: float64 step. Truncation error ~h², round-off ~1e-16/h: both far below float32 noise.
FD_STEP = 1e-6
N_DIRECTIONS, N_COORDS = 4, 6
#: Our gradient is computed in float32 by onnxruntime; the reference in float64. float32
#: rounding through ~40 ops (conv sums of up to 200 terms) stays below ~1e-5 of the gradient's
#: scale; a wrong rule (factor, transpose, window) shows up as O(1).
TOL = 1e-4


@pytest.fixture(scope="module")
def path():
    return paddle_cls_model()


@pytest.fixture(scope="module")
def original(path):
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def lm(path):
    return load_model(path, input_shapes={"x": INPUT_SHAPE})


@pytest.fixture(scope="module")
def x():
    # A normalised image as PaddleOCR feeds it: (pixel/255 - 0.5) / 0.5, in [-1, 1].
    return np.random.default_rng(0).uniform(-1, 1, (BATCH, *INPUT_SHAPE)).astype(np.float32)


def run_original(original: onnx.ModelProto, x: np.ndarray, names: list[str]) -> list:
    """Tensors ``names`` of the untouched model, from onnxruntime."""
    model = onnx.ModelProto()
    model.CopyFrom(original)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names
                              if n not in have)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"])
    return sess.run(names, {"x": x})


# Reference -------------------------------------------------------------------------------
class BatchNormalization(OpRun):
    """Inference BatchNorm. onnx's reference BatchNormalization-9 takes the (defaulted)
    momentum attribute as a request for training mode and normalises with batch statistics;
    the spec's single-output form is inference, which is what onnxruntime computes."""

    op_domain = ""

    def _run(self, x, scale, bias, mean, var, epsilon=1e-5, momentum=None,
             training_mode=None):
        sh = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + epsilon)
        return (y * scale.reshape(sh) + bias.reshape(sh),)


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64: float initializers, Constant values, Cast
    targets and graph inputs/outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float64), init.name))
    f32 = TensorProto.FLOAT
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == f32:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            elif node.op_type == "Cast" and a.name == "to" and a.i == f32:
                a.i = TensorProto.DOUBLE
    for vi in [*g.input, *g.output]:
        if vi.type.tensor_type.elem_type == f32:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del g.value_info[:]
    return m


def reference_score(original: onnx.ModelProto, inputs: list[str], output: str):
    """f(values of ``inputs``) -> the ``output`` tensor, in float64, on the original graph."""
    head = Extractor(onnx.shape_inference.infer_shapes(original)).extract_model(inputs, [output])
    ev = ReferenceEvaluator(to_float64(head), new_ops=[BatchNormalization])
    return lambda feeds: ev.run(None, feeds)[0]


def fd_errors(f, layer: str, feeds: dict, w: np.ndarray, grad: np.ndarray, rng) -> dict:
    """Central differences of Σ w·f along random directions and single coordinates."""
    a0 = feeds[layer]
    g = grad.astype(np.float64)

    def total(a):
        return float((f({**feeds, layer: a}) * w).sum())

    def fd(v):
        return (total(a0 + FD_STEP * v) - total(a0 - FD_STEP * v)) / (2 * FD_STEP)

    scale = float(np.linalg.norm(g))  # the spread of <g, v> for v ~ N(0, I)
    dir_err, dir_rel = [], []
    for _ in range(N_DIRECTIONS):
        v = rng.standard_normal(a0.shape)
        ref, ours = fd(v), float((g * v).sum())
        dir_err.append(abs(ref - ours) / scale)
        dir_rel.append(abs(ref - ours) / abs(ref))
    flat = np.abs(g).ravel()
    picks = [*np.argsort(flat)[-N_COORDS // 2:], *rng.choice(flat.size, N_COORDS // 2, False)]
    coord_err = []
    for i in picks:
        e = np.zeros(a0.size)
        e[i] = 1.0
        coord_err.append(abs(fd(e.reshape(a0.shape)) - g.ravel()[i]) / flat.max())
    return {"direction": max(dir_err), "direction_rel": max(dir_rel),
            "coordinate": max(coord_err), "scale": scale}


# Tests -----------------------------------------------------------------------------------
def test_model_is_the_paddle_export(original, lm):
    ops = {n.op_type for n in original.graph.node}
    assert ops == PADDLE_OPS
    assert original.opset_import[0].version == 11
    assert lm.opset == 16 and "opset 11 converted to 16" in lm.notes
    assert lm.shapes["x"] == (2, *INPUT_SHAPE)
    (inp,) = lm.proto.graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", *INPUT_SHAPE]


def test_layers_are_nchw_and_differentiable(lm):
    layers = list_layers(lm)
    ops = collections.Counter(info.op for info in layers)
    assert ops["Conv"] == 53 - 18 and ops["MaxPool"] == 1  # 9 SE blocks: 18 1x1 maps
    for info in layers:
        assert (info.layout, info.channel_axis) == ("NCHW", 1), info
        assert info.differentiable and info.blocker is None, info
    by_name = {info.name: info for info in layers}
    for name, shape in SHAPES.items():
        assert by_name[name].shape == ["N", *shape]
    # The SE blocks' 1x1 maps are not layers (no grid); the last MaxPool output is.
    assert "pool2d_8.tmp_0" not in by_name
    assert by_name["pool2d_9.tmp_0"].shape == ["N", 200, 1, 48]


@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("layer", LAYERS)
def test_gradient_matches_finite_differences(lm, original, x, layer, score):
    rng = np.random.default_rng(sum(map(ord, layer + score)))
    w = rng.standard_normal((BATCH, 2)).astype(np.float32)
    a, scores, grad = session_for(fused_model(lm, layer, score)).run(
        None, {"x": x, "target_weights": w})
    assert grad.shape == a.shape == (BATCH, *SHAPES[layer])
    crossing = split_models(lm, layer, score).manifest["crossing"]
    values = run_original(original, x, [*crossing, OUTPUTS[score]])
    np.testing.assert_allclose(scores, values[-1], rtol=0, atol=1e-5)
    feeds = {layer: a.astype(np.float64)}
    feeds.update({n: v.astype(np.float64) for n, v in zip(crossing, values)})
    f = reference_score(original, [layer, *crossing], OUTPUTS[score])
    np.testing.assert_allclose(f(feeds), scores, rtol=0, atol=1e-5)
    err = fd_errors(f, layer, feeds, w.astype(np.float64), grad, rng)
    print(f"paddle {layer} {score}: {err}")
    assert err["scale"] > 1e-4  # the test would be vacuous on a zero gradient
    assert err["direction"] < TOL, err
    assert err["coordinate"] < TOL, err


@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("layer", LAYERS[:2])
def test_prefix_and_head_reproduce_the_model(lm, original, x, tmp_path, layer, score):
    models = split_models(lm, layer, score)
    assert models.manifest["layout"] == "NCHW" and models.manifest["channel_axis"] == 1
    onnx.save(models.prefix, str(tmp_path / "prefix.onnx"))
    onnx.save(models.head, str(tmp_path / "head.onnx"))
    prefix = ort.InferenceSession(str(tmp_path / "prefix.onnx"),
                                  session_options(), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(tmp_path / "head.onnx"), session_options(),
                                providers=["CPUExecutionProvider"])
    crossed = prefix.run(None, {"x": x})
    assert [o.name for o in prefix.get_outputs()] == [layer, *models.manifest["crossing"]]
    w = np.random.default_rng(1).standard_normal((BATCH, 2)).astype(np.float32)
    feeds = dict(zip(models.manifest["head_inputs"], [*crossed, w]))
    scores, grad = head.run(["scores", "grad"], feeds)
    want_layer, want_scores = run_original(original, x, [layer, OUTPUTS[score]])
    # the prefix and head against the original graph (onnxruntime fuses each otherwise):
    # measured 1.4e-6 on the layer (values up to 2.1) and 2.5e-7 on the scores, under every
    # perturbation of tools/perturb_suite.py; 2e-5 and 1e-5 are 14x and 40x that
    np.testing.assert_allclose(crossed[0], want_layer, rtol=0, atol=2e-5)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    _, fused_scores, fused_grad = session_for(fused_model(lm, layer, score)).run(
        None, {"x": x, "target_weights": w})
    np.testing.assert_allclose(scores, fused_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad, fused_grad, rtol=0, atol=1e-6 * np.abs(fused_grad).max())
