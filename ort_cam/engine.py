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
from .grad.spec import WANT_SCORES
from .result import COMPLETENESS_GAP, PathEnds
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
    (``finish``), after which ``extra_values`` holds the method's extra scalar outputs. The
    chunk's ``a`` and ``g`` hold for the call only (the driver writes the next chunk into the
    same buffers): a reducer that keeps them copies them."""

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


class TargetFeed(Protocol):
    """What one path differentiates, as the fused model is fed and read: ``inputs(n)``, the
    model's target inputs for n path points (by input name, batch first: e.g. target weights
    shaped like the score output), and ``score(out)``, the target's score y of each of those
    points read from the score output ([n, ...] → [n]). The engine assumes no shape of either."""

    def inputs(self, n: int) -> dict[str, np.ndarray]: ...

    def score(self, out: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FusedModel:
    """The fused gradient model as the engine runs it: one session run maps the inputs (and the
    target inputs a ``TargetFeed`` gives) to the layer A, the score output and the gradient G
    of the target's score with respect to A, in the order of ``output_names``. The shapes are
    the declared ones (a str or None for a dimension the model leaves free); the layer's
    channels are on ``channel_axis`` (1: NCHW, 3: NHWC).

    A model whose map is computed on demand (``grad.tail``: ``on_demand``) has the input
    ``want_scores`` (S only where true, else an empty map) and a fourth output, y = Σ W ⊙ S
    per row; its target weights may hold one row for all inputs."""

    runner: Runner
    input_name: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | str | None, ...], ...]
    channel_axis: int = 1
    on_demand: bool = False

    @classmethod
    def of(cls, runner: Runner, input_name: str, channel_axis: int = 1) -> FusedModel:
        """The fused model that ``runner``'s session runs, its outputs as the session declares."""
        outs = runner.session.get_outputs()
        inputs = {i.name for i in runner.session.get_inputs()}
        return cls(runner, input_name, tuple(o.name for o in outs),
                   tuple(tuple(o.shape) for o in outs), channel_axis, WANT_SCORES in inputs)

    def run(self, xs: np.ndarray, feeds: Mapping[str, np.ndarray],
            scores: bool = True) -> list[np.ndarray]:
        """One session run of the inputs ``xs`` with the target inputs ``feeds``: [A, scores,
        G] (and y where ``on_demand``); ``scores`` False: S may come back empty."""
        extra = {WANT_SCORES: np.array(scores)} if self.on_demand else {}
        return self.runner.run({self.input_name: xs, **feeds, **extra})

    def values(self, outs: Sequence[np.ndarray], target: TargetFeed,
               rows: slice | None = None) -> np.ndarray:
        """y of the rows ``rows`` of a run's outputs: the model's own where ``on_demand``,
        else the target's score of S."""
        rows = rows if rows is not None else slice(None)
        if self.on_demand:
            return np.asarray(outs[3][rows], np.float64)
        return target.score(outs[1][rows])

    def points(self, xs: np.ndarray, target: TargetFeed) -> Points:
        """One session run of the inputs ``xs``, every one for ``target``: W fed once for all
        where the model takes one row for all (``on_demand``)."""
        outs = self.run(xs, target.inputs(1 if self.on_demand else len(xs)), scores=False)
        return Points(outs[0], self.values(outs, target), outs[2])


def path_inputs(x: np.ndarray, x0: np.ndarray, ls: np.ndarray, m: int) -> np.ndarray:
    """x_l = x0 + (l/m)(x − x0) for the path indices ``ls``, in x's dtype."""
    # x − x0 in float64: in float32 it rounds, and x_m = x0 + (x − x0) would miss x by an ulp.
    # l/m is exact for l/m = 2l/2m (both are the rounding of one real), so a point of the m
    # path and the same point of the 2m path are the same input. Row by row through one
    # float64 row: the same values as the whole chunk in float64, without its 8-byte copies.
    base = x0.astype(np.float64)
    diff = x.astype(np.float64) - base
    out = np.empty((len(ls), *x.shape[1:]), dtype=x.dtype)
    row = np.empty(x.shape[1:], dtype=np.float64)
    for i, l in enumerate(ls):
        np.multiply(diff[0], l / m, out=row)
        np.add(base[0], row, out=row)
        out[i] = row
    return out


class Feeder:
    """The reducing half of a walk: hands consecutive chunks of path points, in order, to
    every reducer through the shared ``PathState``. The same chunks give the same maps
    whichever session runs (or stored points) they came from."""

    def __init__(self, m: int, reducers: Mapping[str, ReducerFactory], channel_axis: int = 1):
        self.state = PathState(m=m, ys=np.empty(m + 1))
        self.accs = {name: make(self.state) for name, make in reducers.items()}
        self.channel_axis = channel_axis
        self.seconds = 0.0
        self._buffers: list[np.ndarray | None] = [None, None]

    def feed(self, ls: np.ndarray, points: Points) -> None:
        t0 = time.perf_counter()
        st = self.state
        check_finite(points.g, "the gradient")
        a, g = self._float64(points.a, 0), self._float64(points.g, 1)
        if self.channel_axis == 3:
            a, g = a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        st.ys[ls] = points.y
        # what the state keeps outlives the chunk's buffers: copied, in their layout
        if ls[0] == 0:
            st.a0 = a[0].copy(order="K")
        if ls[-1] == st.m:
            st.am, st.gm = a[-1].copy(order="K"), g[-1].copy(order="K")
        for acc in self.accs.values():
            acc.update(ls, a, g)
        st.prev_a, st.prev_g = a[-1].copy(order="K"), g[-1].copy(order="K")
        self.seconds += time.perf_counter() - t0

    def _float64(self, x: np.ndarray, slot: int) -> np.ndarray:
        """``x`` in float64, written into this walk's buffer for ``slot`` (the chunks of a walk
        share it: a new 8-byte array per chunk costs more in page faults than the copy)."""
        if not x.flags.c_contiguous:
            return x.astype(np.float64)
        buf = self._buffers[slot]
        if buf is None or buf.shape[1:] != x.shape[1:] or len(buf) < len(x):
            buf = self._buffers[slot] = np.empty(x.shape, dtype=np.float64)
        out = buf[:len(x)]
        np.copyto(out, x)
        return out

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


@dataclass
class PathJob:
    """One path to walk: inputs ``x``, ``x0`` (batch 1), what it differentiates (``target``),
    and ``end``, the point l = m when it was already run for that target."""

    x: np.ndarray
    x0: np.ndarray
    target: TargetFeed
    end: Points | None = None

    def todo(self, m: int) -> np.ndarray:
        """The path indices still to run."""
        return np.arange(m if self.end is not None else m + 1)


#: Bytes of activations per session run when no budget is given (``RunSizes.budget``).
DEFAULT_BUDGET = 1 << 30


@dataclass(frozen=True)
class RunSizes:
    """How many inputs one session run takes: ``fixed`` (the caller's chunk size), else as many
    as ``budget`` bytes of activations hold at ``per_point`` bytes each."""

    per_point: int
    budget: int
    fixed: int | None = None

    def chunk(self, m: int) -> int:
        """Path points per run on a path of m steps (at least 1, at most m+1)."""
        if self.fixed:
            return int(max(1, min(self.fixed, m + 1)))
        return chunk_size(self.per_point, m, self.budget)

    def capacity(self) -> int:
        """Inputs per session run."""
        if self.fixed:
            return int(max(1, self.fixed))
        return int(max(1, self.budget // max(self.per_point, 1)))


def _steps_at_least_1(m: int) -> None:
    if m < 1:
        raise InputError(f"steps must be >= 1 (got {m})")


def walk_path(fused: FusedModel, job: PathJob, m: int, chunk: int,
              reducers: Mapping[str, ReducerFactory],
              on_chunk: Callable[[int], None] | None = None) -> PathResult:
    """One pass over the m+1 path points of ``job`` serving every reducer in ``reducers``.

    Memory grows with ``chunk``, never with ``m``: each chunk is built, run, reduced and
    dropped. The job's ``end`` (the point l = m, already run) is not run again.
    """
    _steps_at_least_1(m)
    feeder = Feeder(m, reducers, fused.channel_axis)
    t_run = 0.0
    for ls in chunks(m, chunk):
        todo = ls if job.end is None else ls[ls < m]
        parts = []
        if len(todo):
            t0 = time.perf_counter()
            parts.append(fused.points(path_inputs(job.x, job.x0, todo, m), job.target))
            t_run += time.perf_counter() - t0
        if len(todo) < len(ls):
            assert job.end is not None
            parts.append(job.end)
        feeder.feed(ls, Points.concat(parts))
        if on_chunk:
            on_chunk(len(ls))
    return feeder.finish(t_run)


def walk_packed(fused: FusedModel, jobs: Sequence[PathJob], m: int, cap: int,
                reducers: Callable[[], Mapping[str, ReducerFactory]],
                on_path: Callable[[int], None] | None = None) -> list[PathResult]:
    """Several paths whose m+1 points fit in one run (``cap`` points), packed whole into as
    few session runs as fit ``cap``; each path is reduced as one chunk, as ``walk_path``
    with a chunk of m+1 reduces it. ``reducers()`` builds a fresh set per path."""
    _steps_at_least_1(m)
    if m + 1 > cap:
        raise ValueError(f"a path of {m + 1} points does not fit runs of {cap}")
    results: list[PathResult | None] = [None] * len(jobs)
    group: list[int] = []
    for i in range(len(jobs) + 1):
        if i < len(jobs) and sum(len(jobs[j].todo(m)) for j in group + [i]) <= cap:
            group.append(i)
            continue
        if group:
            for j, res in zip(group, _run_group(fused, [jobs[j] for j in group], m, reducers)):
                results[j] = res
                if on_path:
                    on_path(m + 1)
        group = [i]
    return [r for r in results if r is not None]


def _run_group(fused: FusedModel, jobs: Sequence[PathJob], m: int,
               reducers: Callable[[], Mapping[str, ReducerFactory]]) -> list[PathResult]:
    todos = [job.todo(m) for job in jobs]
    xs = np.concatenate([path_inputs(j.x, j.x0, ls, m) for j, ls in zip(jobs, todos)])
    each = [j.target.inputs(len(ls)) for j, ls in zip(jobs, todos)]
    feeds = {name: np.concatenate([f[name] for f in each]) for name in each[0]}
    t0 = time.perf_counter()
    outs = fused.run(xs, feeds, scores=False)
    a, g = outs[0], outs[2]
    share = (time.perf_counter() - t0) / len(xs)
    out, start = [], 0
    for job, ls in zip(jobs, todos):
        mine = slice(start, start + len(ls))
        start += len(ls)
        feeder = Feeder(m, reducers(), fused.channel_axis)
        ends = [job.end] if job.end is not None else []
        points = Points(a[mine], fused.values(outs, job.target, mine), g[mine])
        feeder.feed(np.arange(m + 1), Points.concat([points, *ends]))
        out.append(feeder.finish(share * len(ls)))
    return out


@dataclass(frozen=True)
class SplitModel:
    """The fused model in two sessions, for paths that share their inputs (several targets of
    one image against one baseline): ``prefix`` maps the model inputs to the layer and the
    tensors crossing the cut (``head_inputs``, the layer first), ``head`` maps those and the
    target inputs to the score output and the gradient. The prefix runs each path point once
    for every target; the head runs it once per target."""

    prefix: Runner
    head: Runner
    input_name: str
    head_inputs: tuple[str, ...]

    def crossing(self, xs: np.ndarray) -> dict[str, np.ndarray]:
        """The head's inputs at ``xs`` (the prefix's outputs by name)."""
        out = dict(zip(self.prefix.output_names, self.prefix.run({self.input_name: xs})))
        return {name: out[name] for name in self.head_inputs}

    def points(self, crossing: Mapping[str, np.ndarray], target: TargetFeed) -> Points:
        """The head's run of the prefix's outputs ``crossing`` for ``target``."""
        a = crossing[self.head_inputs[0]]
        s, g = self.head.run({**crossing, **target.inputs(len(a))})
        return Points(a, target.score(s), g)


def walk_shared(split: SplitModel, jobs: Sequence[PathJob], m: int, chunk: int,
                reducers: Callable[[], Mapping[str, ReducerFactory]], channel_axis: int = 1,
                on_chunk: Callable[[int], None] | None = None) -> list[PathResult]:
    """The paths of ``jobs``, which share their inputs x and x0 (their targets differ), walked
    together: each chunk of path points runs through the prefix once, then through the head
    once per job; ``reducers()`` builds a fresh set per job. Every job's m+1 points come from
    the head (a job's ``end`` is not used)."""
    _steps_at_least_1(m)
    x, x0 = jobs[0].x, jobs[0].x0
    feeders = [Feeder(m, reducers(), channel_axis) for _ in jobs]
    t_runs = [0.0] * len(jobs)
    for ls in chunks(m, chunk):
        t0 = time.perf_counter()
        crossing = split.crossing(path_inputs(x, x0, ls, m))
        prefix_share = (time.perf_counter() - t0) / len(jobs)
        for k, (job, feeder) in enumerate(zip(jobs, feeders)):
            t0 = time.perf_counter()
            points = split.points(crossing, job.target)
            t_runs[k] += prefix_share + time.perf_counter() - t0
            feeder.feed(ls, points)
            if on_chunk:
                on_chunk(len(ls))
    return [feeder.finish(t) for feeder, t in zip(feeders, t_runs)]


#: Builds the reducers of the methods named (each on the walk's shared state).
MakeReducers = Callable[[Sequence[str]], Mapping[str, ReducerFactory]]
#: Vets a finished path (raises when a reducer reported what it should not); returns it.
CheckPath = Callable[[PathResult], PathResult]


def _as_is(path: PathResult) -> PathResult:
    return path


def walk_fixed(fused: FusedModel, jobs: Sequence[PathJob], m: int, sizes: RunSizes,
               names: Sequence[str], make: MakeReducers,
               on_chunk: Callable[[int], None] | None = None,
               check: CheckPath = _as_is) -> list[PathResult]:
    """The paths of ``jobs`` at m steps for the reducers ``names``: packed whole into shared
    runs when several fit one run, else each walked in chunks."""
    if len(jobs) > 1 and m + 1 <= sizes.capacity():
        return [check(p) for p in walk_packed(fused, jobs, m, sizes.capacity(),
                                              lambda: make(names), on_chunk)]
    return [check(walk_path(fused, j, m, sizes.chunk(m), make(names), on_chunk)) for j in jobs]


def reduce_at_x(fused: FusedModel, job: PathJob, reducers: Mapping[str, ReducerFactory],
                on_chunk: Callable[[int], None] | None = None) -> PathResult:
    """The reducers at x alone (a path of 0 steps, for methods that read no other point): the
    job's ``end``, run here when it was not run already."""
    end, t_run = job.end, 0.0
    if end is None:
        t0 = time.perf_counter()
        end = fused.points(job.x, job.target)
        t_run = time.perf_counter() - t0
    feeder = Feeder(0, reducers, fused.channel_axis)
    feeder.feed(np.arange(1), end)
    if on_chunk:
        on_chunk(1)
    return feeder.finish(t_run)


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


@dataclass(frozen=True)
class AutoSteps:
    """``steps="auto"``: m doubles from ``start`` until the completeness gap that the reducer
    ``judge`` reports is at most ``tolerance`` or not defined (NaN: y at x equals y at the
    baseline, which no m changes), or until 2m would pass ``most``."""

    start: int
    tolerance: float
    most: int
    judge: str

    def done(self, path: PathResult) -> bool:
        """Whether the walk may stop at ``path`` (its m)."""
        return not path.extras[self.judge][COMPLETENESS_GAP] > self.tolerance or (
            path.m * 2 > self.most)

    def drop_judge(self, path: PathResult, names: Sequence[str]) -> PathResult:
        """``path`` without the judge's map when the judge was not asked for."""
        if self.judge not in names:
            path.raw.pop(self.judge)
            path.extras.pop(self.judge)
        return path


def walk_auto(fused: FusedModel, job: PathJob, names: Sequence[str], auto: AutoSteps,
              make: MakeReducers, sizes: RunSizes,
              on_chunk: Callable[[int], None] | None = None,
              check: CheckPath = _as_is) -> PathResult:
    """Double m from ``auto.start`` until the judge is content, running every path point once:
    the 2m path's even points are the m path's (nested dyadic grids), so a doubling runs only
    the m new odd points. Each m is reduced from the stored points exactly as a walk at that m
    would reduce it. Past the point where the stored points would exceed the memory budget,
    each further m walks its whole path (streamed, nothing stored)."""
    m = auto.start
    _steps_at_least_1(m)
    store = PointStore(m)
    t_run = _fill(fused, store, job, sizes, on_chunk)
    t_reduce = 0.0
    while True:
        path = reduce_stored(store, m, sizes.chunk(m), make([auto.judge]), fused.channel_axis)
        t_reduce += path.timings["reduce"]
        if auto.done(path):
            break
        if 2 * store.nbytes > sizes.budget:  # the next points would not fit: stream
            return _auto_streaming(fused, job, 2 * m, names, auto, make, sizes, on_chunk, check)
        m *= 2
        t_run += _fill(fused, store, job, sizes, on_chunk)
    rest = [name for name in names if name != auto.judge]
    if rest:
        other = reduce_stored(store, m, sizes.chunk(m), make(rest), fused.channel_axis)
        t_reduce += other.timings["reduce"]
        path = PathResult({**other.raw, **path.raw}, {**other.extras, **path.extras},
                          path.scores_path, m)
    path.timings = {"run": t_run, "reduce": t_reduce}
    return auto.drop_judge(check(path), names)


def _fill(fused: FusedModel, store: PointStore, job: PathJob, sizes: RunSizes,
          on_chunk: Callable[[int], None] | None) -> float:
    """Run the next round of ``store`` (the whole first grid, then the odd points of each
    doubled one) in chunks; returns the seconds spent in runs."""
    first = not store.rounds
    m = store.m if first else 2 * store.m
    ls = np.arange(m + (job.end is None)) if first else np.arange(1, m, 2)
    parts, t_run = [], 0.0
    for lo in range(0, len(ls), sizes.chunk(m)):
        part = ls[lo:lo + sizes.chunk(m)]
        t0 = time.perf_counter()
        parts.append(fused.points(path_inputs(job.x, job.x0, part, m), job.target))
        t_run += time.perf_counter() - t0
        if on_chunk:
            on_chunk(len(part))
    if first and job.end is not None:
        parts.append(job.end)
    store.add(Points.concat(parts))
    return t_run


def _auto_streaming(fused: FusedModel, job: PathJob, m: int, names: Sequence[str],
                    auto: AutoSteps, make: MakeReducers, sizes: RunSizes,
                    on_chunk: Callable[[int], None] | None, check: CheckPath) -> PathResult:
    """``walk_auto`` from m on, each m walking its whole path."""
    inner = names if auto.judge in names else [*names, auto.judge]
    while True:
        path = check(walk_path(fused, job, m, sizes.chunk(m), make(inner), on_chunk))
        if auto.done(path):
            return auto.drop_judge(path, names)
        m *= 2
