"""The model-parameter randomisation in the ONNX model (ort_cam.audit.randomise) draws what
Quantus 0.6.0's MPRT draws in torch: each randomised ONNX model's logits equal those of the
torch model with the same layers reset (torch.manual_seed(seed + 1); reset_parameters(),
from the output down or one at a time), and, where quantus is installed, of the models its
own generator yields."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from ort_cam.audit.randomise import (
    randomised_models,
    step_count,
    torch_generator,
    torch_uniform,
    weight_layers,
)
from ort_cam.errors import OrtCamError
from ort_cam.runtime import make_session

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "demo_cnn.onnx"
SEED = 42
#: Logits of the same weights, onnxruntime against torch, float32: measured ≤ 6e-8 on logits
#: of about 0.3 to 0.9; 1e-5 leaves the margin of another CPU's kernels.
LOGIT_TOL = 1e-5


def _torch_net():
    """Conv+BN, a grouped Conv without bias + BN, pooling, Linear: every kind of layer, BN
    statistics made non-trivial."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


def _export(net, keep_batchnorm: bool = True) -> onnx.ModelProto:
    import torch

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 16, 16), f, dynamo=False, opset_version=17,
                          do_constant_folding=not keep_batchnorm, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    return onnx.load_from_string(f.getvalue())


def _logits(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(proto, ["CPUExecutionProvider"], 1).run(None, {"x": x})[0]


def _torch_steps(net, mode: str, seed: int):
    """Quantus's loop (PyTorchModel.get_random_layer_generator), written out."""
    import copy

    import torch

    original = copy.deepcopy(net.state_dict())
    model = copy.deepcopy(net)
    modules = [(n, m) for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    if mode == "cascade":
        modules = modules[::-1]
    for name, module in modules:
        if mode == "independent":
            model.load_state_dict(original)
        torch.manual_seed(seed + 1)
        module.reset_parameters()
        yield name, model


def test_uniform_draws_are_torchs():
    torch = pytest.importorskip("torch")
    for layer in (torch.nn.Conv2d(16, 32, 3), torch.nn.Conv2d(8, 8, 5, groups=4),
                  torch.nn.Linear(100, 7)):
        torch.manual_seed(SEED + 1)
        layer.reset_parameters()
        w = layer.weight.detach().numpy()
        fan_in = int(np.prod(w.shape[1:]))
        gen = torch_generator(SEED + 1)
        mine = torch_uniform(gen, w.shape, math.sqrt(3.0) * math.sqrt(2 / 6) / math.sqrt(fan_in))
        bias = torch_uniform(gen, layer.bias.shape, 1 / math.sqrt(fan_in))
        # torch rounds x·(hi − lo) + lo once (its FMA); so does torch_uniform: measured equal.
        # One float32 ulp of the bound allowed, for a torch build that rounds twice.
        ulp = 2.0 ** -23 / math.sqrt(fan_in)
        assert np.abs(mine - w).max() <= ulp
        assert np.abs(bias - layer.bias.detach().numpy()).max() <= ulp


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_randomised_onnx_models_give_the_torch_models_logits(mode):
    torch = pytest.importorskip("torch")
    net = _torch_net()
    proto = _export(net)
    layers = weight_layers(proto)
    assert [lay.op for lay in layers] == ["Conv", "BatchNormalization", "Conv",
                                          "BatchNormalization", "Gemm"]
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    before = _logits(proto, x)
    counts = []
    # torch's steps mutate one model: compare each as it comes
    pairs = zip(randomised_models(proto, mode, SEED), _torch_steps(net, mode, SEED), strict=True)
    for (n, layer, model), (name, tnet) in pairs:
        assert layer.name.split("/")[1] == name  # the same layer: "/3/Conv" is torch's "3"
        with torch.no_grad():
            want = tnet(torch.from_numpy(x)).numpy()
        got = _logits(model, x)
        assert np.abs(got - want).max() <= LOGIT_TOL * np.abs(want).max()
        assert np.abs(got - before).max() > 1e-3  # the randomisation changed the model
        counts.append(n)
    assert counts == list(range(1, len(layers) + 1))


def test_quantus_own_generator_gives_the_same_models():
    pytest.importorskip("quantus")
    torch = pytest.importorskip("torch")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    net = _torch_net()
    proto = _export(net)
    x = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32)
    for mode, order in (("cascade", "top_down"), ("independent", "independent")):
        q = PyTorchModel(net, channel_first=True, softmax=False)
        pairs = zip(randomised_models(proto, mode, 7), q.get_random_layer_generator(order, 7),
                    strict=True)
        for (_, _, model), (_, qnet) in pairs:
            with torch.no_grad():
                want = qnet(torch.from_numpy(x)).numpy()
            assert np.abs(_logits(model, x) - want).max() <= LOGIT_TOL * np.abs(want).max()


def test_folded_batchnorm_and_the_demo_model():
    """The demo model's BatchNorms were folded: its Conv's weight and bias carry them, and
    are redrawn as a torch Conv2d with bias would be (U(±1/√fan_in) both)."""
    proto = onnx.load(DEMO)
    layers = weight_layers(proto)
    assert [(lay.op, lay.slots) for lay in layers] == [("Conv", (1, 2))] * 5 + [("Gemm", (1, 2))]
    before = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    models = list(randomised_models(proto, "cascade", SEED))
    assert [lay.name for _, lay, _ in models] == [lay.name for lay in layers[::-1]]
    last = models[-1][2]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in last.graph.initializer}
    for lay in layers:
        node = last.graph.node[lay.index]
        w, b = inits[node.input[1]], inits[node.input[2]]
        fan_in = np.prod(w.shape[1:]) if lay.op == "Conv" else w.shape[1]  # Gemm: transB=1
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(w).max() > 0.9 * bound  # spread over the whole interval
        assert node.input[1].startswith("ort_cam.sanity/")
    assert not any(n in inits for n in before)  # every original weight replaced, none left
    for i in proto.graph.initializer:  # the source is untouched
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(i), before[i.name])
    onnx.checker.check_model(last)


def test_seed_every_and_refusals():
    proto = onnx.load(DEMO)
    a = [m for _, _, m in randomised_models(proto, "cascade", 1)]
    b = [m for _, _, m in randomised_models(proto, "cascade", 1)]
    c = [m for _, _, m in randomised_models(proto, "cascade", 2)]
    assert a[-1].SerializeToString() == b[-1].SerializeToString()
    assert a[-1].SerializeToString() != c[-1].SerializeToString()
    every = list(randomised_models(proto, "cascade", 1, every=4))
    assert [n for n, _, _ in every] == [4, 6] == list(range(4, 7, 4)) + [6]
    assert every[-1][2].SerializeToString() == a[-1].SerializeToString()
    assert len(every) == step_count(6, 4)
    ind = list(randomised_models(proto, "independent", 1, every=2))
    assert [lay.name for _, lay, _ in ind] == [lay.name for lay in weight_layers(proto)[1::2]]
    with pytest.raises(OrtCamError, match="unknown sanity check 'down'"):
        next(randomised_models(proto, "down"))
    bare = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    with pytest.raises(OrtCamError, match="no weight-bearing node"):
        next(randomised_models(bare, "cascade"))
