"""VJP rules of element-wise ops: activations, arithmetic with broadcasting, softmax."""

from __future__ import annotations

import math

import numpy as np

from .table import Unsupported, VjpContext, vjp


def _where(ctx: VjpContext, cond, a, b):
    return ctx.b.op("Where", cond, a, b)


@vjp("Identity", "Dropout")
def identity(ctx: VjpContext, node, gys):
    # Dropout in inference mode is the identity; a training-mode Dropout would need its mask.
    training = ctx.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if node.op == "Dropout" and training is not None and bool(training):
        raise Unsupported("Dropout in training mode")
    return [gys[0]]


@vjp("Relu")
def relu(ctx, node, gys):
    y = node.outputs[0]
    b = ctx.b
    return [_where(ctx, b.op("Greater", y, ctx.scalar(0, y)), gys[0], ctx.scalar(0, y))]


@vjp("LeakyRelu")
def leaky_relu(ctx, node, gys):
    x, g = node.inputs[0], gys[0]
    alpha = float(ctx.attr(node, "alpha", 0.01))
    scaled = ctx.b.op("Mul", g, ctx.scalar(alpha, x))
    return [_where(ctx, ctx.b.op("Greater", x, ctx.scalar(0, x)), g, scaled)]


@vjp("PRelu")
def prelu(ctx, node, gys):
    x, slope = node.inputs
    g = gys[0]
    if ctx.needs(node, 1):
        raise Unsupported("gradient with respect to the PRelu slope")
    positive = ctx.b.op("Greater", x, ctx.scalar(0, x))
    return [_where(ctx, positive, g, ctx.b.op("Mul", g, slope)), None]


@vjp("Elu")
def elu(ctx, node, gys):
    x, y = node.inputs[0], node.outputs[0]
    alpha = float(ctx.attr(node, "alpha", 1.0))
    neg = ctx.b.op("Mul", gys[0], ctx.b.op("Add", y, ctx.scalar(alpha, y)))
    return [_where(ctx, ctx.b.op("Greater", x, ctx.scalar(0, x)), gys[0], neg)]


@vjp("Clip")
def clip(ctx, node, gys):
    """Gradient passes where min < x < max (strictly), as torch's hardtanh/relu6 do."""
    b = ctx.b
    x = node.inputs[0]
    inside = None
    for i, cmp in ((1, "Greater"), (2, "Less")):
        if len(node.inputs) > i and node.inputs[i].name:
            test = b.op(cmp, x, node.inputs[i])
            inside = test if inside is None else b.op("And", inside, test)
    if inside is None:
        return [gys[0]]
    return [_where(ctx, inside, gys[0], ctx.scalar(0, x))]


@vjp("Sigmoid")
def sigmoid(ctx, node, gys):
    y, b = node.outputs[0], ctx.b
    dy = b.op("Mul", y, b.op("Sub", ctx.scalar(1, y), y))
    return [b.op("Mul", gys[0], dy)]


@vjp("HardSigmoid")
def hard_sigmoid(ctx, node, gys):
    x, b = node.inputs[0], ctx.b
    alpha = float(ctx.attr(node, "alpha", 0.2))
    beta = float(ctx.attr(node, "beta", 0.5))
    z = b.op("Add", b.op("Mul", x, ctx.scalar(alpha, x)), ctx.scalar(beta, x))
    inside = b.op("And", b.op("Greater", z, ctx.scalar(0, x)), b.op("Less", z, ctx.scalar(1, x)))
    return [_where(ctx, inside, b.op("Mul", gys[0], ctx.scalar(alpha, x)), ctx.scalar(0, x))]


@vjp("HardSwish")
def hard_swish(ctx, node, gys):
    """d/dx x·relu6(x+3)/6 = 0 below -3, 1 above 3, (2x+3)/6 between (torch's convention at ±3)."""
    x, b = node.inputs[0], ctx.b
    mid = b.op("Div", b.op("Add", b.op("Mul", x, ctx.scalar(2, x)), ctx.scalar(3, x)),
               ctx.scalar(6, x))
    slope = _where(ctx, b.op("Less", x, ctx.scalar(-3, x)), ctx.scalar(0, x),
                   _where(ctx, b.op("Greater", x, ctx.scalar(3, x)), ctx.scalar(1, x), mid))
    return [b.op("Mul", gys[0], slope)]


@vjp("Tanh")
def tanh(ctx, node, gys):
    y, b = node.outputs[0], ctx.b
    return [b.op("Mul", gys[0], b.op("Sub", ctx.scalar(1, y), b.op("Mul", y, y)))]


@vjp("Exp")
def exp(ctx, node, gys):
    return [ctx.b.op("Mul", gys[0], node.outputs[0])]


@vjp("Log")
def log(ctx, node, gys):
    return [ctx.b.op("Div", gys[0], node.inputs[0])]


@vjp("Sqrt")
def sqrt(ctx, node, gys):
    y, b = node.outputs[0], ctx.b
    return [b.op("Div", gys[0], b.op("Mul", y, ctx.scalar(2, y)))]


@vjp("Reciprocal")
def reciprocal(ctx, node, gys):
    y, b = node.outputs[0], ctx.b
    return [b.op("Neg", b.op("Mul", gys[0], b.op("Mul", y, y)))]


@vjp("Neg")
def neg(ctx, node, gys):
    return [ctx.b.op("Neg", gys[0])]


@vjp("Abs")
def abs_(ctx, node, gys):
    return [ctx.b.op("Mul", gys[0], ctx.b.op("Sign", node.inputs[0]))]


@vjp("Floor", "Ceil", "Round", "Sign")
def piecewise_constant(ctx, node, gys):
    return [None]  # zero almost everywhere: no gradient flows


@vjp("Erf")
def erf(ctx, node, gys):
    x, b = node.inputs[0], ctx.b
    gauss = b.op("Exp", b.op("Neg", b.op("Mul", x, x)))
    return [b.op("Mul", gys[0], b.op("Mul", gauss, ctx.scalar(2 / math.sqrt(math.pi), x)))]


@vjp("Softplus")
def softplus(ctx, node, gys):
    return [ctx.b.op("Mul", gys[0], ctx.b.op("Sigmoid", node.inputs[0]))]


@vjp("Gelu")
def gelu(ctx, node, gys):
    x, b = node.inputs[0], ctx.b
    s = lambda v: ctx.scalar(v, x)  # noqa: E731
    if ctx.attr(node, "approximate", "none") == "tanh":
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
    return [b.op("Mul", gys[0], d)]


@vjp("Cast")
def cast(ctx, node, gys):
    x = node.inputs[0]
    if not np.issubdtype(ctx.dtype(x), np.floating):
        return [None]
    from onnx import helper

    return [ctx.b.op("Cast", gys[0], to=helper.np_dtype_to_tensor_dtype(ctx.dtype(x)))]


# Binary ops with broadcasting --------------------------------------------------------------
def _out_shape(ctx, node):
    return ctx.shape(node.outputs[0])


@vjp("Add", "Sub")
def add_sub(ctx, node, gys):
    g, out = gys[0], _out_shape(ctx, node)
    grads = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(g, out, node.inputs[0])
    if ctx.needs(node, 1):
        g1 = ctx.b.op("Neg", g) if node.op == "Sub" else g
        grads[1] = ctx.unbroadcast(g1, out, node.inputs[1])
    return grads


@vjp("Mul")
def mul(ctx, node, gys):
    a, c = node.inputs
    g, out, b = gys[0], _out_shape(ctx, node), ctx.b
    grads = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(b.op("Mul", g, c), out, a)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Mul", g, a), out, c)
    return grads


@vjp("Div")
def div(ctx, node, gys):
    a, c = node.inputs
    y, g, out, b = node.outputs[0], gys[0], _out_shape(ctx, node), ctx.b
    grads = [None, None]
    if ctx.needs(node, 0):
        grads[0] = ctx.unbroadcast(b.op("Div", g, c), out, a)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Neg", b.op("Div", b.op("Mul", g, y), c)), out, c)
    return grads


@vjp("Pow")
def pow_(ctx, node, gys):
    x, p = node.inputs
    y, g, out, b = node.outputs[0], gys[0], _out_shape(ctx, node), ctx.b
    grads = [None, None]
    if ctx.needs(node, 0):
        pv = ctx.value(p)
        if pv is not None and pv.size == 1 and float(pv) == 2.0:
            dx = b.op("Mul", x, ctx.scalar(2, x))
        else:
            pf = b.op("Cast", p, to=_onnx_dtype(ctx.dtype(x))) if pv is None else ctx.array(pv, x)
            dx = b.op("Mul", pf, b.op("Pow", x, b.op("Sub", pf, ctx.scalar(1, x))))
        grads[0] = ctx.unbroadcast(b.op("Mul", g, dx), out, x)
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(b.op("Mul", b.op("Mul", g, y), b.op("Log", x)), out, p)
    return grads


def _onnx_dtype(dtype):
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


@vjp("Sum", "Mean")
def sum_mean(ctx, node, gys):
    g, out = gys[0], _out_shape(ctx, node)
    if node.op == "Mean":
        g = ctx.b.op("Div", g, ctx.scalar(len(node.inputs), node.outputs[0]))
    return [ctx.unbroadcast(g, out, x) if ctx.needs(node, i) else None
            for i, x in enumerate(node.inputs)]


@vjp("Max", "Min")
def max_min(ctx, node, gys):
    """Gradient goes to every input equal to the result (ties share it in full)."""
    y, g, out, b = node.outputs[0], gys[0], _out_shape(ctx, node), ctx.b
    grads = []
    for i, x in enumerate(node.inputs):
        if not ctx.needs(node, i):
            grads.append(None)
            continue
        picked = _where(ctx, b.op("Equal", x, y), g, ctx.scalar(0, y))
        grads.append(ctx.unbroadcast(picked, out, x))
    return grads


@vjp("Where")
def where(ctx, node, gys):
    cond, a, c = node.inputs
    g, out = gys[0], _out_shape(ctx, node)
    zero = ctx.scalar(0, node.outputs[0])
    grads = [None, None, None]
    if ctx.needs(node, 1):
        grads[1] = ctx.unbroadcast(_where(ctx, cond, g, zero), out, a)
    if ctx.needs(node, 2):
        grads[2] = ctx.unbroadcast(_where(ctx, cond, zero, g), out, c)
    return grads


# Softmax family ----------------------------------------------------------------------------
@vjp("Softmax")
def softmax(ctx, node, gys):
    y, g, b = node.outputs[0], gys[0], ctx.b
    axis = int(ctx.attr(node, "axis", -1)) % ctx.rank(y)
    dot = b.reduce("ReduceSum", b.op("Mul", g, y), [axis], keepdims=True)
    return [b.op("Mul", y, b.op("Sub", g, dot))]


@vjp("LogSoftmax")
def log_softmax(ctx, node, gys):
    y, g, b = node.outputs[0], gys[0], ctx.b
    axis = int(ctx.attr(node, "axis", -1)) % ctx.rank(y)
    total = b.reduce("ReduceSum", g, [axis], keepdims=True)
    return [b.op("Sub", g, b.op("Mul", b.op("Exp", y), total))]
