"""The explainer's items, one per explanation (image × target): what each one is (model-space
input and baseline, the target spec, the image it came from), what the run of its x gave
(``Start``: the class, the scores, the path's last point), the path it walks, and the
``Explanation`` made from the walked path."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .class_choice import fixed_target, resolve_target
from .engine import (
    AutoSteps,
    FusedModel,
    MakeReducers,
    PathJob,
    PathResult,
    Points,
    RunSizes,
    SplitModel,
    reduce_at_x,
    walk_auto,
    walk_fixed,
    walk_shared,
)
from .grad.spec import TARGET_WEIGHTS
from .maps import is_dark, normalize, upsample
from .methods import (
    METHODS,
    MethodOptions,
    auto_judge,
    check_extras,
    needs_path,
    reducer_factories,
    resolve,
)
from .methods.run_based import run_method
from .preprocess import Preprocess
from .result import DEFAULT_STEPS, Explanation, MethodResult, fixed_steps
from .target_choice import ClassFeed
from .targets import Target

if TYPE_CHECKING:  # (the head's runs are imported where first used)
    from .model_runs import ExplainerRuns

#: ``Explainer.model_runs``: (x, x0, class, scores, batch) -> the runs of the model and head.
MakeRuns = Callable[[np.ndarray, np.ndarray, int, np.ndarray, int], "ExplainerRuns"]


@dataclass
class Item:
    """One explanation to make: model-space input and baseline (batch 1), the target spec,
    and the image (with its preprocessing time) when it came from one."""

    x: np.ndarray
    x0: np.ndarray
    pixels: np.ndarray | None = None
    prep_seconds: float = 0.0
    spec: object = None
    photo: Image.Image | None = None  # the image before resizing (upright RGB)


@dataclass
class Start:
    """What the run of x gave: the class (None where the target has none), the scores
    (float64), the point l = m for the target (None when the run's gradient was of another
    class, or of no target), the run's time share, and the target chosen for a kind other
    than class and binary (``chosen``: it feeds the path)."""

    target: int | None
    scores: np.ndarray
    end: Points | None
    run_seconds: float
    chosen: Target | None = None


def class_index(c: int | None) -> int:
    """A class target's index (class and binary targets always have one)."""
    assert c is not None
    return c


def class_starts(fused: FusedModel, xs: list[np.ndarray], specs: list, n_classes: int,
                 labels: list[str] | None, capacity: int) -> list[Start]:
    """The starts of class (and binary) targets: one run of every x (``capacity`` inputs per
    run), whose gradient is the target's where ``specs`` names the class (a one-hot W), else
    the top-1 class's (zero weights): then the point l = m is kept only where the class
    chosen from the scores (``top:K``) is the top one."""
    known = [fixed_target(spec, n_classes, labels) for spec in specs]
    out: list[Start] = []
    for lo in range(0, len(xs), capacity):
        part = range(lo, min(lo + capacity, len(xs)))
        w = np.zeros((len(part), n_classes), np.float32)
        for row, i in enumerate(part):
            if known[i] is not None:
                w[row, known[i]] = 1.0
        t0 = time.perf_counter()
        a, scores, g = fused.run(np.concatenate([xs[i] for i in part]), {TARGET_WEIGHTS: w})[:3]
        share = (time.perf_counter() - t0) / len(part)
        for row, i in enumerate(part):
            s = scores[row].astype(np.float64)
            seeded = known[i]
            if seeded is None:  # the run's gradient is of the top-1 class
                seeded = int(np.argmax(scores[row]))
                c = resolve_target(specs[i], s, labels)
            else:
                c = seeded
            end = Points(a[row:row + 1], scores[row:row + 1, c], g[row:row + 1])
            out.append(Start(c, s, end if c == seeded else None, share))
    return out


def path_jobs(items: list[Item], starts: list[Start], n_classes: int) -> list[PathJob]:
    """The paths to walk: each item's inputs, its target's feed and the point l = m."""
    return [PathJob(it.x, it.x0, st.chosen if st.chosen is not None else
                    ClassFeed(class_index(st.target), n_classes), st.end)
            for it, st in zip(items, starts)]


#: Most explanations (image × target) made together, their paths packed into shared runs.
PACK_ITEMS = 32


def group_size(steps, methods, n_specs: int, capacity: int) -> int:
    """Items (image × target) explained together: as many paths as share a session run of
    ``capacity`` inputs (1 for ``steps="auto"``, whose paths are walked one by one)."""
    if steps == "auto":
        return 1
    if not needs_path(resolve(methods)):
        return max(1, min(PACK_ITEMS, capacity))
    m = fixed_steps(steps)
    assert m is not None  # "auto" returned above
    return max(n_specs, min(PACK_ITEMS, capacity // (m + 1))) if m + 1 <= capacity else 1


def walk_paths(fused: FusedModel, split: Callable[[int], SplitModel | None], items: list[Item],
               jobs: list[PathJob], m: int | None, sizes: RunSizes, walked: Sequence[str],
               opts: MethodOptions, on_chunk: Callable[[int], None] | None = None
               ) -> list[PathResult]:
    """The items' paths for the methods ``walked``: read at x alone where none walks one, by
    the auto schedule where m is None (``steps="auto"``), else at m steps (``walk_items``)."""
    make = partial(reducer_factories, opts=opts)
    if not needs_path(walked):
        return [check_extras(reduce_at_x(fused, job, make(walked), on_chunk)) for job in jobs]
    if m is None:
        auto = AutoSteps(opts.auto_start, opts.auto_tolerance, opts.auto_max, auto_judge(walked))
        return [walk_auto(fused, job, walked, auto, make, sizes, on_chunk, check_extras)
                for job in jobs]
    return walk_items(fused, split, items, jobs, m, sizes, walked, make, on_chunk)


#: Paths of one input walked together through the prefix and the head (``walk_shared``): each
#: keeps its reducers' chunk buffers, so their number is bounded.
SHARED_PATHS = 8


def walk_items(fused: FusedModel, split: Callable[[int], SplitModel | None], items: list[Item],
               jobs: list[PathJob], m: int, sizes: RunSizes, walked: Sequence[str],
               make: MakeReducers, on_chunk: Callable[[int], None] | None = None
               ) -> list[PathResult]:
    """The items' paths at m steps: several targets of one input x (and baseline) walked
    together through the prefix and the head (``walk_shared``: the prefix runs each path point
    once), the others packed into shared runs of the fused model or walked one by one
    (``walk_fixed``). ``split(saved)`` gives the prefix and head, told how many prefix runs
    of a path point walking together saves (None: the fused model only)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((id(it.x), id(it.x0)), []).append(i)
    shared = [g for g in groups.values() if len(g) > 1]
    model = split(sum(len(g) - 1 for g in shared) * (m + 1)) if shared else None
    if model is None:
        return walk_fixed(fused, jobs, m, sizes, walked, make, on_chunk, check_extras)
    paths: dict[int, PathResult] = {}
    for group in shared:
        for lo in range(0, len(group), SHARED_PATHS):
            part = group[lo:lo + SHARED_PATHS]
            walked_here = walk_shared(model, [jobs[i] for i in part], m, sizes.chunk(m),
                                      lambda: make(walked), fused.channel_axis, on_chunk)
            paths.update((i, check_extras(path)) for i, path in zip(part, walked_here))
    alone = [g[0] for g in groups.values() if len(g) == 1]
    paths.update(zip(alone, walk_fixed(fused, [jobs[i] for i in alone], m, sizes, walked, make,
                                       on_chunk, check_extras)))
    return [paths[i] for i in range(len(items))]


def add_run_maps(items: list[Item], starts: list[Start], paths: list[PathResult],
                 names: list[str], opts: MethodOptions, m: int | None,
                 model_runs: MakeRuns) -> None:
    """Add the maps of ``names`` (methods that run the model or its head, through
    ``model_runs``) to ``paths``; their steps are the path's m (the default when no method
    walked a path)."""
    for item, start, path in zip(items, starts, paths):
        if not names:
            return
        t0 = time.perf_counter()
        runs = model_runs(item.x, item.x0, -1 if start.target is None else start.target,
                          start.scores, opts.run_batch)
        if start.chosen is not None:  # a target of another kind: its W and y = Σ W ⊙ S
            runs.feed = start.chosen
        steps = m if m is not None else (path.m or DEFAULT_STEPS)
        for name in names:
            path.raw[name], path.extras[name] = run_method(METHODS[name], steps, opts, runs)
        check_extras(path)
        path.timings["run"] = path.timings.get("run", 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class Reading:
    """What every explanation of one explainer records beside its maps."""

    labels: list[str] | None
    score_mode: str
    layer: str
    target_kind: str
    preprocess: Preprocess | None


def explanation(item: Item, start: Start, path: PathResult, names: list[str],
                opts: MethodOptions, seconds: float, map_size: tuple[int, int],
                reading: Reading) -> Explanation:
    """The ``Explanation`` of ``item``: its methods' maps (from ``path.raw``) upsampled to
    ``map_size`` and normalised, its target, scores and timings (``seconds``: its share of
    the work before this)."""
    t0 = time.perf_counter()
    results = {}
    for name in names:
        up = upsample(path.raw[name], map_size)
        results[name] = MethodResult(name, path.raw[name], normalize(up, opts.eps),
                                     is_dark(up, opts.eps), path.extras[name])
    c, scores, chosen, labels = start.target, start.scores, start.chosen, reading.labels
    timings = dict(path.timings, run=path.timings["run"] + start.run_seconds,
                   total=seconds + time.perf_counter() - t0)
    r = Explanation(
        target=c, label=labels[c] if labels and c is not None and c < len(labels) else None,
        score=chosen.value if chosen is not None else float(scores[class_index(c)]),
        scores=scores, scores_path=path.scores_path,
        steps=path.m, methods=results, score_mode=reading.score_mode, layer=reading.layer,
        timings=timings, target_kind=reading.target_kind,
        target_record=chosen.record() if chosen is not None else None,
        target_mask=None if chosen is None else chosen.mask,
        target_boxes=None if chosen is None else chosen.boxes,
    )
    if item.pixels is not None:
        r.pixels = item.pixels
    if item.photo is not None and reading.preprocess is not None:
        r.photo, r.geometry = item.photo, reading.preprocess.geometry(item.photo.size)
        r.timings["preprocess"] = item.prep_seconds
    return r
