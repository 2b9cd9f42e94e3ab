"""Build a small NHWC classifier in the shape tf2onnx writes for a Keras MobileNet-like model.

    input_1 [N,32,32,3] (NHWC)
      Transpose(0,3,1,2) Conv 3x3/2 auto_pad=SAME_UPPER Transpose(0,2,3,1)      stem
      Mul+Add (folded BatchNorm, per channel on the last axis)  Clip(0,6) = Relu6 -> stem_out
      Transpose Conv depthwise 3x3 pads=1 Transpose  Mul+Add  Clip(0,6)
      Transpose Conv 1x1 Transpose  Mul+Add                   (linear bottleneck)
      Add(stem_out)                                           residual
      Transpose MaxPool 2x2/2 Transpose
      Pad [0,1,1,0 | 0,1,1,0] (explicit SAME padding, NHWC)
      Transpose Conv 3x3 Transpose  Mul+Add  Clip(0,6)        -> last_out [N,8,8,32]
      ReduceMean axes [1,2] keepdims=0                        global pooling
      MatMul [32,10] + Add                                    dense -> logits
      Softmax                                                 -> Identity:0

at opset 13 (tf2onnx's default), with tf2onnx-style tensor names. ``build_nhwc_model``
returns the model and its weights in NCHW/OIHW form, so a test can rebuild the same network
in another framework. Run as a script to write the model: ``python tools/build_nhwc_model.py
out.onnx``.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
PREFIX = "StatefulPartitionedCall/model"
#: Tensor names a test may cut at (see the sketch above).
LAYERS = {
    "stem_conv": f"{PREFIX}/stem_conv/Conv2D:0",  # Conv output, NCHW
    "stem_out": f"{PREFIX}/stem_relu/Relu6:0",  # NHWC
    "block_conv_nhwc": f"{PREFIX}/block_project/Conv2D__tr:0",  # Transpose back, NHWC
    "block_out": f"{PREFIX}/block_add/add:0",  # residual Add, NHWC
    "pool_out": f"{PREFIX}/pool/MaxPool:0",  # MaxPool output, NCHW
    "last_conv_nhwc": f"{PREFIX}/last_conv/Conv2D__tr:0",  # Transpose back, NHWC
    "last_out": f"{PREFIX}/last_relu/Relu6:0",  # NHWC
}
LOGITS = f"{PREFIX}/dense/BiasAdd:0"
OUTPUT = "Identity:0"
INPUT = "input_1"
H = W = 32
N_CLASSES = 10


def make_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights (He-scaled convs, BatchNorm folded to per-channel scale and shift)."""
    rng = np.random.default_rng(seed)

    def conv(o, i, k):
        return (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(c):
        return (rng.uniform(0.6, 1.4, c).astype(np.float32),
                (rng.standard_normal(c) * 0.2).astype(np.float32))

    p: dict[str, np.ndarray] = {}
    p["stem_w"], p["stem_b"] = conv(16, 3, 3), (rng.standard_normal(16) * 0.1).astype(np.float32)
    p["stem_scale"], p["stem_shift"] = bn(16)
    p["dw_w"] = conv(16, 1, 3)
    p["dw_scale"], p["dw_shift"] = bn(16)
    p["pw_w"] = conv(16, 16, 1)
    p["pw_scale"], p["pw_shift"] = bn(16)
    p["last_w"] = conv(32, 16, 3)
    p["last_scale"], p["last_shift"] = bn(32)
    p["dense_w"] = (rng.standard_normal((32, N_CLASSES)) / np.sqrt(32)).astype(np.float32)
    p["dense_b"] = (rng.standard_normal(N_CLASSES) * 0.1).astype(np.float32)
    return p


class _Graph:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str | None = None,
             **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name or output[:-2],
                                           **attrs))
        return output

    def conv_nhwc(self, x: str, scope: str, w: np.ndarray, b: np.ndarray | None = None,
                  **attrs) -> str:
        """tf2onnx's Conv2D: Transpose to NCHW, Conv, Transpose back to NHWC."""
        t = self.node("Transpose", [x], f"{PREFIX}/{scope}/Conv2D__in:0", perm=TO_NCHW)
        ins = [t, self.init(f"{PREFIX}/{scope}/kernel", w)]
        if b is not None:
            ins.append(self.init(f"{PREFIX}/{scope}/bias", b))
        y = self.node("Conv", ins, f"{PREFIX}/{scope}/Conv2D:0", kernel_shape=list(w.shape[2:]),
                      **attrs)
        return self.node("Transpose", [y], f"{PREFIX}/{scope}/Conv2D__tr:0", perm=TO_NHWC)

    def bn_nhwc(self, x: str, scope: str, scale: np.ndarray, shift: np.ndarray) -> str:
        """A folded BatchNorm: x * scale + shift, broadcast over the last (channel) axis."""
        m = self.node("Mul", [x, self.init(f"{PREFIX}/{scope}/mul/y", scale)],
                      f"{PREFIX}/{scope}/mul:0")
        return self.node("Add", [m, self.init(f"{PREFIX}/{scope}/add/y", shift)],
                         f"{PREFIX}/{scope}/add_1:0")

    def relu6(self, x: str, scope: str) -> str:
        lo = self.init(f"{PREFIX}/{scope}/min", np.array(0.0, np.float32))
        hi = self.init(f"{PREFIX}/{scope}/max", np.array(6.0, np.float32))
        return self.node("Clip", [x, lo, hi], f"{PREFIX}/{scope}/Relu6:0")


def build_nhwc_model(seed: int = 0, opset: int = OPSET
                     ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model (batch axis symbolic, as tf2onnx's ``unk__``) and its weights."""
    p = make_weights(seed)
    g = _Graph()
    x = INPUT
    # Stem: SAME padding of a stride-2 conv expressed as auto_pad.
    t = g.conv_nhwc(x, "stem_conv", p["stem_w"], p["stem_b"], strides=[2, 2],
                    auto_pad="SAME_UPPER")
    stem = g.relu6(g.bn_nhwc(t, "stem_bn", p["stem_scale"], p["stem_shift"]), "stem_relu")
    # Inverted-residual-like block: depthwise 3x3, pointwise 1x1, residual Add.
    t = g.conv_nhwc(stem, "block_dw", p["dw_w"], group=16, pads=[1, 1, 1, 1])
    t = g.relu6(g.bn_nhwc(t, "block_dw_bn", p["dw_scale"], p["dw_shift"]), "block_dw_relu")
    t = g.conv_nhwc(t, "block_project", p["pw_w"])
    t = g.bn_nhwc(t, "block_project_bn", p["pw_scale"], p["pw_shift"])
    t = g.node("Add", [stem, t], LAYERS["block_out"])
    # MaxPool, wrapped in Transposes like every NHWC op tf2onnx maps to an NCHW ONNX op.
    t = g.node("Transpose", [t], f"{PREFIX}/pool/MaxPool__in:0", perm=TO_NCHW)
    t = g.node("MaxPool", [t], LAYERS["pool_out"], kernel_shape=[2, 2], strides=[2, 2])
    t = g.node("Transpose", [t], f"{PREFIX}/pool/MaxPool__tr:0", perm=TO_NHWC)
    # Explicit SAME padding (ZeroPadding2D) in NHWC, then a VALID conv.
    pads = g.init(f"{PREFIX}/last_pad/paddings", np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64))
    t = g.node("Pad", [t, pads], f"{PREFIX}/last_pad/Pad:0", mode="constant")
    t = g.conv_nhwc(t, "last_conv", p["last_w"])
    t = g.relu6(g.bn_nhwc(t, "last_bn", p["last_scale"], p["last_shift"]), "last_relu")
    # GlobalAveragePooling2D, Dense, Softmax.
    t = g.node("ReduceMean", [t], f"{PREFIX}/gap/Mean:0", axes=[1, 2], keepdims=0)
    t = g.node("MatMul", [t, g.init(f"{PREFIX}/dense/kernel", p["dense_w"])],
               f"{PREFIX}/dense/MatMul:0")
    t = g.node("Add", [t, g.init(f"{PREFIX}/dense/bias", p["dense_b"])], LOGITS)
    t = g.node("Softmax", [t], f"{PREFIX}/dense/Softmax:0", axis=-1)
    g.node("Identity", [t], OUTPUT)
    graph = helper.make_graph(
        g.nodes, "tf2onnx",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["unk__32", H, W, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["unk__33", N_CLASSES])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tf2onnx", producer_version="1.16.1")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, p


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/build_nhwc_model.py OUT.onnx")
    onnx.save(build_nhwc_model()[0], sys.argv[1])
