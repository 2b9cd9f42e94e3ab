"""VJP rules of network layers: convolution, pooling, normalisation, dense layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from .table import Unsupported, VjpContext, vjp

#: Input-gradient of a stride-1 Conv with constant weights: as a Conv with pre-flipped
#: weights (True) or as ConvTranspose (False). tools/bench_heads.py measures both.
STRIDE1_AS_CONV = True


def window_pads(node, xs: Sequence[int], ys: Sequence[int], k: Sequence[int],
                s: Sequence[int], d: Sequence[int]) -> list[int]:
    """Explicit begin pads of a Conv/Pool node, resolving ``auto_pad``."""
    n = len(xs)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("NOTSET", "", None):
        pads = list(node.attrs.get("pads", [0] * (2 * n)))
        return [int(p) for p in pads[:n]]
    if auto == "VALID":
        return [0] * n
    begins = []
    for i in range(n):
        total = max((ys[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - xs[i], 0)
        begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
    return begins


def transpose_window_geometry(xs, ys, k, s, d, pb):
    """End pads and output_padding that make ConvTranspose(y) land exactly on x's grid."""
    pe, op = [], []
    for i in range(len(xs)):
        crop = s[i] * (ys[i] - 1) + (k[i] - 1) * d[i] + 1 - pb[i] - xs[i]
        pe.append(max(crop, 0))
        op.append(max(-crop, 0))
    return pe, op


def _spatial(ctx, node, kernel):
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x)[2:], ctx.shape(y)[2:]
    n = len(xs)
    s = [int(v) for v in node.attrs.get("strides", [1] * n)]
    d = [int(v) for v in node.attrs.get("dilations", [1] * n)]
    k = [int(v) for v in kernel]
    return xs, ys, k, s, d, window_pads(node, xs, ys, k, s, d)


@vjp("Conv")
def conv(ctx: VjpContext, node, gys):
    w = node.inputs[1]
    if ctx.needs(node, 1) or (len(node.inputs) > 2 and ctx.needs(node, 2)):
        raise Unsupported("gradient with respect to Conv weights or bias")
    wshape = ctx.shape(w)
    group = int(node.attrs.get("group", 1))
    xs, ys, k, s, d, pb = _spatial(ctx, node, wshape[2:])
    pe, op = transpose_window_geometry(xs, ys, k, s, d, pb)
    wv = ctx.value(w)
    if STRIDE1_AS_CONV and wv is not None and all(v == 1 for v in s):
        # Correlation with the spatially flipped, in/out-swapped kernel (per group).
        pads_fwd_end = [ys[i] - xs[i] - pb[i] + (k[i] - 1) * d[i] for i in range(len(xs))]
        pad_b = [(k[i] - 1) * d[i] - pb[i] for i in range(len(xs))]
        pad_e = [(k[i] - 1) * d[i] - pads_fwd_end[i] for i in range(len(xs))]
        if min(pad_b + pad_e) >= 0:
            m, cg = wshape[0], wshape[1]
            wg = wv.reshape(group, m // group, cg, *wshape[2:])
            wg = np.flip(wg, axis=tuple(range(3, wg.ndim))).swapaxes(1, 2)
            wt = ctx.b.const(wg.reshape(group * cg, m // group, *wshape[2:]), hint="w_flip")
            gx = ctx.b.op("Conv", gys[0], wt, dilations=d, group=group,
                          kernel_shape=k, pads=pad_b + pad_e, strides=[1] * len(xs))
            return [gx, None, None]
    gx = ctx.b.op("ConvTranspose", gys[0], w, dilations=d, group=group, kernel_shape=k,
                  pads=pb + pe, output_padding=op, strides=s)
    return [gx, None, None]


@vjp("ConvTranspose")
def conv_transpose(ctx, node, gys):
    w = node.inputs[1]
    if ctx.needs(node, 1) or (len(node.inputs) > 2 and ctx.needs(node, 2)):
        raise Unsupported("gradient with respect to ConvTranspose weights or bias")
    wshape = ctx.shape(w)
    n = len(wshape) - 2
    s = [int(v) for v in node.attrs.get("strides", [1] * n)]
    d = [int(v) for v in node.attrs.get("dilations", [1] * n)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", b"NOTSET") or "output_shape" in node.attrs:
        raise Unsupported("ConvTranspose with auto_pad or output_shape")
    pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * n))]
    gx = ctx.b.op("Conv", gys[0], w, dilations=d, group=int(node.attrs.get("group", 1)),
                  kernel_shape=list(wshape[2:]), pads=pads, strides=s)
    return [gx, None, None]


def _channel_vector(ctx, x, vec):
    """Reshape a per-channel vector [C] to broadcast against x [N, C, ...]."""
    return vec.reshape((-1,) + (1,) * (ctx.rank(x) - 2))


@vjp("BatchNormalization")
def batch_norm(ctx, node, gys):
    """Inference BatchNorm is an affine map per channel: dx = dy · scale / sqrt(var + eps)."""
    if int(node.attrs.get("training_mode", 0)) or len([o for o in node.outputs if o.name]) > 1:
        raise Unsupported("BatchNormalization in training mode")
    x, scale, _, _, var = node.inputs[:5]
    if any(ctx.needs(node, i) for i in range(1, 5)):
        raise Unsupported("gradient with respect to BatchNormalization parameters")
    eps = float(node.attrs.get("epsilon", 1e-5))
    sv, vv = ctx.value(scale), ctx.value(var)
    if sv is not None and vv is not None:
        factor = ctx.array(_channel_vector(ctx, x, sv / np.sqrt(vv.astype(np.float64) + eps)), x)
    else:
        b = ctx.b
        f = b.op("Div", scale, b.op("Sqrt", b.op("Add", var, ctx.scalar(eps, x))))
        factor = b.op("Reshape", f, b.ints([-1] + [1] * (ctx.rank(x) - 2)))
    return [ctx.b.op("Mul", gys[0], factor), None, None, None, None]


def _normalize_vjp(ctx, x, g_hat, axes, eps):
    """dx for x_hat = (x - mean)/sqrt(var + eps) over ``axes``, given dL/dx_hat."""
    b = ctx.b
    mean = b.reduce("ReduceMean", x, axes)
    xc = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Mul", xc, xc), axes)
    rstd = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, ctx.scalar(eps, x))))
    x_hat = b.op("Mul", xc, rstd)
    m1 = b.reduce("ReduceMean", g_hat, axes)
    m2 = b.reduce("ReduceMean", b.op("Mul", g_hat, x_hat), axes)
    return b.op("Mul", rstd, b.op("Sub", b.op("Sub", g_hat, m1), b.op("Mul", x_hat, m2)))


@vjp("LayerNormalization")
def layer_norm(ctx, node, gys):
    x, scale = node.inputs[0], node.inputs[1]
    if any(ctx.needs(node, i) for i in range(1, len(node.inputs))):
        raise Unsupported("gradient with respect to LayerNormalization parameters")
    rank = ctx.rank(x)
    axis = int(node.attrs.get("axis", -1)) % rank
    g_hat = ctx.b.op("Mul", gys[0], scale)
    eps = float(node.attrs.get("epsilon", 1e-5))
    return [_normalize_vjp(ctx, x, g_hat, list(range(axis, rank)), eps), None, None]


@vjp("InstanceNormalization")
def instance_norm(ctx, node, gys):
    x, scale = node.inputs[0], node.inputs[1]
    if ctx.needs(node, 1) or ctx.needs(node, 2):
        raise Unsupported("gradient with respect to InstanceNormalization parameters")
    sv = ctx.value(scale)
    if sv is not None:
        s = ctx.array(_channel_vector(ctx, x, sv), x)
    else:
        s = ctx.b.op("Reshape", scale, ctx.b.ints([-1] + [1] * (ctx.rank(x) - 2)))
    g_hat = ctx.b.op("Mul", gys[0], s)
    eps = float(node.attrs.get("epsilon", 1e-5))
    return [_normalize_vjp(ctx, x, g_hat, list(range(2, ctx.rank(x))), eps), None, None]


# Pooling -----------------------------------------------------------------------------------
@vjp("MaxPool")
def max_pool(ctx, node, gys):
    """Route each output's gradient to the input its Indices output names (added if absent)."""
    import onnx_graphsurgeon as gs

    if int(node.attrs.get("storage_order", 0)) != 0:
        raise Unsupported("MaxPool with storage_order=1")
    b, x = ctx.b, node.inputs[0]
    if len(node.outputs) < 2 or not node.outputs[1].name:
        indices = gs.Variable(b._name("maxpool_indices"), dtype=np.int64)
        if len(node.outputs) < 2:
            node.outputs.append(indices)
        else:
            node.outputs[1] = indices
    indices = node.outputs[1]
    flat = b.ints([-1])
    zeros = b.op("Reshape", ctx.zeros_like(x), flat)
    scattered = b.op("ScatterElements", zeros, b.op("Reshape", indices, flat),
                     b.op("Reshape", gys[0], flat), axis=0, reduction="add")
    return [b.op("Reshape", scattered, b.op("Shape", x))]


def _average_pool_scale(node, xs, ys, k, s, d, pb, opset) -> np.ndarray:
    """1/divisor for every output position, read off onnxruntime's own AveragePool:
    pooling ones gives |window ∩ input| / divisor, and |window ∩ input| is geometry."""
    import onnxruntime as ort

    attrs = {key: v for key, v in node.attrs.items()}
    inp = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, *xs])
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("AveragePool", ["x"], ["y"], **attrs)],
                              "avgpool_scale", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # onnx stamps its newest IR version, which onnxruntime may not read yet.
    model.ir_version = helper.find_min_ir_version_for(model.opset_import)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pooled = sess.run(None, {"x": np.ones([1, 1, *xs], np.float32)})[0][0, 0].astype(np.float64)
    counts = np.ones((), dtype=np.float64)
    for i in range(len(xs)):
        starts = np.arange(ys[i]) * s[i] - pb[i]
        taps = starts[:, None] + np.arange(k[i])[None, :] * d[i]
        c = ((taps >= 0) & (taps < xs[i])).sum(axis=1).astype(np.float64)
        counts = np.multiply.outer(counts, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(counts > 0, pooled / counts, 0.0)
    return scale


@vjp("AveragePool")
def average_pool(ctx, node, gys):
    x = node.inputs[0]
    c = ctx.shape(x)[1]
    xs, ys, k, s, d, pb = _spatial(ctx, node, node.attrs["kernel_shape"])
    pe, op = transpose_window_geometry(xs, ys, k, s, d, pb)
    scale = _average_pool_scale(node, xs, ys, k, s, d, pb, ctx.b.opset)
    b = ctx.b
    g = b.op("Mul", gys[0], ctx.array(scale[None, None], x))
    ones = ctx.array(np.ones([c, 1, *k]), x)
    gx = b.op("ConvTranspose", g, ones, dilations=d, group=c, kernel_shape=k,
              pads=list(pb) + pe, output_padding=op, strides=s)
    return [gx]


@vjp("GlobalAveragePool")
def global_average_pool(ctx, node, gys):
    x, b = node.inputs[0], ctx.b
    area = int(np.prod(ctx.shape(x)[2:]))
    return [b.op("Expand", b.op("Div", gys[0], ctx.scalar(area, x)), b.op("Shape", x))]


@vjp("GlobalMaxPool")
def global_max_pool(ctx, node, gys):
    """To the maximum of each channel (every tied maximum gets the full gradient)."""
    x, y, b = node.inputs[0], node.outputs[0], ctx.b
    return [b.op("Where", b.op("Equal", x, y), gys[0], ctx.scalar(0, x))]


# Dense layers ------------------------------------------------------------------------------
@vjp("Gemm")
def gemm(ctx, node, gys):
    a, w = node.inputs[0], node.inputs[1]
    g, b = gys[0], ctx.b
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    grads = [None, None, None]
    if ctx.needs(node, 0):
        if ta == 0:
            grads[0] = b.op("Gemm", g, w, alpha=alpha, transB=1 - tb)
        else:
            grads[0] = b.op("Gemm", w, g, alpha=alpha, transA=tb, transB=1)
    if ctx.needs(node, 1):
        if tb == 0:
            grads[1] = b.op("Gemm", a, g, alpha=alpha, transA=1 - ta)
        else:
            grads[1] = b.op("Gemm", g, a, alpha=alpha, transA=1, transB=ta)
    if len(node.inputs) > 2 and ctx.needs(node, 2):
        # The scalar takes the dtype of a forward tensor: ``g`` is new and has no recorded one.
        gc = g if beta == 1.0 else b.op("Mul", g, ctx.scalar(beta, node.outputs[0]))
        grads[2] = ctx.unbroadcast(gc, ctx.shape(node.outputs[0]), node.inputs[2])
    return grads


def _swap_last(b, t, rank):
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return b.op("Transpose", t, perm=perm)


@vjp("MatMul")
def matmul(ctx, node, gys):
    a, w = node.inputs
    g, b = gys[0], ctx.b
    sa, sw, sy = ctx.shape(a), ctx.shape(w), ctx.shape(node.outputs[0])
    if len(sa) < 2:
        raise Unsupported("MatMul with a 1-D left operand")
    grads = [None, None]
    if len(sw) == 1:  # y[..., m] = a[..., m, k] @ w[k]
        gu = b.unsqueeze(g, [-1])
        if ctx.needs(node, 0):
            grads[0] = b.op("Mul", gu, w)
        if ctx.needs(node, 1):
            grads[1] = ctx.unbroadcast(b.op("Mul", gu, a), tuple(sa), w)
        return grads
    if ctx.needs(node, 0):
        ga = b.op("MatMul", g, _swap_last(b, w, len(sw)))
        ga_shape = tuple(sy[:-2]) + (sy[-2], sw[-2])
        grads[0] = ctx.unbroadcast(ga, ga_shape, a)
    if ctx.needs(node, 1):
        gw = b.op("MatMul", _swap_last(b, a, len(sa)), g)
        gw_shape = tuple(sy[:-2]) + (sa[-1], sy[-1])
        grads[1] = ctx.unbroadcast(gw, gw_shape, w)
    return grads
