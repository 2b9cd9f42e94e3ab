"""VJP rules of the com.microsoft ops that onnxruntime's graph optimiser and its transformer
optimiser write into saved models (FusedConv, FusedGemm, FusedMatMul, Gelu, FastGelu, BiasGelu,
QuickGelu, BiasAdd, SkipLayerNormalization), and of QuantizeLinear/DequantizeLinear, whose
gradient is straight-through (the convention of quantisation-aware training: d DQ(Q(x)) / dx
is 1 where x lies inside the quantised range, 0 where Q clips it, as PyTorch's
fake_quantize)."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from .rules_elementwise import gelu_slope
from .rules_nn import _normalize_vjp, conv, gemm, matmul
from .table import Grads, Gys, Unsupported, VjpContext, vjp


def _attr(node: gs.Node, name: str, default):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _activation_slope(ctx: VjpContext, node: gs.Node, g: gs.Tensor) -> gs.Tensor:
    """g times the derivative of a fused activation, read off its output y (each activation's
    derivative is a function of y: y > 0, y(1 - y), 1 - y², inside the clip)."""
    act = _attr(node, "activation", "")
    params = [float(p) for p in node.attrs.get("activation_params", [])]
    y, b = node.outputs[0], ctx.b
    zero, one = ctx.scalar(0, y), ctx.scalar(1, y)
    if act in ("", "Identity"):
        return g
    if act == "Relu":
        return b.op("Where", b.op("Greater", y, zero), g, zero)
    if act == "LeakyRelu":
        alpha = params[0] if params else 0.01
        return b.op("Where", b.op("Greater", y, zero), g, b.op("Mul", g, ctx.scalar(alpha, y)))
    if act == "Sigmoid":
        return b.op("Mul", g, b.op("Mul", y, b.op("Sub", one, y)))
    if act == "Tanh":
        return b.op("Mul", g, b.op("Sub", one, b.op("Mul", y, y)))
    if act == "Clip" and len(params) == 2:
        inside = b.op("And", b.op("Greater", y, ctx.scalar(params[0], y)),
                      b.op("Less", y, ctx.scalar(params[1], y)))
        return b.op("Where", inside, g, zero)
    if act == "HardSigmoid":
        alpha = params[0] if params else 0.2
        inside = b.op("And", b.op("Greater", y, zero), b.op("Less", y, one))
        return b.op("Where", inside, b.op("Mul", g, ctx.scalar(alpha, y)), zero)
    raise Unsupported(f"{node.op} with activation {act!r}")


@vjp("FusedConv")
def fused_conv(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """act(Conv(X, W, B) + Z): the Conv rule on the activation's gradient; Z gets it as is."""
    g = _activation_slope(ctx, node, gys[0])
    grads = list(conv(ctx, node, [g]))
    if ctx.needs(node, 3):
        grads[3] = g
    return grads


@vjp("FusedGemm")
def fused_gemm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return gemm(ctx, node, [_activation_slope(ctx, node, gys[0])])


@vjp("FusedMatMul")
def fused_matmul(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """alpha · A' @ B' (A', B' transposed on their last two axes when asked): the MatMul rule
    on alpha · g, with the transposes undone."""
    if any(int(node.attrs.get(k, 0)) for k in ("transA", "transB", "transBatchA",
                                                  "transBatchB")):
        raise Unsupported("FusedMatMul with transposed operands")
    alpha = float(node.attrs.get("alpha", 1.0))
    g = gys[0] if alpha == 1.0 else ctx.b.op("Mul", gys[0], ctx.scalar(alpha, node.outputs[0]))
    return matmul(ctx, node, [g])


def _broadcast_sum(ctx: VjpContext, node: gs.Node, g: gs.Tensor) -> list[gs.Tensor | None]:
    """Every input of a sum (BiasAdd, the bias of BiasGelu) gets g, summed to its shape."""
    return [ctx.unbroadcast(g, x) if ctx.needs(node, i) else None
            for i, x in enumerate(node.inputs)]


@vjp("BiasAdd")
def bias_add(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """X + bias + skip."""
    return _broadcast_sum(ctx, node, gys[0])


def _biased(ctx: VjpContext, node: gs.Node) -> gs.Tensor:
    """X + bias, the input of the Gelu of BiasGelu/FastGelu (X alone without a bias)."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        return ctx.b.op("Add", node.inputs[0], node.inputs[1])
    return node.inputs[0]


@vjp("BiasGelu", "FastGelu")
def bias_gelu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """gelu(X + bias): BiasGelu with erf, FastGelu with the tanh approximation."""
    z = _biased(ctx, node)
    g = ctx.b.op("Mul", gys[0], gelu_slope(ctx, z, tanh=node.op == "FastGelu"))
    return _broadcast_sum(ctx, node, g)


@vjp("QuickGelu")
def quick_gelu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """x · sigmoid(alpha x): d/dx = s + alpha x s (1 - s)."""
    x, b = node.inputs[0], ctx.b
    alpha = float(node.attrs.get("alpha", 1.702))
    s = b.op("Sigmoid", b.op("Mul", x, ctx.scalar(alpha, x)))
    ds = b.op("Mul", b.op("Mul", x, ctx.scalar(alpha, x)),
              b.op("Mul", s, b.op("Sub", ctx.scalar(1, x), s)))
    return [b.op("Mul", gys[0], b.op("Add", s, ds))]


@vjp("SkipLayerNormalization")
def skip_layer_norm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """LayerNorm over the last axis of input + skip (+ bias), scaled by gamma (+ beta);
    its fourth output is that sum. Input, skip and bias get the sum's gradient."""
    x, skip, gamma = node.inputs[:3]
    if ctx.needs(node, 2) or ctx.needs(node, 3):
        raise Unsupported("gradient with respect to SkipLayerNormalization parameters")
    b = ctx.b
    total = b.op("Add", x, skip)
    if len(node.inputs) > 4 and node.inputs[4].name:
        total = b.op("Add", total, node.inputs[4])
    g_sum = None
    if gys[0] is not None:
        eps = float(node.attrs.get("epsilon", 1e-12))
        g_sum = _normalize_vjp(ctx, total, b.op("Mul", gys[0], gamma), [ctx.rank(x) - 1], eps)
    if len(gys) > 3 and gys[3] is not None:
        g_sum = gys[3] if g_sum is None else b.op("Add", g_sum, gys[3])
    if any(g is not None for g in gys[1:3]):
        raise Unsupported("gradient through SkipLayerNormalization's mean or inv_std outputs")
    if g_sum is None:
        return ctx.grads(node)
    grads = _broadcast_sum(ctx, node, g_sum)
    return [g if i in (0, 1, 4) else None for i, g in enumerate(grads)]


# Quantisation: straight-through ----------------------------------------------------------
_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
           np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}


def _per_axis(ctx: VjpContext, node: gs.Node, v: gs.Tensor, like: gs.Tensor) -> gs.Tensor:
    """A scale or zero point (scalar, or 1-D along ``axis``) shaped to broadcast on ``like``."""
    if ctx.rank(v) == 0:
        return v
    rank = ctx.rank(like)
    axis = int(node.attrs.get("axis", 1)) % rank
    shape = [1] * rank
    shape[axis] = -1
    return ctx.b.op("Reshape", v, ctx.b.ints(shape))


def _check_blocks(node: gs.Node) -> None:
    if int(node.attrs.get("block_size", 0)):
        raise Unsupported(f"{node.op} with block_size")


@vjp("DequantizeLinear")
def dequantize(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """y = (q - zero_point) · scale: q gets g · scale, in float (the straight-through path:
    QuantizeLinear takes it from there)."""
    _check_blocks(node)
    q, scale = node.inputs[:2]
    if not np.issubdtype(ctx.dtype(scale), np.floating) or ctx.needs(node, 1):
        raise Unsupported("DequantizeLinear with a scale on the path")
    g = ctx.b.op("Mul", gys[0], _per_axis(ctx, node, scale, node.outputs[0]))
    return ctx.grads(node, g)


@vjp("QuantizeLinear")
def quantize(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """q = clip(round(x / scale) + zero_point): x gets g / scale where round(x / scale) +
    zero_point lies inside the integer range, 0 where it is clipped."""
    _check_blocks(node)
    x, scale = node.inputs[:2]
    zp = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    lo, hi = _RANGES.get(ctx.dtype(node.outputs[0]), (-math.inf, math.inf))
    b = ctx.b
    s = _per_axis(ctx, node, scale, x)
    t = b.op("Round", b.op("Div", x, s))
    if zp is not None:
        zf = b.op("Cast", _per_axis(ctx, node, zp, x), to=ctx.onnx_dtype(x))
        t = b.op("Add", t, zf)
    inside = b.op("And", b.op("GreaterOrEqual", t, ctx.scalar(lo, x)),
                  b.op("LessOrEqual", t, ctx.scalar(hi, x)))
    gx = b.op("Where", inside, b.op("Div", gys[0], s), ctx.scalar(0, x))
    return ctx.grads(node, gx)
