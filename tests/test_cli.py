"""The ort-cam command line, run through click's CliRunner on tiny hand-built models."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tiny_models
from click.testing import CliRunner
from onnx import numpy_helper

from ort_cam import __version__
from ort_cam.cli import main
from ort_cam.graph.save import data_file, save_model
from ort_cam.runtime import session_options

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "conv": tiny_models.conv_net(d),
        "conv13_softmax": tiny_models.conv_net(d, opset=13, softmax=True),
        "residual": tiny_models.residual_net(d),
        "nhwc": tiny_models.nhwc_net(d),
        "blocked": tiny_models.blocked_net(d),
    }


def run(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args: str | Path):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(), providers=CPU)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def image(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 8, 8)).astype(np.float32)


# --- the group ---------------------------------------------------------------------------

def test_version():
    assert ok("--version").output.strip() == f"ort-cam, version {__version__}"


def test_console_script_is_the_click_group():
    (script,) = entry_points(group="console_scripts", name="ort-cam")
    assert script.value == "ort_cam.cli:main"
    assert script.load() is main


# --- layers ------------------------------------------------------------------------------

def _rows(output: str) -> dict[str, list[str]]:
    """Table rows keyed by layer name, split on whitespace; skips the three header lines
    (the model, its output's reading, the column names)."""
    lines = output.strip().splitlines()
    assert lines[2].split() == ["LAYER", "OP", "SHAPE", "LAYOUT", "DIFFERENTIABLE"]
    return {line.split()[0]: line.split()[1:] for line in lines[3:]}


def test_layers_table(models):
    out = ok("layers", models["conv"]).output
    header = out.splitlines()[0]
    assert header == ("conv_net_op16.onnx: opset 16; inputs input -> output logits; "
                      "2 candidate layers")
    assert out.splitlines()[1].startswith("output 'logits' [N, 5]: target class, score "
                                          "probability (read as class logits")
    rows = _rows(out)
    assert rows == {
        "conv1_out": ["Conv", "[N,4,8,8]", "NCHW", "(axis", "1)", "yes"],
        "relu1_out": ["Relu", "[N,4,8,8]", "NCHW", "(axis", "1)", "yes"],
    }


def test_layers_all_adds_1x1_grids(models):
    rows = _rows(ok("layers", models["conv"], "--all").output)
    assert list(rows) == ["conv1_out", "relu1_out", "pooled"]
    assert rows["pooled"][:2] == ["GlobalAveragePool", "[N,4,1,1]"]


def test_layers_header_reports_opset_conversion(models):
    out = ok("layers", models["conv13_softmax"]).output
    assert out.splitlines()[0].startswith(
        "conv_net_op13_softmax.onnx: opset 13 converted to 16; inputs input -> output probs;")


def test_layers_json(models):
    result = ok("layers", models["conv"], "--json")
    layers = json.loads(result.stdout)
    assert [entry["name"] for entry in layers] == ["conv1_out", "relu1_out"]
    assert layers[0] == {
        "name": "conv1_out", "op": "Conv", "node": "conv1", "shape": ["N", 4, 8, 8],
        "layout": "NCHW", "channel_axis": 1, "differentiable": True, "blocker": None,
    }


def test_layers_json_nhwc(models):
    layers = {e["name"]: e for e in json.loads(ok("layers", models["nhwc"], "--json").stdout)}
    assert layers["nhwc"]["op"] == "Transpose"
    assert layers["nhwc_relu"] == {
        "name": "nhwc_relu", "op": "Relu", "node": "relu_nhwc", "shape": ["N", 8, 8, 4],
        "layout": "NHWC", "channel_axis": 3, "differentiable": True, "blocker": None,
    }
    assert layers["conv1_out"]["layout"] == "NCHW"


def test_layers_shows_the_blocking_op(models):
    op = tiny_models.NO_RULE_OP
    rows = _rows(ok("layers", models["blocked"]).output)
    assert rows["conv1_out"][-3:] == ["no:", op, "(blocker)"]
    assert rows["conv2_out"][-1] == "yes"
    layers = {e["name"]: e for e in json.loads(ok("layers", models["blocked"], "--json").stdout)}
    assert layers["conv1_out"]["differentiable"] is False
    assert layers["conv1_out"]["blocker"] == f"{op} (blocker)"
    assert layers["conv2_out"]["differentiable"] is True


# --- split -------------------------------------------------------------------------------

def _split(model: Path, layer: str, out: Path, *extra: str) -> dict:
    result = ok("split", model, "--layer", layer, "--out", out, *extra)
    assert f"wrote {out / 'head.onnx'}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["head.onnx", "manifest.json", "prefix.onnx"]
    text = (out / "manifest.json").read_text()
    assert text.startswith('{\n  "')  # indent 2
    return json.loads(text)


def _check_contract(out: Path, manifest: dict) -> tuple[ort.InferenceSession, ...]:
    """The head reads the prefix's outputs under the same names, plus target_weights."""
    prefix, head = session(out / "prefix.onnx"), session(out / "head.onnx")
    assert [i.name for i in prefix.get_inputs()] == manifest["model_inputs"]
    assert [o.name for o in prefix.get_outputs()] == manifest["head_inputs"][:-1]
    assert [i.name for i in head.get_inputs()] == manifest["head_inputs"]
    assert manifest["head_inputs"] == [manifest["layer"], *manifest["crossing"], "target_weights"]
    assert [o.name for o in head.get_outputs()] == manifest["head_outputs"] == ["scores", "grad"]
    return prefix, head


def _run_split(prefix, head, x: np.ndarray, weights: np.ndarray) -> tuple[dict, list]:
    feeds = dict(zip([o.name for o in prefix.get_outputs()], prefix.run(None, {"input": x})))
    return feeds, head.run(None, {**feeds, "target_weights": weights})


def test_split_residual_writes_a_working_head(models, tmp_path):
    out = tmp_path / "cut"
    manifest = _split(models["residual"], "conv2_out", out)
    assert manifest | {"ort_cam_version": None} == {
        "ort_cam_version": None, "layer": "conv2_out", "layer_shape": ["N", 4, 8, 8],
        "crossing": ["relu1_out"], "score": "probability", "channel_axis": 1, "layout": "NCHW",
        "opset": 16, "model_inputs": ["input"], "model_output": "logits",
        "head_inputs": ["conv2_out", "relu1_out", "target_weights"],
        "head_outputs": ["scores", "grad"],
    }
    prefix, head = _check_contract(out, manifest)
    x = image()
    weights = np.random.default_rng(1).standard_normal((2, tiny_models.N_CLASSES))
    weights = weights.astype(np.float32)
    feeds, (scores, grad) = _run_split(prefix, head, x, weights)
    # probability mode on a model without Softmax: the head appends one
    (logits,) = session(models["residual"]).run(None, {"input": x})
    np.testing.assert_allclose(scores, softmax(logits), rtol=1e-5, atol=1e-6)
    assert grad.shape == (2, 4, 8, 8)
    # grad is d sum(weights * scores) / d conv2_out, worked out by hand for
    # scores = softmax(fc(mean_hw(relu(conv2_out + relu1_out))))
    fc_w = {t.name: numpy_helper.to_array(t)
            for t in onnx.load(str(models["residual"])).graph.initializer}["fc.w"]
    d_logits = scores * (weights - (weights * scores).sum(axis=1, keepdims=True))
    d_pooled = d_logits @ fc_w  # [N, 4]
    live = (feeds["conv2_out"] + feeds["relu1_out"]) > 0
    expected = live * d_pooled[:, :, None, None] / 64.0
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    assert np.abs(expected).max() > 1e-4  # the check is not vacuous


def test_split_accepts_a_node_name(models, tmp_path):
    manifest = _split(models["residual"], "conv2", tmp_path / "cut")
    assert manifest["layer"] == "conv2_out"


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_split_score_modes_on_a_softmax_model(models, tmp_path, score):
    model = models["conv13_softmax"]
    out = tmp_path / score
    manifest = _split(model, "relu1_out", out, "--score", score)
    assert manifest["score"] == score
    assert manifest["opset"] == 16
    prefix, head = _check_contract(out, manifest)
    x = image(seed=3)
    weights = np.eye(2, tiny_models.N_CLASSES, dtype=np.float32)
    _, (scores, grad) = _run_split(prefix, head, x, weights)
    (probs,) = session(model).run(None, {"input": x})
    # probability: the model's own Softmax output; logit: that Softmax's input
    got = scores if score == "probability" else softmax(scores)
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    if score == "logit":
        assert not np.allclose(scores.sum(axis=1), 1.0)
    assert grad.shape == (2, 4, 8, 8)


def test_split_nhwc_layer(models, tmp_path):
    out = tmp_path / "cut"
    manifest = _split(models["nhwc"], "nhwc_relu", out)
    assert (manifest["layout"], manifest["channel_axis"]) == ("NHWC", 3)
    assert manifest["layer_shape"] == ["N", 8, 8, 4]
    prefix, head = _check_contract(out, manifest)
    weights = np.ones((2, tiny_models.N_CLASSES), np.float32)
    _, (scores, grad) = _run_split(prefix, head, image(), weights)
    assert grad.shape == (2, 8, 8, 4)
    # weights all ones: the gradient of sum(probabilities) = 1 is zero
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_split_never_overwrites_without_force(models, tmp_path):
    out = tmp_path / "cut"
    _split(models["conv"], "relu1_out", out)
    (out / "manifest.json").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run("split", models["conv"], "--layer", "conv1_out", "--out", out)
    assert result.exit_code == 1
    assert result.output == (f"Error: {out} already holds prefix.onnx, head.onnx, "
                             "manifest.json; pass --force to overwrite\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    manifest = _split(models["conv"], "conv1_out", out, "--force")
    assert manifest["layer"] == "conv1_out"


def test_split_refuses_when_only_one_file_exists(models, tmp_path):
    out = tmp_path / "cut"
    out.mkdir()
    (out / "head.onnx").write_bytes(b"keep")
    result = run("split", models["conv"], "--layer", "relu1_out", "--out", out)
    assert result.exit_code == 1
    assert "head.onnx" in result.output and "--force" in result.output
    assert (out / "head.onnx").read_bytes() == b"keep"
    assert sorted(p.name for p in out.iterdir()) == ["head.onnx"]


# --- errors: one line, exit code 1, no traceback ------------------------------------------

def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\xff\xfe this is not an ONNX model \x00\x01\x02" * 16)
    return path


ERROR_CASES = {
    "missing file": (lambda m, t: ["layers", t / "missing.onnx"],
                     ["model file not found", "missing.onnx"]),
    "missing file (split)": (lambda m, t: ["split", t / "missing.onnx", "--layer", "x",
                                           "--out", t / "cut"],
                             ["model file not found"]),
    "corrupt file": (lambda m, t: ["layers", _garbage(t)], ["cannot read", "garbage.onnx"]),
    "unknown layer": (lambda m, t: ["split", m["conv"], "--layer", "relu1_ot", "--out", t / "cut"],
                      ["unknown layer 'relu1_ot'", "closest: relu1_out"]),
    "not spatial": (lambda m, t: ["split", m["conv"], "--layer", "logits", "--out", t / "cut"],
                    ["layer 'logits' has shape", "not [N,K,h,w]"]),
    "1x1 grid": (lambda m, t: ["split", m["conv"], "--layer", "pooled", "--out", t / "cut"],
                 ["1x1 grid"]),
    "no gradient rule": (lambda m, t: ["split", m["blocked"], "--layer", "conv1_out",
                                       "--out", t / "cut"],
                         [f"no gradient rule for op '{tiny_models.NO_RULE_OP}' (node 'blocker')",
                          "e.g. 'conv2_out'"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line(models, tmp_path, case):
    make_args, expected = ERROR_CASES[case]
    result = run(*make_args(models, tmp_path))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for text in expected:
        assert text in lines[0]
    assert not (tmp_path / "cut").exists()  # a failed split writes nothing


def test_missing_layer_option_is_a_usage_error(models, tmp_path):
    result = run("split", models["conv"], "--out", tmp_path / "cut")
    assert result.exit_code == 2
    assert "Missing option '--layer'" in result.output


# --- saving past 2 GB ----------------------------------------------------------------------

def test_save_model_uses_external_data_past_the_limit(models, tmp_path):
    model = onnx.load(str(models["residual"]))
    x = image(seed=5)
    (expected,) = session(models["residual"]).run(None, {"input": x})
    path = tmp_path / "big.onnx"
    for _ in range(2):  # the second save must replace the data file, not append to it
        written = save_model(onnx.load(str(models["residual"])), path, limit=0)
        assert written == [path, data_file(path)]
        assert data_file(path).stat().st_size >= 4 * (4 * 3 * 9 + 4 * 4 * 9)
        assert path.stat().st_size < model.ByteSize()
        (got,) = session(path).run(None, {"input": x})
        np.testing.assert_array_equal(got, expected)
    sizes = data_file(path).stat().st_size
    save_model(onnx.load(str(models["residual"])), path, limit=0)
    assert data_file(path).stat().st_size == sizes
    # below the limit: one self-contained file, and the stale data file is gone
    assert save_model(model, path) == [path]
    assert not data_file(path).exists()
    (got,) = session(path).run(None, {"input": x})
    np.testing.assert_array_equal(got, expected)
