"""Every VJP rule against central finite differences, on onnxruntime.

For each case (tests/vjp_cases.py) the fused gradient model gives ``grad`` = d f / d x for
f(x) = Σ target_weights · y. The reference is a fourth-order central difference of f, run
through the plain forward model, along random directions v (inner products, as autograd's
``check_vjp``) and along a few coordinate axes:

    <grad, v>  vs  (f(x-2hv) - 8 f(x-hv) + 8 f(x+hv) - f(x+2hv)) / 12h

Each case is built in float64, or in float32 when onnxruntime's CPU provider has no double
kernel for an op of the forward model (it raises NOT_IMPLEMENTED).

Tolerance: |<grad, v> - fd| <= RTOL · max(|fd|, s) + noise, where

* s = ||grad||·||v|| / sqrt(size) is the typical size of a projection of the gradient, so a
  coordinate where the gradient is ~0 is not held to a relative error of a tiny number;
* noise bounds the rounding in the stencil. Each y_i carries an error of a few ulps of |y_i|
  (up to sqrt(27) ~ 5 ulps for the 27-term sums of the convolutions here; call it 8); the
  errors are independent between elements and between the four points, and the stencil's
  weights (1, 8, 8, 1)/12 have L2 norm 0.95. So the noise has a standard deviation of about
  8 · eps · ||target_weights * y||_2 / h; we allow 4 of them:
  noise = 32 · eps · ||target_weights * y||_2 / h.
* The truncation error, h^4/30 · |d^5 f|, is ~3e-8 (float32, h = 2^-5) and ~1e-13 (float64,
  h = 2^-10) for the O(1) derivatives of these cases, and the gradient graph's own rounding
  is a few eps times its condition number: RTOL = 1e-4 (float32, ~800 eps) and 1e-7
  (float64) leave room for that without hiding a wrong rule.

The float32 step is as large as the kink margins allow, since the rounding noise falls as
1/h: inputs move by at most 2h = 1/16, samplers keep kinks (ReLU at 0, Clip bounds, integers
for Floor) >= 0.1 away, and DISTINCT values (max-like ops) are 1/4 > 4h apart, so no max
changes hands. Inputs and directions are dyadic (multiples of 2^-10 and 2^-8 with |v| <= 1,
h a power of two), so x ± k·h·v is exact even in float32.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from vjp_cases import CASES, Case

from ort_cam.errors import NoGradientRuleError
from ort_cam.grad import rules_nn
from ort_cam.grad.builder import Builder
from ort_cam.grad.heads import fused_model
from ort_cam.grad.table import VJP_RULES, RuleContractError, UnknownTypeError, VjpContext
from ort_cam.graph.load import load_model
from ort_cam.runtime import session_for

GRAD_DIR = Path(rules_nn.__file__).parent

STEP = {np.float32: 2.0**-5, np.float64: 2.0**-10}
RTOL = {np.float32: 1e-4, np.float64: 1e-7}
NOISE_ULPS = 32  # 4 standard deviations of 8 ulps (see above)
N_RANDOM, N_COORD = 3, 3


def _load(case: Case):
    """The case in float64, or in float32 when onnxruntime has no double kernel for an op of
    its forward model. A gradient graph that needs a kernel the forward does without is not
    excused: it fails when its session is built."""
    if case.float64:
        try:
            return np.float64, load_model(case.build(np.float64))
        except Exception as exc:
            # no double kernel, or a contrib op whose schema has no double type
            if "NOT_IMPLEMENTED" not in str(exc) and "Type 'tensor(double)'" not in str(exc):
                raise
    return np.float32, load_model(case.build(np.float32))


def build_case(case: Case):
    """dtype, loaded model, forward session, and per ``wrt`` input: (fused model, session)."""
    dtype, lm = _load(case)
    forward = session_for(lm.proto)
    grads = {}
    for wrt in case.wrt:
        fused = fused_model(lm, wrt, "output", require_spatial=False)
        grads[wrt] = (fused, session_for(fused))
    return dtype, lm, forward, grads


def _stencil(f, x, v, h):
    return (f(x - 2 * h * v) - 8 * f(x - h * v) + 8 * f(x + h * v) - f(x + 2 * h * v)) / (12 * h)


def _check_grad_ops(case: Case, lm, fused) -> None:
    """The ops the case says its gradient graph must (not) use."""
    fwd_ops = Counter(n.op_type for n in lm.proto.graph.node)
    grad_ops = Counter(n.op_type for n in fused.graph.node) - fwd_ops
    for op in case.grad_ops:
        assert grad_ops[op] > 0, f"gradient graph has no {op}: {dict(grad_ops)}"
    for op in case.no_grad_ops:
        assert grad_ops[op] == 0, f"gradient graph uses {op}: {dict(grad_ops)}"


def _directions(rng: np.random.Generator, x: np.ndarray, g64: np.ndarray) -> list:
    """(label, v): N_RANDOM dyadic random directions and N_COORD coordinate axes (the first
    where the gradient is largest)."""
    directions = []
    for _ in range(N_RANDOM):
        v = rng.standard_normal(x.shape)
        directions.append(("random", np.round(v / np.abs(v).max() * 256) / 256))
    coords = [int(np.argmax(np.abs(g64)))]
    coords += [int(i) for i in rng.choice(x.size, size=N_COORD - 1, replace=False)]
    for i in coords:
        e = np.zeros(x.size)
        e[i] = 1.0
        directions.append((f"coordinate {np.unravel_index(i, x.shape)}", e.reshape(x.shape)))
    return directions


def _check_along(f, wrt: str, x: np.ndarray, grad: np.ndarray, directions: list, tol: dict,
                 stats: dict) -> None:
    """<grad, v> against the finite-difference stencil of ``f`` for every direction v."""
    x64, g64 = x.astype(np.float64), grad.astype(np.float64)

    def f_along(point):
        value = point.astype(x.dtype)
        assert np.array_equal(value.astype(np.float64), point), "step not exact"
        return f(wrt, value)

    for label, v in directions:
        fd = _stencil(f_along, x64, v, tol["h"])
        got = float(np.sum(g64 * v))
        spread = np.linalg.norm(g64) * np.linalg.norm(v) / np.sqrt(x.size)
        scale = max(abs(fd), spread)
        err = abs(got - fd)
        bound = tol["rtol"] * scale + tol["noise"]
        # (a relative error means nothing where the derivative is below the rounding noise)
        stats["max_rel"] = max(stats["max_rel"], err / scale if scale > tol["noise"] else 0.0)
        stats["max_ratio"] = max(stats["max_ratio"], err / bound)
        assert err <= bound, (
            f"d/d{wrt} along {label}: rule gives {got:.9g}, finite differences "
            f"{fd:.9g} (|error| {err:.3g} > tol {bound:.3g}; {stats['dtype']})")


def check_case(case: Case) -> dict:
    """Run every check of ``case``; returns the dtype and the worst errors seen."""
    dtype, lm, forward, grads = build_case(case)
    rng = case.rng()
    feeds = case.feeds(rng, dtype)
    y0 = forward.run(None, feeds)[0]
    assert y0.ndim >= 1, "the score needs a batch axis"
    w = np.round(rng.standard_normal((y0.shape[0], y0[0].size)) * 256) / 256
    w = w.astype(y0.dtype)  # dyadic, exact in float32

    def f(name, value):
        y = forward.run(None, {**feeds, name: value})[0]
        return float(np.sum(w.astype(np.float64) * y.reshape(w.shape).astype(np.float64)))

    present = {n.op_type for n in lm.proto.graph.node}
    assert set(case.ops) <= present, f"case claims ops it does not contain: {case.ops}"

    stats = {"dtype": np.dtype(dtype).name, "max_rel": 0.0, "max_ratio": 0.0}
    for wrt, (fused, sess) in grads.items():
        _check_grad_ops(case, lm, fused)
        x = feeds[wrt]
        _, scores, grad = sess.run(None, {**feeds, "target_weights": w})
        np.testing.assert_allclose(scores, y0.reshape(w.shape), rtol=1e-5, atol=1e-6)
        assert grad.shape == x.shape, f"grad has shape {grad.shape}, {wrt} {x.shape}"
        assert grad.dtype == x.dtype, f"grad is {grad.dtype}, {wrt} {x.dtype}"
        assert np.all(np.isfinite(grad))
        if case.exact is not None:
            np.testing.assert_array_equal(grad, case.exact(feeds, w))
        if not case.finite_differences:
            assert case.exact is not None, "a case without finite differences needs exact"
            continue

        eps = max(np.finfo(x.dtype).eps, np.finfo(y0.dtype).eps)  # the coarser one counts
        key = np.float32 if eps > 1e-10 else np.float64
        stats["dtype"] = np.dtype(key).name
        wy = np.linalg.norm(w.astype(np.float64) * y0.reshape(w.shape))
        tol = {"h": STEP[key], "rtol": RTOL[key], "noise": NOISE_ULPS * eps * wy / STEP[key]}
        directions = _directions(rng, x, grad.astype(np.float64))
        _check_along(f, wrt, x, grad, directions, tol, stats)
    return stats


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                  if c.xfail else [pytest.mark.skip(reason=c.skip)] if c.skip else [])
     for c in CASES],
)
def test_vjp_rule_matches_finite_differences(case: Case, monkeypatch):
    for name, value in case.patch.items():
        assert hasattr(rules_nn, name)
        monkeypatch.setattr(rules_nn, name, value)
    check_case(case)


#: Ops whose onnxruntime CPU kernels have no double version (LSTM and GRU refuse it at run
#: time): their cases run in float32 above, and again here in float64 on onnx's reference
#: runtime (onnx.reference), weights and inputs the float32 case's, so that the rules are also
#: held to float64's tolerance.
NO_DOUBLE_KERNEL = ("LSTM", "GRU")


def _as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every float32 initializer, constant, value type and Cast made float64
    (the values unchanged: float32 values are exact in float64)."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    f32, f64 = TensorProto.FLOAT, TensorProto.DOUBLE

    def widen(t: TensorProto) -> None:
        if t.data_type == f32:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64),
                                               t.name))

    for init in m.graph.initializer:
        widen(init)
    for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
        if vi.type.tensor_type.elem_type == f32:
            vi.type.tensor_type.elem_type = f64
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                widen(a.t)
            if a.name == "to" and a.i == f32:
                a.i = f64
    return m


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES
                                  if set(c.ops) & set(NO_DOUBLE_KERNEL)])
def test_rules_without_double_kernels_in_float64_on_the_onnx_reference_runtime(case: Case):
    model = case.build(np.float32)
    lm = load_model(model)
    forward = ReferenceEvaluator(_as_float64(model))
    rng = case.rng()
    feeds = case.feeds(rng, np.float64)
    y0 = forward.run(None, feeds)[0]
    w = np.round(rng.standard_normal((y0.shape[0], y0[0].size)) * 256) / 256

    def f(name, value):
        return float(np.sum(w * forward.run(None, {**feeds, name: value})[0].reshape(w.shape)))

    stats = {"dtype": "float64 (onnx.reference)", "max_rel": 0.0, "max_ratio": 0.0}
    eps = np.finfo(np.float64).eps
    tol = {"h": STEP[np.float64], "rtol": RTOL[np.float64],
           "noise": NOISE_ULPS * eps * np.linalg.norm(w * y0.reshape(w.shape)) / STEP[np.float64]}
    for wrt in case.wrt:
        fused = _as_float64(fused_model(lm, wrt, "logit", require_spatial=False))
        _, scores, grad = ReferenceEvaluator(fused).run(None, {**feeds, "target_weights": w})
        np.testing.assert_allclose(scores, y0.reshape(w.shape), rtol=1e-12)
        assert grad.dtype == np.float64 and grad.shape == feeds[wrt].shape
        _check_along(f, wrt, feeds[wrt], grad, _directions(rng, feeds[wrt], grad), tol, stats)


def test_every_rule_has_a_case():
    covered = {op for c in CASES for op in c.ops}
    missing = sorted(set(VJP_RULES) - covered)
    assert not missing, f"VJP rules without a finite-difference case: {missing}"
    unknown = sorted(covered - set(VJP_RULES))
    assert not unknown, f"cases name ops that have no rule: {unknown}"


def test_case_ids_are_unique():
    ids = Counter(c.id for c in CASES)
    assert not [i for i, n in ids.items() if n > 1]


# The rule contract -------------------------------------------------------------------------
def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def _fused(case_id: str, wrt: str = "x"):
    return fused_model(_load(_case(case_id))[1], wrt, "output", require_spatial=False)


@pytest.mark.parametrize("case_id, rule, got, want", [
    ("Clip-min-on-path", lambda ctx, node, gys: [gys[0]], 1, 3),  # the old Clip rule
    ("Conv-k3-pad1", lambda ctx, node, gys: [gys[0], None, None], 3, 2),
])
def test_rule_with_wrong_number_of_gradients_raises(monkeypatch, case_id, rule, got, want):
    op = _case(case_id).ops[0]
    monkeypatch.setitem(VJP_RULES, op, rule)
    with pytest.raises(RuleContractError,
                       match=rf"VJP rule for {op} returned {got} gradient\(s\) for the {want} "
                             r"input\(s\) of node '[^']*'"):
        _fused(case_id)


def test_rule_gradient_of_wrong_shape_or_dtype_raises(monkeypatch):
    def summed(ctx, node, gys):
        return [ctx.b.reduce("ReduceSum", gys[0], [1], keepdims=True)]

    def as_float32(ctx, node, gys):
        return [ctx.b.op("Cast", gys[0], to=TensorProto.FLOAT)]

    monkeypatch.setitem(VJP_RULES, "Exp", summed)
    with pytest.raises(RuleContractError, match=r"gradient of shape \[2, 1, 4\]; the input "
                                                r"has \[2, 3, 4\]"):
        _fused("Exp")
    monkeypatch.setitem(VJP_RULES, "Exp", as_float32)
    with pytest.raises(RuleContractError, match="a float32 gradient; the input is float64"):
        _fused("Exp")


def test_a_tensor_without_dtype_is_an_error_naming_it():
    ctx = VjpContext(Builder(gs.Graph(opset=17)))
    with pytest.raises(UnknownTypeError, match="'mystery' has no known dtype"):
        ctx.dtype(gs.Variable("mystery"))


def _calls_and_mutations(tree: ast.AST) -> list[str]:
    """Private attributes used, and changes to a node's inputs/outputs or to a graph."""
    found = []
    for n in ast.walk(tree):
        where = f"line {getattr(n, 'lineno', '?')}"
        if (isinstance(n, ast.Attribute) and n.attr.startswith("_")
                and not n.attr.startswith("__")):
            found.append(f"{where}: .{n.attr}")
        targets = n.targets if isinstance(n, ast.Assign) else []
        for t in targets:
            base = t.value if isinstance(t, ast.Subscript) else t
            if isinstance(base, ast.Attribute) and base.attr in ("inputs", "outputs", "nodes"):
                found.append(f"{where}: assigns .{base.attr}")
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("append", "insert", "extend", "pop", "remove")
                and isinstance(n.func.value, ast.Attribute)
                and n.func.value.attr in ("inputs", "outputs", "nodes")):
            found.append(f"{where}: .{n.func.value.attr}.{n.func.attr}()")
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in GRAD_DIR.glob("rules_*.py")))
def test_rules_use_only_the_public_builder(module):
    """No rule calls a private builder method, changes the forward graph by hand (the builder's
    add_output does that), or opens an onnxruntime session (runtime.session_for does)."""
    source = (GRAD_DIR / module).read_text()
    tree = ast.parse(source)
    assert not _calls_and_mutations(tree), _calls_and_mutations(tree)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] == "onnxruntime"}
    assert "InferenceSession" not in source and "session_for" not in source


# AveragePool's divisor from geometry, against onnxruntime ----------------------------------
def _ort_average_pool_of_ones(xs, attrs: dict, opset: int) -> np.ndarray:
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, *xs])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], "ap",
                              [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = session_for(model)
    return sess.run(None, {"x": np.ones([1, 1, *xs], np.float32)})[0][0, 0]


def _random_pool_geometry(rng: np.random.Generator) -> tuple[list[int], dict, int]:
    n = int(rng.integers(1, 4))
    opset = int(rng.choice([17, 19]))
    k = [int(v) for v in rng.integers(1, 4, n)]
    d = [int(v) for v in rng.integers(1, 3, n)] if opset >= 19 else [1] * n
    attrs: dict[str, Any] = {"kernel_shape": k, "strides": [int(v) for v in rng.integers(1, 4, n)],
             "ceil_mode": int(rng.integers(0, 2)), "count_include_pad": int(rng.integers(0, 2))}
    if opset >= 19:
        attrs["dilations"] = d
    auto = str(rng.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, k[i % n])) for i in range(2 * n)]
    else:
        attrs["auto_pad"] = auto
    extent = [(k[i] - 1) * d[i] + 1 for i in range(n)]
    if auto.startswith("SAME"):  # onnxruntime refuses the negative pads of a stride > extent
        attrs["strides"] = [min(v, e) for v, e in zip(attrs["strides"], extent, strict=True)]
    return [e + int(rng.integers(0, 5)) for e in extent], attrs, opset


def test_average_pool_divisors_match_onnxruntime():
    """ORT pools ones to |taps inside the input| / divisor, for 300 random geometries (1-3
    spatial axes, pads, auto_pad, ceil_mode, dilations, both count_include_pad rules)."""
    rng = np.random.default_rng(2024)
    for _ in range(300):
        xs, attrs, opset = _random_pool_geometry(rng)
        pooled = _ort_average_pool_of_ones(xs, attrs, opset)
        n, k = len(xs), attrs["kernel_shape"]
        s, d = attrs["strides"], attrs.get("dilations", [1] * n)
        pb, pe = rules_nn.window_pads(gs.Node("AveragePool", attrs=attrs), xs, pooled.shape,
                                      k, s, d)
        win = rules_nn.Window(list(xs), list(pooled.shape), k, s, d, pb, pe)
        divisors = rules_nn.average_pool_divisors(win, bool(attrs["count_include_pad"]))
        inside = np.ones(())
        for i in range(n):
            taps = (np.arange(pooled.shape[i]) * s[i] - pb[i])[:, None] + np.arange(k[i]) * d[i]
            inside = np.multiply.outer(inside, ((taps >= 0) & (taps < xs[i])).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.where(divisors > 0, np.float32(inside) / np.float32(divisors), 0)
        assert np.array_equal(pooled, want.astype(np.float32)), (
            f"x {xs}, {attrs}, opset {opset}: onnxruntime {pooled.tolist()}, "
            f"divisors {divisors.tolist()}")


# The typed builder -------------------------------------------------------------------------
def _emit_every_kind(b: Builder, x: gs.Tensor) -> dict[str, gs.Tensor]:
    """One tensor per op family the rules and heads emit (x is [2, 3, 4, 5] float32)."""
    f32 = lambda *shape: b.const(np.ones(shape, np.float32))  # noqa: E731
    t: dict[str, gs.Tensor] = {"shape": b.op("Shape", x), "greater": b.op("Greater", x, f32())}
    t |= {
        "add-bcast": b.op("Add", x, f32(4, 1)), "sum-bcast": b.op("Sum", x, f32(5), x),
        "where": b.op("Where", t["greater"], x, f32()), "not": b.op("Not", t["greater"]),
        "cast": b.op("Cast", x, to=TensorProto.DOUBLE), "size": b.op("Size", x),
        "exp": b.op("Exp", x), "softmax": b.op("Softmax", x, axis=1),
        "reshape-const": b.op("Reshape", x, b.ints([0, -1, 5])),
        "reduce-keep": b.reduce("ReduceSum", x, [1, 3], keepdims=True),
        "reduce-drop": b.reduce("ReduceSum", x, [-1], keepdims=False),
        "reduce-mean-attr": b.reduce("ReduceMean", x, [2], keepdims=False),
        "matmul": b.op("MatMul", x, f32(5, 6)), "matmul-vec": b.op("MatMul", x, f32(5)),
        "matmul-vec-left": b.op("MatMul", f32(4), x),
        "transpose": b.op("Transpose", x, perm=[0, 2, 3, 1]), "transpose-default": b.op(
            "Transpose", x), "unsqueeze": b.unsqueeze(x, [0, -1]),
        "expand": b.op("Expand", f32(4, 1), t["shape"]), "zeros": b.zeros_like(x, np.float64),
        "flatten": b.op("Flatten", x, axis=2), "concat": b.op("Concat", x, x, axis=1),
        "slice": b.op("Slice", x, b.ints([1, -1]), b.ints([100, 0]), b.ints([2, 3]),
                      b.ints([1, -2])),
        "pad": b.op("Pad", x, b.ints([0, 0, 1, 2, 0, 1, 0, 3]), f32()),
        "gemm": b.op("Gemm", b.op("Flatten", x, axis=1), f32(7, 60), transB=1),
        "conv": b.op("Conv", x, f32(2, 3, 3, 2), pads=[1, 0, 2, 1], strides=[2, 1],
                     dilations=[1, 2], kernel_shape=[3, 2]),
        "conv-transpose": b.op("ConvTranspose", x, f32(3, 2, 3, 2), pads=[1, 0, 0, 1],
                               strides=[2, 3], output_padding=[1, 0], kernel_shape=[3, 2]),
    }
    t["reshape-by-shape"] = b.op("Reshape", t["reshape-const"], t["shape"])
    return t


def test_builder_types_match_onnxruntime():
    """Every tensor the builder emits carries the dtype and shape onnxruntime computes."""
    graph = gs.Graph(opset=17)
    b = Builder(graph)
    x = b.declare(gs.Variable("x", dtype=np.float32, shape=[2, 3, 4, 5]), np.float32,
                  (2, 3, 4, 5))
    graph.inputs = [x]
    emitted = _emit_every_kind(b, x)
    graph.outputs = list(emitted.values())
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = 8
    got = session_for(model).run(None, {"x": np.ones((2, 3, 4, 5), np.float32)})
    for (name, t), value in zip(emitted.items(), got, strict=True):
        assert b.dtype(t) == value.dtype, f"{name}: builder says {b.dtype(t)}, ORT {value.dtype}"
        assert b.shape(t) == value.shape, f"{name}: builder says {b.shape(t)}, ORT {value.shape}"


# Refusals of the resampling rules ----------------------------------------------------------
@pytest.mark.parametrize("attrs, says", [
    ({"mode": "bicubic"}, "GridSample with mode 'bicubic', padding_mode 'zeros'"),
    ({"padding_mode": "reflection"}, "GridSample with mode 'bilinear', padding_mode "
                                     "'reflection'"),
])
def test_grid_sample_refuses_other_modes_in_one_line_naming_the_node(attrs, says):
    graph = helper.make_graph(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], name="the_sampler", **attrs)],
        "gs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3, 3]),
               helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", 2, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    with pytest.raises(NoGradientRuleError) as info:
        fused_model(load_model(model), "x", "logit", require_spatial=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"no gradient rule for op 'GridSample' (node 'the_sampler'): {says}")
    assert "(the rule covers modes bilinear/linear and nearest, padding zeros and border" \
        in message
