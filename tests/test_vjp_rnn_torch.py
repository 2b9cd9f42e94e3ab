"""The LSTM and GRU rules end to end: torch's nn.LSTM (bidirectional) and nn.GRU exported by
the legacy TorchScript exporter (opset 17, which writes ONNX LSTM/GRU nodes), differentiated
by ort_cam (the fused gradient model on onnxruntime, float32) against torch autograd in
float64; and the rules' one-line refusals of what they do not differentiate.

Tolerance: the error is relative to the largest gradient, max|got - ref| / max|ref|. Its floor
is torch's own float32 gradient against float64 (the same function in float32 arithmetic,
other kernels); ort_cam may err by FACTOR times that plus ABS_FLOOR (the margins of
tests/torch_reference.py: two float32 computations of one function err by similar, not
equal, amounts; ~8 float32 ulps where a float32 floor comes out smaller by luck)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import tolerance as margin
from onnx import TensorProto, helper, numpy_helper

from ort_cam.errors import NoGradientRuleError
from ort_cam.grad.heads import fused_model
from ort_cam.graph.load import load_model
from ort_cam.runtime import session_for

torch = pytest.importorskip("torch")  # in the test extras; skip cleanly without it
nn = torch.nn
#: the suite's one rule (tests/tolerance.py): 10x the float32 floor + 1e-6
FACTOR, ABS_FLOOR = margin.FACTOR, margin.ABS
T, I, H = 7, 5, 6


class Recurrent(nn.Module):
    """x [N, T, I] -> tanh(Linear) -> LSTM/GRU (batch first) -> Linear(3) per step: [N, T, 3]."""

    def __init__(self, kind: str, bidirectional: bool, layers: int = 1):
        super().__init__()
        self.inp = nn.Linear(I, I)
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(I, H, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(H * (2 if bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(torch.tanh(self.inp(x)))[0])


def _export(model: nn.Module, path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, T, I), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load(str(path))


def _torch_grad(model: nn.Module, x: np.ndarray, w: np.ndarray, dtype) -> np.ndarray:
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    m = model.to(dtype)
    (m(xt) * torch.tensor(w, dtype=dtype)).sum().backward()
    assert xt.grad is not None
    return xt.grad.double().numpy()


@pytest.mark.parametrize("kind, bidirectional, layers", [
    ("lstm", True, 1), ("gru", False, 1), ("gru", True, 2), ("lstm", False, 2)])
def test_recurrent_gradient_matches_torch_autograd(tmp_path, kind, bidirectional, layers):
    torch.manual_seed(7)
    model = Recurrent(kind, bidirectional, layers).eval()
    proto = _export(model, tmp_path / f"{kind}.onnx")
    assert kind.upper() in {n.op_type for n in proto.graph.node}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, T, I)).astype(np.float32)
    w = rng.standard_normal((3, T, 3)).astype(np.float32)
    fused = fused_model(load_model(proto), "x", "logit", require_spatial=False)
    _, scores, grad = session_for(fused).run(None, {"x": x, "target_weights": w.reshape(3, -1)})
    ref = _torch_grad(model, x, w, torch.float64)
    floor = np.abs(_torch_grad(model, x, w, torch.float32) - ref).max() / np.abs(ref).max()
    err = np.abs(grad - ref).max() / np.abs(ref).max()
    with torch.no_grad():
        y64 = model.double()(torch.from_numpy(x).double()).numpy()
    assert np.abs(scores - y64.reshape(3, -1)).max() < 1e-5 * np.abs(y64).max()
    assert err <= margin.tolerance(floor), f"{kind}: error {err:.3g}, float32 floor {floor:.3g}"


# Refusals ----------------------------------------------------------------------------------
def _rnn_model(op: str, **attrs) -> onnx.ModelProto:
    """x [N, 3] -> Unsqueeze to [1, N, 3] (T = 1) -> op (H = 2, node 'the_rnn') -> y [N, 2]."""
    gates = 4 if op == "LSTM" else 3
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, gates * 2, k)).astype(np.float32),
                                     name) for name, k in (("W", 3), ("R", 2))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax"))
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["xt"]),
             helper.make_node(op, ["xt", "W", "R"], ["", "yh"], name="the_rnn", hidden_size=2,
                              **attrs),
             helper.make_node("Squeeze", ["yh", "ax"], ["y"])]
    graph = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op, attrs, says", [
    ("LSTM", {"activations": ["Sigmoid", "Relu", "Tanh"]},
     "LSTM with activations sigmoid, relu, tanh (the rule covers the defaults sigmoid, tanh, "
     "tanh)"),
    ("LSTM", {"clip": 2.0}, "LSTM with the attribute clip"),
    ("LSTM", {"input_forget": 1}, "LSTM with input_forget"),
    ("GRU", {"activations": ["HardSigmoid", "Tanh"]}, "GRU with activations hardsigmoid, tanh"),
])
def test_recurrent_rules_refuse_in_one_line_naming_the_node(op, attrs, says):
    lm = load_model(_rnn_model(op, **attrs))
    with pytest.raises(NoGradientRuleError) as info:
        fused_model(lm, "x", "logit", require_spatial=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"no gradient rule for op '{op}' (node 'the_rnn'): {says}")


def test_recurrent_rule_differentiates_the_default_activations_spelled_out():
    """Activations given explicitly, equal to the defaults, are not refused (and the node
    without Y gets Y added for the rule)."""
    lm = load_model(_rnn_model("LSTM", activations=["Sigmoid", "Tanh", "Tanh"]))
    fused = fused_model(lm, "x", "logit", require_spatial=False)
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    w = np.ones((2, 2), np.float32)
    _, _, grad = session_for(fused).run(None, {"x": x, "target_weights": w})
    plain = fused_model(load_model(_rnn_model("LSTM")), "x", "logit", require_spatial=False)
    assert np.array_equal(grad, session_for(plain).run(
        None, {"x": x, "target_weights": w})[2])
