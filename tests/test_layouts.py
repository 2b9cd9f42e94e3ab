"""Layer layouts traced through the graph (ort_cam.graph.trace): channels moved by Reshape and
Transpose (ShuffleNet's channel shuffle), channels last from a LayerNormalization or a
MatMul over the last axis, token grids from the patch embedding or from T − k being a square,
and ``--layer-layout``/``--grid``/``--extra-tokens`` where the graph does not tell."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ort_cam
from ort_cam.errors import OrtCamError
from ort_cam.grad import list_layers
from ort_cam.graph import LayerHint, layer_view, load_model
from ort_cam.graph.trace import square_grid


def _model(nodes, inits, x_dims=("N", 4, 6, 6)):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.asarray(v, np.int64) if k.startswith("s_") else
                                     (rng.standard_normal(v) * 0.5).astype(np.float32), k)
             for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "lay", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _head(src: str, channels: int) -> tuple[list, dict]:
    return ([helper.make_node("GlobalAveragePool", [src], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)],
            {"fc": (3, channels)})


def shuffle_model():
    """conv (4 ch) -> x.view(N, 2, 2, h, w).transpose(1, 2).reshape(N, 4, h, w) -> relu."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["conv", "s_split"], ["groups"]),
             helper.make_node("Transpose", ["groups"], ["swapped"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["swapped", "s_merge"], ["shuffled"]),
             helper.make_node("Relu", ["shuffled"], ["relu"])]
    head, inits = _head("relu", 4)
    return _model(nodes + head, {"w": (4, 4, 3, 3), "s_split": [0, 2, 2, 6, 6],
                                 "s_merge": [0, 4, 6, 6], **inits})


def channels_last_model(scrambled: bool = False):
    """conv -> NHWC (Transpose) -> LayerNorm -> MatMul (C 4 -> 5) -> back to NCHW; with
    ``scrambled``, the NHWC tensor is instead a reinterpretation of the NCHW one's memory
    (Reshape [N, h, w, C] of an NCHW tensor): nothing in the graph says where the channels
    are."""
    to_nhwc = (helper.make_node("Reshape", ["conv", "s_nhwc"], ["nhwc"]) if scrambled else
               helper.make_node("Transpose", ["conv"], ["nhwc"], perm=[0, 2, 3, 1]))
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]), to_nhwc,
             helper.make_node("LayerNormalization", ["nhwc", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "m"], ["mm"]),
             helper.make_node("Transpose", ["mm"], ["nchw"], perm=[0, 3, 1, 2])]
    head, inits = _head("nchw", 5)
    return _model(nodes + head, {"w": (4, 4, 3, 3), "s_nhwc": [0, 6, 6, 4], "g": (4,),
                                 "b": (4,), "m": (4, 5), **inits})


def test_channel_shuffle_stays_nchw():
    """Before: "cannot tell where the channels of 'shuffled' are"."""
    lm = load_model(shuffle_model())
    infos = {i.name: i for i in list_layers(lm)}
    assert (infos["shuffled"].layout, infos["relu"].layout) == ("NCHW", "NCHW")
    assert layer_view(lm, "relu").channel_axis == 1
    assert "groups" not in infos  # rank 5: not a layer


def test_layernorm_and_matmul_over_the_last_axis_are_channels_last():
    lm = load_model(channels_last_model())
    infos = {i.name: i for i in list_layers(lm)}
    assert [infos[n].layout for n in ("conv", "nhwc", "ln", "mm", "nchw")] == [
        "NCHW", "NHWC", "NHWC", "NHWC", "NCHW"]
    assert infos["mm"].channel_axis == 3 and infos["mm"].shape == ["N", 6, 6, 5]


def test_layer_layout_override_where_the_graph_does_not_tell(tmp_path):
    path = tmp_path / "scrambled.onnx"
    import onnx

    onnx.save(channels_last_model(scrambled=True), str(path))
    with pytest.raises(OrtCamError, match=r"cannot tell where the channels of 'nhwc'.*pass "
                                          r"--layer-layout NCHW or NHWC"):
        ort_cam.Explainer(path, "nhwc", preprocess="raw", quiet=True, cache=False)
    ex = ort_cam.Explainer(path, "nhwc", preprocess="raw", quiet=True, cache=False,
                           layer_layout="NHWC")
    assert ex.channel_axis == 3
    x = np.random.default_rng(3).standard_normal((1, 4, 6, 6)).astype(np.float32)
    assert ex.explain_array(x, baseline_array="zeros", methods=["gradcam"])[
        "gradcam"].raw.shape == (6, 6)
    with pytest.raises(OrtCamError, match="a grid and extra tokens are for token layers"):
        layer_view(load_model(path), "nhwc", LayerHint(grid=(6, 6)))


def test_tokens_from_a_square_and_from_the_caller():
    """x [N, 17, 8] -> MatMul -> [N, 17, 8]: no patch embedding, so 17 = 1 + 4x4."""
    nodes = [helper.make_node("MatMul", ["x", "m"], ["tok"]),
             helper.make_node("ReduceMean", ["tok"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["logits"], transB=1)]
    lm = load_model(_model(nodes, {"m": (8, 8), "fc": (3, 8)}, x_dims=("N", 17, 8)))
    view = layer_view(lm, "tok")
    assert (view.layout, view.grid, view.extra_tokens, view.told) == ("tokens", (4, 4), 1,
                                                                       "square")
    given = layer_view(lm, "tok", LayerHint(grid=(2, 8)))
    assert (given.grid, given.extra_tokens, given.told) == ((2, 8), 1, "given")
    with pytest.raises(OrtCamError, match="has 17 tokens, but a 4x4 grid and 0 extra tokens "
                                          "make 16"):
        layer_view(lm, "tok", LayerHint(grid=(4, 4), extra_tokens=0))


@pytest.mark.parametrize("tokens, want", [(197, ((14, 14), 1)), (198, ((14, 14), 2)),
                                          (196, ((14, 14), 0)), (50, ((7, 7), 1)),
                                          (3, None), (1035, None)])
def test_square_grid(tokens, want):
    assert square_grid(tokens) == want
