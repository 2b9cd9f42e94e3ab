"""The driver: walk the path x_l = x0 + α_l (x − x0), l = 0..m, in chunks through the fused
gradient model, and feed every reducer (one per CAM method) the same chunks as they arrive.

The engine knows no method: its caller hands it one factory per method, ``name -> factory``,
each building a reducer on the shared ``PathState``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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


@dataclass
class Points:
    """Model outputs at some path points as the session returned them (batch first, the
    model's layout and dtype): the layer ``a``, the target's score ``y`` and the gradient
    ``g`` of that score with respect to the layer."""

    a: np.ndarray
    y: np.ndarray
    g: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray | slice) -> Points:
        return Points(self.a[index], self.y[index], self.g[index])

    @staticmethod
    def concat(parts: Sequence[Points]) -> Points:
        if len(parts) == 1:
            return parts[0]
        return Points(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("a", "y", "g")))


def one_hot(n: int, n_classes: int, target: int | None) -> np.ndarray:
    """``target_weights`` for ``n`` rows: one-hot at ``target``, or zeros (None), which the
    fused model reads as "the top-1 class of each row"."""
    w = np.zeros((n, n_classes), dtype=np.float32)
    if target is not None:
        w[:, target] = 1.0
    return w


def path_inputs(x: np.ndarray, x0: np.ndarray, ls: np.ndarray, m: int) -> np.ndarray:
    """x_l = x0 + (l/m)(x − x0) for the path indices ``ls``, in x's dtype."""
    # x − x0 in float64: in float32 it rounds, and x_m = x0 + (x − x0) would miss x by an ulp.
    # l/m is exact for l/m = 2l/2m (both are the rounding of one real), so a point of the m
    # path and the same point of the 2m path are the same input.
    diff = x.astype(np.float64) - x0.astype(np.float64)
    alphas = (ls / m).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x0.astype(np.float64) + alphas * diff).astype(x.dtype)


def run_points(runner: Runner, input_name: str, xs: np.ndarray, weights: np.ndarray,
               targets: np.ndarray) -> Points:
    """One session run of the inputs ``xs`` with ``weights``; ``targets[i]`` is row i's class."""
    a, scores, g = runner.run({input_name: xs, "target_weights": weights})
    return Points(a, scores[np.arange(len(xs)), targets], g)


class Feeder:
    """The reducing half of a walk: hands consecutive chunks of path points, in order, to
    every reducer through the shared ``PathState``. The same chunks give the same maps
    whichever session runs (or stored points) they came from."""

    def __init__(self, m: int, reducers: Mapping[str, ReducerFactory], channel_axis: int = 1):
        self.state = PathState(m=m, ys=np.empty(m + 1))
        self.accs = {name: make(self.state) for name, make in reducers.items()}
        self.channel_axis = channel_axis
        self.seconds = 0.0

    def feed(self, ls: np.ndarray, points: Points) -> None:
        t0 = time.perf_counter()
        st, a, g = self.state, points.a, points.g
        if self.channel_axis == 3:
            a, g = a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        a, g = a.astype(np.float64), g.astype(np.float64)
        check_finite(g, "the gradient")
        st.ys[ls] = points.y
        if ls[0] == 0:
            st.a0 = a[0]
        if ls[-1] == st.m:
            st.am, st.gm = a[-1], g[-1]
        for acc in self.accs.values():
            acc.update(ls, a, g)
        st.prev_a, st.prev_g = a[-1], g[-1]
        self.seconds += time.perf_counter() - t0

    def finish(self, run_seconds: float = 0.0) -> PathResult:
        t0 = time.perf_counter()
        raw = {name: acc.finish() for name, acc in self.accs.items()}
        extras = {name: dict(acc.extra_values) for name, acc in self.accs.items()}
        reduce = self.seconds + time.perf_counter() - t0
        return PathResult(raw, extras, self.state.ys, self.state.m,
                          {"run": run_seconds, "reduce": reduce})


def chunks(m: int, chunk: int) -> list[np.ndarray]:
    """The path indices 0..m in consecutive runs of ``chunk`` (the last may be shorter)."""
    return [np.arange(s, min(s + chunk, m + 1)) for s in range(0, m + 1, chunk)]


def walk_path(runner: Runner, input_name: str, x: np.ndarray, x0: np.ndarray, target: int,
              n_classes: int, m: int, chunk: int, reducers: Mapping[str, ReducerFactory],
              channel_axis: int = 1, on_chunk: Callable[[int], None] | None = None,
              end: Points | None = None) -> PathResult:
    """One pass over the m+1 path points serving every reducer in ``reducers``.

    ``x`` and ``x0`` are single inputs with a batch axis of 1. Memory grows with ``chunk``,
    never with ``m``: each chunk is built, run, reduced and dropped. ``end``: the point
    l = m (x itself) when it was already run for ``target``; it is not run again.
    """
    if m < 1:
        raise InputError(f"steps must be >= 1 (got {m})")
    feeder = Feeder(m, reducers, channel_axis)
    t_run = 0.0
    for ls in chunks(m, chunk):
        todo = ls if end is None else ls[ls < m]
        parts = []
        if len(todo):
            t0 = time.perf_counter()
            parts.append(run_points(runner, input_name, path_inputs(x, x0, todo, m),
                                    one_hot(len(todo), n_classes, target),
                                    np.full(len(todo), target)))
            t_run += time.perf_counter() - t0
        if len(todo) < len(ls):
            assert end is not None
            parts.append(end)
        feeder.feed(ls, Points.concat(parts))
        if on_chunk:
            on_chunk(len(ls))
    return feeder.finish(t_run)


@dataclass
class PathJob:
    """One path to walk: inputs ``x``, ``x0`` (batch 1), the class ``target``, and ``end``,
    the point l = m when it was already run for that target."""

    x: np.ndarray
    x0: np.ndarray
    target: int
    end: Points | None = None

    def todo(self, m: int) -> np.ndarray:
        """The path indices still to run."""
        return np.arange(m if self.end is not None else m + 1)


def walk_packed(runner: Runner, input_name: str, jobs: Sequence[PathJob], n_classes: int,
                m: int, cap: int, reducers: Callable[[], Mapping[str, ReducerFactory]],
                channel_axis: int = 1,
                on_path: Callable[[int], None] | None = None) -> list[PathResult]:
    """Several paths whose m+1 points fit in one run (``cap`` points), packed whole into as
    few session runs as fit ``cap``; each path is reduced as one chunk, as ``walk_path``
    with a chunk of m+1 reduces it. ``reducers()`` builds a fresh set per path."""
    if m < 1:
        raise InputError(f"steps must be >= 1 (got {m})")
    if m + 1 > cap:
        raise ValueError(f"a path of {m + 1} points does not fit runs of {cap}")
    results: list[PathResult | None] = [None] * len(jobs)
    group: list[int] = []
    for i in range(len(jobs) + 1):
        if i < len(jobs) and sum(len(jobs[j].todo(m)) for j in group + [i]) <= cap:
            group.append(i)
            continue
        if group:
            for j, res in zip(group, _run_group(runner, input_name, [jobs[j] for j in group],
                                                n_classes, m, reducers, channel_axis)):
                results[j] = res
                if on_path:
                    on_path(m + 1)
        group = [i]
    return [r for r in results if r is not None]


def _run_group(runner: Runner, input_name: str, jobs: Sequence[PathJob], n_classes: int, m: int,
               reducers: Callable[[], Mapping[str, ReducerFactory]],
               channel_axis: int) -> list[PathResult]:
    todos = [job.todo(m) for job in jobs]
    xs = np.concatenate([path_inputs(j.x, j.x0, ls, m) for j, ls in zip(jobs, todos)])
    targets = np.concatenate([np.full(len(ls), j.target) for j, ls in zip(jobs, todos)])
    weights = np.zeros((len(xs), n_classes), dtype=np.float32)
    weights[np.arange(len(xs)), targets] = 1.0
    t0 = time.perf_counter()
    points = run_points(runner, input_name, xs, weights, targets)
    share = (time.perf_counter() - t0) / len(xs)
    out, start = [], 0
    for job, ls in zip(jobs, todos):
        mine = points.take(slice(start, start + len(ls)))
        start += len(ls)
        feeder = Feeder(m, reducers(), channel_axis)
        ends = [job.end] if job.end is not None else []
        feeder.feed(np.arange(m + 1), Points.concat([mine, *ends]))
        out.append(feeder.finish(share * len(ls)))
    return out


class PointStore:
    """The points of a path refined by doubling, each run once: the grid of ``m0`` steps, then
    per doubling the odd points of the new grid (its even points are the previous grid's, as
    x_{2l} on the 2m path is x_l on the m path). Points are kept as the session gave them."""

    def __init__(self, m0: int):
        self.m0 = m0
        self.rounds: list[Points] = []

    @property
    def m(self) -> int:
        """The finest grid stored."""
        return self.m0 << max(len(self.rounds) - 1, 0)

    @property
    def nbytes(self) -> int:
        return sum(p.a.nbytes + p.g.nbytes + p.y.nbytes for p in self.rounds)

    def add(self, points: Points) -> None:
        """The next round: l = 0..m0 at first, then the odd l of the doubled grid, in order."""
        want = self.m0 + 1 if not self.rounds else self.m
        if len(points) != want:
            raise ValueError(f"round {len(self.rounds)} needs {want} points, got {len(points)}")
        self.rounds.append(points)

    def locate(self, l: int, m: int) -> tuple[int, int]:
        """(round, index in it) of point l of the m grid."""
        r = (m // self.m0).bit_length() - 1
        while r > 0 and l % 2 == 0:
            l, r = l // 2, r - 1
        return (r, l) if r == 0 else (r, (l - 1) // 2)

    def get(self, ls: np.ndarray, m: int) -> Points:
        """Points ``ls`` of the m grid (m = m0·2^r, r < rounds), in order."""
        where = [self.locate(int(l), m) for l in ls]
        return Points.concat([self.rounds[r].take(slice(i, i + 1)) for r, i in where])


def reduce_stored(store: PointStore, m: int, chunk: int,
                  reducers: Mapping[str, ReducerFactory], channel_axis: int = 1) -> PathResult:
    """The reducers over the m path from stored points, fed in the chunks a walk would use:
    the same maps as ``walk_path`` at that m and chunk."""
    feeder = Feeder(m, reducers, channel_axis)
    for ls in chunks(m, chunk):
        feeder.feed(ls, store.get(ls, m))
    return feeder.finish()


def chunk_size(per_sample_bytes: int, m: int, budget_bytes: int) -> int:
    """Path points per session run under a memory budget (at least 1, at most m+1)."""
    return int(max(1, min(m + 1, budget_bytes // max(per_sample_bytes, 1))))
