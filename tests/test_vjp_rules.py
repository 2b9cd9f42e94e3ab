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

from collections import Counter

import numpy as np
import pytest
from vjp_cases import CASES, Case

from ort_cam.grad import rules_nn
from ort_cam.grad.heads import fused_model
from ort_cam.grad.table import VJP_RULES
from ort_cam.graph.load import load_model
from ort_cam.runtime import session_for

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
            if "NOT_IMPLEMENTED" not in str(exc):
                raise
    return np.float32, load_model(case.build(np.float32))


def build_case(case: Case):
    """dtype, loaded model, forward session, and per ``wrt`` input: (fused model, session)."""
    dtype, lm = _load(case)
    forward = session_for(lm.proto)
    grads = {}
    for wrt in case.wrt:
        fused = fused_model(lm, wrt, "logit", require_spatial=False)
        grads[wrt] = (fused, session_for(fused))
    return dtype, lm, forward, grads


def _stencil(f, x, v, h):
    return (f(x - 2 * h * v) - 8 * f(x - h * v) + 8 * f(x + h * v) - f(x + 2 * h * v)) / (12 * h)


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
        fwd_ops = Counter(n.op_type for n in lm.proto.graph.node)
        grad_ops = Counter(n.op_type for n in fused.graph.node) - fwd_ops
        for op in case.grad_ops:
            assert grad_ops[op] > 0, f"gradient graph has no {op}: {dict(grad_ops)}"
        for op in case.no_grad_ops:
            assert grad_ops[op] == 0, f"gradient graph uses {op}: {dict(grad_ops)}"

        x = feeds[wrt]
        _, scores, grad = sess.run(None, {**feeds, "target_weights": w})
        np.testing.assert_allclose(scores, y0.reshape(w.shape), rtol=1e-5, atol=1e-6)
        assert grad.shape == x.shape, f"grad has shape {grad.shape}, {wrt} {x.shape}"
        assert grad.dtype == x.dtype, f"grad is {grad.dtype}, {wrt} {x.dtype}"
        assert np.all(np.isfinite(grad))
        if case.exact is not None:
            np.testing.assert_array_equal(grad, case.exact(feeds, w))

        eps = max(np.finfo(x.dtype).eps, np.finfo(y0.dtype).eps)  # the coarser one counts
        stats["dtype"] = "float32" if eps > 1e-10 else "float64"
        h = STEP[np.float32] if eps > 1e-10 else STEP[np.float64]
        rtol = RTOL[np.float32] if eps > 1e-10 else RTOL[np.float64]
        wy = np.linalg.norm(w.astype(np.float64) * y0.reshape(w.shape))
        noise = NOISE_ULPS * eps * wy / h

        x64, g64 = x.astype(np.float64), grad.astype(np.float64)
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

        for label, v in directions:

            def f_along(point, name=wrt, dtype=x.dtype):
                value = point.astype(dtype)
                assert np.array_equal(value.astype(np.float64), point), "step not exact"
                return f(name, value)

            fd = _stencil(f_along, x64, v, h)
            got = float(np.sum(g64 * v))
            spread = np.linalg.norm(g64) * np.linalg.norm(v) / np.sqrt(x.size)
            scale = max(abs(fd), spread)
            err = abs(got - fd)
            tol = rtol * scale + noise
            stats["max_rel"] = max(stats["max_rel"], err / scale if scale else 0.0)
            stats["max_ratio"] = max(stats["max_ratio"], err / tol)
            assert err <= tol, (
                f"d/d{wrt} along {label}: rule gives {got:.9g}, finite differences "
                f"{fd:.9g} (|error| {err:.3g} > tol {tol:.3g}; {stats['dtype']})")
    return stats


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                  if c.xfail else []) for c in CASES],
)
def test_vjp_rule_matches_finite_differences(case: Case, monkeypatch):
    for name, value in case.patch.items():
        assert hasattr(rules_nn, name)
        monkeypatch.setattr(rules_nn, name, value)
    check_case(case)


def test_every_rule_has_a_case():
    covered = {op for c in CASES for op in c.ops}
    missing = sorted(set(VJP_RULES) - covered)
    assert not missing, f"VJP rules without a finite-difference case: {missing}"
    unknown = sorted(covered - set(VJP_RULES))
    assert not unknown, f"cases name ops that have no rule: {unknown}"


def test_case_ids_are_unique():
    ids = Counter(c.id for c in CASES)
    assert not [i for i, n in ids.items() if n > 1]
