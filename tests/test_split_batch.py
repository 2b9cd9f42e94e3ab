"""A split head takes any batch, whatever batch the prefix ran at.

``x.view(x.size(0), -1)`` exports as a Reshape whose target [N, -1] is computed from the
*input's* shape, in the prefix. Fed to the head, it fixed the head's batch to the prefix's:
EfficientNet-Lite0's head failed with "GEMM: Dimension mismatch" for activations of batch 3
from a prefix run at batch 1 (the natural way to perturb activations). Such integer tensors,
computed from tensor shapes alone, are now computed again inside the head from the layer's
own shape (``Cut.rebuilt``). Reference: the fused gradient model, which runs prefix and head
as one graph at the batch it is given."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_cam.grad import fused_model, split_models
from ort_cam.graph import load_model
from ort_cam.runtime import session_options

CPU = ["CPUExecutionProvider"]
N_CLASSES = 5


def _target_nodes(kind: str) -> list:
    """Nodes computing ``target`` ([N, -1]) from the input x [N,3,8,8]'s shape."""
    neg = "minus_one"
    if kind == "shape-gather":
        return [helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
                helper.make_node("Concat", ["n1", neg], ["target"], axis=0)]
    if kind == "shape-start-end":
        return [helper.make_node("Shape", ["x"], ["n1"], start=0, end=1),
                helper.make_node("Concat", ["n1", neg], ["target"], axis=0)]
    if kind == "size":  # numel / (3·8·8) = N
        return [helper.make_node("Size", ["x"], ["numel"]),
                helper.make_node("Div", ["numel", "per_sample"], ["n"]),
                helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
                helper.make_node("Concat", ["n1", neg], ["target"], axis=0)]
    if kind == "batch-on-axis-1":  # the batch of a [3, N, 8, 8] tensor
        return [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2, 3]),
                helper.make_node("Shape", ["xt"], ["s"]),
                helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
                helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
                helper.make_node("Concat", ["n1", neg], ["target"], axis=0)]
    raise ValueError(kind)


def view_model(kind: str) -> onnx.ModelProto:
    """x -> conv -> relu -> GlobalAveragePool -> Reshape(target) -> Gemm, ``target`` from
    ``_target_nodes(kind)``."""
    rng = np.random.default_rng(0)
    arr = lambda name, v: numpy_helper.from_array(np.asarray(v), name)  # noqa: E731
    inits = [arr("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             arr("fc", rng.standard_normal((N_CLASSES, 4)).astype(np.float32)),
             arr("zero", np.int64(0)), arr("one", np.int64(1)),
             arr("axis0", np.array([0], np.int64)), arr("minus_one", np.array([-1], np.int64)),
             arr("per_sample", np.int64(3 * 8 * 8))]
    nodes = [*_target_nodes(kind),
             helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def check_any_batch(lm, layer: str, input_name: str, x1: np.ndarray, n_classes: int) -> None:
    """Prefix at batch 1; head at batch 3 on (a, a/2, 0): scores and gradients equal the fused
    model's at batch 3 on the same activations' inputs (row 0) and row by row."""
    models = split_models(lm, layer, "probability")
    prefix = ort.InferenceSession(models.prefix.SerializeToString(), session_options(),
                                  providers=CPU)
    head = ort.InferenceSession(models.head.SerializeToString(), session_options(), providers=CPU)
    crossed = prefix.run(None, {input_name: x1})
    assert len(crossed) == 1 + len(models.manifest["crossing"])
    a = crossed[0]
    a3 = np.concatenate([a, a * 0.5, a * 0]).astype(a.dtype)
    w = np.eye(n_classes, dtype=np.float32)[[0, 1, 2]]
    feeds = dict(zip(models.manifest["head_inputs"], crossed))  # what the prefix gave
    scores, grad = head.run(None, {**feeds, layer: a3, "target_weights": w})
    assert scores.shape == (3, n_classes) and grad.shape == a3.shape
    fused = ort.InferenceSession(fused_model(lm, layer, "probability").SerializeToString(),
                                 session_options(), providers=CPU)
    _, want_scores, want_grad = fused.run(None, {input_name: x1, "target_weights": w[:1]})
    np.testing.assert_allclose(scores[:1], want_scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad[:1], want_grad, rtol=1e-4, atol=1e-6 * np.abs(want_grad).max())
    # each row as a batch of one: the same numbers (nothing leaks between rows)
    for i in range(3):
        s1, g1 = head.run(None, {**feeds, layer: a3[i:i + 1], "target_weights": w[i:i + 1]})
        np.testing.assert_allclose(scores[i:i + 1], s1, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(grad[i:i + 1], g1, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("kind", ["shape-gather", "shape-start-end", "size", "batch-on-axis-1"])
def test_shape_tensors_are_rebuilt_in_the_head(kind):
    lm = load_model(view_model(kind))
    x1 = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    check_any_batch(lm, "relu", "x", x1, N_CLASSES)
    models = split_models(lm, "relu")
    assert models.manifest["crossing"] == [] and models.manifest["rebuilt"] == ["target"]
    assert "target" not in [o.name for o in models.prefix.graph.output]


def test_a_tensor_computed_from_values_is_not_rebuilt():
    import onnx_graphsurgeon as gs

    from ort_cam.graph.split import shape_leaves

    x = gs.Variable("x", dtype=np.float32, shape=["N", 4])
    shape_of_x = gs.Variable("s", dtype=np.int64)
    top = gs.Variable("top", dtype=np.int64)
    gs.Graph(nodes=[gs.Node("Shape", inputs=[x], outputs=[shape_of_x]),
                        gs.Node("ArgMax", inputs=[x], outputs=[top])], inputs=[x])
    assert [n.op for n in shape_leaves(shape_of_x)] == ["Shape"]
    assert shape_leaves(top) is None and shape_leaves(x) is None


def test_torch_view_of_size0_head_takes_any_batch(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
            self.fc = torch.nn.Linear(6, N_CLASSES)

        def forward(self, x):
            bs = x.size(0)
            y = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc(y.view(bs, -1))

    torch.manual_seed(0)
    path = tmp_path / "view.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 8, 8), str(path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    lm = load_model(path)
    layer = next(n.outputs[0].name for n in lm.graph.nodes if n.op == "Relu")
    x1 = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    check_any_batch(lm, layer, "input", x1, N_CLASSES)
    assert split_models(lm, layer).manifest["rebuilt"]


def test_efficientnet_lite0_head_takes_any_batch(tmp_path):
    """The network of the issue (random weights, 64x64): its head used to fail with "GEMM:
    Dimension mismatch"."""
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    net = lite.EfficientNet.from_name("efficientnet-lite0").eval()
    path = tmp_path / "lite0.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 64, 64), str(path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    lm = load_model(path)
    layer = next(n.outputs[0].name for n in reversed(lm.graph.nodes) if n.op == "Clip")
    x1 = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    check_any_batch(lm, layer, "input", x1, 1000)
    models = split_models(lm, layer)
    assert models.manifest["crossing"] == [] and len(models.manifest["rebuilt"]) == 1
