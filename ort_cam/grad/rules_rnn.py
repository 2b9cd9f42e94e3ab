"""VJP rules of the recurrent layers LSTM and GRU (text recognisers), in every direction
(forward, reverse, bidirectional), with ONNX's default activations.

The gradient flows to the data input X and to the initial states (initial_h, and initial_c
for LSTM); the weights W, R, B are constants (a weight that depends on the layer is refused).
The rule recomputes the gates from the node's own output Y (every hidden state, so each
step's previous state is known and the gates of all steps come out of two MatMuls), then
runs the backward through time unrolled over the T steps: T is static (the input size is
fixed when a model is loaded), and the gradient graph then needs no Loop or Scan, which some
engines do not run. Per step it costs one MatMul with R and a few element-wise nodes; the
gradient of X is one MatMul with W over all steps.

Notation (ONNX's): per direction, pre-activations a = X·Wᵀ + H_prev·Rᵀ + Wb + Rb, gates in
the order i, o, f, c (LSTM) and z, r, h (GRU). Refused, in one line naming the node: other
activations, activation_alpha/beta, clip, input_forget, peepholes, sequence_lens other than
T for every row, weights computed from the layer, and layout 1 (batch first: onnxruntime's
kernels refuse it, so no such model runs to begin with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .table import Grads, Gys, Unsupported, VjpContext, vjp

#: ONNX's default activations per direction.
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh")}
#: Gates per op (rows of W and R are gates x H).
_GATES = {"LSTM": 4, "GRU": 3}
#: Weight-like inputs (W, R, B; LSTM's P) that must be constants of the layer.
_WEIGHTS = {"LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3)}


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _present(node: gs.Node, i: int) -> bool:
    return i < len(node.inputs) and bool(node.inputs[i].name)


def _refuse_unsupported(ctx: VjpContext, node: gs.Node, steps: int) -> None:
    """Raise ``Unsupported`` for what the rule does not differentiate (see the module)."""
    op = node.op
    acts = [_text(a).lower() for a in node.attrs.get("activations", [])]
    default = _DEFAULT_ACTIVATIONS[op]
    if acts and any(a != default[k % len(default)] for k, a in enumerate(acts)):
        raise Unsupported(f"{op} with activations {', '.join(acts)} (the rule covers the "
                          f"defaults {', '.join(default)})")
    for name in ("activation_alpha", "activation_beta", "clip"):
        if node.attrs.get(name) is not None:
            raise Unsupported(f"{op} with the attribute {name}")
    if int(node.attrs.get("input_forget", 0)):
        raise Unsupported(f"{op} with input_forget")
    if any(ctx.needs(node, i) for i in _WEIGHTS[op]):
        raise Unsupported(f"{op} whose weights depend on the layer")
    if op == "LSTM" and _present(node, 7):
        p = ctx.value(node.inputs[7])
        if p is None or np.any(p != 0):
            raise Unsupported("LSTM with peephole weights P")
    if _present(node, 4):
        lens = ctx.value(node.inputs[4])
        if lens is None or np.any(np.asarray(lens) != steps):
            raise Unsupported(f"{op} with sequence_lens other than T = {steps} for every row")


@dataclass
class _Rnn:
    """One recurrent node: X [T, B, I], Y [T, D, B, H], states [D, B, H], the output
    gradients likewise (``None`` where none flows)."""

    ctx: VjpContext
    node: gs.Node
    steps: int
    dirs: int
    hidden: int
    x: gs.Tensor
    y: gs.Tensor
    h0: gs.Tensor | None
    c0: gs.Tensor | None
    gy: gs.Tensor | None
    gyh: gs.Tensor | None
    gyc: gs.Tensor | None
    reverse: list[bool] = field(default_factory=list)

    def op(self, op_type: str, *inputs: gs.Tensor | None, **attrs: Any) -> gs.Tensor:
        return self.ctx.b.op(op_type, *inputs, **attrs)

    def take(self, t: gs.Tensor, start: int, stop: int, axis: int) -> gs.Tensor:
        """``t`` sliced to [start, stop) along ``axis`` (the axis kept)."""
        b = self.ctx.b
        return b.op("Slice", t, b.ints([start]), b.ints([stop]), b.ints([axis]))

    def pick(self, t: gs.Tensor, index: int, axis: int) -> gs.Tensor:
        """``t`` at ``index`` along ``axis`` (the axis dropped)."""
        b = self.ctx.b
        one = self.take(t, index, index + 1, axis)
        if b.opset >= 13:
            return b.op("Squeeze", one, b.ints([axis]))
        return b.op("Squeeze", one, axes=[axis])

    def gate(self, t: gs.Tensor, k: int) -> gs.Tensor:
        """Gate ``k`` of a [T, B, gates·H] tensor."""
        return self.take(t, k * self.hidden, (k + 1) * self.hidden, 2)

    def one(self, like: gs.Tensor) -> gs.Constant:
        return self.ctx.scalar(1.0, like)


def _time_major(ctx: VjpContext, node: gs.Node, gys: Gys) -> _Rnn:
    """The node's tensors as the rule uses them; Y added to the forward node where the node
    leaves it out."""
    x = node.inputs[0]
    if int(node.attrs.get("layout", 0)):
        raise Unsupported(f"{node.op} with layout 1 (batch first; onnxruntime runs only 0)")
    steps, batch, _ = ctx.shape(x)
    _refuse_unsupported(ctx, node, steps)
    direction = _text(node.attrs.get("direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    hidden = ctx.shape(node.inputs[2])[2]
    y = ctx.b.add_output(node, 0, ctx.dtype(x), (steps, dirs, batch, hidden), hint="rnn_y")

    def inp(i: int) -> gs.Tensor | None:
        return node.inputs[i] if _present(node, i) else None

    def gout(i: int) -> gs.Tensor | None:
        return gys[i] if i < len(gys) else None

    lstm = node.op == "LSTM"
    rnn = _Rnn(ctx, node, steps, dirs, hidden, x, y, inp(5), inp(6) if lstm else None,
               gout(0), gout(1), gout(2) if lstm else None)
    rnn.reverse = [False, True] if dirs == 2 else [direction == "reverse"]
    return rnn


@dataclass
class _Dir:
    """One direction's constants and states: W_d [G·H, I], R_d [G·H, H], the summed bias
    [G·H] (or None), H_d [T, B, H], H_prev [T, B, H], its initial state and time order."""

    w: gs.Tensor
    r: gs.Tensor
    bias: gs.Tensor | None
    h: gs.Tensor
    h_prev: gs.Tensor
    order: list[int]


def _direction(rnn: _Rnn, d: int) -> _Dir:
    node, gh = rnn.node, _GATES[rnn.node.op] * rnn.hidden
    w, r = rnn.pick(node.inputs[1], d, 0), rnn.pick(node.inputs[2], d, 0)
    bias = None
    if _present(node, 3):
        both = rnn.pick(node.inputs[3], d, 0)
        bias = rnn.op("Add", rnn.take(both, 0, gh, 0), rnn.take(both, gh, 2 * gh, 0))
    h = rnn.pick(rnn.y, d, 1)
    first = rnn.ctx.zeros_like(rnn.take(h, 0, 1, 0)) if rnn.h0 is None else \
        rnn.ctx.b.unsqueeze(rnn.pick(rnn.h0, d, 0), [0])
    t = rnn.steps
    if rnn.reverse[d]:
        h_prev = first if t == 1 else rnn.op("Concat", rnn.take(h, 1, t, 0), first, axis=0)
    else:
        h_prev = first if t == 1 else rnn.op("Concat", first, rnn.take(h, 0, t - 1, 0), axis=0)
    order = list(range(t))[::-1] if rnn.reverse[d] else list(range(t))
    return _Dir(w, r, bias, h, h_prev, order)


def _linear(rnn: _Rnn, t: gs.Tensor, weight: gs.Tensor, bias: gs.Tensor | None) -> gs.Tensor:
    """t [T, B, n] · weightᵀ (+ bias)."""
    out = rnn.op("MatMul", t, rnn.op("Transpose", weight, perm=[1, 0]))
    return out if bias is None else rnn.op("Add", out, bias)


def _dsigmoid(rnn: _Rnn, s: gs.Tensor) -> gs.Tensor:
    return rnn.op("Mul", s, rnn.op("Sub", rnn.one(s), s))


def _dtanh(rnn: _Rnn, t: gs.Tensor) -> gs.Tensor:
    return rnn.op("Sub", rnn.one(t), rnn.op("Mul", t, t))


def _in_time_order(rnn: _Rnn, by_step: dict[int, gs.Tensor]) -> gs.Tensor:
    """The [1, B, n] tensors of every step, concatenated in time order: [T, B, n]."""
    parts = [by_step[s] for s in range(rnn.steps)]
    return parts[0] if len(parts) == 1 else rnn.op("Concat", *parts, axis=0)


def _initial(rnn: _Rnn, g: gs.Tensor | None, d: int, like: gs.Tensor) -> gs.Tensor:
    """Direction ``d`` of a state gradient [D, B, H] as [1, B, H], zeros when none flows."""
    return rnn.ctx.zeros_like(like) if g is None else rnn.take(g, d, d + 1, 0)


def _plus(rnn: _Rnn, a: gs.Tensor, g: gs.Tensor | None, step: int) -> gs.Tensor:
    """a + g[step] ([1, B, H]); ``a`` where ``g`` is None."""
    return a if g is None else rnn.op("Add", a, rnn.take(g, step, step + 1, 0))


# LSTM --------------------------------------------------------------------------------------
def _lstm_cells(rnn: _Rnn, d: int, f: gs.Tensor, ic: gs.Tensor, order: Sequence[int]
                ) -> tuple[gs.Tensor, gs.Tensor]:
    """The cell states C [T, B, H] and C_prev [T, B, H] of direction ``d``: C_t = f_t·C_prev
    + i_t·c_t, unrolled in the direction's time order from initial_c (or zeros)."""
    like = rnn.take(f, 0, 1, 0)
    c = rnn.ctx.zeros_like(like) if rnn.c0 is None else \
        rnn.ctx.b.unsqueeze(rnn.pick(rnn.c0, d, 0), [0])
    cells, prevs = {}, {}
    for s in order:
        prevs[s] = c
        c = rnn.op("Add", rnn.op("Mul", rnn.take(f, s, s + 1, 0), c), rnn.take(ic, s, s + 1, 0))
        cells[s] = c
    return _in_time_order(rnn, cells), _in_time_order(rnn, prevs)


def _lstm_direction(rnn: _Rnn, d: int) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor]:
    """dX [T, B, I], d initial_h [1, B, H] and d initial_c [1, B, H] of direction ``d``."""
    dd = _direction(rnn, d)
    a = rnn.op("Add", _linear(rnn, rnn.x, dd.w, dd.bias), _linear(rnn, dd.h_prev, dd.r, None))
    i, o, f = (rnn.op("Sigmoid", rnn.gate(a, k)) for k in range(3))
    c = rnn.op("Tanh", rnn.gate(a, 3))
    cells, prevs = _lstm_cells(rnn, d, f, rnn.op("Mul", i, c), dd.order)
    tc = rnn.op("Tanh", cells)
    dc_dh = rnn.op("Mul", o, _dtanh(rnn, tc))  # dC_t/dH_t through H_t = o·tanh(C_t)
    k = rnn.op("Concat", rnn.op("Mul", c, _dsigmoid(rnn, i)),
               rnn.op("Mul", tc, _dsigmoid(rnn, o)), rnn.op("Mul", prevs, _dsigmoid(rnn, f)),
               rnn.op("Mul", i, _dtanh(rnn, c)), axis=2)
    like = rnn.take(dd.h, 0, 1, 0)
    dh, dc = _initial(rnn, rnn.gyh, d, like), _initial(rnn, rnn.gyc, d, like)
    gy = None if rnn.gy is None else rnn.pick(rnn.gy, d, 1)
    da = {}
    for s in reversed(dd.order):
        dh = _plus(rnn, dh, gy, s)
        dc = rnn.op("Add", dc, rnn.op("Mul", dh, rnn.take(dc_dh, s, s + 1, 0)))
        da[s] = rnn.op("Mul", rnn.op("Concat", dc, dh, dc, dc, axis=2),
                       rnn.take(k, s, s + 1, 0))
        dh = rnn.op("MatMul", da[s], dd.r)
        dc = rnn.op("Mul", dc, rnn.take(f, s, s + 1, 0))
    return rnn.op("MatMul", _in_time_order(rnn, da), dd.w), dh, dc


# GRU ---------------------------------------------------------------------------------------
def _gru_direction(rnn: _Rnn, d: int) -> tuple[gs.Tensor, gs.Tensor, None]:
    """dX [T, B, I] and d initial_h [1, B, H] of direction ``d``."""
    dd = _direction(rnn, d)
    hh = rnn.hidden
    reset_after = int(rnn.node.attrs.get("linear_before_reset", 0)) != 0
    ax = _linear(rnn, rnn.x, dd.w, dd.bias)  # X·Wᵀ + Wb + Rb
    ah = _linear(rnn, dd.h_prev, dd.r, None)  # H_prev·Rᵀ
    z = rnn.op("Sigmoid", rnn.op("Add", rnn.gate(ax, 0), rnn.gate(ah, 0)))
    r = rnn.op("Sigmoid", rnn.op("Add", rnn.gate(ax, 1), rnn.gate(ah, 1)))
    rh = rnn.take(dd.r, 2 * hh, 3 * hh, 0)  # R_h [H, H]
    if reset_after:  # ONNX puts Rb_h inside the reset: r·(H_prev·R_hᵀ + Rb_h)
        q = rnn.gate(ah, 2)
        if dd.bias is not None:
            rb = rnn.take(rnn.pick(rnn.node.inputs[3], d, 0), 5 * hh, 6 * hh, 0)
            q = rnn.op("Add", q, rb)
            ax = rnn.op("Sub", ax, rnn.op("Pad", rb, rnn.ctx.b.ints([2 * hh, 0])))
        n = rnn.op("Tanh", rnn.op("Add", rnn.gate(ax, 2), rnn.op("Mul", r, q)))
    else:
        n = rnn.op("Tanh", rnn.op("Add", rnn.gate(ax, 2),
                                  _linear(rnn, rnn.op("Mul", r, dd.h_prev), rh, None)))
    kz = rnn.op("Mul", rnn.op("Sub", dd.h_prev, n), _dsigmoid(rnn, z))
    kh = rnn.op("Mul", rnn.op("Sub", rnn.one(z), z), _dtanh(rnn, n))
    dh = _initial(rnn, rnn.gyh, d, rnn.take(dd.h, 0, 1, 0))
    gy = None if rnn.gy is None else rnn.pick(rnn.gy, d, 1)
    step = _gru_step_after if reset_after else _gru_step_before
    k = (kz, kh, rnn.op("Mul", q, _dsigmoid(rnn, r))) if reset_after else \
        (kz, kh, rnn.op("Mul", dd.h_prev, _dsigmoid(rnn, r)))
    da = {}
    for s in reversed(dd.order):
        dh = _plus(rnn, dh, gy, s)
        da[s], dh = step(rnn, dh, [rnn.take(t, s, s + 1, 0) for t in (*k, z, r)], dd.r, rh)
    return rnn.op("MatMul", _in_time_order(rnn, da), dd.w), dh, None


def _gru_step_after(rnn: _Rnn, dh: gs.Tensor, at: list[gs.Tensor], r_all: gs.Tensor,
                    _rh: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """One step back, linear_before_reset = 1: (d a_t = [d a_z, d a_r, d a_h], d H_prev)."""
    kz, kh, kq, z, r = at
    dah = rnn.op("Mul", dh, kh)
    da = rnn.op("Concat", rnn.op("Mul", dh, kz), rnn.op("Mul", dah, kq), dah, axis=2)
    via_r = rnn.op("Concat", rnn.op("Mul", dh, kz), rnn.op("Mul", dah, kq),
                   rnn.op("Mul", dah, r), axis=2)  # the h gate's part through r·(H·R_hᵀ)
    return da, rnn.op("Add", rnn.op("Mul", dh, z), rnn.op("MatMul", via_r, r_all))


def _gru_step_before(rnn: _Rnn, dh: gs.Tensor, at: list[gs.Tensor], r_all: gs.Tensor,
                     rh: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """One step back, linear_before_reset = 0: a_h = X·W_hᵀ + (r·H_prev)·R_hᵀ + ..."""
    kz, kh, kr, z, r = at
    dah = rnn.op("Mul", dh, kh)
    u = rnn.op("MatMul", dah, rh)  # d (r·H_prev)
    daz, dar = rnn.op("Mul", dh, kz), rnn.op("Mul", u, kr)
    hh = rnn.hidden
    rzr = rnn.take(r_all, 0, 2 * hh, 0)
    dprev = rnn.op("Add", rnn.op("Mul", dh, z), rnn.op("Mul", u, r))
    dprev = rnn.op("Add", dprev, rnn.op("MatMul", rnn.op("Concat", daz, dar, axis=2), rzr))
    return rnn.op("Concat", daz, dar, dah, axis=2), dprev


# The rules ---------------------------------------------------------------------------------
def _rnn_rule(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    rnn = _time_major(ctx, node, gys)
    per_dir = _lstm_direction if node.op == "LSTM" else _gru_direction
    parts = [per_dir(rnn, d) for d in range(rnn.dirs)]
    b = ctx.b
    grads = ctx.grads(node)
    if ctx.needs(node, 0):
        grads[0] = parts[0][0] if rnn.dirs == 1 else b.op("Add", parts[0][0], parts[1][0])
    for index, k in ((5, 1), (6, 2)):
        if ctx.needs(node, index) and parts[0][k] is not None:
            grads[index] = parts[0][k] if rnn.dirs == 1 else b.op(
                "Concat", parts[0][k], parts[1][k], axis=0)
    return grads


@vjp("LSTM")
def lstm(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Through X, initial_h and initial_c (see the module)."""
    return _rnn_rule(ctx, node, gys)


@vjp("GRU")
def gru(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Through X and initial_h (see the module); both ``linear_before_reset`` forms."""
    return _rnn_rule(ctx, node, gys)
