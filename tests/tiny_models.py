"""Tiny hand-built ONNX classifiers for the CLI tests, each written to a file.

Every factory takes a directory and returns the path of the .onnx file it wrote. Weights are
seeded, so every run sees the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ort_cam.cli import main
from ort_cam.grad import VJP_RULES

#: A single-input, shape-keeping float op with no VJP rule. Taken from a list rather than
#: hard-coded so that the tests keep working when a rule for one of them lands.
NO_RULE_OP = next(op for op in ("Hardmax", "Shrink", "Softsign", "ThresholdedRelu", "Sin")
                  if op not in VJP_RULES)

N_CLASSES = 5


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _save(nodes, inits, path: Path, opset: int = 16, out_shape=("N", N_CLASSES)) -> Path:
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits" if nodes[-1].op_type != "Softmax" else "probs",
                                       TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # onnx.helper stamps an IR version newer than onnxruntime 1.31 reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _classifier_tail(src: str, channels: int, rng, softmax: bool) -> tuple[list, list]:
    """GlobalAveragePool -> Flatten -> Gemm (-> Softmax) on top of ``src``."""
    nodes = [
        helper.make_node("GlobalAveragePool", [src], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
    inits = [_init("fc.w", (N_CLASSES, channels), rng), _init("fc.b", (N_CLASSES,), rng)]
    return nodes, inits


def conv_net(directory: Path, opset: int = 16, softmax: bool = False) -> Path:
    """input[1,3,8,8] -> conv1 (4ch) -> relu1 -> gap -> flatten -> fc [1,5] (-> softmax)

    Layers: conv1_out (Conv, NCHW [N,4,8,8]), relu1_out (Relu, NCHW [N,4,8,8]);
    pooled is [N,4,1,1] (a 1x1 grid, listed only with --all).
    """
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
    ]
    tail, tail_inits = _classifier_tail("relu1_out", 4, rng, softmax)
    inits = [_init("conv1.w", (4, 3, 3, 3), rng), _init("conv1.b", (4,), rng), *tail_inits]
    name = f"conv_net_op{opset}{'_softmax' if softmax else ''}.onnx"
    return _save(nodes + tail, inits, Path(directory) / name, opset)



def even_net(directory: Path, constant: bool = False) -> Path:
    """input -> conv1 (4ch, no bias) -> square -> gap -> flatten -> fc [N, 5] (logits).

    y is even in conv1_out (a sum of squares), and conv1_out odd in the input: the baseline
    -x gives y exactly as at x, while the path between goes through other values (Σ IG = 0
    up to float32 rounding). ``constant``: fc's weights are 0, so y is fc's bias everywhere
    and every gradient is 0 (every map dark).
    """
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["conv1_out", "conv1_out"], ["square"], name="square"),
    ]
    tail, tail_inits = _classifier_tail("square", 4, rng, softmax=False)
    if constant:
        tail_inits[0] = numpy_helper.from_array(np.zeros((N_CLASSES, 4), np.float32), "fc.w")
    name = f"even_net{'_constant' if constant else ''}.onnx"
    return _save(nodes + tail, [_init("conv1.w", (4, 3, 3, 3), rng), *tail_inits],
                 Path(directory) / name)


def binary_net(directory: Path) -> Path:
    """input -> conv1 (4ch) -> relu1 -> gap -> flatten -> fc [N, 1]: one logit per image.

    Layers: relu1_out (Relu, NCHW [N,4,8,8]).
    """
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["relu1_out"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    inits = [_init("conv1.w", (4, 3, 3, 3), rng), _init("conv1.b", (4,), rng),
             _init("fc.w", (1, 4), rng), _init("fc.b", (1,), rng)]
    return _save(nodes, inits, Path(directory) / "binary_net.onnx", out_shape=("N", 1))


def random_image(directory: Path, name: str = "a.png", size: tuple[int, int] = (8, 8),
                 seed: int = 0) -> Path:
    """A seeded random RGB image of ``size`` (H, W) written to ``directory/name``."""
    rng = np.random.default_rng(seed)
    path = Path(directory) / name
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def explain_conv_net(model: Path, image: Path, out: Path, *extra: str | int | Path) -> Result:
    """``ort-cam explain`` of ``conv_net``'s relu1_out (raw preprocessing, 4 steps) on
    ``image`` into ``out``, with ``extra`` options."""
    return CliRunner().invoke(main, [str(a) for a in (
        "explain", model, image, "--layer", "relu1_out", "--preprocess", "raw", "--steps", 4,
        *extra, "--out", out)])

def residual_net(directory: Path) -> Path:
    """
        input -> conv1 -> relu1 --------------+
                            \\                 v
                             -> conv2 ----> add -> relu2 -> gap -> flatten -> fc

    Cut at conv2_out, relu1_out crosses to the head beside it.
    """
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("Conv", ["relu1_out", "conv2.w", "conv2.b"], ["conv2_out"],
                         name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["conv2_out", "relu1_out"], ["add_out"], name="add"),
        helper.make_node("Relu", ["add_out"], ["relu2_out"], name="relu2"),
    ]
    tail, tail_inits = _classifier_tail("relu2_out", 4, rng, softmax=False)
    inits = [
        _init("conv1.w", (4, 3, 3, 3), rng), _init("conv1.b", (4,), rng),
        _init("conv2.w", (4, 4, 3, 3), rng), _init("conv2.b", (4,), rng), *tail_inits,
    ]
    return _save(nodes + tail, inits, Path(directory) / "residual_net.onnx")


def nhwc_net(directory: Path) -> Path:
    """input -> conv1 -> Transpose(0,2,3,1) -> relu [N,8,8,4] NHWC -> ReduceMean(1,2) -> fc"""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["conv1_out"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["nhwc"], ["nhwc_relu"], name="relu_nhwc"),
        helper.make_node("ReduceMean", ["nhwc_relu"], ["mean"], name="mean", axes=[1, 2],
                         keepdims=0),
        helper.make_node("Gemm", ["mean", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        _init("conv1.w", (4, 3, 3, 3), rng), _init("conv1.b", (4,), rng),
        _init("fc.w", (N_CLASSES, 4), rng), _init("fc.b", (N_CLASSES,), rng),
    ]
    return _save(nodes, inits, Path(directory) / "nhwc_net.onnx")


def blocked_net(directory: Path) -> Path:
    """input -> conv1 -> NO_RULE_OP ("blocker") -> conv2 -> relu2 -> gap -> flatten -> fc

    conv1_out cannot be differentiated (the blocker sits above it); conv2_out can.
    """
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["conv1_out"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node(NO_RULE_OP, ["conv1_out"], ["blocked"], name="blocker"),
        helper.make_node("Conv", ["blocked", "conv2.w", "conv2.b"], ["conv2_out"],
                         name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2_out"], ["relu2_out"], name="relu2"),
    ]
    tail, tail_inits = _classifier_tail("relu2_out", 4, rng, softmax=False)
    inits = [
        _init("conv1.w", (4, 3, 3, 3), rng), _init("conv1.b", (4,), rng),
        _init("conv2.w", (4, 4, 3, 3), rng), _init("conv2.b", (4,), rng), *tail_inits,
    ]
    return _save(nodes + tail, inits, Path(directory) / "blocked_net.onnx")
