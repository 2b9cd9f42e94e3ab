"""VJP rules of element-wise ops: activations, arithmetic with broadcasting, softmax."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from .table import Grads, Gys, Unsupported, VjpContext, vjp


def _where(ctx: VjpContext, cond: gs.Tensor, a: gs.Tensor | None, b: gs.Tensor) -> gs.Tensor:
    return ctx.b.op("Where", cond, a, b)


@vjp("Identity", "Dropout")
def identity(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    # Dropout in inference mode is the identity; a training-mode Dropout would need its mask.
    # Its ratio and training_mode inputs get no gradient (the output does not depend on them).
    training = ctx.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if node.op == "Dropout" and training is not None and bool(training):
        raise Unsupported("Dropout in training mode")
    return ctx.grads(node, gys[0])


@vjp("Relu")
def relu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y = node.outputs[0]
    b = ctx.b
    return [_where(ctx, b.op("Greater", y, ctx.scalar(0, y)), gys[0], ctx.scalar(0, y))]


@vjp("LeakyRelu")
def leaky_relu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, g = node.inputs[0], gys[0]
    alpha = float(ctx.attr(node, "alpha", 0.01))
    scaled = ctx.b.op("Mul", g, ctx.scalar(alpha, x))
    return [_where(ctx, ctx.b.op("Greater", x, ctx.scalar(0, x)), g, scaled)]


@vjp("PRelu")
def prelu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, slope = node.inputs
    g = gys[0]
    if ctx.needs(node, 1):
        raise Unsupported("gradient with respect to the PRelu slope")
    positive = ctx.b.op("Greater", x, ctx.scalar(0, x))
    return [_where(ctx, positive, g, ctx.b.op("Mul", g, slope)), None]


@vjp("Elu")
def elu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, y = node.inputs[0], node.outputs[0]
    alpha = float(ctx.attr(node, "alpha", 1.0))
    neg = ctx.b.op("Mul", gys[0], ctx.b.op("Add", y, ctx.scalar(alpha, y)))
    return [_where(ctx, ctx.b.op("Greater", x, ctx.scalar(0, x)), gys[0], neg)]


def _bound(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


@vjp("Clip")
def clip(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """x gets the gradient where min < x < max (strictly, as torch's hardtanh/relu6 do). A bound
    on the path gets it where it is the result: min where x <= min < max, max where x >= max
    or max <= min (ONNX's Clip then gives max). Each element's gradient goes to exactly one."""
    b, g, x = ctx.b, gys[0], node.inputs[0]
    lo, hi = _bound(node, 1), _bound(node, 2)
    tests = {i: b.op(cmp, x, t) for i, cmp, t in ((1, "Greater", lo), (2, "Less", hi))
             if t is not None}  # x > min, x < max
    inside = None
    for test in tests.values():
        inside = test if inside is None else b.op("And", inside, test)
    gx = g if inside is None else _where(ctx, inside, g, ctx.scalar(0, x))
    grads = ctx.grads(node, gx)
    ordered = None  # min < max
    for i, bound in ((1, lo), (2, hi)):
        if bound is None or not ctx.needs(node, i):
            continue
        active = b.op("Not", tests[i])  # x <= min, x >= max
        if lo is not None and hi is not None:
            ordered = ordered if ordered is not None else b.op("Less", lo, hi)
            active = (b.op("And", active, ordered) if i == 1
                      else b.op("Or", active, b.op("Not", ordered)))
        grads[i] = ctx.unbroadcast(_where(ctx, active, g, ctx.scalar(0, x)), bound)
    return grads


@vjp("Sigmoid")
def sigmoid(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, b = node.outputs[0], ctx.b
    dy = b.op("Mul", y, b.op("Sub", ctx.scalar(1, y), y))
    return [b.op("Mul", gys[0], dy)]


@vjp("HardSigmoid")
def hard_sigmoid(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, b = node.inputs[0], ctx.b
    alpha = float(ctx.attr(node, "alpha", 0.2))
    beta = float(ctx.attr(node, "beta", 0.5))
    z = b.op("Add", b.op("Mul", x, ctx.scalar(alpha, x)), ctx.scalar(beta, x))
    inside = b.op("And", b.op("Greater", z, ctx.scalar(0, x)), b.op("Less", z, ctx.scalar(1, x)))
    return [_where(ctx, inside, b.op("Mul", gys[0], ctx.scalar(alpha, x)), ctx.scalar(0, x))]


@vjp("HardSwish")
def hard_swish(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """d/dx x·relu6(x+3)/6 = 0 below -3, 1 above 3, (2x+3)/6 between (torch's convention at ±3)."""
    x, b = node.inputs[0], ctx.b
    mid = b.op("Div", b.op("Add", b.op("Mul", x, ctx.scalar(2, x)), ctx.scalar(3, x)),
               ctx.scalar(6, x))
    slope = _where(ctx, b.op("Less", x, ctx.scalar(-3, x)), ctx.scalar(0, x),
                   _where(ctx, b.op("Greater", x, ctx.scalar(3, x)), ctx.scalar(1, x), mid))
    return [b.op("Mul", gys[0], slope)]


@vjp("Tanh")
def tanh(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, b = node.outputs[0], ctx.b
    return [b.op("Mul", gys[0], b.op("Sub", ctx.scalar(1, y), b.op("Mul", y, y)))]


@vjp("Exp")
def exp(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.b.op("Mul", gys[0], node.outputs[0])]


@vjp("Log")
def log(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.b.op("Div", gys[0], node.inputs[0])]


@vjp("Sqrt")
def sqrt(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, b = node.outputs[0], ctx.b
    return [b.op("Div", gys[0], b.op("Mul", y, ctx.scalar(2, y)))]


@vjp("Reciprocal")
def reciprocal(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, b = node.outputs[0], ctx.b
    return [b.op("Neg", b.op("Mul", gys[0], b.op("Mul", y, y)))]


@vjp("Neg")
def neg(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.b.op("Neg", gys[0])]


@vjp("Abs")
def abs_(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.b.op("Mul", gys[0], ctx.b.op("Sign", node.inputs[0]))]


@vjp("Floor", "Ceil", "Round", "Sign")
def piecewise_constant(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [None]  # zero almost everywhere: no gradient flows


@vjp("Erf")
def erf(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, b = node.inputs[0], ctx.b
    gauss = b.op("Exp", b.op("Neg", b.op("Mul", x, x)))
    return [b.op("Mul", gys[0], b.op("Mul", gauss, ctx.scalar(2 / math.sqrt(math.pi), x)))]


@vjp("Softplus")
def softplus(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.b.op("Mul", gys[0], ctx.b.op("Sigmoid", node.inputs[0]))]


@vjp("Gelu")
def gelu(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """ONNX's Gelu (erf, or tanh with approximate="tanh") and com.microsoft's (erf)."""
    tanh = ctx.attr(node, "approximate", "none") in ("tanh", b"tanh")
    return [ctx.b.op("Mul", gys[0], gelu_slope(ctx, node.inputs[0], tanh))]


def gelu_slope(ctx: VjpContext, x: gs.Tensor, tanh: bool) -> gs.Tensor:
    """d gelu(x) / dx, of the erf form or of the tanh approximation."""
    b = ctx.b

    def s(v: float) -> gs.Constant:
        return ctx.scalar(v, x)

    if tanh:
        c = math.sqrt(2 / math.pi)
        x2 = b.op("Mul", x, x)
        u = b.op("Mul", b.op("Add", x, b.op("Mul", b.op("Mul", x2, x), s(0.044715))), s(c))
        t = b.op("Tanh", u)
        du = b.op("Mul", b.op("Add", s(1), b.op("Mul", x2, s(3 * 0.044715))), s(c))
        sech2 = b.op("Sub", s(1), b.op("Mul", t, t))
        d = b.op("Add", b.op("Mul", b.op("Add", s(1), t), s(0.5)),
                 b.op("Mul", b.op("Mul", b.op("Mul", x, s(0.5)), sech2), du))
    else:
        cdf = b.op("Mul", b.op("Add", s(1), b.op("Erf", b.op("Mul", x, s(1 / math.sqrt(2))))),
                   s(0.5))
        pdf = b.op("Mul", b.op("Exp", b.op("Mul", b.op("Mul", x, x), s(-0.5))),
                   s(1 / math.sqrt(2 * math.pi)))
        d = b.op("Add", cdf, b.op("Mul", x, pdf))
    return d


@vjp("Cast")
def cast(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x = node.inputs[0]
    if not np.issubdtype(ctx.dtype(x), np.floating):
        return [None]
    return [ctx.b.op("Cast", gys[0], to=ctx.onnx_dtype(x))]


# Binary ops with broadcasting: each gradient has the output's shape until ``unbroadcast`` ---
@vjp("Add", "Sub")
def add_sub(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    g = gys[0]
    grads: list[gs.Tensor | None] = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(g, node.inputs[0])
    if ctx.needs(node, 1):
        g1 = ctx.b.op("Neg", g) if node.op == "Sub" else g
        grads[1] = ctx.unbroadcast(g1, node.inputs[1])
    return grads


@vjp("Mul")
def mul(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    a, c = node.inputs
    g, b = gys[0], ctx.b
    grads: list[gs.Tensor | None] = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(b.op("Mul", g, c), a)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Mul", g, a), c)
    return grads


@vjp("Div")
def div(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    a, c = node.inputs
    y, g, b = node.outputs[0], gys[0], ctx.b
    grads: list[gs.Tensor | None] = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(b.op("Div", g, c), a)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Neg", b.op("Div", b.op("Mul", g, y), c)), c)
    return grads


@vjp("Pow")
def pow_(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, p = node.inputs
    y, g, b = node.outputs[0], gys[0], ctx.b
    grads: list[gs.Tensor | None] = [None, None]
    if ctx.needs(node, 0):
        pv = ctx.value(p)
        if pv is not None and pv.size == 1 and float(pv) == 2.0:
            dx = b.op("Mul", x, ctx.scalar(2, x))
        else:
            pf = b.op("Cast", p, to=ctx.onnx_dtype(x)) if pv is None else ctx.array(pv, x)
            dx = b.op("Mul", pf, b.op("Pow", x, b.op("Sub", pf, ctx.scalar(1, x))))
        grads[0] = ctx.unbroadcast(b.op("Mul", g, dx), x)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Mul", b.op("Mul", g, y), b.op("Log", x)), p)
    return grads


@vjp("Sum", "Mean")
def sum_mean(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    g = gys[0]
    if node.op == "Mean":
        g = ctx.b.op("Div", g, ctx.scalar(len(node.inputs), node.outputs[0]))
    return [ctx.unbroadcast(g, x) if ctx.needs(node, i) else None
            for i, x in enumerate(node.inputs)]


@vjp("Max", "Min")
def max_min(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Gradient goes to every input equal to the result (ties share it in full)."""
    y, g, b = node.outputs[0], gys[0], ctx.b
    grads: list[gs.Tensor | None] = []
    for i, x in enumerate(node.inputs):
        if not ctx.needs(node, i):
            grads.append(None)
            continue
        picked = _where(ctx, b.op("Equal", x, y), g, ctx.scalar(0, y))
        grads.append(ctx.unbroadcast(picked, x))
    return grads


@vjp("Where")
def where(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    cond, a, c = node.inputs
    g = gys[0]
    zero = ctx.scalar(0, node.outputs[0])
    grads: list[gs.Tensor | None] = [None, None, None]
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(_where(ctx, cond, g, zero), a)
    if ctx.needs(node, 2):
        grads[2] = ctx.unbroadcast(_where(ctx, cond, zero, g), c)
    return grads


# Softmax family ----------------------------------------------------------------------------
@vjp("Softmax")
def softmax(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, g, b = node.outputs[0], gys[0], ctx.b
    axis = int(ctx.attr(node, "axis", -1)) % ctx.rank(y)
    dot = b.reduce("ReduceSum", b.op("Mul", g, y), [axis], keepdims=True)
    return [b.op("Mul", y, b.op("Sub", g, dot))]


@vjp("LogSoftmax")
def log_softmax(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    y, g, b = node.outputs[0], gys[0], ctx.b
    axis = int(ctx.attr(node, "axis", -1)) % ctx.rank(y)
    total = b.reduce("ReduceSum", g, [axis], keepdims=True)
    return [b.op("Sub", g, b.op("Mul", b.op("Exp", y), total))]
