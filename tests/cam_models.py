"""Tiny classifiers with hand-set weights whose CAMs can be worked out on paper.

    x [N,2,2,2] ─ Conv 1x1 (identity) ─ Relu ─► A ─(square?)─ GlobalAvgPool ─ Gemm(V, b) ─► logits

``V`` (3 classes × 2 channels) and the bias are fixed below; Z = 4 grid cells. With the
``square`` head the score is Σ_k V[c,k]·mean(A[k]²), so G = 2·V[c,k]·A/Z.
The NHWC twin computes the same network behind tf2onnx-style Transposes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

V = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 1.0]], dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)
LAYER = "A"


def _model(nodes, inp_shape, inits, name) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, inp_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def tiny_cam_model(square: bool = False, softmax: bool = False) -> onnx.ModelProto:
    """NCHW: layer ``A`` = Relu(x) of shape [N, 2, 2, 2]."""
    inits = {"W": np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), "V": V, "b": BIAS}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Relu", ["c"], [LAYER])]
    pooled_in = LAYER
    if square:
        nodes.append(helper.make_node("Mul", [LAYER, LAYER], ["sq"]))
        pooled_in = "sq"
    nodes += [
        helper.make_node("GlobalAveragePool", [pooled_in], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "V", "b"], ["z" if softmax else "logits"], transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=-1))
    return _model(nodes, ["N", 2, 2, 2], inits, "tiny_cam")


def tiny_cam_model_nhwc() -> onnx.ModelProto:
    """The same network with an NHWC input and an NHWC layer ``A`` [N, 2, 2, 2]."""
    inits = {"W": np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), "V": V, "b": BIAS,
             "axes": np.array([1, 2], dtype=np.int64)}
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "W"], ["c"]),
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["ct"], [LAYER]),
        helper.make_node("ReduceMean", [LAYER], ["p"], axes=[1, 2], keepdims=0),
        helper.make_node("Gemm", ["p", "V", "b"], ["logits"], transB=1),
    ]
    del inits["axes"]
    return _model(nodes, ["N", 2, 2, 2], inits, "tiny_cam_nhwc")


#: The input used by the hand computations: channel 0 and channel 1 of x (both >= 0, so the
#: Relu is the identity along any path between non-negative points).
A0 = np.array([[1.0, 2.0], [3.0, 4.0]])
A1 = np.array([[4.0, 0.5], [0.0, 1.0]])
X = np.stack([A0, A1])[None].astype(np.float32)  # [1, 2, 2, 2] NCHW


#: ``MethodOptions`` keyword sets for the tests that compare the methods with a reference
#: (tests/test_methods_torch.py, tests/test_export.py): together they cover every option
#: value, and the RSI rule x selection grid completely.
OPTION_SETS = [
    dict(gradcam_weights="mean", igcam_variant="paper", rsi_rule="trapezoid",
         rsi_selection="guided"),
    dict(gradcam_weights="positive", igcam_variant="notebook", rsi_rule="trapezoid",
         rsi_selection="positive"),
    dict(rsi_rule="trapezoid", rsi_selection="none"),
    dict(rsi_rule="riemann", rsi_selection="guided"),
    dict(rsi_rule="riemann", rsi_selection="positive"),
    dict(rsi_rule="riemann", rsi_selection="none"),
]
