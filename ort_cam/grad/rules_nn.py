"""VJP rules of network layers: convolution, pooling, normalisation, dense layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .spec import RULE_SWITCHES
from .table import Grads, Gys, Unsupported, VjpContext, vjp

#: Input-gradient of a stride-1 Conv with constant weights: as a Conv with pre-flipped
#: weights (True) or as ConvTranspose (False). tools/bench_heads.py measures both. The two
#: round differently in float32, so it is part of the prepared-model cache key
#: (``grad.rule_switches``); its default is ``spec.RULE_SWITCHES``.
STRIDE1_AS_CONV = RULE_SWITCHES["STRIDE1_AS_CONV"]


@dataclass(frozen=True)
class Window:
    """The sliding-window geometry of a Conv/Pool node along its spatial axes: input and
    output sizes, kernel, strides, dilations, and begin/end pads (``auto_pad`` resolved)."""

    xs: list[int]
    ys: list[int]
    k: list[int]
    s: list[int]
    d: list[int]
    pb: list[int]
    pe: list[int]

    def transpose_geometry(self) -> tuple[list[int], list[int]]:
        """End pads and output_padding that make ConvTranspose(y) land exactly on x's grid."""
        ends, extra = [], []
        for i in range(len(self.xs)):
            crop = (self.s[i] * (self.ys[i] - 1) + (self.k[i] - 1) * self.d[i] + 1
                    - self.pb[i] - self.xs[i])
            ends.append(max(crop, 0))
            extra.append(max(-crop, 0))
        return ends, extra


def window_pads(node: gs.Node, xs: Sequence[int], ys: Sequence[int], k: Sequence[int],
                s: Sequence[int], d: Sequence[int]) -> tuple[list[int], list[int]]:
    """Explicit begin and end pads of a Conv/Pool node, resolving ``auto_pad`` as
    onnxruntime does: SAME_UPPER puts the odd pad at the end, SAME_LOWER at the begin, and
    its pooling kernels size a SAME pad by the undilated kernel (Conv by the dilated one)."""
    n = len(xs)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("NOTSET", "", None):
        pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * n))]
        return pads[:n], pads[n:]
    if auto == "VALID":
        return [0] * n, [0] * n
    pool = node.op != "Conv"
    begins, ends = [], []
    for i in range(n):
        extent = k[i] if pool else (k[i] - 1) * d[i] + 1
        target = -(-xs[i] // s[i]) if pool else ys[i]  # ceil(x / s)
        total = max((target - 1) * s[i] + extent - xs[i], 0)
        begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        ends.append(total - begins[-1])
    return begins, ends


def _window(ctx: VjpContext, node: gs.Node, kernel: Sequence[int]) -> Window:
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = list(ctx.shape(x)[2:]), list(ctx.shape(y)[2:])
    n = len(xs)
    s = [int(v) for v in node.attrs.get("strides", [1] * n)]
    d = [int(v) for v in node.attrs.get("dilations", [1] * n)]
    k = [int(v) for v in kernel]
    pb, pe = window_pads(node, xs, ys, k, s, d)
    return Window(xs, ys, k, s, d, pb, pe)


def _flipped_conv(ctx: VjpContext, g: gs.Tensor | None, w: np.ndarray, group: int,
                  win: Window) -> gs.Tensor | None:
    """dx of a stride-1 Conv with constant weights as a correlation with the spatially
    flipped, in/out-swapped kernel (per group); ``None`` when its pads would be negative."""
    n, k, d = len(win.xs), win.k, win.d
    pads_fwd_end = [win.ys[i] - win.xs[i] - win.pb[i] + (k[i] - 1) * d[i] for i in range(n)]
    pad_b = [(k[i] - 1) * d[i] - win.pb[i] for i in range(n)]
    pad_e = [(k[i] - 1) * d[i] - pads_fwd_end[i] for i in range(n)]
    if min(pad_b + pad_e) < 0:
        return None
    m, cg = w.shape[0], w.shape[1]
    wg = w.reshape(group, m // group, cg, *w.shape[2:])
    wg = np.flip(wg, axis=tuple(range(3, wg.ndim))).swapaxes(1, 2)
    wt = ctx.b.const(wg.reshape(group * cg, m // group, *w.shape[2:]), hint="w_flip")
    return ctx.b.op("Conv", g, wt, dilations=d, group=group, kernel_shape=k,
                    pads=pad_b + pad_e, strides=[1] * n)


@vjp("Conv")
def conv(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    w = node.inputs[1]
    if ctx.needs(node, 1) or ctx.needs(node, 2):
        raise Unsupported("gradient with respect to Conv weights or bias")
    group = int(node.attrs.get("group", 1))
    win = _window(ctx, node, ctx.shape(w)[2:])
    ends, extra = win.transpose_geometry()
    wv = ctx.value(w)
    if STRIDE1_AS_CONV and wv is not None and all(v == 1 for v in win.s):
        gx = _flipped_conv(ctx, gys[0], wv, group, win)
        if gx is not None:
            return ctx.grads(node, gx)
    gx = ctx.b.op("ConvTranspose", gys[0], w, dilations=win.d, group=group, kernel_shape=win.k,
                  pads=win.pb + ends, output_padding=extra, strides=win.s)
    return ctx.grads(node, gx)


@vjp("ConvTranspose")
def conv_transpose(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    w = node.inputs[1]
    if ctx.needs(node, 1) or ctx.needs(node, 2):
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
    return ctx.grads(node, gx)


def _channel_vector(ctx: VjpContext, x: gs.Tensor, vec: np.ndarray) -> np.ndarray:
    """Reshape a per-channel vector [C] to broadcast against x [N, C, ...]."""
    return vec.reshape((-1,) + (1,) * (ctx.rank(x) - 2))


@vjp("BatchNormalization")
def batch_norm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
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
    return ctx.grads(node, ctx.b.op("Mul", gys[0], factor))


def _normalize_vjp(ctx: VjpContext, x: gs.Tensor, g_hat: gs.Tensor, axes: list[int],
                   eps: float) -> gs.Tensor:
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
def layer_norm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, scale = node.inputs[0], node.inputs[1]
    if any(ctx.needs(node, i) for i in range(1, len(node.inputs))):
        raise Unsupported("gradient with respect to LayerNormalization parameters")
    rank = ctx.rank(x)
    axis = int(node.attrs.get("axis", -1)) % rank
    g_hat = ctx.b.op("Mul", gys[0], scale)
    eps = float(node.attrs.get("epsilon", 1e-5))
    return ctx.grads(node, _normalize_vjp(ctx, x, g_hat, list(range(axis, rank)), eps))


@vjp("InstanceNormalization")
def instance_norm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
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
    return ctx.grads(node, _normalize_vjp(ctx, x, g_hat, list(range(2, ctx.rank(x))), eps))


# Pooling -----------------------------------------------------------------------------------
@vjp("MaxPool")
def max_pool(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Route each output's gradient to the input its Indices output names (added if absent)."""
    if int(node.attrs.get("storage_order", 0)) != 0:
        raise Unsupported("MaxPool with storage_order=1")
    b, x = ctx.b, node.inputs[0]
    indices = b.add_output(node, 1, np.int64, ctx.shape(node.outputs[0]), hint="maxpool_indices")
    flat = b.ints([-1])
    zeros = b.op("Reshape", ctx.zeros_like(x), flat)
    scattered = b.op("ScatterElements", zeros, b.op("Reshape", indices, flat),
                     b.op("Reshape", gys[0], flat), axis=0, reduction="add")
    return [b.op("Reshape", scattered, b.op("Shape", x))]


def average_pool_divisors(win: Window, count_include_pad: bool) -> np.ndarray:
    """The divisor of every output position of an AveragePool (product over the axes).

    Along one axis, output o's window starts at ``o·s - pb`` and has taps every ``d``. With
    ``count_include_pad`` the divisor counts the taps before the end of the padded input,
    ``min(start + k·d, x + pe)`` (taps that ceil_mode puts past the end pad are not counted);
    without it, the taps inside the input. A window with no tap inside the input gives 0 (its
    output is 0 and gets no gradient). This is onnxruntime's rule, which the gradient must
    match (the ONNX reference agrees except for some dilated windows); tests/test_vjp_rules.py
    checks it against onnxruntime's AveragePool on random geometries.
    """
    divisors = np.ones((), dtype=np.float64)
    for i in range(len(win.xs)):
        starts = np.arange(win.ys[i]) * win.s[i] - win.pb[i]
        taps = starts[:, None] + np.arange(win.k[i])[None, :] * win.d[i]
        inside = ((taps >= 0) & (taps < win.xs[i])).sum(axis=1)
        if count_include_pad:
            ends = np.minimum(starts + win.k[i] * win.d[i], win.xs[i] + win.pe[i])
            counted = (taps < ends[:, None]).sum(axis=1)
        else:
            counted = inside
        divisors = np.multiply.outer(divisors, np.where(inside > 0, counted, 0))
    return divisors


@vjp("AveragePool")
def average_pool(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, b = node.inputs[0], ctx.b
    c = ctx.shape(x)[1]
    win = _window(ctx, node, node.attrs["kernel_shape"])
    ends, extra = win.transpose_geometry()
    divisors = average_pool_divisors(win, bool(node.attrs.get("count_include_pad", 0)))
    with np.errstate(divide="ignore"):
        scale = np.where(divisors > 0, 1.0 / divisors, 0.0)
    g = b.op("Mul", gys[0], ctx.array(scale[None, None], x))
    ones = ctx.array(np.ones([c, 1, *win.k]), x)
    gx = b.op("ConvTranspose", g, ones, dilations=win.d, group=c, kernel_shape=win.k,
              pads=win.pb + ends, output_padding=extra, strides=win.s)
    return [gx]


@vjp("GlobalAveragePool")
def global_average_pool(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, b = node.inputs[0], ctx.b
    area = int(np.prod(ctx.shape(x)[2:]))
    return [b.op("Expand", b.op("Div", gys[0], ctx.scalar(area, x)), b.op("Shape", x))]


@vjp("GlobalMaxPool")
def global_max_pool(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """To the maximum of each channel (every tied maximum gets the full gradient)."""
    x, y, b = node.inputs[0], node.outputs[0], ctx.b
    return [b.op("Where", b.op("Equal", x, y), gys[0], ctx.scalar(0, x))]


# Dense layers ------------------------------------------------------------------------------
@vjp("Gemm")
def gemm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    a, w = node.inputs[0], node.inputs[1]
    g, b = gys[0], ctx.b
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    grads = ctx.grads(node)
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
    if ctx.needs(node, 2):
        gc = g if beta == 1.0 else b.op("Mul", g, ctx.scalar(beta, node.outputs[0]))
        grads[2] = ctx.unbroadcast(gc, node.inputs[2])
    return grads


def _swap_last(ctx: VjpContext, t: gs.Tensor) -> gs.Tensor:
    perm = list(range(ctx.rank(t)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return ctx.b.op("Transpose", t, perm=perm)


@vjp("MatMul")
def matmul(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    a, w = node.inputs
    g, b = gys[0], ctx.b
    if ctx.rank(a) < 2:
        raise Unsupported("MatMul with a 1-D left operand")
    grads: list[gs.Tensor | None] = [None, None]
    if ctx.rank(w) == 1:  # y[..., m] = a[..., m, k] @ w[k]
        gu = b.unsqueeze(g, [-1])
        if ctx.needs(node, 0):
            grads[0] = b.op("Mul", gu, w)
        if ctx.needs(node, 1):
            grads[1] = ctx.unbroadcast(b.op("Mul", gu, a), w)
        return grads
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(b.op("MatMul", g, _swap_last(ctx, w)), a)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("MatMul", _swap_last(ctx, a), g), w)
    return grads
