"""Small ONNX models, one (or a few) nodes each, for checking every VJP rule by finite
differences (tests/test_vjp_rules.py).

A ``Case`` is a factory: ``case.build(dtype)`` makes the model with its float inputs and
float initializers in ``dtype`` (the test tries float64 first), ``case.feeds(rng, dtype)``
draws its inputs. Every graph input has the batch on axis 0 (``case.batch`` rows, 3 unless
the batch is also a matrix or channel dimension); the model's only output is ``y`` and the
test's score is ``Σ target_weights · y``. ``case.ops`` names the rules it exercises.

Inputs are drawn away from kinks (ReLU at 0, Clip bounds, max ties, integers for Floor) by
more than the finite-difference stencil moves them, and on a dyadic grid (multiples of
2^-10) so that ``x ± k·h·v`` is exact in float32 too. ``DISTINCT`` inputs share one pool of
distinct values 1/4 apart, so no two elements of any of them tie.

Names: ``x``/``z`` are graph inputs (batch first), ``W``/``c``/``s``... constants.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The grid inputs are drawn on, and the spacing of DISTINCT values (ties are >= this apart).
GRID = 2.0**-10
DISTINCT_STEP = 1 / 4

Sampler = Callable[[np.random.Generator, tuple], np.ndarray]


def normal(scale: float = 1.0) -> Sampler:
    return lambda rng, shape: scale * rng.standard_normal(shape)


def uniform(lo: float, hi: float) -> Sampler:
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def signed(lo: float, hi: float) -> Sampler:
    """Magnitude in [lo, hi], random sign: keeps away from 0 (Abs, Reciprocal, Div)."""
    return lambda rng, shape: rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def away(*points: float, margin: float = 0.1, scale: float = 1.0,
         base: Sampler | None = None) -> Sampler:
    """``base`` (normal(scale)), redrawn wherever a value is within ``margin`` of a point."""
    base = base or normal(scale)

    def draw(rng, shape):
        x = base(rng, shape)
        for _ in range(100):
            bad = np.zeros(x.shape, bool)
            for p in points:
                bad |= np.abs(x - p) < margin
            if not bad.any():
                return x
            x = np.where(bad, base(rng, shape), x)
        raise RuntimeError("sampler cannot avoid the kinks")

    return draw


def off_integers(offset: float, lo: int = -3, hi: int = 3) -> Sampler:
    """k + offset + u, |u| < 0.3: at least 0.2 away from integers (offset 0.5) or from
    half-integers (offset 0)."""
    return lambda rng, shape: (rng.integers(lo, hi, shape) + offset
                               + rng.uniform(-0.3, 0.3, shape))


DISTINCT = "distinct"


@dataclass(frozen=True)
class In:
    """A graph input [batch, *shape]. ``sample`` is a Sampler or DISTINCT; ``dtype`` None
    means the case dtype."""

    name: str
    shape: tuple
    sample: Sampler | str = field(default_factory=normal)
    dtype: type | None = None


@dataclass(frozen=True)
class Case:
    id: str
    ops: tuple[str, ...]  # the VJP_RULES keys this case exercises
    nodes: tuple  # NodeProtos
    inputs: tuple[In, ...]
    inits: dict = field(default_factory=dict)  # name -> array; float ones take the dtype
    opset: int = 17
    wrt: tuple[str, ...] = ("x",)
    batch: int = 3  # not the probe batch (2), so a rule that bakes the batch in fails
    patch: dict = field(default_factory=dict)  # rules_nn attributes to set
    exact: Callable | None = None  # (feeds, w) -> the gradient, bit for bit
    grad_ops: tuple[str, ...] = ()  # op types the gradient graph must use ...
    no_grad_ops: tuple[str, ...] = ()  # ... and must not
    xfail: str | None = None
    #: A rule that is a convention, not a derivative (straight-through quantisation): no
    #: finite differences (the function is piecewise constant); ``exact`` says what it gives.
    finite_differences: bool = True
    #: Why the case cannot run here (an op onnxruntime's CPU provider has no kernel for).
    skip: str | None = None
    #: False where the model cannot be built in float64 for a reason other than a missing
    #: kernel (onnx's version converter writes float32 bounds or pad values when it upgrades
    #: an opset-6 Clip or an opset-2 Pad).
    float64: bool = True

    def build(self, dtype: type) -> onnx.ModelProto:
        tp = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        ins = []
        for i in self.inputs:
            t = tp if i.dtype is None else helper.np_dtype_to_tensor_dtype(np.dtype(i.dtype))
            ins.append(helper.make_tensor_value_info(i.name, t, ["N", *i.shape]))
        inits = [numpy_helper.from_array(
            v.astype(dtype) if v.dtype.kind == "f" else v, name)
            for name, v in self.inits.items()]
        graph = helper.make_graph(list(self.nodes), self.id.replace("-", "_"), ins,
                                  [onnx.ValueInfoProto(name="y")], inits)
        domains = sorted({n.domain for n in self.nodes if n.domain})  # com.microsoft: v1
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)] + [
            helper.make_opsetid(d, 1) for d in domains])

    def feeds(self, rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
        out = {}
        distinct = [i for i in self.inputs if i.sample == DISTINCT]
        sizes = [self.batch * int(np.prod(i.shape)) for i in distinct]
        pool = (rng.permutation(sum(sizes)) - sum(sizes) // 2) * DISTINCT_STEP
        for i, chunk in zip(distinct, np.split(pool, np.cumsum(sizes)[:-1])):
            out[i.name] = chunk.reshape(self.batch, *i.shape)
        for i in self.inputs:
            if not isinstance(i.sample, str):
                out[i.name] = np.asarray(i.sample(rng, (self.batch, *i.shape)))
        for i in self.inputs:
            v = out[i.name]
            if v.dtype.kind == "f":
                v = np.round(v / GRID) * GRID
            out[i.name] = v.astype(i.dtype or dtype) if v.dtype.kind == "f" else v
        return out

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(zlib.crc32(self.id.encode()))


# Building blocks -----------------------------------------------------------------------------
_R = np.random.default_rng(20240601)  # constants of the cases (fixed at import)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return scale * _R.standard_normal(shape)


def node(op: str, ins: Sequence[str], outs: Sequence[str] | str = "y", **attrs):
    return helper.make_node(op, list(ins), [outs] if isinstance(outs, str) else list(outs),
                            **attrs)


def ints(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


CASES: list[Case] = []


def add(id: str, ops: str | Sequence[str], nodes, inputs, **kw) -> Case:
    """Register a case. ``inputs``: In's, or a shape for a single normal input ``x``."""
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    if not isinstance(inputs, (list, tuple)) or not inputs or not isinstance(inputs[0], In):
        inputs = [In("x", tuple(inputs))]
    c = Case(id, ops, tuple(nodes), tuple(inputs), **kw)
    CASES.append(c)
    return c


def unary(op: str, id: str | None = None, shape=(3, 4), sample: Sampler | None = None,
          opset: int = 17, **attrs) -> None:
    add(id or op, op, [node(op, ["x"], **attrs)], [In("x", shape, sample or normal())],
        opset=opset)


# Element-wise, one input -----------------------------------------------------------------
unary("Identity")
unary("Relu", sample=away(0.0))
unary("Relu", "Relu-rank4", shape=(2, 3, 3), sample=away(0.0))
unary("LeakyRelu", "LeakyRelu-alpha0.1", sample=away(0.0), alpha=0.1)
unary("LeakyRelu", "LeakyRelu-default", shape=(2, 5), sample=away(0.0))
add("PRelu-slope-per-channel", "PRelu", [node("PRelu", ["x", "s"])],
    [In("x", (3, 2, 2), away(0.0))], inits={"s": rand(3, 1, 1)})
add("PRelu-slope-scalar", "PRelu", [node("PRelu", ["x", "s"])],
    [In("x", (4,), away(0.0))], inits={"s": np.array([0.25])})
unary("Elu", "Elu-alpha0.7", sample=away(0.0), alpha=0.7)
unary("Elu", "Elu-default", shape=(2, 3, 2), sample=away(0.0))
unary("Sigmoid", sample=normal(2.0))
unary("Tanh", sample=normal(1.5))
unary("Exp")
unary("Log", sample=uniform(0.3, 3.0))
unary("Sqrt", sample=uniform(0.3, 3.0))
unary("Reciprocal", sample=signed(0.5, 2.0))
unary("Neg")
unary("Abs", sample=away(0.0))
unary("Erf", sample=normal(1.5))
unary("Softplus", sample=normal(2.0))
unary("Softplus", "Softplus-large", shape=(2, 3), sample=uniform(-8.0, 8.0))
unary("HardSigmoid", "HardSigmoid-default", shape=(4, 5), sample=away(-2.5, 2.5, scale=3.0))
unary("HardSigmoid", "HardSigmoid-alpha0.5-beta0.25", shape=(4, 5),
      sample=away(-0.5, 1.5, scale=1.5), alpha=0.5, beta=0.25)
unary("HardSwish", shape=(4, 6), sample=away(-3.0, 3.0, scale=3.5), opset=14)
unary("Gelu", "Gelu-erf", shape=(3, 5), sample=normal(2.0), opset=20)
unary("Gelu", "Gelu-tanh", shape=(3, 5), sample=normal(2.0), opset=20, approximate="tanh")

# Clip: bounds as inputs (opset >= 11), either one omitted; and the opset-6 attribute form.
add("Clip-no-bounds", "Clip", [node("Clip", ["x"])], [In("x", (3, 4))])
add("Clip-min-only", "Clip", [node("Clip", ["x", "lo"])], [In("x", (3, 4), away(-0.5))],
    inits={"lo": np.array(-0.5)})
add("Clip-max-only", "Clip", [node("Clip", ["x", "", "hi"])], [In("x", (3, 4), away(0.7))],
    inits={"hi": np.array(0.7)})
add("Clip-relu6", "Clip", [node("Clip", ["x", "lo", "hi"])],
    [In("x", (3, 4), away(0.0, 6.0, scale=4.0))],
    inits={"lo": np.array(0.0), "hi": np.array(6.0)})
add("Clip-opset6-attrs", "Clip", [node("Clip", ["x"], min=-0.8, max=0.6)],
    [In("x", (3, 4), away(-0.8, 0.6))], opset=6, float64=False)
# Clip bounds on the path: a bound computed from z (a scalar, as Clip wants: the mean of z)
# gets the gradient where it is the result. z's spread (0.05) plus the largest step (2h = 1/16
# in float32) keep each bound within 0.12 of its centre, and x stays 0.2 away from it.
_mean_z = node("ReduceMean", ["z"], "m", keepdims=0)
add("Clip-min-on-path", ["Clip", "ReduceMean"], [_mean_z, node("Clip", ["x", "m", "hi"])],
    [In("x", (3, 4), away(-0.5, 0.8, margin=0.2)), In("z", (2,), uniform(-0.55, -0.45))],
    inits={"hi": np.array(0.8)}, wrt=("x", "z"))
add("Clip-min-only-on-path", ["Clip", "ReduceMean"], [_mean_z, node("Clip", ["x", "m"])],
    [In("x", (3, 4), away(-0.5, margin=0.2)), In("z", (2,), uniform(-0.55, -0.45))],
    wrt=("x", "z"))
add("Clip-max-on-path", ["Clip", "ReduceMean"], [_mean_z, node("Clip", ["x", "lo", "m"])],
    [In("x", (3, 4), away(-0.6, 0.7, margin=0.2)), In("z", (2,), uniform(0.65, 0.75))],
    inits={"lo": np.array(-0.6)}, wrt=("x", "z"))
add("Clip-max-only-on-path", ["Clip", "ReduceMean"], [_mean_z, node("Clip", ["x", "", "m"])],
    [In("x", (3, 4), away(0.7, margin=0.2)), In("z", (2,), uniform(0.65, 0.75))],
    wrt=("x", "z"))
add("Clip-both-bounds-on-path", ["Clip", "ReduceMean", "Add"],
    [_mean_z, node("Add", ["m", "w"], "hi"), node("Clip", ["x", "m", "hi"])],
    [In("x", (3, 4), away(-0.5, 0.7, margin=0.2)), In("z", (2,), uniform(-0.55, -0.45))],
    inits={"w": np.array(1.2)}, wrt=("x", "z"))


def _bound_then_values(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Column 0 in [-0.55, -0.45] (the bound's source), the rest 0.2 away from -0.5."""
    x = away(-0.5, 0.8, margin=0.2)(rng, shape)
    x[:, 0] = rng.uniform(-0.55, -0.45, x[:, 0].shape)
    return x


# The bound and the clipped values both come from x: an old rule that dropped the bound's
# gradient passed x's part alone, a silently wrong d/dx.
add("Clip-min-from-x-itself", ["Clip", "Slice", "ReduceMean"],
    [node("Slice", ["x", "s0", "e0", "ax"], "c0"), node("ReduceMean", ["c0"], "m", keepdims=0),
     node("Slice", ["x", "s1", "e1", "ax"], "r"), node("Clip", ["r", "m", "hi"])],
    [In("x", (5,), _bound_then_values)],
    inits={"s0": ints(0), "e0": ints(1), "s1": ints(1), "e1": ints(5), "ax": ints(1),
           "hi": np.array(0.8)})
# min > max: ONNX's Clip gives max everywhere, so x gets nothing and max everything.
add("Clip-min-above-max-on-path", ["Clip", "ReduceMean"],
    [_mean_z, node("Clip", ["x", "lo", "m"])],
    [In("x", (3, 4)), In("z", (2,), uniform(-0.35, -0.25))], inits={"lo": np.array(0.5)},
    wrt=("x", "z"))

# Piecewise-constant ops: their rule sends no gradient. x * Op(x) leaves FD only the Op(x)
# factor; Op(x) + x must give exactly target_weights (Op contributes an exact zero).
_pc_samplers = {"Floor": off_integers(0.5), "Ceil": off_integers(0.5),
                "Round": off_integers(0.0), "Sign": away(0.0, margin=0.2)}


def _w_as_x(feeds, w):
    return w.reshape(feeds["x"].shape).astype(feeds["x"].dtype)


for _op, _s in _pc_samplers.items():
    add(f"{_op}-times-x", _op, [node(_op, ["x"], "p"), node("Mul", ["x", "p"])],
        [In("x", (3, 4), _s)])
    add(f"{_op}-plus-x-exact", _op, [node(_op, ["x"], "p"), node("Add", ["p", "x"])],
        [In("x", (3, 4), _s)], exact=_w_as_x)

# Cast: float <-> double in both directions (the case dtype is not used).
add("Cast-f32-to-f64", "Cast", [node("Cast", ["x"], to=TensorProto.DOUBLE)],
    [In("x", (3, 4), dtype=np.float32)])
add("Cast-f64-to-f32", "Cast", [node("Cast", ["x"], to=TensorProto.FLOAT)],
    [In("x", (3, 4), dtype=np.float64)])
add("Cast-roundtrip-f32-f64-f32", "Cast",
    [node("Cast", ["x"], "d", to=TensorProto.DOUBLE), node("Exp", ["d"], "e"),
     node("Cast", ["e"], to=TensorProto.FLOAT)],
    [In("x", (3, 4), dtype=np.float32)])

add("Dropout-ratio-input", "Dropout", [node("Dropout", ["x", "r"])], (3, 4),
    inits={"r": np.array(0.3)}, opset=13)
add("Dropout-training-false-mask-output", "Dropout",
    [node("Dropout", ["x", "r", "t"], ["y", "mask"])], (3, 4),
    inits={"r": np.array(0.5), "t": np.array(False)}, opset=13)
add("Dropout-opset10-attr", "Dropout", [node("Dropout", ["x"], ratio=0.2)], (3, 4), opset=10)

# Softmax family: a Mul tail, because the logit score looks through a final Softmax.
for _op in ("Softmax", "LogSoftmax"):
    for _shape, _axis in (((3, 4), -1), ((3, 4), 1), ((2, 3, 4), 2), ((3, 4), 0)):
        add(f"{_op}-rank{len(_shape) + 1}-axis{_axis}", _op,
            [node(_op, ["x"], "s", axis=_axis), node("Mul", ["s", "c"])],
            [In("x", _shape, normal(1.5))], inits={"c": rand(*_shape)}, opset=13)
    add(f"{_op}-default-axis", _op, [node(_op, ["x"], "s"), node("Mul", ["s", "c"])],
        [In("x", (2, 5), normal(1.5))], inits={"c": rand(2, 5)}, opset=13)


# Binary ops with broadcasting -------------------------------------------------------------
def _binary_cases(op: str, sa: Sampler, sb: Sampler, ca: Callable, cb: Callable) -> None:
    """x (op) constant, constant (op) x, both graph inputs (either order), with broadcasting.
    ``sa``/``sb`` draw the left/right operand, ``ca``/``cb`` make a left/right constant."""
    add(f"{op}-x-const-bcast-last", op, [node(op, ["x", "c"])], [In("x", (3, 4), sa)],
        inits={"c": cb(4)})
    add(f"{op}-const-x-bcast-mid", op, [node(op, ["c", "x"])], [In("x", (1, 4), sb)],
        inits={"c": ca(3, 4)})
    add(f"{op}-x-z-bcast", op, [node(op, ["x", "z"])],
        [In("x", (3, 4), sa), In("z", (1, 4), sb)], wrt=("x", "z"))
    add(f"{op}-z-x-bcast-both", op, [node(op, ["z", "x"])],
        [In("x", (3, 1), sb), In("z", (1, 4), sa)], wrt=("x", "z"))


_pos = lambda *s: np.abs(rand(*s)) + 0.5  # noqa: E731
_nonzero = lambda *s: np.sign(rand(*s)) * _pos(*s)  # noqa: E731
for _op in ("Add", "Sub", "Mul"):
    _binary_cases(_op, normal(), normal(), rand, rand)
_binary_cases("Div", normal(), signed(0.5, 2.0), rand, _nonzero)
_binary_cases("Pow", uniform(0.5, 2.0), uniform(-1.5, 2.5), _pos, rand)

# Two branches of x meet again (the gradient accumulates): x op mean(x over the last axis),
# and an operand of lower rank: x op sum(x over batch and axis 1) -> [4].
for _op, _tail in (("Add", None), ("Sub", None), ("Mul", None), ("Div", "Exp"),
                   ("Pow", "Exp")):
    _xs = uniform(0.5, 2.0) if _op == "Pow" else normal()
    _fix = [node(_tail, ["r0"], "r")] if _tail else [node("Identity", ["r0"], "r")]
    add(f"{_op}-x-with-mean-of-x", [_op, "ReduceMean"],
        [node("ReduceMean", ["x"], "r0", axes=[2], keepdims=1), *_fix, node(_op, ["x", "r"])],
        [In("x", (3, 4), _xs)])
    add(f"{_op}-lower-rank-branch-first", [_op, "ReduceSum"],
        [node("ReduceSum", ["x", "ax"], "r0", keepdims=0), *_fix, node(_op, ["r", "x"])],
        [In("x", (3, 4), uniform(0.5, 1.5) if _op in ("Div", "Pow") else normal(0.5))],
        inits={"ax": ints(0, 1)})
add("Mul-x-times-x", "Mul", [node("Mul", ["x", "x"])], (3, 4))

# Pow: the exponent-2 shortcut, a vector exponent, an integer exponent computed at run time.
add("Pow-square", "Pow", [node("Pow", ["x", "p"])], [In("x", (3, 4))],
    inits={"p": np.array(2.0)})
add("Pow-cube-negative-base", "Pow", [node("Pow", ["x", "p"])], [In("x", (3, 4))],
    inits={"p": np.array(3.0)})
add("Pow-int-exponent-const", "Pow", [node("Pow", ["x", "p"])],
    [In("x", (3, 4), uniform(0.5, 2.0))], inits={"p": ints(1, 2, 3, -1)})
add("Pow-int-exponent-input", "Pow", [node("Pow", ["x", "p"])],
    [In("x", (3, 4), uniform(0.5, 2.0)),
     In("p", (1, 4), lambda rng, s: rng.integers(-2, 4, s), dtype=np.int64)])
add("Pow-half", "Pow", [node("Pow", ["x", "p"])], [In("x", (2, 3), uniform(0.3, 3.0))],
    inits={"p": np.array(0.5)})

# Max/Min (variadic): all values distinct so there are no ties; constants off the grid.
_off_grid = lambda *s: (np.round(rand(*s) * 8) + 0.5) * DISTINCT_STEP  # noqa: E731
for _op in ("Max", "Min"):
    add(f"{_op}-x-const-bcast", _op, [node(_op, ["x", "c"])], [In("x", (3, 4), DISTINCT)],
        inits={"c": _off_grid(4)})
    add(f"{_op}-x-z-bcast", _op, [node(_op, ["x", "z"])],
        [In("x", (3, 4), DISTINCT), In("z", (3, 1), DISTINCT)], wrt=("x", "z"))
    add(f"{_op}-three-inputs", _op, [node(_op, ["x", "z", "c"])],
        [In("x", (3, 4), DISTINCT), In("z", (1, 4), DISTINCT)],
        inits={"c": _off_grid(3, 1)}, wrt=("x", "z"))
    add(f"{_op}-one-input", _op, [node(_op, ["x"])], (2, 3))

# Sum/Mean (variadic): one input, three with broadcasting, the same input twice.
for _op in ("Sum", "Mean"):
    add(f"{_op}-one-input", _op, [node(_op, ["x"])], (3, 4))
    add(f"{_op}-three-bcast", _op, [node(_op, ["x", "z", "c"])],
        [In("x", (3, 4)), In("z", (3, 1))], inits={"c": rand(4)}, wrt=("x", "z"))
    add(f"{_op}-x-twice", _op, [node(_op, ["x", "x", "z"])],
        [In("x", (1, 4)), In("z", (3, 4))], wrt=("x", "z"))

# Where: constant condition (broadcast), both branches inputs, a condition computed from x.
_cond = np.array([[True], [False], [True]])
add("Where-x-z-bcast", "Where", [node("Where", ["c", "x", "z"])],
    [In("x", (3, 4)), In("z", (1, 4))], inits={"c": _cond}, wrt=("x", "z"))
add("Where-const-x", "Where", [node("Where", ["c", "k", "x"])], (3, 4),
    inits={"c": np.array([True, False, False, True]), "k": rand(3, 4)})
add("Where-x-scalar", "Where", [node("Where", ["c", "x", "k"])], (3, 4),
    inits={"c": _cond, "k": np.array(0.5)})
add("Where-leaky-from-x", "Where",
    [node("Greater", ["x", "zero"], "pos"), node("Mul", ["x", "a"], "neg"),
     node("Where", ["pos", "x", "neg"])],
    [In("x", (3, 4), away(0.0))], inits={"zero": np.array(0.0), "a": np.array(0.1)})


# Matrix products --------------------------------------------------------------------------
add("MatMul-2d-weight", "MatMul", [node("MatMul", ["x", "W"])], (4,),
    inits={"W": rand(4, 5)})
add("MatMul-3d-x-2d-weight", "MatMul", [node("MatMul", ["x", "W"])], (3, 4),
    inits={"W": rand(4, 5)})
add("MatMul-4d-x-3d-weight-bcast", "MatMul", [node("MatMul", ["x", "W"])], (2, 3, 4),
    inits={"W": rand(2, 4, 5)})
add("MatMul-4d-x-4d-weight-bcast", "MatMul", [node("MatMul", ["x", "W"])], (2, 3, 4),
    inits={"W": rand(1, 2, 4, 3)})
add("MatMul-1d-weight", "MatMul", [node("MatMul", ["x", "W"])], (3, 4),
    inits={"W": rand(4)})
add("MatMul-weight-left", "MatMul", [node("MatMul", ["W", "x"])], (4, 5),
    inits={"W": rand(3, 4)})
add("MatMul-x-z-activations", "MatMul", [node("MatMul", ["x", "z"])],
    [In("x", (3, 4)), In("z", (4, 2))], wrt=("x", "z"))
add("MatMul-x-z-bcast", "MatMul", [node("MatMul", ["x", "z"])],
    [In("x", (2, 3, 4)), In("z", (1, 4, 2))], wrt=("x", "z"))
add("MatMul-1d-activation", ["MatMul", "ReduceSum"],
    [node("ReduceSum", ["z", "a"], "v", keepdims=0), node("MatMul", ["x", "v"])],
    [In("x", (3, 4)), In("z", (4,))], inits={"a": ints(0)}, wrt=("x", "z"))
add("MatMul-x-times-xT", ["MatMul", "Transpose"],
    [node("Transpose", ["x"], "t", perm=[0, 2, 1]), node("MatMul", ["x", "t"])], (3, 4))

add("Gemm-plain", "Gemm", [node("Gemm", ["x", "W"])], (4,), inits={"W": rand(4, 5)})
add("Gemm-alpha-beta-C-bcast-row", "Gemm", [node("Gemm", ["x", "W", "C"], alpha=0.5, beta=2.0)],
    (4,), inits={"W": rand(4, 5), "C": rand(5)})
add("Gemm-transB-C-scalar", "Gemm", [node("Gemm", ["x", "W", "C"], transB=1, alpha=1.5)], (4,),
    inits={"W": rand(5, 4), "C": rand(1)})
add("Gemm-C-input-beta", "Gemm", [node("Gemm", ["x", "W", "z"], beta=-0.5)],
    [In("x", (4,)), In("z", (5,))], inits={"W": rand(4, 5)}, wrt=("x", "z"))
add("Gemm-C-input-bcast-col", "Gemm", [node("Gemm", ["x", "W", "z"], beta=0.75)],
    [In("x", (4,)), In("z", (1,))], inits={"W": rand(4, 5)}, wrt=("x", "z"))
# x as the contracted side (transA) or as B: the batch is a matrix dimension, so batch = 2.
add("Gemm-transA", "Gemm", [node("Gemm", ["x", "W"], transA=1, alpha=0.5)], (3,),
    inits={"W": rand(2, 4)}, batch=2)
add("Gemm-x-as-B", "Gemm", [node("Gemm", ["W", "x"])], (4,),
    inits={"W": rand(3, 2)}, batch=2)
add("Gemm-x-as-B-transA-transB", "Gemm", [node("Gemm", ["W", "x"], transA=1, transB=1)], (4,),
    inits={"W": rand(4, 3)}, batch=2)
add("Gemm-x-xT", "Gemm", [node("Gemm", ["x", "x"], transB=1, alpha=0.7)], (4,), batch=2)
add("Gemm-xT-x-C", "Gemm", [node("Gemm", ["x", "x", "C"], transA=1, beta=0.3)], (4,),
    inits={"C": rand(4)}, batch=2)


# Convolution ------------------------------------------------------------------------------
def conv_case(id: str, xshape, wshape, bias: bool = False, flip: bool = True,
              opset: int = 17, **attrs) -> None:
    """A Conv with random weights. A stride-1 case is checked on both input-gradient paths
    (flipped-weight Conv and, with STRIDE1_AS_CONV=False, ConvTranspose); ``flip=False``
    for a stride-1 geometry the flipped Conv cannot express (it uses ConvTranspose)."""
    inits = {"W": rand(*wshape, scale=0.5)}
    ins = ["x", "W"]
    if bias:
        inits["B"] = rand(wshape[0])
        ins.append("B")
    stride1 = all(s == 1 for s in attrs.get("strides", [1]))
    nodes = [node("Conv", ins, **attrs)]
    if stride1 and flip:
        add(id, "Conv", nodes, xshape, inits=inits, opset=opset,
            grad_ops=("Conv",), no_grad_ops=("ConvTranspose",))
        add(id + "-as-convtranspose", "Conv", nodes, xshape, inits=inits, opset=opset,
            patch={"STRIDE1_AS_CONV": False}, grad_ops=("ConvTranspose",))
    else:
        add(id, "Conv", nodes, xshape, inits=inits, opset=opset, grad_ops=("ConvTranspose",))


conv_case("Conv-k3-pad1", (3, 6, 5), (4, 3, 3, 3), pads=[1, 1, 1, 1])
conv_case("Conv-k3-valid-bias", (2, 5, 6), (3, 2, 3, 3), bias=True)
conv_case("Conv-stride2-dil2-asym-pads", (3, 9, 10), (4, 3, 3, 3), pads=[1, 0, 2, 1],
          strides=[2, 2], dilations=[1, 2])
conv_case("Conv-stride1-dil2-asym-pads", (2, 7, 8), (3, 2, 3, 2), pads=[2, 0, 1, 1],
          dilations=[2, 1])
conv_case("Conv-stride1-pads-exceed-kernel", (2, 5, 5), (2, 2, 3, 3), pads=[3, 1, 0, 3],
          flip=False)
conv_case("Conv-groups3", (6, 5, 5), (6, 2, 3, 3), group=3, pads=[1, 1, 1, 1])
conv_case("Conv-groups2-stride2", (4, 7, 6), (6, 2, 3, 2), group=2, strides=[2, 1],
          pads=[0, 1, 1, 0])
conv_case("Conv-depthwise", (3, 6, 6), (3, 1, 3, 3), group=3, pads=[1, 1, 1, 1])
conv_case("Conv-depthwise-stride2-mult2", (3, 7, 7), (6, 1, 3, 3), group=3, strides=[2, 2])
conv_case("Conv-stride3-leftover", (2, 8, 9), (3, 2, 3, 3), strides=[3, 3])
conv_case("Conv-1x1-stride2", (4, 5, 6), (3, 4, 1, 1), strides=[2, 2])
conv_case("Conv-auto-same-upper-stride2", (2, 7, 8), (3, 2, 3, 3), auto_pad="SAME_UPPER",
          strides=[2, 2])
conv_case("Conv-auto-same-lower-stride2", (2, 7, 8), (3, 2, 3, 3), auto_pad="SAME_LOWER",
          strides=[2, 2])
conv_case("Conv-auto-same-upper-k4", (2, 6, 6), (3, 2, 4, 4), auto_pad="SAME_UPPER")
conv_case("Conv-auto-same-lower-k2", (2, 6, 5), (3, 2, 2, 2), auto_pad="SAME_LOWER")
conv_case("Conv-auto-valid-stride2", (2, 7, 6), (3, 2, 3, 3), auto_pad="VALID", strides=[2, 2])
conv_case("Conv-1d-pad", (3, 9), (4, 3, 3), pads=[2, 1])
conv_case("Conv-1d-stride2-dil2", (3, 11), (2, 3, 3), strides=[2], dilations=[2], pads=[1, 0])
conv_case("Conv-3d", (2, 4, 4, 3), (3, 2, 2, 3, 2), pads=[1, 0, 1, 0, 1, 0])
conv_case("Conv-3d-stride2", (2, 5, 4, 4), (2, 2, 3, 2, 2), strides=[2, 1, 2])

for _id, _x, _w, _attrs in (
    ("ConvTranspose-k3", (3, 4, 4), (3, 2, 3, 3), {}),
    ("ConvTranspose-stride2-pads-outpad", (2, 3, 4), (2, 3, 3, 3),
     dict(strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])),
    ("ConvTranspose-group2-dil2", (4, 3, 3), (4, 1, 2, 3), dict(group=2, dilations=[2, 1])),
    ("ConvTranspose-1d-stride3", (2, 4), (2, 2, 2), dict(strides=[3], pads=[1, 0])),
):
    add(_id, "ConvTranspose", [node("ConvTranspose", ["x", "W"], **_attrs)], _x,
        inits={"W": rand(*_w, scale=0.5)})


# Pooling ----------------------------------------------------------------------------------
def pool_case(op: str, id: str, xshape, opset: int = 17, sample=None, **attrs) -> None:
    sample = sample or (DISTINCT if op == "MaxPool" else normal())
    add(id, op, [node(op, ["x"], **attrs)], [In("x", xshape, sample)], opset=opset)


pool_case("MaxPool", "MaxPool-k2-s2", (2, 4, 6), kernel_shape=[2, 2], strides=[2, 2])
pool_case("MaxPool", "MaxPool-k3-s1-overlap-pad1", (2, 5, 5), kernel_shape=[3, 3],
          pads=[1, 1, 1, 1])
pool_case("MaxPool", "MaxPool-k3-s2-ceil", (2, 6, 7), kernel_shape=[3, 3], strides=[2, 2],
          ceil_mode=1)
pool_case("MaxPool", "MaxPool-k2-dil2-s1", (2, 6, 6), kernel_shape=[2, 2], dilations=[2, 2])
pool_case("MaxPool", "MaxPool-k3-s2-asym-pads", (2, 6, 5), kernel_shape=[3, 2],
          strides=[2, 1], pads=[0, 1, 1, 0])
pool_case("MaxPool", "MaxPool-auto-same-upper", (2, 5, 6), kernel_shape=[3, 3],
          strides=[2, 2], auto_pad="SAME_UPPER")
pool_case("MaxPool", "MaxPool-1d-k3-s2-ceil", (3, 8), kernel_shape=[3], strides=[2],
          ceil_mode=1)
pool_case("MaxPool", "MaxPool-3d", (2, 4, 4, 3), kernel_shape=[2, 2, 2], strides=[2, 1, 2])
add("MaxPool-indices-output-declared", "MaxPool",
    [node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], strides=[1, 2])],
    [In("x", (2, 4, 4), DISTINCT)])

pool_case("AveragePool", "AveragePool-k2-s2", (2, 4, 6), kernel_shape=[2, 2], strides=[2, 2])
for _cip in (0, 1):
    pool_case("AveragePool", f"AveragePool-k3-s1-pad1-cip{_cip}", (2, 5, 5),
              kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=_cip)
    pool_case("AveragePool", f"AveragePool-k3-s2-ceil-asym-pads-cip{_cip}", (2, 6, 7),
              kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 0, 0, 1],
              count_include_pad=_cip)
    pool_case("AveragePool", f"AveragePool-auto-same-lower-cip{_cip}", (2, 5, 6),
              kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER",
              count_include_pad=_cip)
pool_case("AveragePool", "AveragePool-k2-s3-ceil", (2, 7, 8), kernel_shape=[2, 2],
          strides=[3, 3], ceil_mode=1)
pool_case("AveragePool", "AveragePool-dil2-opset19", (2, 6, 7), opset=19, kernel_shape=[2, 3],
          dilations=[2, 2], pads=[1, 0, 0, 1])
pool_case("AveragePool", "AveragePool-1d-k3-s2-pad1", (3, 9), kernel_shape=[3], strides=[2],
          pads=[1, 1], count_include_pad=0)
pool_case("AveragePool", "AveragePool-3d", (2, 4, 4, 4), kernel_shape=[2, 2, 2],
          strides=[2, 2, 2])
# Windows that ceil_mode runs past the end pad (the divisor counts only up to the pad), with
# dilation too; SAME_UPPER padding; a 3-D window with pads, both divisor rules.
pool_case("AveragePool", "AveragePool-1d-ceil-past-pad-cip1", (3, 8), kernel_shape=[3],
          strides=[2], pads=[1, 1], ceil_mode=1, count_include_pad=1)
pool_case("AveragePool", "AveragePool-dil2-ceil-cip1-opset19", (2, 7, 8), opset=19,
          kernel_shape=[2, 3], strides=[2, 2], dilations=[2, 1], pads=[1, 1, 0, 1], ceil_mode=1,
          count_include_pad=1)
pool_case("AveragePool", "AveragePool-auto-same-upper-cip1", (2, 5, 6), kernel_shape=[3, 3],
          strides=[2, 2], auto_pad="SAME_UPPER", count_include_pad=1)
# onnxruntime sizes a pooling SAME pad by the undilated kernel (the ONNX reference does not).
pool_case("AveragePool", "AveragePool-auto-same-lower-dil2-cip1-opset19", (2, 7, 6), opset=19,
          kernel_shape=[2, 3], strides=[2, 1], dilations=[2, 2], auto_pad="SAME_LOWER",
          count_include_pad=1)
for _cip in (0, 1):
    pool_case("AveragePool", f"AveragePool-3d-pads-ceil-cip{_cip}", (2, 5, 4, 5),
              kernel_shape=[3, 2, 3], strides=[2, 2, 2], pads=[1, 0, 1, 1, 1, 0], ceil_mode=1,
              count_include_pad=_cip)

add("GlobalAveragePool", "GlobalAveragePool", [node("GlobalAveragePool", ["x"])], (3, 4, 5))
add("GlobalAveragePool-1d", "GlobalAveragePool", [node("GlobalAveragePool", ["x"])], (3, 5))
add("GlobalMaxPool", "GlobalMaxPool", [node("GlobalMaxPool", ["x"])],
    [In("x", (3, 4, 5), DISTINCT)])
add("GlobalMaxPool-1d", "GlobalMaxPool", [node("GlobalMaxPool", ["x"])],
    [In("x", (3, 5), DISTINCT)])


# Normalisation ----------------------------------------------------------------------------
def _bn_inits(c: int) -> dict:
    return {"s": rand(c), "b": rand(c), "m": rand(c), "v": np.abs(rand(c)) + 0.3}


add("BatchNormalization-rank4", "BatchNormalization",
    [node("BatchNormalization", ["x", "s", "b", "m", "v"])], (3, 4, 5), inits=_bn_inits(3))
add("BatchNormalization-rank2-eps", "BatchNormalization",
    [node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=0.1)], (4,),
    inits=_bn_inits(4))
# Scale and variance computed at run time (graph inputs; their [C] is the batch axis, so
# C = batch = 2): the rule builds the factor with ops instead of folding it.
add("BatchNormalization-scale-var-inputs", "BatchNormalization",
    [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
    [In("x", (2, 3, 3)), In("s", ()), In("v", (), uniform(0.5, 2.0))],
    inits={"b": rand(2), "m": rand(2)}, batch=2)
add("BatchNormalization-rank3-opset9", "BatchNormalization",
    [node("BatchNormalization", ["x", "s", "b", "m", "v"])], (2, 5), inits=_bn_inits(2),
    opset=9)

for _shape, _axis, _bias in (((3, 4), -1, True), ((3, 4), 1, False), ((2, 3, 4), 2, True),
                             ((2, 3, 4), -2, True), ((2, 3, 4), 1, False)):
    _norm = _shape[(_axis % (len(_shape) + 1)) - 1:]
    add(f"LayerNormalization-rank{len(_shape) + 1}-axis{_axis}" + ("-bias" if _bias else ""),
        "LayerNormalization",
        [node("LayerNormalization", ["x", "s", "b"] if _bias else ["x", "s"], axis=_axis,
              epsilon=1e-3)],
        _shape, inits={"s": rand(*_norm), **({"b": rand(*_norm)} if _bias else {})})

add("InstanceNormalization-rank4", "InstanceNormalization",
    [node("InstanceNormalization", ["x", "s", "b"])], (3, 4, 5),
    inits={"s": rand(3), "b": rand(3)})
add("InstanceNormalization-scale-input", "InstanceNormalization",
    [node("InstanceNormalization", ["x", "s", "b"])], [In("x", (2, 3, 3)), In("s", ())],
    inits={"b": rand(2)}, batch=2)
add("InstanceNormalization-rank3-eps", "InstanceNormalization",
    [node("InstanceNormalization", ["x", "s", "b"], epsilon=0.1)], (2, 6),
    inits={"s": rand(2), "b": rand(2)})


# Shapes -----------------------------------------------------------------------------------
add("Reshape-flat", "Reshape", [node("Reshape", ["x", "s"])], (3, 4), inits={"s": ints(0, -1)})
add("Reshape-split-axis", "Reshape", [node("Reshape", ["x", "s"])], (3, 4),
    inits={"s": ints(0, 2, 3, 2)})
add("Flatten-axis1", "Flatten", [node("Flatten", ["x"])], (2, 3, 2))
add("Flatten-axis0", "Flatten", [node("Flatten", ["x"], axis=0)], (3, 2), batch=2)
add("Flatten-axis2", "Flatten", [node("Flatten", ["x"], axis=2)], (2, 3, 2))
add("Squeeze-axes-input", "Squeeze", [node("Squeeze", ["x", "a"])], (1, 3, 1),
    inits={"a": ints(1, -1)}, opset=13)
add("Squeeze-opset11-attr", "Squeeze", [node("Squeeze", ["x"], axes=[2])], (3, 1, 4),
    opset=11)
add("Squeeze-no-axes", "Squeeze", [node("Squeeze", ["x"])], (1, 3, 1), opset=13)
add("Unsqueeze-axis0", "Unsqueeze", [node("Unsqueeze", ["x", "a"])], (3, 4),
    inits={"a": ints(0)}, opset=13, batch=2)
add("Unsqueeze-axes-input", "Unsqueeze", [node("Unsqueeze", ["x", "a"])], (3, 4),
    inits={"a": ints(1, -1)}, opset=13)
add("Unsqueeze-opset11-attr", "Unsqueeze", [node("Unsqueeze", ["x"], axes=[2])], (3, 4),
    opset=11)
add("Transpose-nhwc", "Transpose", [node("Transpose", ["x"], perm=[0, 2, 3, 1])], (2, 3, 4))
add("Transpose-cycle", "Transpose", [node("Transpose", ["x"], perm=[2, 0, 3, 1])], (2, 3, 4),
    batch=2)
add("Transpose-default-perm", "Transpose", [node("Transpose", ["x"])], (3, 4), batch=2)
add("Expand-last-axis", "Expand", [node("Expand", ["x", "s"])], (3, 1),
    inits={"s": ints(1, 1, 5)})
add("Expand-middle-lower-rank-shape", "Expand", [node("Expand", ["x", "s"])], (1, 4),
    inits={"s": ints(3, 1)})
add("Expand-adds-lead-axis", "Expand", [node("Expand", ["x", "s"])], (4,),
    inits={"s": ints(3, 1, 1)}, batch=2)
add("Expand-noop", "Expand", [node("Expand", ["x", "s"])], (3, 4), inits={"s": ints(1)})

# A constant operand of Concat has the batch axis too, so those cases run with batch 2.
add("Concat-x-const-axis1", "Concat", [node("Concat", ["x", "c"], axis=1)], (2, 4),
    inits={"c": rand(2, 3, 4)}, batch=2)
add("Concat-x-z-x-neg-axis", "Concat", [node("Concat", ["x", "z", "x"], axis=-1)],
    [In("x", (2, 3)), In("z", (2, 2))], wrt=("x", "z"))
add("Concat-const-first", "Concat", [node("Concat", ["c", "x"], axis=2)], (2, 3),
    inits={"c": rand(2, 2, 1)}, batch=2)

add("Split-equal-no-sizes", "Split",
    [node("Split", ["x"], ["a", "b"], axis=1), node("Concat", ["b", "a"], axis=1)], (4, 3),
    opset=13)
add("Split-sizes-input-unused-output", "Split",
    [node("Split", ["x", "s"], ["a", "b", "c"], axis=-1), node("Concat", ["c", "a"], axis=-1)],
    (2, 6), inits={"s": ints(1, 2, 3)}, opset=13)
add("Split-num-outputs-opset18", "Split",
    [node("Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3),
     node("Mul", ["b", "c"])], (2, 7), opset=18)
add("Split-opset11-attr-one-output", "Split",
    [node("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]), node("Identity", ["b"])],
    (4, 2), opset=11)

_big = 2**62
for _id, _starts, _e, _a, _st, _shape in (
    ("Slice-one-axis", [1], [3], [1], None, (4, 5)),
    ("Slice-axes-omitted-batch-full", [0, 1], [_big, -1], None, None, (4, 5)),
    ("Slice-negative-step", [-1], [-_big], [2], [-1], (3, 5)),
    ("Slice-negative-step2-from-mid", [3], [0], [1], [-2], (5, 3)),
    ("Slice-step2", [1], [5], [-1], [2], (3, 6)),
    ("Slice-step3-several-axes", [0, 4, 1], [3, 1000, -1], [1, 2, 3], [1, 3, 1], (4, 9, 4)),
    ("Slice-out-of-range-ends", [-100, 2], [100, 1000], [1, 2], [1, 1], (3, 4)),
    ("Slice-neg-steps-two-axes", [100, -2], [-100, 0], [1, 2], [-2, -1], (5, 4)),
):
    _inits = {"st": ints(*_starts), "en": ints(*_e)}
    _ins = ["x", "st", "en"]
    if _a is not None:
        _inits["ax"] = ints(*_a)
        _ins.append("ax")
    if _st is not None:
        _inits["sp"] = ints(*_st)
        _ins.append("sp")
    add(_id, "Slice", [node("Slice", _ins)], _shape, inits=_inits, opset=13)

add("Pad-constant-value", "Pad", [node("Pad", ["x", "p", "v"])], (2, 3),
    inits={"p": ints(0, 1, 0, 0, 2, 1), "v": np.array(0.5)}, opset=13)
add("Pad-negative-crop", "Pad", [node("Pad", ["x", "p"])], (5, 4),
    inits={"p": ints(0, -1, 2, 0, 1, -2)}, opset=13)
add("Pad-axes-input-opset18", "Pad", [node("Pad", ["x", "p", "", "a"])], (3, 4),
    inits={"p": ints(1, -1, 2, 0), "a": ints(-1, 1)}, opset=18)
add("Pad-opset2-attr", "Pad", [node("Pad", ["x"], pads=[0, 1, 1, 0, 0, 2])], (2, 3),
    opset=2, float64=False)  # the version converter writes a float32 pad value

add("Gather-scalar-index", "Gather", [node("Gather", ["x", "i"], axis=1)], (4, 3),
    inits={"i": np.array(2, dtype=np.int64)})
add("Gather-1d-repeats-negative", "Gather", [node("Gather", ["x", "i"], axis=2)], (3, 5),
    inits={"i": ints(4, 0, -1, 2, 0)})
add("Gather-1d-axis-neg1-int32", "Gather", [node("Gather", ["x", "i"], axis=-1)], (2, 4),
    inits={"i": np.array([3, 1], dtype=np.int32)})


# Reductions: keepdims 0/1; axes as attribute (ReduceMean/Max/Min up to opset 17) or as
# input (ReduceSum from 13, all from 18); no axes (everything, the batch too).
def _reduce(op: str, id: str, shape, opset: int, axes=None, sample=None, batch: int = 3,
            **attrs) -> None:
    ins, inits = ["x"], {}
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes is not None and as_input:
        ins.append("a")
        inits["a"] = ints(*axes)
    elif axes is not None:
        attrs["axes"] = list(axes)
    add(id, op, [node(op, ins, **attrs)], [In("x", shape, sample or normal())],
        inits=inits, opset=opset, batch=batch)


for _op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"):
    _sample = DISTINCT if _op in ("ReduceMax", "ReduceMin") else None
    _old = 13 if _op == "ReduceSum" else 17
    _form = "input" if _op == "ReduceSum" else "attr"
    _reduce(_op, f"{_op}-axes-{_form}-keepdims1", (3, 4), _old, axes=[2], sample=_sample)
    _reduce(_op, f"{_op}-axes-{_form}-keepdims0-two-axes", (3, 4, 2), _old, axes=[1, -1],
            sample=_sample, keepdims=0)
    _reduce(_op, f"{_op}-opset18-axes-input-keepdims0", (3, 4), 18, axes=[-1], sample=_sample,
            keepdims=0)
    _reduce(_op, f"{_op}-opset18-all-axes-keepdims1", (3, 4), 18, sample=_sample)
    _reduce(_op, f"{_op}-opset18-batch-and-last-axes-keepdims0", (3, 4), 18, axes=[0, 2],
            sample=_sample, keepdims=0)
    _reduce(_op, f"{_op}-opset18-noop-empty-axes", (3, 4), 18, sample=_sample,
            noop_with_empty_axes=1)
_reduce("ReduceSum", "ReduceSum-opset11-attr", (3, 4), 11, axes=[1])
_reduce("ReduceMax", "ReduceMax-opset11-attr-rank1-out", (2, 3), 11, axes=[1, 2],
        sample=DISTINCT, keepdims=0)


# Transformers and resampling (rules_tensor) -----------------------------------------------
add("Einsum-batched-matmul-x-z", "Einsum", [node("Einsum", ["x", "z"], equation="bij,bjk->bik")],
    [In("x", (3, 4)), In("z", (4, 2))], wrt=("x", "z"))
add("Einsum-ellipsis-weight", "Einsum", [node("Einsum", ["x", "W"], equation="...ij,jk->...ik")],
    (2, 3, 4), inits={"W": rand(4, 5)})
add("Einsum-maxvit-attention", "Einsum",  # spaces and capitals, as torch exports them
    [node("Einsum", ["x", "z"], equation="B G H I D, B G H J D -> B G H I J")],
    [In("x", (2, 2, 3, 4)), In("z", (2, 2, 5, 4))], wrt=("x", "z"))
add("Einsum-implicit-output", "Einsum", [node("Einsum", ["x", "W"], equation="bij,jk")],
    (3, 4), inits={"W": rand(4, 2)})
add("Einsum-summed-only-index", "Einsum", [node("Einsum", ["x", "z"], equation="bij,bk->bik")],
    [In("x", (3, 4)), In("z", (2,))], wrt=("x", "z"))
add("Einsum-ellipsis-broadcast", "Einsum",
    [node("Einsum", ["x", "z"], equation="...ij,...jk->...ik")],
    [In("x", (2, 3, 4)), In("z", (1, 4, 2))], wrt=("x", "z"))

add("Tile-last-axes", "Tile", [node("Tile", ["x", "r"])], (2, 3), inits={"r": ints(1, 2, 3)})
add("Tile-batch-too", "Tile", [node("Tile", ["x", "r"])], (2,), inits={"r": ints(2, 3)},
    batch=2)
add("Tile-no-repeat", "Tile", [node("Tile", ["x", "r"])], (2,), inits={"r": ints(1, 1)})

for _ex in (0, 1):
    for _rev in (0, 1):
        add(f"CumSum-exclusive{_ex}-reverse{_rev}", "CumSum",
            [node("CumSum", ["x", "a"], exclusive=_ex, reverse=_rev)], (4, 3),
            inits={"a": np.array(1, np.int64)})
add("CumSum-negative-axis", "CumSum", [node("CumSum", ["x", "a"])], (2, 3),
    inits={"a": np.array(-1, np.int32)})

add("GatherElements-axis1-index-input", "GatherElements",
    [node("GatherElements", ["x", "i"], axis=1)],
    [In("x", (4, 3)), In("i", (2, 3), lambda rng, s: rng.integers(-4, 4, s), dtype=np.int64)])
add("Gather-run-time-indices", "Gather",  # indices from the batch axis of z: in 0..N-1 < 4
    [node("ArgMax", ["z"], "i", axis=0, keepdims=0), node("Gather", ["x", "i"], axis=2)],
    [In("x", (3, 4)), In("z", (4,), DISTINCT)])
add("Gather-run-time-scalar-index", ["Gather", "Squeeze", "Slice"],
    [node("ArgMax", ["z"], "i", axis=1, keepdims=0), node("Slice", ["i", "s", "e"], "i1"),
     node("Squeeze", ["i1", "a"], "i0"), node("Gather", ["x", "i0"], axis=2)],
    [In("x", (3, 4)), In("z", (4,), DISTINCT)],
    inits={"s": ints(0), "e": ints(1), "a": ints(0)})

for _op, _sample in (("ReduceL2", None), ("ReduceL1", away(0.0)), ("ReduceSumSquare", None),
                     ("ReduceLogSumExp", None)):
    _reduce(_op, f"{_op}-axes-attr-keepdims1", (3, 4), 17, axes=[2], sample=_sample)
    _reduce(_op, f"{_op}-opset18-keepdims0-two-axes", (3, 4, 2), 18, axes=[1, -1],
            sample=_sample, keepdims=0)


def _resize(id: str, xshape, out=None, scales=None, opset: int = 17, **attrs) -> None:
    """Resize of x [N, *xshape] by ``scales`` (every axis), or to ``out`` (sizes of the axes
    after the channels, opset 18's axes: the batch stays free)."""
    ins, inits = ["x", "", ""], {}
    if scales is not None:
        ins[2], inits["sc"] = "sc", np.array(scales, np.float32)
    else:
        ins.append("sz")
        inits["sz"] = ints(*out)
        attrs["axes"] = list(range(2, 2 + len(out)))
        opset = max(opset, 18)
    add(id, "Resize", [node("Resize", ins, **attrs)], [In("x", xshape)], inits=inits,
        opset=opset, float64=False)


_resize("Resize-nearest-2x", (2, 3, 4), scales=[1, 1, 2, 2])
_resize("Resize-nearest-asymmetric-floor-down", (2, 6, 7), scales=[1, 1, 0.5, 0.6],
        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
_resize("Resize-nearest-ceil-sizes", (2, 3, 4), out=[7, 5], nearest_mode="ceil")
_resize("Resize-linear-half-pixel-up", (2, 3, 4), out=[8, 7], mode="linear")
_resize("Resize-linear-half-pixel-down", (2, 8, 7), out=[3, 4], mode="linear")
_resize("Resize-linear-align-corners", (2, 3, 4), out=[7, 6], mode="linear",
        coordinate_transformation_mode="align_corners")
_resize("Resize-linear-scales-0.7-1.3", (2, 5, 5), scales=[1, 1, 0.7, 1.3], mode="linear")
_resize("Resize-linear-pytorch-half-pixel-scales", (2, 4, 3), scales=[1, 1, 1.5, 2.5],
        mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
_resize("Resize-linear-asymmetric-1d", (3, 5), out=[9], mode="linear",
        coordinate_transformation_mode="asymmetric")
_resize("Resize-nearest-half-pixel-symmetric", (2, 3, 5), out=[7, 3], opset=19,
        coordinate_transformation_mode="half_pixel_symmetric")
_resize("Resize-linear-half-pixel-symmetric", (2, 3, 5), out=[7, 3], opset=19, mode="linear",
        coordinate_transformation_mode="half_pixel_symmetric")

for _mode in ("edge", "reflect"):
    add(f"Pad-{_mode}", "Pad", [node("Pad", ["x", "p"], mode=_mode)], (2, 4, 5),
        inits={"p": ints(0, 0, 1, 2, 0, 0, 3, 1)}, opset=13)
    add(f"Pad-{_mode}-with-crop", "Pad", [node("Pad", ["x", "p"], mode=_mode)], (3, 5),
        inits={"p": ints(0, -1, 2, 0, 1, -1)}, opset=13)
add("Pad-wrap-opset19", "Pad", [node("Pad", ["x", "p"], mode="wrap")], (2, 4),
    inits={"p": ints(0, 1, 2, 0, 2, 3)}, opset=19)
add("Pad-reflect-axes-input-opset18", "Pad", [node("Pad", ["x", "p", "", "a"], mode="reflect")],
    (3, 5), inits={"p": ints(2, 1, 1, 2), "a": ints(-1, 1)}, opset=18)


# Recurrent layers (rules_rnn): LSTM and GRU, T = 3 steps, 3 inputs, H = 2. The graph inputs
# are batch first (x [N, T, I], h0/c0 [N, D, H]) and reach the node through Transposes.
# The output y concatenates every output the case uses (Y, Y_h, Y_c), each flattened.
# onnxruntime's LSTM and GRU kernels refuse double at run time ("LSTM operator does not support
# double yet"), after the session is made: these cases are checked in float32.
_T, _I, _H = 3, 3, 2


def _rnn_case(op: str, direction: str = "forward", bias: bool = True, states: bool = True,
              outputs: int = 1, steps: int = _T, **attrs) -> None:
    """One LSTM/GRU node over ``steps`` steps; ``outputs`` = how many of (Y, Y_h, Y_c) feed
    y."""
    d, gates = (2 if direction == "bidirectional" else 1), (4 if op == "LSTM" else 3)
    inits = {"W": rand(d, gates * _H, _I, scale=0.6), "R": rand(d, gates * _H, _H, scale=0.6),
             "s": ints(0, -1)}
    ins = ["xt", "W", "R", "B" if bias else "", ""]
    if bias:
        inits["B"] = rand(d, 2 * gates * _H, scale=0.5)
    n_states = (2 if op == "LSTM" else 1) if states else 0
    names = ["h0", "c0"][:n_states]
    ins += [f"{n}t" for n in names]
    nodes = [node("Transpose", [n], f"{n}t", perm=[1, 0, 2]) for n in ["x", *names]]
    outs = ["Y", "Yh", "Yc"][:outputs]
    nodes.append(node(op, ins, outs, direction=direction, hidden_size=_H, **attrs))
    flat = []
    for k, o in enumerate(outs):
        nodes.append(node("Transpose", [o], f"{o}b", perm=[2, 0, 1, 3] if k == 0 else [1, 0, 2]))
        nodes.append(node("Reshape", [f"{o}b", "s"], f"{o}f"))
        flat.append(f"{o}f")
    nodes.append(node("Concat", flat, axis=1) if len(flat) > 1 else node("Identity", flat))
    parts = [op, direction, "bias" if bias else "no-bias",
             "states" if states else "no-states", f"{outputs}-outputs", f"T{steps}",
             *[f"{k}{v}" for k, v in attrs.items()]]
    add("-".join(parts), op, nodes,
        [In("x", (steps, _I)),
         *[In(n, (d, _H), normal(0.5)) for n in names]],
        inits=inits, opset=14, wrt=("x", *names), float64=False)


_rnn_case("LSTM", outputs=3)
_rnn_case("LSTM", "reverse", bias=False, states=False)
_rnn_case("LSTM", "bidirectional", outputs=3)
_rnn_case("LSTM", "bidirectional", states=False)
_rnn_case("LSTM", "reverse", outputs=2)
_rnn_case("GRU", outputs=2)
_rnn_case("GRU", "bidirectional", outputs=2, linear_before_reset=1)
_rnn_case("GRU", "reverse", bias=False, linear_before_reset=1)
_rnn_case("GRU", "bidirectional", states=False, outputs=2)
_rnn_case("LSTM", "bidirectional", outputs=3, steps=1)
_rnn_case("GRU", "reverse", outputs=2, steps=1)


# Pixel shuffles and grid sampling --------------------------------------------------------
add("DepthToSpace-DCR-b2", "DepthToSpace", [node("DepthToSpace", ["x"], blocksize=2)],
    (8, 2, 3))
add("DepthToSpace-CRD-b2", "DepthToSpace", [node("DepthToSpace", ["x"], blocksize=2,
                                                 mode="CRD")], (8, 3, 2))
add("DepthToSpace-DCR-b3-one-channel", "DepthToSpace",
    [node("DepthToSpace", ["x"], blocksize=3)], (9, 2, 2))
add("SpaceToDepth-b2", "SpaceToDepth", [node("SpaceToDepth", ["x"], blocksize=2)], (2, 4, 6))
add("SpaceToDepth-then-DepthToSpace-CRD", ["SpaceToDepth", "DepthToSpace", "Mul"],
    [node("SpaceToDepth", ["x"], "s2d", blocksize=2), node("Mul", ["s2d", "s2d"], "sq"),
     node("DepthToSpace", ["sq"], blocksize=2, mode="CRD")], (3, 4, 4))


def _grid_sampler(h: int, w: int, align: int, offset: float) -> Sampler:
    """Grid points [.., 2] (x, y normalised) whose pixel coordinates lie k + offset + u,
    |u| < 0.3, k from -1 to the size (some outside the image): >= 0.2 px from the integers
    (offset 0.5: bilinear's kinks) or the half-integers (offset 0: nearest's)."""

    def draw(rng, shape):
        px = [rng.integers(-1, n + 1, shape[:-1]) + offset + rng.uniform(-0.3, 0.3, shape[:-1])
              for n in (w, h)]
        norm = [(2 * p + 1 - align) / (n - align) - 1 for p, n in zip(px, (w, h))]
        return np.stack(norm, axis=-1)

    return draw


def _grid_case(mode: str, padding: str, align: int, opset: int = 16) -> None:
    h, w = 3, 4
    linear = mode in ("bilinear", "linear")
    add(f"GridSample-{mode}-{padding}-align{align}-opset{opset}", "GridSample",
        [node("GridSample", ["x", "grid"], mode=mode, padding_mode=padding,
              align_corners=align)],
        [In("x", (2, h, w)), In("grid", (2, 3, 2), _grid_sampler(h, w, align,
                                                                  0.5 if linear else 0.0))],
        opset=opset, wrt=("x", "grid"))


# Opset 16 names the modes bilinear/nearest and onnxruntime 1.31 has a float32 kernel only
# there; opset 20 names them linear/nearest and has a double kernel: every combination of
# both, the second checked in float64.
for _opset, _modes in ((16, ("bilinear", "nearest")), (20, ("linear", "nearest"))):
    for _mode in _modes:
        for _padding in ("zeros", "border"):
            for _align in (0, 1):
                _grid_case(_mode, _padding, _align, _opset)


# com.microsoft ops of onnxruntime-optimised graphs (rules_contrib) ------------------------
MS = "com.microsoft"


def ms(op: str, ins: Sequence[str], outs: Sequence[str] | str = "y", **attrs):
    return helper.make_node(op, list(ins), [outs] if isinstance(outs, str) else list(outs),
                            domain=MS, **attrs)


_twice = np.tile(2 * np.eye(3)[:, :, None, None], 1)  # a 1x1 conv z = 2x: kinks stay at x's
for _act, _params, _kinks in (("Relu", [], (0.0,)), ("LeakyRelu", [0.2], (0.0,)),
                              ("Clip", [-1.0, 1.5], (-0.5, 0.75)),
                              ("HardSigmoid", [0.2, 0.5], (-1.25, 1.25))):
    add(f"FusedConv-1x1-{_act}", "FusedConv",
        [ms("FusedConv", ["x", "W"], activation=_act,
            **({"activation_params": _params} if _params else {}))],
        [In("x", (3, 3, 4), away(*_kinks, scale=1.5))], inits={"W": _twice})
for _act in ("Sigmoid", "Tanh"):
    add(f"FusedConv-3x3-{_act}-sum-input", "FusedConv",
        [ms("FusedConv", ["x", "W", "B", "z"], activation=_act, pads=[1, 1, 1, 1])],
        [In("x", (3, 4, 5)), In("z", (2, 4, 5))],
        inits={"W": rand(2, 3, 3, 3, scale=0.3), "B": rand(2)}, wrt=("x", "z"))
add("FusedGemm-Tanh", "FusedGemm", [ms("FusedGemm", ["x", "W", "C"], activation="Tanh",
                                       alpha=0.5, transB=1)],
    (4,), inits={"W": rand(5, 4), "C": rand(5)})
add("FusedGemm-Relu-2x", "FusedGemm", [ms("FusedGemm", ["x", "W"], activation="Relu")],
    [In("x", (3,), away(0.0))], inits={"W": 2 * np.eye(3)})
add("FusedMatMul-alpha", "FusedMatMul", [ms("FusedMatMul", ["x", "W"], alpha=0.25)], (3, 4),
    inits={"W": rand(4, 5)})
add("Gelu-com.microsoft", "Gelu", [ms("Gelu", ["x"])], [In("x", (3, 5), normal(2.0))])
# (onnxruntime's double FastGelu rounds like float32: checked in float32)
add("FastGelu-bias", "FastGelu", [ms("FastGelu", ["x", "b"])], [In("x", (3, 5), normal(2.0))],
    inits={"b": rand(5)}, float64=False)
add("FastGelu-no-bias", "FastGelu", [ms("FastGelu", ["x"])], [In("x", (2, 4), normal(2.0))],
    float64=False)
add("BiasGelu", "BiasGelu", [ms("BiasGelu", ["x", "b"])], [In("x", (3, 5), normal(2.0))],
    inits={"b": rand(5)})
add("QuickGelu-default-alpha", "QuickGelu", [ms("QuickGelu", ["x"])],
    [In("x", (3, 4), normal(2.0))])
add("QuickGelu-alpha1", "QuickGelu", [ms("QuickGelu", ["x"], alpha=1.0)],
    [In("x", (3, 4), normal(2.0))])
add("BiasAdd-x-skip", "BiasAdd", [ms("BiasAdd", ["x", "b", "z"])],
    [In("x", (2, 4)), In("z", (2, 4))], inits={"b": rand(4)}, wrt=("x", "z"),
    skip="com.microsoft BiasAdd has a CUDA kernel only (onnxruntime's CPU provider has none)")
add("SkipLayerNormalization-beta-bias", "SkipLayerNormalization",
    [ms("SkipLayerNormalization", ["x", "z", "g", "be", "bi"], epsilon=1e-3)],
    [In("x", (3, 5)), In("z", (3, 5))],
    inits={"g": rand(5), "be": rand(5), "bi": rand(5)}, wrt=("x", "z"))
add("SkipLayerNormalization-sum-output", ["SkipLayerNormalization", "Add"],
    [ms("SkipLayerNormalization", ["x", "z", "g"], ["ln", "", "", "s"], epsilon=1e-3),
     node("Add", ["ln", "s"])],
    [In("x", (2, 4)), In("z", (2, 4))], inits={"g": rand(4)}, wrt=("x", "z"))


# Quantisation (QDQ): straight-through, so no finite differences: the gradient is w where the
# value is inside the quantised range and 0 where Q clipped it (scales dyadic: exact).
def _qdq_exact(scale: float, lo: float, hi: float, zp: float = 0.0):
    def exact(feeds, w):
        x = feeds["x"]
        t = np.round(x / scale) + zp
        return (w.reshape(x.shape) * ((t >= lo) & (t <= hi))).astype(x.dtype)

    return exact


add("QuantizeLinear-DequantizeLinear-int8", ["QuantizeLinear", "DequantizeLinear"],
    [node("QuantizeLinear", ["x", "s", "zp"], "q"), node("DequantizeLinear", ["q", "s", "zp"])],
    [In("x", (3, 4), normal(6.0))],
    inits={"s": np.array(1 / 16, np.float32), "zp": np.array(0, np.int8)}, float64=False,
    finite_differences=False, exact=_qdq_exact(1 / 16, -128, 127))
add("QuantizeLinear-DequantizeLinear-uint8-zero-point", ["QuantizeLinear", "DequantizeLinear"],
    [node("QuantizeLinear", ["x", "s", "zp"], "q"), node("DequantizeLinear", ["q", "s", "zp"])],
    [In("x", (3, 4), normal(6.0))],
    inits={"s": np.array(1 / 8, np.float32), "zp": np.array(100, np.uint8)}, float64=False,
    finite_differences=False, exact=_qdq_exact(1 / 8, 0, 255, 100))
