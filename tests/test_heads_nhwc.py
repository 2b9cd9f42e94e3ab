"""Gradient heads on an NHWC model of the kind tf2onnx writes (tools/build_nhwc_model.py):
Transposes around every Conv and the MaxPool, BatchNorm folded to Mul+Add on the last axis,
Relu6 as Clip, SAME padding as auto_pad and as an explicit Pad, a depthwise conv, a residual
Add, ReduceMean over [1,2], MatMul+Add, Softmax, at opset 13.

Reference: the same network written natively in torch (NCHW, float64, same weights); its
autograd gradient at the matching tensor, transposed to NHWC where our layer is NHWC.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tolerance as margin

from ort_cam.grad import fused_model, list_layers, split_models
from ort_cam.graph import load_model
from ort_cam.runtime import session_for, session_options

torch = pytest.importorskip("torch")
F = torch.nn.functional

_spec = importlib.util.spec_from_file_location(
    "build_nhwc_model", Path(__file__).resolve().parents[1] / "tools" / "build_nhwc_model.py")
nhwc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nhwc)

BATCH = 2
#: Cuts, with the torch tensor each matches and whether ours is NHWC (torch's is NCHW).
CASES = {
    "last_conv_nhwc": True,  # Transpose back to NHWC after the last Conv
    "block_conv_nhwc": True,  # ... after the 1x1 projection: head has the residual, MaxPool, Pad
    "stem_out": True,  # Relu6 output feeding both the block and the residual: two paths
    "pool_out": False,  # the MaxPool output, NCHW between its Transposes
}
#: Tolerances from a noise floor: the torch network run once more in float32, against its
#: float64 run; ours (onnxruntime, float32) may err by tolerance(floor) (tests/tolerance.py:
#: 10x that floor, as two float32 kernels err by similar, not equal, amounts; measured here:
#: ours / floor <= 1.2; plus 1e-6, ~8 float32 ulps), relative to the reference's largest
#: magnitude. CAP: the most any tolerance may be; a wrong rule or transposition errs by O(1),
#: a wrong branch at one corner by > 1e-3.
CAP = 1e-4


def tolerance(floor: float) -> float:
    return margin.tolerance(floor, CAP)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def built():
    return nhwc.build_nhwc_model()


@pytest.fixture(scope="module")
def lm(built):
    return load_model(built[0])


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (BATCH, nhwc.H, nhwc.W, 3)).astype(np.float32)


def torch_forward(p: dict, x_nhwc: np.ndarray, dtype=np.float64):
    """The network in native NCHW torch, in ``dtype``. Returns (logits, probs, taps): taps are
    the NCHW tensors matching ``nhwc.LAYERS``, with gradients retained."""
    t = {k: torch.from_numpy(v.astype(dtype)) for k, v in p.items()}

    def bn(y, name):
        return y * t[f"{name}_scale"][:, None, None] + t[f"{name}_shift"][:, None, None]

    taps = {}
    x = torch.from_numpy(x_nhwc.astype(dtype)).requires_grad_(True).permute(0, 3, 1, 2)
    # SAME_UPPER for a stride-2 3x3 conv on 32: one row/column of padding, at the end.
    taps["stem_conv"] = F.conv2d(F.pad(x, (0, 1, 0, 1)), t["stem_w"], t["stem_b"], stride=2)
    taps["stem_out"] = bn(taps["stem_conv"], "stem").clamp(0, 6)
    y = F.conv2d(taps["stem_out"], t["dw_w"], padding=1, groups=16)
    y = bn(y, "dw").clamp(0, 6)
    taps["block_conv_nhwc"] = F.conv2d(y, t["pw_w"])
    taps["block_out"] = taps["stem_out"] + bn(taps["block_conv_nhwc"], "pw")
    taps["pool_out"] = F.max_pool2d(taps["block_out"], 2, 2)
    taps["last_conv_nhwc"] = F.conv2d(F.pad(taps["pool_out"], (1, 1, 1, 1)), t["last_w"])
    taps["last_out"] = bn(taps["last_conv_nhwc"], "last").clamp(0, 6)
    logits = taps["last_out"].mean(dim=(2, 3)) @ t["dense_w"] + t["dense_b"]
    for v in taps.values():
        v.retain_grad()
    return logits, torch.softmax(logits, dim=1), taps


def torch_gradient(p, x, key: str, score: str, w: np.ndarray, nhwc_layout: bool,
                   dtype=np.float64):
    """(gradient at ``key`` in our layout, scores, the ``key`` tensor in our layout), as
    float64 arrays computed in ``dtype``."""
    logits, probs, taps = torch_forward(p, x, dtype)
    s = probs if score == "probability" else logits
    (s * torch.from_numpy(w.astype(dtype))).sum().backward()
    g, a = taps[key].grad.double().numpy(), taps[key].detach().double().numpy()
    if nhwc_layout:
        g, a = g.transpose(0, 2, 3, 1), a.transpose(0, 2, 3, 1)
    return g, s.detach().double().numpy(), a


def test_list_layers_reports_layouts(lm):
    by_name = {info.name: info for info in list_layers(lm)}
    want = {
        "stem_conv": "NCHW", "stem_out": "NHWC", "block_conv_nhwc": "NHWC",
        "block_out": "NHWC", "pool_out": "NCHW", "last_conv_nhwc": "NHWC", "last_out": "NHWC",
    }
    for key, layout in want.items():
        info = by_name[nhwc.LAYERS[key]]
        assert info.layout == layout, (key, info)
        assert info.channel_axis == {"NCHW": 1, "NHWC": 3}[layout], (key, info)
        assert info.differentiable, (key, info)
    # Many tensors are [N,16,16,16]: the layout must come from the graph, not the shape.
    assert by_name[nhwc.LAYERS["block_out"]].shape == ["N", 16, 16, 16]
    assert by_name[nhwc.LAYERS["last_conv_nhwc"]].shape == ["N", 8, 8, 32]
    assert by_name[f"{nhwc.PREFIX}/last_pad/Pad:0"].layout == "NHWC"
    for info in by_name.values():
        assert info.layout in ("NCHW", "NHWC") and info.differentiable, info
    assert lm.opset == 16 and "opset 13 converted to 16" in lm.notes


@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("key", CASES)
def test_gradient_matches_torch(built, lm, x, key, score):
    model, p = built
    layer = nhwc.LAYERS[key]
    w = np.random.default_rng(len(key)).standard_normal((BATCH, nhwc.N_CLASSES)).astype(
        np.float32)
    a, scores, grad = session_for(fused_model(lm, layer, score)).run(
        None, {nhwc.INPUT: x, "target_weights": w})
    want, want_scores, want_a = torch_gradient(p, x, key, score, w, CASES[key])
    g32, s32, a32 = torch_gradient(p, x, key, score, w, CASES[key], np.float32)
    assert grad.shape == a.shape == want.shape
    assert np.abs(want).max() > 1e-4
    for what, ours, ref, twin in (("scores", scores, want_scores, s32), ("layer", a, want_a, a32),
                                  ("grad", grad, want, g32)):
        err, floor = rel_err(ours, ref), rel_err(twin, ref)
        print(f"nhwc {key} {score} {what}: max|ours-torch|/max|torch| = {err:.2e}, "
              f"float32 floor {floor:.2e}")
        assert err <= tolerance(floor), (what, err, floor)


@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("key", ["last_conv_nhwc", "block_conv_nhwc", "pool_out"])
def test_prefix_and_head_reproduce_the_model(built, lm, x, tmp_path, key, score):
    model, p = built
    layer = nhwc.LAYERS[key]
    models = split_models(lm, layer, score)
    assert models.manifest["layout"] == ("NHWC" if CASES[key] else "NCHW")
    assert models.manifest["channel_axis"] == (3 if CASES[key] else 1)
    onnx.save(models.prefix, str(tmp_path / "prefix.onnx"))
    onnx.save(models.head, str(tmp_path / "head.onnx"))
    cpu = ["CPUExecutionProvider"]
    crossed = ort.InferenceSession(str(tmp_path / "prefix.onnx"), session_options(),
                                   providers=cpu).run(
        None, {nhwc.INPUT: x})
    w = np.random.default_rng(1).standard_normal((BATCH, nhwc.N_CLASSES)).astype(np.float32)
    feeds = dict(zip(models.manifest["head_inputs"], [*crossed, w]))
    head = ort.InferenceSession(str(tmp_path / "head.onnx"), session_options(), providers=cpu)
    scores, grad = head.run(["scores", "grad"], feeds)
    # The untouched opset-13 model, with the layer and the logits exposed.
    orig = onnx.ModelProto()
    orig.CopyFrom(model)
    out = nhwc.OUTPUT if score == "probability" else nhwc.LOGITS
    orig.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n)
                             for n in (layer, nhwc.LOGITS))
    want_layer, want_scores = ort.InferenceSession(orig.SerializeToString(), session_options(),
                                                   providers=cpu).run(
        [layer, out], {nhwc.INPUT: x})
    _, fused_scores, fused_grad = session_for(fused_model(lm, layer, score)).run(
        None, {nhwc.INPUT: x, "target_weights": w})
    # The layer and the scores against the untouched model: onnxruntime float32 runs of other
    # graphs (other fusions), so within the tolerance of torch's float32 error on them.
    _, s64, a64 = torch_gradient(p, x, key, score, w, CASES[key])
    _, s32, a32 = torch_gradient(p, x, key, score, w, CASES[key], np.float32)
    for what, ours, ref, floor in (("layer", crossed[0], want_layer, rel_err(a32, a64)),
                                   ("scores", scores, want_scores, rel_err(s32, s64))):
        err = rel_err(ours, ref)
        print(f"nhwc split {key} {score} {what}: {err:.2e} (float32 floor {floor:.2e})")
        assert err <= tolerance(floor), (what, err, floor)
    # The head's gradient graph is the fused model's: the same kernels on the same values
    # (measured: bit for bit).
    np.testing.assert_allclose(grad, fused_grad, rtol=0, atol=1e-6 * np.abs(fused_grad).max())
