"""Inputs with a dynamic height and width: ``--size HxW`` / ``Explainer(size=...)`` sets them
in every command, ``metadata`` stores the size, and nothing is fixed silently.

rapidocr's text-direction classifier (PaddleOCR's cls, input x [N,3,?,?], run at 48x192) is
explained at 48x192 and split into models that take 48x192; a tiny conv net with a dynamic
input checks the plumbing where the Paddle model is not needed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from kind_models import dynamic_hw_files, dynamic_hw_model, save
from model_sources import paddle_cls_model
from tolerance import ulps

import ort_cam
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.graph import load_model
from ort_cam.runtime import session_options

SIZE = (48, 192)
LAYER = "hardswish_17.tmp_0"  # the last conv block's hard-swish: [N,200,2,96] at 48x192


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def dims(model: onnx.ModelProto) -> list:
    return [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def paddle():
    return paddle_cls_model()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return dynamic_hw_files(tmp_path_factory.mktemp("dyn"), "line.png", (60, 300), seed=0)


def test_paddle_classifier_explained_at_48x192(paddle, files):
    ex = ort_cam.Explainer(paddle, LAYER, preprocess="inception", size=SIZE, quiet=True,
                           cache=False)
    assert dims(ex.fused)[1:] == [3, *SIZE] and ex.preprocess.size == SIZE
    r = ex.explain(files["img"], steps=4)
    assert r.pixels.shape == (*SIZE, 3)
    assert r["gradcam"].raw.shape == (2, 96) and r["gradcam"].map.shape == SIZE
    # the scores are the original model's at 48x192
    x = ex.preprocess(files["img"])
    sess = ort.InferenceSession(str(paddle), session_options(), providers=["CPUExecutionProvider"])
    # softmax probabilities (<= 1) from two graphs (the fused model, the original): measured
    # 1.2e-7 apart (1 float32 ulp at 1); ulps(16) (1.9e-6) is 16x that
    np.testing.assert_allclose(r.scores, sess.run(None, {"x": x})[0][0], atol=ulps(16))


def test_paddle_explain_and_split_take_48x192_in_the_cli(paddle, files, tmp_path):
    res = run("explain", paddle, files["img"], "--layer", LAYER, "--size", "48x192",
              "--preprocess", "inception", "--steps", "2", "--out", tmp_path / "e", "--json")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "e" / "line.npz")["gradcam_map"].shape == SIZE
    res = run("split", paddle, "--layer", LAYER, "--size", "48x192", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    prefix = onnx.load(str(tmp_path / "s" / "prefix.onnx"))
    assert dims(prefix) == ["N", 3, *SIZE]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["layer_shape"] == ["N", 200, 2, 96]
    # prefix and head at batch 3 give the original model's scores
    x = np.random.default_rng(1).uniform(-1, 1, (3, 3, *SIZE)).astype(np.float32)
    cpu = ["CPUExecutionProvider"]
    crossed = ort.InferenceSession(str(tmp_path / "s" / "prefix.onnx"), session_options(),
                                   providers=cpu).run(
        None, {"x": x})
    head = ort.InferenceSession(str(tmp_path / "s" / "head.onnx"), session_options(), providers=cpu)
    w = np.eye(2, dtype=np.float32)[[0, 1, 0]]
    scores, grad = head.run(None, {**dict(zip(manifest["head_inputs"], crossed)),
                                   "target_weights": w})
    want = ort.InferenceSession(str(paddle), session_options(),
                                providers=cpu).run(None, {"x": x})[0]
    np.testing.assert_allclose(scores, want, atol=ulps(16))  # measured 8.9e-8: as above
    assert grad.shape == (3, 200, 2, 96)


def test_split_without_size_says_what_it_fixed(files, tmp_path):
    res = run("split", files["model"], "--layer", "relu", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert "note: input 'x' has dynamic dims; fixed to ['N', 3, 224, 224] (pass --size HxW" \
        in res.output
    res = run("layers", files["model"], "--size", "20x36", "--json")
    shapes = {info["name"]: info["shape"] for info in json.loads(res.output)}
    assert shapes["relu"] == ["N", 4, 20, 36]


def test_explainer_without_size_says_so_on_stderr(files, capsys):
    ex = ort_cam.Explainer(files["model"], "relu", preprocess="raw", cache=False)
    err = capsys.readouterr().err
    # prepared at 224x224; each image is explained at its own size (test_exporter_metadata)
    assert "note: the model's input height and width are dynamic and nothing names them: " \
        "each image is explained at its own size" in err
    assert ex.preprocess.size == (224, 224)
    ex = ort_cam.Explainer(files["model"], "relu", preprocess={"preset": "raw", "size": (20, 36)},
                           cache=False)
    assert "fixed to" not in capsys.readouterr().err
    assert ex.explain(files["img"], steps=2)["gradcam"].raw.shape == (20, 36)


def test_metadata_stores_the_size_and_later_commands_use_it(files, tmp_path):
    res = run("metadata", files["model"], "--preprocess", "raw", "--out", tmp_path / "m.onnx")
    assert res.exit_code == 1 and "dynamic height and width; pass --size HxW" in res.output
    stored = tmp_path / "m.onnx"
    res = run("metadata", files["model"], "--preprocess", "raw", "--size", "20x36",
              "--layer", "relu", "--out", stored)
    assert res.exit_code == 0, res.output
    lm = load_model(stored)
    assert lm.shapes["relu"] == (2, 4, 20, 36)
    assert any("20x36, the size stored in the model's metadata" in n for n in lm.notes)
    res = run("explain", stored, files["img"], "--steps", "2", "--out", tmp_path / "e")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "e" / "line.npz")["gradcam_map"].shape == (20, 36)
    res = run("split", stored, "--layer", "relu", "--out", tmp_path / "s")
    assert dims(onnx.load(str(tmp_path / "s" / "prefix.onnx"))) == ["N", 3, 20, 36]


def test_a_size_that_does_not_fit_a_fixed_input_is_refused(tmp_path):
    fixed = dynamic_hw_model()
    for d, v in zip(fixed.graph.input[0].type.tensor_type.shape.dim[2:], (8, 8)):
        d.dim_value = v
    path = save(fixed, tmp_path / "fixed.onnx")
    with pytest.raises(OrtCamError, match=r"--size 48x192 does not fit input 'x', whose height "
                                          r"x width is 8x8"):
        load_model(path, size=SIZE)
    with pytest.raises(OrtCamError, match="does not fit"):
        ort_cam.Explainer(path, "relu", preprocess="raw", size=SIZE, quiet=True, cache=False)
    assert load_model(path, size=(8, 8)).shapes["relu"] == (2, 4, 8, 8)


def test_export_takes_the_size(files, tmp_path):
    res = run("export", files["model"], "--layer", "relu", "--size", "20x36", "--preprocess",
              "raw", "--steps", "2", "--out", tmp_path / "x.onnx")
    assert res.exit_code == 0, res.output
    image = onnx.load(str(tmp_path / "x.onnx")).graph.input[0]
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [20, 36, 3]
