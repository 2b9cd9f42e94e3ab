"""load_model folds shape arithmetic on batch-independent dims that ONNX shape inference
cannot see (ShuffleNet's ``x.chunk(2, dim=1)`` after a channel shuffle, as torch exports it:
Shape -> Gather(1) -> Div -> Slice on a tensor whose shape comes out of a Reshape to -1)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from ort_cam.grad import fused_model
from ort_cam.graph import load_model
from ort_cam.runtime import session_for


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


WEIGHTS = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)


def _chunk_model() -> onnx.ModelProto:
    """x [N,4,3,3] -> Conv -> Reshape(batch, -1, 3, 3) -> first half of the channels, the
    split point computed from Shape at run time -> GlobalAveragePool -> Flatten."""
    w = WEIGHTS
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["c", "target"], ["r"]),
        helper.make_node("Shape", ["r"], ["rs"]),
        helper.make_node("Gather", ["rs", "one"], ["ch"], axis=0),
        helper.make_node("Div", ["ch", "two"], ["half"]),
        helper.make_node("Slice", ["r", "zero", "half", "one"], ["sl"]),
        helper.make_node("GlobalAveragePool", ["sl"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "chunk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         _ints("zero", [0]), _ints("one", [1]), _ints("two", [2]), _ints("rest", [-1, 3, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_slice_bounds_from_static_dims_are_folded():
    lm = load_model(_chunk_model())
    (node,) = [n for n in lm.graph.nodes if n.op == "Slice"]
    assert all(isinstance(t, gs.Constant) for t in node.inputs[1:])
    assert int(np.asarray(node.inputs[2].values).ravel()[0]) == 2
    # the batch-dependent Reshape target stays computed at run time
    assert any(n.op == "Shape" for n in lm.graph.nodes)


def test_gradient_through_the_folded_slice():
    lm = load_model(_chunk_model())
    x = np.random.default_rng(1).standard_normal((3, 4, 3, 3)).astype(np.float32)
    w = np.eye(3, 2, dtype=np.float32)
    model = fused_model(lm, "c", "logit")
    _, scores, grad = session_for(model).run(None, {"x": x, "target_weights": w})
    # scores = per-channel means of the first two channels of c: d/dc is 1/9 on them
    want = np.zeros_like(x)
    for n in range(2):
        want[n, n] = 1 / 9
    np.testing.assert_allclose(grad, want, atol=1e-7)
    conv = np.einsum("oi,nihw->nohw", WEIGHTS[:, :, 0, 0].astype(np.float64), x)
    np.testing.assert_allclose(scores, conv[:, :2].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
