"""The explainer's side of targets: what the user asked for (``TargetOptions`` from the
explainer's ``target=`` and each call's target spec), and the targets chosen at x for a kind
other than class and binary (whose class choice, with its top-1 seed, is the explainer's own):
one run of every x with zero weights gives S(x), and the kind picks W from it on the host."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from .engine import FusedModel, Points
from .errors import OrtCamError
from .grad.spec import TARGET_WEIGHTS
from .targets import OutputInfo, Target, TargetKind, TargetOptions

#: The kinds whose scores are one row per image that the class choice reads (top-1 seed).
CLASS_KINDS = ("class", "binary")
_FIELDS = tuple(f.name for f in fields(TargetOptions))


def target_options(target: TargetOptions | Mapping | None, kind: str | None) -> TargetOptions:
    """The explainer's target options: ``target`` (a ``TargetOptions`` or a dict of its
    fields) with ``kind`` (``target_kind=``) when given."""
    opts = _merged(TargetOptions(), target)
    if kind is not None:
        if opts.kind not in (None, kind):
            raise OrtCamError(f"target_kind={kind!r} and the target options' kind "
                              f"{opts.kind!r} differ; give one")
        opts = replace(opts, kind=kind)
    return opts


def options_for(base: TargetOptions, spec: object) -> TargetOptions:
    """One call's options: ``spec`` (a class spec: index, label, top1, top:K; or a dict or
    ``TargetOptions`` of values such as mask, box, anchors, concept, step) over ``base``."""
    if isinstance(spec, (Mapping, TargetOptions)):
        merged = _merged(base, spec)
        if (merged.kind, merged.score, merged.box_iou) != (base.kind, base.score, base.box_iou):
            raise OrtCamError("a call's target cannot change the kind, the score or box_iou "
                              "(they are built into the gradient graph); make another "
                              "Explainer")
        return merged
    return replace(base, target=spec)


def _merged(base: TargetOptions, values: TargetOptions | Mapping | None) -> TargetOptions:
    if values is None:
        return base
    if isinstance(values, TargetOptions):
        default = TargetOptions()
        given = {f: getattr(values, f) for f in _FIELDS
                 if _differs(getattr(values, f), getattr(default, f))}
    else:
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise OrtCamError(f"unknown target option(s) {', '.join(unknown)}; use "
                              f"{', '.join(_FIELDS)}")
        given = dict(values)
    return replace(base, **given)


def _differs(value: object, default: object) -> bool:
    return isinstance(value, np.ndarray) or value != default


@dataclass(frozen=True)
class Chosen:
    """What the run of x gave for one item: S(x) (float64), the target, the run's share, and
    the point l = m of the path where the run was fed the target's W (``TargetKind.fixed``)."""

    scores: np.ndarray
    target: Target
    run_seconds: float
    end: Points | None = None


def choose_at_x(fused: FusedModel, xs: Sequence[np.ndarray], kind: type[TargetKind],
                out: OutputInfo, opts: Sequence[TargetOptions], labels: list[str] | None,
                capacity: int, built: TargetOptions | None = None) -> list[Chosen]:
    """The targets of the inputs ``xs`` (batch 1 each) with their ``opts``: S at every x from
    runs of at most ``capacity`` inputs, then W picked by ``kind``. An item whose options fix
    W without S(x) is fed W in that run (the others zero weights), and the run is its path's
    point l = m, so that x is run once, as for a class target; so is the run of an item fed
    zero weights where the fused model seeded the row with the W chosen here
    (``TargetKind.seeded``, checked on the host: else x is run again); ``built``: the
    options the fused model was built with (default: each item's)."""
    out_shape = tuple(d for d in fused.output_shapes[1][1:] if isinstance(d, int))
    if len(out_shape) != len(fused.output_shapes[1]) - 1:
        raise OrtCamError(f"the score output's shape {list(fused.output_shapes[1])} is not "
                          "static past the batch axis; load the model with a fixed size")
    chosen: list[Chosen] = []
    for lo in range(0, len(xs), capacity):
        part = range(lo, min(lo + capacity, len(xs)))
        weights = np.zeros((len(part), *out_shape), np.float32)
        early = {}
        for row, i in enumerate(part):
            kind.accepts(opts[i])
            if kind.fixed(out, opts[i]):
                try:
                    early[row] = kind.choose(weights[row], out, opts[i], labels).weights
                except OrtCamError:  # W needed S(x) after all: chosen below, from S(x)
                    continue
                weights[row] = early[row]
        t0 = time.perf_counter()
        outs = fused.run(np.concatenate([xs[i] for i in part]), {TARGET_WEIGHTS: weights})
        a, s, g = outs[:3]
        share = (time.perf_counter() - t0) / len(part)
        for row, i in enumerate(part):
            target = kind.choose(s[row], out, opts[i], labels)
            end = None
            if (np.array_equal(early[row], target.weights) if row in early
                    else kind.seeded(s[row], out, opts[i], target, built or opts[i],
                                     fused.on_demand)):
                here = slice(row, row + 1)
                end = Points(a[here], fused.values(outs, target, here), g[here])
            chosen.append(Chosen(np.asarray(s[row], np.float64), target, share, end))
    return chosen


@dataclass(frozen=True)
class ClassFeed:
    """Class ``index`` of a class-score output [N, C] as the fused model is fed and read:
    one-hot target weights, and y the class's score."""

    index: int
    n_classes: int

    def inputs(self, n: int) -> dict[str, np.ndarray]:
        w = np.zeros((n, self.n_classes), dtype=np.float32)
        w[:, self.index] = 1.0
        return {TARGET_WEIGHTS: w}

    def score(self, out: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(out[:, self.index])
