"""The tests' one rule for float tolerances: a margin over the noise each check measures.

float32 results carry rounding, and the rounding changes from one machine to the next: the
CPU's kernels (onnxruntime and torch pick theirs from the CPU's instruction set), the number
of threads and the order of every reduction (tools/perturb_suite.py changes each of them on
one machine). A noise floor measured on this machine (a float32 twin of a float64 reference,
run here) is therefore only an estimate of the noise on another, and a tolerance that equals it
fails there: the suite failed twice on a new CPU so, once with a fixed float32 tolerance, once
with a measured floor used with no margin (xgradcam 1.08e-6 against a floor of 1.05e-6 on an
Intel Xeon). So every tolerance is

    tolerance(floor) = FACTOR * floor + ABS

- FACTOR = 10: two float32 computations of one function (other kernels, other summation
  orders) err by amounts of one size, not equal ones; the largest error / floor measured over
  the suite's floor-based checks is 4.6 (tests/test_methods_torch.py), so 10 is twice that.
- ABS = 1e-6, relative to the quantity's largest magnitude: ~8 float32 ulps, the least a
  float32 result can promise, for a floor that float32 happens to hit almost exactly.

A cap (below the error of the bugs a check must catch) bounds it where one is given; the
planted-bug checks (tests/test_methods_torch.py) show each tolerance can still fail.

Checks against values worked out by hand or against a float64 computation have no floor to
measure: their fixed tolerances are ``ulps(n)`` for the float32 rounding of a few operations,
with n at least 10 times the largest error measured (under every perturbation of
tools/perturb_suite.py), the measurement in a comment beside each.
"""

from __future__ import annotations

import math

import numpy as np
from perturbation import batch_invariant

FACTOR = 10.0
ABS = 1e-6
#: One float32 ulp at 1.0 (2⁻²³): the least floor a measured float32 error is given.
F32 = 2.0**-23
#: Two onnxruntime runs of one float32 model on the same inputs in other batches (packed paths,
#: the auto schedule's reused points, an audit's batches against direct calls): bit for bit
#: under onnxruntime's full graph optimisation on this CPU, but not under its basic level with
#: two threads, which sums a batch item in an order that depends on the batch (measured with
#: tools/perturb_suite.py's ort-opt=basic,ort-threads=2: up to 7.2e-7 apart, a ROAD score, ~6
#: float32 ulps at 1), nor surely on CPUs where onnxruntime picks other kernels. Such checks
#: allow REBATCHED, relative to the quantity's largest magnitude: 14x the largest seen.
REBATCHED = 1e-5


def tolerance(floor: float, cap: float = math.inf) -> float:
    """The tolerance for an error whose float32 noise floor, measured here, is ``floor``:
    ``min(cap, FACTOR * floor + ABS)``."""
    return min(cap, FACTOR * floor + ABS)


def ulps(n: float) -> float:
    """``n`` float32 ulps relative to 1.0 (a relative tolerance for a float32 result)."""
    return n * F32


def rebatched() -> float:
    """The relative tolerance of a check across batchings (packed paths against one at a
    time, an audit's batches against direct calls): 0, bit for bit, where this run's sessions
    are batch-invariant (``perturbation.batch_invariant``: the default run, so that such a
    check still sees one ulp), else REBATCHED."""
    return 0.0 if batch_invariant() else REBATCHED


def assert_rebatched(got, want, err_msg: str = "") -> None:
    """``got`` equals ``want`` (arrays) within ``rebatched()`` of ``want``'s largest
    magnitude: bit for bit in the default run."""
    got, want = np.asarray(got), np.asarray(want)
    if rebatched() == 0.0:
        np.testing.assert_array_equal(got, want, err_msg=err_msg)
    else:
        np.testing.assert_allclose(got, want, rtol=0, err_msg=err_msg,
                                   atol=rebatched() * float(np.abs(want).max(initial=0.0)))


def assert_same_records(got, want, path: str = "", tol: float | None = None) -> None:
    """Two audits' records (nested dicts and lists) equal, their floats within ``tol``
    (default ``rebatched()``: bit for bit in the default run) of their magnitude (at least 1:
    probabilities, metrics in [0, 1])."""
    tol = rebatched() if tol is None else tol
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for k in want:
            assert_same_records(got[k], want[k], f"{path}.{k}", tol)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_records(a, b, f"{path}[{i}]", tol)
    elif isinstance(want, float) and isinstance(got, float) and tol:
        assert abs(got - want) <= tol * max(1.0, abs(want)), (path, got, want)
    else:
        assert got == want, (path, got, want)
