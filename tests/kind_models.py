"""Small hand-built ONNX models of the kinds people export beyond a plain float32 CNN: several
outputs (class scores among segmentation maps, detections, integer labels), a uint8 input cast
to float inside, custom opset domains, dynamic height and width. Weights are seeded.

Each factory returns a ModelProto; ``save`` writes one to a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tiny_models import random_image

N_CLASSES = 3
#: ImageNet's mean and std in pixel units (what a model that normalises inside subtracts).
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _w(name: str, shape: Sequence[int], rng: np.random.Generator, scale: float = 0.3
       ) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "kind", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8  # onnx stamps an IR version newer than onnxruntime reads
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _trunk(src: str, rng: np.random.Generator, channels: int = 4) -> tuple[list, list]:
    """``src`` [N,3,H,W] -> conv (``channels``, 3x3 pad 1) -> relu: tensors conv, relu."""
    nodes = [helper.make_node("Conv", [src, "conv.w", "conv.b"], ["conv"], name="conv",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu")]
    return nodes, [_w("conv.w", (channels, 3, 3, 3), rng), _w("conv.b", (channels,), rng)]


def _classifier(src: str, rng: np.random.Generator, channels: int = 4,
                out: str = "logits") -> tuple[list, list]:
    """``src`` [N,K,h,w] -> GlobalAveragePool -> Flatten -> Gemm: ``out`` [N, N_CLASSES]."""
    nodes = [helper.make_node("GlobalAveragePool", [src], ["pooled"], name="gap"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], [out], name="fc", transB=1)]
    return nodes, [_w("fc.w", (N_CLASSES, channels), rng, 1.0), _w("fc.b", (N_CLASSES,), rng)]


def _image(name: str = "x", dtype: int = TensorProto.FLOAT, dims=("N", 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, list(dims))


def multi_output(first: str = "seg") -> onnx.ModelProto:
    """x [N,3,8,8] -> conv -> relu, then four outputs, ``first`` first: seg [N,5,8,8] (a 1x1
    conv), boxes [N,24,4] (detections), label [N] int64 (ArgMax) and logits [N,3] (the class
    scores: GAP, Flatten, Gemm)."""
    rng = np.random.default_rng(1)
    nodes, inits = _trunk("x", rng)
    tail, tail_inits = _classifier("relu", rng)
    nodes += tail + [
        helper.make_node("Conv", ["relu", "seg.w"], ["seg"], name="seg"),
        helper.make_node("MatMul", ["relu", "box.w"], ["box8"], name="box"),
        helper.make_node("Reshape", ["box8", "box.shape"], ["boxes"], name="box_reshape"),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0, name="argmax"),
    ]
    inits += tail_inits + [_w("seg.w", (5, 4, 1, 1), rng), _w("box.w", (8, 3), rng),
                           numpy_helper.from_array(np.array([0, 24, 4], np.int64), "box.shape")]
    outs = {"seg": helper.make_tensor_value_info("seg", TensorProto.FLOAT, ["N", 5, 8, 8]),
            "boxes": helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 24, 4]),
            "label": helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            "logits": helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                    ["N", N_CLASSES])}
    order = [first, *[k for k in outs if k != first]]
    return _model(nodes, [_image()], [outs[k] for k in order], inits)


def pixel_model(cast: bool = True, dims=("N", 8, 8, 3), via_int32: bool = False
                ) -> onnx.ModelProto:
    """The model normalises inside: x [N,8,8,3] RGB pixels (uint8 with ``cast``, then Cast to
    float, or first to int32 with ``via_int32``; else float) -> (x - MEAN) / STD -> NCHW ->
    conv -> relu -> classifier. With and without the Cast the two models compute the same
    function of the pixel values."""
    rng = np.random.default_rng(2)
    first = "xf" if cast else "x"
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT, name="cast")] if cast \
        else []
    if via_int32:
        nodes = [helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT32, name="cast_i"),
                 helper.make_node("Cast", ["xi"], ["xf"], to=TensorProto.FLOAT, name="cast")]
    nodes += [helper.make_node("Sub", [first, "mean"], ["centred"], name="sub"),
              helper.make_node("Div", ["centred", "std"], ["normed"], name="div"),
              helper.make_node("Transpose", ["normed"], ["nchw"], perm=[0, 3, 1, 2], name="nchw")]
    trunk, inits = _trunk("nchw", rng)
    tail, tail_inits = _classifier("relu", rng)
    inits += tail_inits + [numpy_helper.from_array(MEAN, "mean"),
                           numpy_helper.from_array(STD, "std")]
    dtype = TensorProto.UINT8 if cast else TensorProto.FLOAT
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])
    return _model(nodes + trunk + tail, [_image("x", dtype, dims)], [out], inits)


def custom_domain_model() -> onnx.ModelProto:
    """x -> com.microsoft FusedConv (conv + relu, onnxruntime's contrib op) -> conv -> relu ->
    classifier, importing a vendor's own domain too (com.example.vendor, used by no node)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("FusedConv", ["x", "pre.w", "pre.b"], ["pre"], name="fused",
                              domain="com.microsoft", activation="Relu", pads=[1, 1, 1, 1])]
    inits = [_w("pre.w", (3, 3, 3, 3), rng), _w("pre.b", (3,), rng)]
    trunk, trunk_inits = _trunk("pre", rng)
    tail, tail_inits = _classifier("relu", rng)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])
    opsets = (("", 17), ("com.microsoft", 1), ("com.example.vendor", 3))
    return _model(nodes + trunk + tail, [_image()], [out], inits + trunk_inits + tail_inits,
                  opsets)


def dynamic_hw_model() -> onnx.ModelProto:
    """x [N,3,H,W] -> conv -> relu -> classifier."""
    rng = np.random.default_rng(4)
    nodes, inits = _trunk("x", rng)
    tail, tail_inits = _classifier("relu", rng)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])
    return _model(nodes + tail, [_image("x", dims=("N", 3, "H", "W"))], [out], inits + tail_inits)


def dynamic_hw_files(directory: Path, image: str, size: tuple[int, int], seed: int
                     ) -> dict[str, Path]:
    """``dynamic_hw_model`` saved in ``directory`` and a seeded random RGB image of ``size``
    (H, W) named ``image`` beside it: {"dir", "img", "model"}."""
    return {"dir": directory, "img": random_image(directory, image, size, seed),
            "model": save(dynamic_hw_model(), directory / "dynamic_hw.onnx")}
