"""The outputs that used to be explained silently wrong (exit 0), each now read right by
default or refused in one line (issue 19):

- a multi-label head (20 sigmoid outputs) was explained through a softmax over its
  probabilities: it is now read as ``sigmoid`` (and a softmax over it is refused);
- a one-logit binary classifier through a softmax over one logit, which is constant
  (``probability 1``, every map dark): it is now read as ±logit, the predicted category;
- a 320-wide embedding as if it were 320 classes: from a pooling layer it is told apart and
  refused without a concept vector; from a projection layer (Gemm), where it cannot be told,
  the line printed says the reading taken and how to pick the embedding one.

The maps are checked against torch autograd of the same scalar (Grad-CAM from torch's A and
dT/dA in float64), with the float32 floor measured on the spot (torch float32 against float64):
error <= FACTOR * floor + ABS, as tests/test_target_heads.py argues.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from click.testing import CliRunner  # noqa: E402
from tiny_models import random_image  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.cli import main  # noqa: E402
from ort_cam.errors import OrtCamError  # noqa: E402

FACTOR, ABS = 10.0, 8 * 2.0**-23
SIZE = 16


class Net(nn.Module):
    """conv(3 -> 8) -> ReLU (the layer) -> [head]: GAP + Linear(width) (+ final), or GAP only."""

    def __init__(self, width: int | None, final=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, width) if width else None
        self.final = final

    def trunk(self, x):
        return torch.relu(self.conv(x))

    def head(self, a):
        y = a.mean(dim=(2, 3))
        y = self.fc(y) if self.fc is not None else y
        return self.final(y) if self.final is not None else y

    def forward(self, x):
        return self.head(self.trunk(x))


def _export(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["out"],
                          dynamic_axes={"x": {0: "N"}, "out": {0: "N"}})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("readings")
    made = {}
    for name, width, final in (("multilabel", 20, torch.sigmoid), ("binary", 1, None),
                               ("pooled", None, None), ("projected", 320, None)):
        torch.manual_seed(0)
        net = Net(width, final).eval()
        if name == "multilabel":  # logits spread over ±3, so that the sigmoids differ
            with torch.no_grad():
                net.fc.weight.mul_(20.0)
        made[name] = (net, _export(net, d / f"{name}.onnx"))
    made["image"] = random_image(d, size=(SIZE, SIZE))
    return made


def _layer(path: Path) -> str:
    import onnx

    return next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Relu")


def _x() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)


def _torch_gradcam(net: nn.Module, x: np.ndarray, scalar, dtype) -> np.ndarray:
    """Grad-CAM's raw map of ``scalar(output)`` from torch's A and dT/dA in ``dtype``."""
    net = net.to(dtype)
    a = net.trunk(torch.from_numpy(x).to(dtype)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(scalar(net.head(a)), a)
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((w * a).sum(dim=1))[0].detach().numpy().astype(np.float64)
    net.float()
    return cam


def _check_map(got: np.ndarray, net, x, scalar) -> None:
    ref = _torch_gradcam(net, x, scalar, torch.float64)
    floor = np.abs(_torch_gradcam(net, x, scalar, torch.float32) - ref).max()
    scale = np.abs(ref).max()
    assert scale > 0
    assert np.abs(got - ref).max() <= FACTOR * floor + ABS * scale


def test_a_multilabel_head_is_read_as_sigmoid(models):
    net, path = models["multilabel"]
    ex = ort_cam.Explainer(path, _layer(path), quiet=True, cache=False)
    assert ex.score_mode == "sigmoid" and ex.reading["kind"] == "class"
    assert "multi-label" in ex.reading["line"]
    x = _x()
    r = ex.explain_array(x, baseline_array="zeros", steps=4, methods=["gradcam", "rsi"])
    with torch.no_grad():
        p = net(torch.from_numpy(x))[0].numpy()
    assert r.target == int(np.argmax(p)) and r.score == pytest.approx(float(p.max()), rel=1e-5)
    _check_map(r["gradcam"].raw, net, x, lambda out: out[0, r.target])
    # completeness holds for the sigmoid: Σ IG ≈ y_m − y_0
    assert r["rsi"].extras["completeness_gap"] < 0.1


def test_a_softmax_over_a_multilabel_head_is_refused(models):
    _, path = models["multilabel"]
    with pytest.raises(OrtCamError, match="ends in a Sigmoid .*use --score sigmoid") as err:
        ort_cam.Explainer(path, _layer(path), score="probability", quiet=True, cache=False)
    assert "\n" not in str(err.value)


def test_a_one_logit_classifier_is_read_as_plus_minus_logit(models):
    net, path = models["binary"]
    ex = ort_cam.Explainer(path, _layer(path), quiet=True, cache=False)
    assert ex.score_mode == "binary" and ex.reading["kind"] == "binary" and ex.n_classes == 2
    x = _x()
    with torch.no_grad():
        z = float(net(torch.from_numpy(x))[0, 0])
    r = ex.explain_array(x, baseline_array="zeros", steps=4, methods=["gradcam"])
    assert r.target == int(z > 0) and r.score == pytest.approx(abs(z), rel=1e-5)
    assert not r["gradcam"].dark
    sign = 1.0 if z > 0 else -1.0
    _check_map(r["gradcam"].raw, net, x, lambda out: sign * out[0, 0])
    other = ex.explain_array(x, baseline_array="zeros", steps=4, methods=["gradcam"],
                             target=1 - r.target)
    assert other.score == pytest.approx(-abs(z), rel=1e-5)
    _check_map(other["gradcam"].raw, net, x, lambda out: -sign * out[0, 0])


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_cli_reads_them_right(models, tmp_path):
    img = models["image"]
    for name, mode in (("multilabel", "sigmoid"), ("binary", "binary")):
        path = models[name][1]
        res = _cli("explain", path, img, "--layer", _layer(path), "--preprocess", "raw",
                   "--scale", 1 / 255, "--steps", 2, "--out", tmp_path / name, "--json",
                   "--no-cache")  # pixels in 0..1: the sigmoids are not saturated
        assert res.exit_code == 0, res.output
        rec = json.loads(res.output.strip().splitlines()[-1])
        assert rec["score_mode"] == mode
        assert not any(m["dark"] for m in rec["methods"].values())


def test_a_pooled_embedding_is_told_apart_and_refused_in_one_line(models, tmp_path):
    path, img = models["pooled"][1], models["image"]
    res = _cli("explain", path, img, "--layer", _layer(path), "--preprocess", "raw",
               "--out", tmp_path / "e", "--no-cache")
    assert res.exit_code == 1
    reading = next(line for line in res.output.splitlines() if "target embedding" in line)
    assert "output 'out' [N, 8]: target embedding" in reading and "ReduceMean" in reading
    assert "--target-kind class" in reading
    assert res.output.strip().splitlines()[-1] == (
        "Error: an embedding target needs a concept vector: --concept FILE.npy (concept= or "
        "concept_image= in the API)")
    res = _cli("explain", path, img, "--layer", _layer(path), "--preprocess", "raw",
               "--target-kind", "class", "--out", tmp_path / "c", "--no-cache", "--steps", 2)
    assert res.exit_code == 0, res.output


def test_a_projected_embedding_says_the_reading_taken(models, tmp_path):
    path, img = models["projected"][1], models["image"]
    res = _cli("explain", path, img, "--layer", _layer(path), "--preprocess", "raw",
               "--steps", 2, "--out", tmp_path / "p", "--no-cache")
    assert res.exit_code == 0, res.output
    assert ("output 'out' [N, 320]: target class, score probability (read as class logits, as "
            "it ends in no Softmax; if it is an embedding, pass --target-kind embedding "
            "--concept FILE.npy)") in res.output
