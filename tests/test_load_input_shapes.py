"""load_model on inputs with dynamic height and width: the probe needs concrete sizes, and the
gradient graphs bake them in, so the loaded model declares them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_cam.errors import ModelLoadError
from ort_cam.grad import fused_model
from ort_cam.graph import load_model
from ort_cam.graph.load import DEFAULT_SPATIAL
from ort_cam.runtime import session_for


def dynamic_hw_model() -> onnx.ModelProto:
    """x [N,3,H,W] -> Conv 3x3/2 -> Relu -> GlobalAveragePool -> Flatten -> Softmax."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Softmax", ["f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return model


def _dims(model: onnx.ModelProto) -> list:
    return [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]


def test_dynamic_hw_defaults_to_224_and_says_so():
    lm = load_model(dynamic_hw_model())
    s = DEFAULT_SPATIAL
    assert lm.shapes["c"] == (2, 4, s // 2, s // 2)
    assert any("fixed to ['N', 3, 224, 224]" in n and "input_shapes" in n for n in lm.notes)
    assert _dims(lm.proto)[1:] == [3, s, s]


def test_input_shapes_fix_the_probe_and_the_gradient_model():
    lm = load_model(dynamic_hw_model(), input_shapes={"x": [3, 48, 192]})
    assert lm.shapes["c"] == (2, 4, 24, 96)
    fused = fused_model(lm, "c")
    assert _dims(fused)[1:] == [3, 48, 192]
    x = np.random.default_rng(1).standard_normal((3, 3, 48, 192)).astype(np.float32)
    w = np.eye(4, dtype=np.float32)[:3]
    a, scores, grad = session_for(fused).run(None, {"x": x, "target_weights": w})
    assert a.shape == grad.shape == (3, 4, 24, 96)
    # Softmax over GAP(relu(c)); the weights pick class n for sample n:
    # d p_n / d c_j = relu'(c_j) · p_n (δ_nj − p_j) / (24·96).
    p = scores
    want = np.stack([(a[n] > 0) * p[n, n] * ((np.arange(4) == n) - p[n])[:, None, None]
                     / (24 * 96) for n in range(3)])
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("shapes", [{"x": [3, 48]}, {"x": [1, 48, 192]}, {"image": [3, 8, 8]}])
def test_input_shapes_that_do_not_fit_are_refused(shapes):
    with pytest.raises(ModelLoadError, match="input_shapes"):
        load_model(dynamic_hw_model(), input_shapes=shapes)
