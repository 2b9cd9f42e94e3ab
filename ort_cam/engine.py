"""The driver: walk the path x_l = x0 + α_l (x − x0), l = 0..m, in chunks through the fused
gradient model, and feed every method the same chunks as they arrive."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .methods import METHODS, MethodOptions, PathState
from .result import PathEnds
from .runtime import Runner


@dataclass
class PathResult(PathEnds):
    """Raw outcome of one path (one image, one target)."""

    raw: dict[str, np.ndarray]
    scores_path: np.ndarray  # y_l, l = 0..m
    ig_sum: float | None
    m: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def completeness_gap(self) -> float | None:
        """|Σ IG − (y_m − y_0)| / max(|y_m − y_0|, tiny), reported with every RSI result."""
        if self.ig_sum is None:
            return None
        delta = self.ym - self.y0
        return abs(self.ig_sum - delta) / max(abs(delta), np.finfo(np.float64).tiny)


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise InputError(f"{what} contains NaN or inf; check the image and the preprocessing")


def walk_path(runner: Runner, input_name: str, x: np.ndarray, x0: np.ndarray, target: int,
              n_classes: int, m: int, chunk: int, methods: Sequence[str],
              options: MethodOptions, channel_axis: int = 1,
              on_chunk: Callable[[int], None] | None = None) -> PathResult:
    """One pass over the m+1 path points serving every method in ``methods``.

    ``x`` and ``x0`` are single inputs with a batch axis of 1. Memory grows with ``chunk``,
    never with ``m``: each chunk is built, run, reduced and dropped.
    """
    if m < 1:
        raise InputError(f"steps must be >= 1 (got {m})")
    state = PathState(m=m)
    accs = [METHODS[name](state, options) for name in methods]
    # x − x0 in float64: in float32 it rounds, and x_m = x0 + (x − x0) would miss x by an ulp.
    diff = x.astype(np.float64) - x0.astype(np.float64)
    ys = np.empty(m + 1)
    t_run = t_reduce = 0.0
    for start in range(0, m + 1, chunk):
        ls = np.arange(start, min(start + chunk, m + 1))
        alphas = (ls / m).reshape((-1,) + (1,) * (x.ndim - 1))
        xs = (x0.astype(np.float64) + alphas * diff).astype(x.dtype)
        w = np.zeros((len(ls), n_classes), dtype=np.float32)
        w[:, target] = 1.0
        t0 = time.perf_counter()
        a, scores, g = runner.run({input_name: xs, "target_weights": w})
        t1 = time.perf_counter()
        if channel_axis == 3:
            a, g = a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        a, g = a.astype(np.float64), g.astype(np.float64)
        check_finite(g, "the gradient")
        ys[ls] = scores[:, target]
        if ls[0] == 0:
            state.a0 = a[0]
        if ls[-1] == m:
            state.am, state.gm = a[-1], g[-1]
        for acc in accs:
            acc.update(ls, a, g)
        state.prev_a, state.prev_g = a[-1], g[-1]
        t_reduce += time.perf_counter() - t1
        t_run += t1 - t0
        if on_chunk:
            on_chunk(len(ls))
    t2 = time.perf_counter()
    raw = {acc.name: acc.finish() for acc in accs}
    ig_sum = next((acc.extras["ig_sum"] for acc in accs if "ig_sum" in acc.extras), None)
    t_reduce += time.perf_counter() - t2
    return PathResult(raw, ys, ig_sum, m, {"run": t_run, "reduce": t_reduce})


def chunk_size(per_sample_bytes: int, m: int, budget_bytes: int) -> int:
    """Path points per session run under a memory budget (at least 1, at most m+1)."""
    return int(max(1, min(m + 1, budget_bytes // max(per_sample_bytes, 1))))
