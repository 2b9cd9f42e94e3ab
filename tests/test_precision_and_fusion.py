"""Graphs as deployment writes them: optimised by onnxruntime (com.microsoft FusedConv,
FusedGemm, QuickGelu; the transformer optimiser's SkipLayerNormalization, BiasGelu,
FastGelu), quantised to QDQ by onnxruntime.quantization, and converted to float16. The first
must give the unoptimised model's maps; the others are compared with the float32 model, and
the numbers are printed (docs/models.md, "Which models work")."""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ort_cam

#: The checkout's demo (CI installs ort_cam into site-packages, so not next to ort_cam.__file__).
DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
METHODS = ["gradcam", "igcam", "rsi"]
STEPS = 8


def contrib_ops(path: Path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node
                               if n.domain == "com.microsoft")


def optimise(src: Path, dst: Path) -> Path:
    """onnxruntime's own graph optimiser (ORT_ENABLE_EXTENDED), saved."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst


@functools.cache
def explainer(path: Path, layer: str) -> ort_cam.Explainer:
    return ort_cam.Explainer(path, layer, preprocess="raw", quiet=True, cache=False)


def maps(path: Path, layer: str, x: np.ndarray) -> dict[str, np.ndarray]:
    r = explainer(path, layer).explain_array(x, baseline_array="zeros", steps=STEPS,
                                             methods=METHODS)
    return {"target": r.target, **{m: r[m].raw for m in METHODS}}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _cnn(tmp: Path) -> Path:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.c3 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.f1, self.f2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 5)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            y = self.c3(x)
            x = (y * torch.sigmoid(1.702 * y)).mean((2, 3))
            return self.f2(torch.relu(self.f1(x)))

    torch.manual_seed(0)
    path = tmp / "cnn.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(path), opset_version=17,
                      dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def test_onnxruntime_optimised_cnn_gives_the_same_maps(tmp_path):
    plain = _cnn(tmp_path)
    fused = optimise(plain, tmp_path / "cnn_optimised.onnx")
    assert contrib_ops(fused) == {"FusedConv": 2, "QuickGelu": 1, "FusedGemm": 1}
    layer = "/Relu_output_0"  # the first FusedConv's output: the head has all three
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    a, b = maps(plain, layer, x), maps(fused, layer, x)
    assert a["target"] == b["target"]
    for m in METHODS:
        print(f"ORT-optimised CNN {m}: max relative difference {rel(b[m], a[m]):.1e}")
        assert rel(b[m], a[m]) < 1e-5


def test_transformer_optimiser_vit_gives_the_same_maps(tmp_path):
    """SkipLayerNormalization, BiasGelu, and FastGelu (gelu approximated: another model,
    compared with the same approximation in plain ops)."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    import transformer_reference as tr
    from onnxruntime.transformers import optimizer
    from test_transformers import vit

    net, size = vit()
    plain = tr.export(net, size, tmp_path / "vit.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    layer = "/encoder/Add_output_0"  # tokens after the position embedding: both blocks above
    want = maps(plain, layer, x)
    om = optimizer.optimize_model(str(plain), model_type="vit", num_heads=2, hidden_size=32,
                                  opt_level=1)
    om.save_model_to_file(str(tmp_path / "vit_opt.onnx"))
    assert contrib_ops(tmp_path / "vit_opt.onnx") == {"SkipLayerNormalization": 4,
                                                       "BiasGelu": 2}
    got = maps(tmp_path / "vit_opt.onnx", layer, x)
    assert got["target"] == want["target"]
    for m in METHODS:
        print(f"transformer-optimised ViT {m}: max relative difference {rel(got[m], want[m]):.1e}")
        assert rel(got[m], want[m]) < 1e-5
    options = optimizer.FusionOptions("vit")
    options.enable_gelu_approximation = True
    om = optimizer.optimize_model(str(plain), model_type="vit", num_heads=2, hidden_size=32,
                                  opt_level=1, optimization_options=options)
    om.save_model_to_file(str(tmp_path / "vit_fast.onnx"))
    assert contrib_ops(tmp_path / "vit_fast.onnx")["FastGelu"] == 2
    fast = maps(tmp_path / "vit_fast.onnx", layer, x)
    for m in METHODS:  # the tanh approximation moves the maps a little, no more
        print(f"FastGelu ViT {m}: max relative difference to erf Gelu {rel(fast[m], want[m]):.1e}")
        assert rel(fast[m], want[m]) < 1e-2


@pytest.fixture(scope="module")
def demo_inputs():
    """The demo's sample images as its model takes them, and its layer."""
    ex = ort_cam.Explainer(DEMO / "demo_cnn.onnx", quiet=True, cache=False)
    images = sorted((DEMO / "samples").glob("*.png"))
    return np.concatenate([ex.preprocess(p) for p in images]), ex.layer


def test_qdq_model_explained_straight_through(tmp_path, demo_inputs):
    """onnxruntime.quantization.quantize_static (QDQ, int8 weights and activations, calibrated
    on the demo images) against the float model: the same classes, and maps that keep their
    shape (Pearson correlation of the Grad-CAM maps) while every element moves by the
    quantisation (relative difference printed)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    xs, layer = demo_inputs

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(xs[i:i + 1] for i in range(len(xs)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"image": row}

    qdq = tmp_path / "demo_qdq.onnx"
    quantize_static(str(DEMO / "demo_cnn.onnx"), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    ops = collections.Counter(n.op_type for n in onnx.load(str(qdq)).graph.node)
    assert ops["QuantizeLinear"] >= 5 and ops["DequantizeLinear"] >= 10
    corr, diffs, same = [], [], 0
    for x in xs:
        a = maps(DEMO / "demo_cnn.onnx", layer, x[None])
        b = maps(qdq, layer, x[None])
        same += a["target"] == b["target"]
        if a["target"] == b["target"]:
            corr.append(np.corrcoef(a["gradcam"].ravel(), b["gradcam"].ravel())[0, 1])
            diffs.append(rel(b["gradcam"], a["gradcam"]))
    print(f"QDQ demo: {same}/{len(xs)} same class; Grad-CAM correlation min "
          f"{min(corr):.3f} median {np.median(corr):.3f}; max relative difference median "
          f"{np.median(diffs):.2f}")
    assert same >= len(xs) - 1 and min(corr) > 0.8 and np.median(corr) > 0.9


def test_float16_model_computes_in_float32(tmp_path, demo_inputs):
    """onnxruntime's float16 converter on the demo model: loaded as float32 with its float16
    weights; the maps equal those of the float32 model with its weights rounded to float16
    (float32 noise), and differ from the float32 original by the rounding (printed)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    xs, layer = demo_inputs
    model = onnx.load(str(DEMO / "demo_cnn.onnx"))
    half = convert_float_to_float16(model, keep_io_types=False)
    onnx.save(half, str(tmp_path / "half.onnx"))
    rounded = onnx.load(str(DEMO / "demo_cnn.onnx"))
    for t in rounded.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            a = onnx.numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    onnx.save(rounded, str(tmp_path / "rounded.onnx"))
    ex = explainer(tmp_path / "half.onnx", layer)
    assert ex.model.dtypes[ex.input_name] == np.float32
    assert any("float16 model" in n for n in ex.model.notes)
    worst_rounded, worst_original = 0.0, 0.0
    for x in xs[:4]:
        got = maps(tmp_path / "half.onnx", layer, x[None])
        ref = maps(tmp_path / "rounded.onnx", layer, x[None])
        orig = maps(DEMO / "demo_cnn.onnx", layer, x[None])
        for m in METHODS:
            worst_rounded = max(worst_rounded, rel(got[m], ref[m]))
            worst_original = max(worst_original, rel(got[m], orig[m]))
    print(f"float16 demo: max relative difference {worst_rounded:.1e} to the float32 model "
          f"with float16-rounded weights, {worst_original:.1e} to the float32 original")
    assert worst_rounded < 1e-5 and worst_original < 5e-2
