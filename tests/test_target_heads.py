"""Every target transform's gradient head against torch autograd.

For each transform (``ort_cam.grad.transforms``) a small torch model (a conv + ReLU trunk whose
output is the layer A, then a head of the shape the transform reads) is exported to ONNX; the
fused model's ``grad`` = d(Σ W ⊙ S)/dA, W random of S's shape, is compared with torch autograd
of the same scalar, S written in torch, in float64 from the float64 A.

Tolerance: the float32 floor is measured on the spot (torch float32 against float64, same
scalar), and ort_cam's error may be FACTOR times it plus ABS: two float32 computations with
other summation orders differ by amounts of the same order (tests/torch_reference.py measured
ratios up to 4.6); ABS is ~8 float32 ulps of the largest gradient, the least any float32
result can promise when the floor happens to come out near 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ort_cam.grad import Head, fused_model  # noqa: E402
from ort_cam.graph import load_model  # noqa: E402
from ort_cam.runtime import session_for  # noqa: E402

FACTOR, ABS = 10.0, 8 * 2.0**-23


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Pool(nn.Module):
    """[N, K, h, w] -> [N, out] (GAP + linear), optionally squeezed to [N]."""

    def __init__(self, out: int, squeeze: bool = False):
        super().__init__()
        self.fc, self.squeeze = nn.Linear(4, out), squeeze

    def forward(self, a):
        y = self.fc(a.mean(dim=(2, 3)))
        return y[:, 0] if self.squeeze else y


class Map(nn.Module):
    """[N, K, h, w] -> [N, out, h, w] (1x1 conv)."""

    def __init__(self, out: int):
        super().__init__()
        self.conv = nn.Conv2d(4, out, 1)

    def forward(self, a):
        return self.conv(a)


class Detect(nn.Module):
    """[N, K, h, w] -> sigmoid of a 1x1 conv to 5+C rows, flattened: [N, 5+C, h*w], or
    [N, h*w, 5+C] with ``anchors_first``."""

    def __init__(self, rows: int, anchors_first: bool):
        super().__init__()
        self.conv, self.anchors_first = nn.Conv2d(4, rows, 1), anchors_first

    def forward(self, a):
        y = torch.sigmoid(self.conv(a)).flatten(2)
        return y.transpose(1, 2) if self.anchors_first else y


class Sequence(nn.Module):
    """[N, K, h, w] -> per-column scores [N, w, V] (mean over h, linear), softmaxed."""

    def __init__(self, vocab: int):
        super().__init__()
        self.fc = nn.Linear(4, vocab)

    def forward(self, a):
        return torch.softmax(self.fc(a.mean(dim=2).transpose(1, 2)), dim=-1)


class Model(nn.Module):
    def __init__(self, head: nn.Module, final=None):
        super().__init__()
        self.trunk, self.head, self.final = Trunk(), head, final

    def forward(self, x):
        y = self.head(self.trunk(x))
        return y if self.final is None else self.final(y)


def _softmax1(y):
    return torch.softmax(y, dim=1)


def _objectness(axis: int):
    def s(out):
        box, obj, cls = (out.narrow(axis, 0, 4), out.narrow(axis, 4, 1),
                         out.narrow(axis, 5, out.shape[axis] - 5))
        return torch.cat([box, obj * cls], dim=axis)
    return s


#: id -> (head module, final op on the output, Head, S from the head's pre-final output)
CASES = {
    "probability-appended": (lambda: Pool(5), None, Head("probability"),
                             lambda z: torch.softmax(z, 1)),
    "probability-own-softmax": (lambda: Pool(5), _softmax1, Head("probability"),
                                lambda z: torch.softmax(z, 1)),
    "logit-under-softmax": (lambda: Pool(5), _softmax1, Head("logit"), lambda z: z),
    "logit-under-sigmoid": (lambda: Pool(5), torch.sigmoid, Head("logit"), lambda z: z),
    "sigmoid-own": (lambda: Pool(5), torch.sigmoid, Head("sigmoid"), torch.sigmoid),
    "sigmoid-appended": (lambda: Pool(5), None, Head("sigmoid"), torch.sigmoid),
    "rest": (lambda: Pool(5), None, Head("rest"),
             lambda z: z + torch.log_softmax(z, 1)),
    "rest-under-softmax": (lambda: Pool(5), _softmax1, Head("rest"),
                           lambda z: z + torch.log_softmax(z, 1)),
    "binary-n1": (lambda: Pool(1), None, Head("binary"), lambda z: torch.cat([-z, z], 1)),
    "binary-n1-sigmoid": (lambda: Pool(1), torch.sigmoid, Head("binary"),
                          lambda z: torch.cat([-z, z], 1)),
    "binary-n": (lambda: Pool(1, squeeze=True), None, Head("binary"),
                 lambda z: torch.stack([-z, z], 1)),
    "segment-logit": (lambda: Map(3), None, Head("logit", flatten=False), lambda z: z),
    "segment-logit-under-softmax": (lambda: Map(3), _softmax1, Head("logit", flatten=False),
                                    lambda z: z),
    "segment-probability": (lambda: Map(3), None, Head("probability", flatten=False),
                            lambda z: torch.softmax(z, 1)),
    "segment-probability-own": (lambda: Map(3), _softmax1, Head("probability", flatten=False),
                                lambda z: torch.softmax(z, 1)),
    "one-channel-output": (lambda: Map(1), torch.sigmoid, Head("output", flatten=False),
                           torch.sigmoid),
    "normalize": (lambda: Pool(6), None, Head("normalize"),
                  lambda z: z / torch.clamp(z.norm(dim=1, keepdim=True), min=1e-8)),
    "objectness-channels": (lambda: Detect(8, False), None, Head("objectness", axis=1,
                                                                 flatten=False),
                            _objectness(1)),
    "objectness-anchors": (lambda: Detect(8, True), None, Head("objectness", axis=2,
                                                               flatten=False),
                           _objectness(2)),
    "detection-output": (lambda: Detect(7, False), None, Head("output", flatten=False),
                         lambda z: z),
    "sequence-output": (lambda: Sequence(6), None, Head("output", flatten=False),
                        lambda z: z),
}


def _export(model, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 8, 8), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["out"],
                          dynamic_axes={"x": {0: "N"}, "out": {0: "N"}})
    return path


def _layer(lm) -> str:
    return next(n.outputs[0].name for n in lm.graph.nodes if n.op == "Relu")


def _torch_grad(model, x: np.ndarray, s_of, w: np.ndarray, dtype) -> np.ndarray:
    """d(Σ W ⊙ S)/dA in torch, ``dtype`` throughout."""
    m = model.to(dtype)
    a = m.trunk(torch.from_numpy(x).to(dtype)).detach().requires_grad_(True)
    s = s_of(m.head(a))
    (g,) = torch.autograd.grad((torch.from_numpy(w).to(dtype) * s).sum(), a)
    return g.detach().numpy().astype(np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_target_head_gradient_matches_torch(tmp_path, case):
    make_head, final, head, s_of = CASES[case]
    torch.manual_seed(0)
    model = Model(make_head(), final).eval()
    lm = load_model(_export(model, tmp_path / "m.onnx"))
    sess = session_for(fused_model(lm, _layer(lm), head))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    s_shape = [2, *sess.get_inputs()[1].shape[1:]]
    w = np.random.default_rng(2).standard_normal(s_shape).astype(np.float32)
    _, scores, grad = sess.run(None, {"x": x, "target_weights": w})
    with torch.no_grad():
        s_ref = s_of(model.head(model.trunk(torch.from_numpy(x)))).numpy()
    assert scores.shape == s_ref.shape
    np.testing.assert_allclose(scores, s_ref, rtol=1e-5, atol=1e-6)  # S itself, float32
    ref = _torch_grad(model, x, s_of, w, torch.float64)
    floor = np.abs(_torch_grad(model, x, s_of, w, torch.float32) - ref).max()
    scale = np.abs(ref).max()
    assert scale > 0
    err = np.abs(grad - ref).max()
    print(f"\n{case}: err {err:.2e} floor {floor:.2e} scale {scale:.2e}")
    assert err <= FACTOR * floor + ABS * scale, f"{case}: {err:.2e} (floor {floor:.2e})"


def test_a_softmax_over_a_sigmoid_head_is_refused(tmp_path):
    torch.manual_seed(0)
    lm = load_model(_export(Model(Pool(5), torch.sigmoid).eval(), tmp_path / "m.onnx"))
    from ort_cam.errors import OrtCamError

    with pytest.raises(OrtCamError, match="ends in a Sigmoid.*--score sigmoid") as err:
        fused_model(lm, _layer(lm), Head("probability"))
    assert "\n" not in str(err.value)


def test_binary_refuses_more_than_one_logit(tmp_path):
    torch.manual_seed(0)
    lm = load_model(_export(Model(Pool(3)).eval(), tmp_path / "m.onnx"))
    from ort_cam.errors import OrtCamError

    with pytest.raises(OrtCamError, match=r"has \[3\] values per image; a binary target"):
        fused_model(lm, _layer(lm), Head("binary"))


def test_normalize_at_a_zero_output_has_a_finite_gradient(tmp_path):
    """A network without biases maps a zero input to a zero embedding (a black baseline
    through it): S = 0 there, and its gradient is torch's (the slope of out / eps, large but
    finite), not NaN (the norm's square root has an infinite slope at 0, and the Max that
    picks eps passes it 0: 0 · inf)."""
    torch.manual_seed(0)
    model = Model(Pool(6)).eval()
    with torch.no_grad():
        model.trunk.conv.bias.zero_()
        model.head.fc.bias.zero_()
    lm = load_model(_export(model, tmp_path / "m.onnx"))
    sess = session_for(fused_model(lm, _layer(lm), Head("normalize")))
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.full((1, 6), 6 ** -0.5, np.float32)
    _, scores, grad = sess.run(None, {"x": x, "target_weights": w})
    assert not scores.any() and np.isfinite(grad).all()
    s_of = CASES["normalize"][3]
    ref = _torch_grad(model, x, s_of, w, torch.float64)
    np.testing.assert_allclose(grad, ref, rtol=1e-5)  # float32 rounding of one product
