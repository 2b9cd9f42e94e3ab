"""The driver: walk the path x_l = x0 + α_l (x − x0), l = 0..m, in chunks through the fused
gradient model, and feed every reducer (one per CAM method) the same chunks as they arrive.

The engine knows no method: its caller hands it one factory per method, ``name -> factory``,
each building a reducer on the shared ``PathState``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import InputError
from .result import PathEnds
from .runtime import Runner


@dataclass
class PathState:
    """What the driver knows while it walks l = 0..m, channels first ([K, h, w]).

    ``prev_a``/``prev_g`` are A_{l−1}, G_{l−1} for the first l of the current chunk (None at
    l = 0): the trapezoid rule needs them across chunk boundaries. ``ys`` holds y_l for the
    path points walked so far; it is complete when the reducers' ``finish`` runs.
    """

    m: int
    a0: np.ndarray | None = None
    am: np.ndarray | None = None
    gm: np.ndarray | None = None
    prev_a: np.ndarray | None = None
    prev_g: np.ndarray | None = None
    ys: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def a_start(self) -> np.ndarray:
        """A_0; set before the first ``update`` (the first chunk holds l = 0)."""
        return _walked(self.a0, "A_0")

    @property
    def a_end(self) -> np.ndarray:
        """A_m; set before ``finish`` (and during the ``update`` of the chunk holding l = m)."""
        return _walked(self.am, "A_m")

    @property
    def g_end(self) -> np.ndarray:
        """G_m; set when A_m is."""
        return _walked(self.gm, "G_m")


def _walked(value: np.ndarray | None, name: str) -> np.ndarray:
    if value is None:  # a reducer read the state before the driver reached that point
        raise RuntimeError(f"{name} is read before the path walk reached it")
    return value


class Reducer(Protocol):
    """One method's view of the walk: every chunk once (``update``), then the raw map
    (``finish``), after which ``extra_values`` holds the method's extra scalar outputs."""

    extra_values: dict[str, float]

    def update(self, ls: np.ndarray, a: np.ndarray, g: np.ndarray) -> None: ...

    def finish(self) -> np.ndarray: ...


#: Builds one method's reducer on the walk's shared state.
ReducerFactory = Callable[[PathState], Reducer]


@dataclass
class PathResult(PathEnds):
    """Raw outcome of one path (one image, one target): per method its raw map and extras."""

    raw: dict[str, np.ndarray]
    extras: dict[str, dict[str, float]]
    scores_path: np.ndarray  # y_l, l = 0..m
    m: int
    timings: dict[str, float] = field(default_factory=dict)


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise InputError(f"{what} contains NaN or inf; check the image and the preprocessing")


def walk_path(runner: Runner, input_name: str, x: np.ndarray, x0: np.ndarray, target: int,
              n_classes: int, m: int, chunk: int, reducers: Mapping[str, ReducerFactory],
              channel_axis: int = 1,
              on_chunk: Callable[[int], None] | None = None) -> PathResult:
    """One pass over the m+1 path points serving every reducer in ``reducers``.

    ``x`` and ``x0`` are single inputs with a batch axis of 1. Memory grows with ``chunk``,
    never with ``m``: each chunk is built, run, reduced and dropped.
    """
    if m < 1:
        raise InputError(f"steps must be >= 1 (got {m})")
    state = PathState(m=m, ys=np.empty(m + 1))
    accs = {name: make(state) for name, make in reducers.items()}
    # x − x0 in float64: in float32 it rounds, and x_m = x0 + (x − x0) would miss x by an ulp.
    diff = x.astype(np.float64) - x0.astype(np.float64)
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
        state.ys[ls] = scores[:, target]
        if ls[0] == 0:
            state.a0 = a[0]
        if ls[-1] == m:
            state.am, state.gm = a[-1], g[-1]
        for acc in accs.values():
            acc.update(ls, a, g)
        state.prev_a, state.prev_g = a[-1], g[-1]
        t_reduce += time.perf_counter() - t1
        t_run += t1 - t0
        if on_chunk:
            on_chunk(len(ls))
    t2 = time.perf_counter()
    raw = {name: acc.finish() for name, acc in accs.items()}
    extras = {name: dict(acc.extra_values) for name, acc in accs.items()}
    t_reduce += time.perf_counter() - t2
    return PathResult(raw, extras, state.ys, m, {"run": t_run, "reduce": t_reduce})


def chunk_size(per_sample_bytes: int, m: int, budget_bytes: int) -> int:
    """Path points per session run under a memory budget (at least 1, at most m+1)."""
    return int(max(1, min(m + 1, budget_bytes // max(per_sample_bytes, 1))))
