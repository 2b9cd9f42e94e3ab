"""What an explanation returns, and the numbers that read it: the default path length and the
two thresholds on probabilities near 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import OrtCamError
from .maps import to_photo

#: The extra that measures how far a path integral is from y_m − y_0; ``steps="auto"``
#: doubles m until the method that reports it (found through ``METHODS``) is below tolerance.
COMPLETENESS_GAP = "completeness_gap"
#: Why a completeness gap is not given (its value is NaN, null in results.jsonl).
GAP_UNDEFINED = "y at x equals y at the baseline"
#: |y_m − y_0| at or below this many float32 ulps of max(|y_m|, |y_0|) is taken as 0. The gap
#: |Σ IG − (y_m − y_0)| / |y_m − y_0| divides by it: where the model gives y at the baseline
#: as at x (a constant or symmetric target, a baseline equal to x), the quotient is float32
#: rounding over rounding (0, or 1e+300 over the float64 floor), no measure of completeness.
#: y_0 and y_m are float32 outputs: storing them rounds each by half an ulp, and the forward
#: pass adds a few ulps more (sums over a layer's terms); 64 ulps (7.6e-6 relative) leaves a
#: margin of ~10x over that, and lies far below a Δy worth a gap (docs/targets.md's examples
#: have |y_m − y_0| ≥ 0.34 max(|y_m|, |y_0|)).
GAP_UNDEFINED_ULPS = 64
#: ``GAP_UNDEFINED_ULPS`` float32 ulps as a fraction of max(|y_0|, |y_m|) (7.6e-6): the one
#: factor ``gap_defined`` and the exported explainer's graph (ort_cam.export) multiply by.
GAP_UNDEFINED_REL = GAP_UNDEFINED_ULPS * float(np.finfo(np.float32).eps)


def gap_defined(y0: float, ym: float) -> bool:
    """Whether the completeness gap of a path from y_0 to y_m is defined: |y_m − y_0| above
    float32 noise (``GAP_UNDEFINED_ULPS``); a NaN end leaves it defined (its gap is NaN)."""
    noise = GAP_UNDEFINED_REL * max(abs(y0), abs(ym))
    return not abs(ym - y0) <= noise

#: Path steps m when none are given (METHODS.md: default 50, the papers use 20..200): the
#: API's ``steps``, the CLI's ``--steps`` and the audit's spec all read it.
DEFAULT_STEPS = 50


def parse_steps(value: int | str, name: str = "steps") -> int | str:
    """Path steps m from ``value`` (an integer, or its digits) or "auto"; anything else, or
    m < 1, is refused naming the option (``name``: "steps", or "--steps" on the CLI)."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) or (
            isinstance(value, str) and value.isdigit())) or int(value) < 1:
        raise OrtCamError(f"{name} must be a positive integer or 'auto' (got {value!r})")
    return int(value)


def fixed_steps(value: int | str) -> int | None:
    """m for ``value``, or None for "auto" (refused unless a positive integer or "auto")."""
    m = parse_steps(value)
    return None if isinstance(m, str) else m

# Two thresholds on a top probability p near 1, for two different questions:
#: Is the image *saturated*? The audit splits its images there (summary and report: saturated
#: when p > SATURATED_ABOVE; audit.json records it as ``saturated_above``).
SATURATED_ABOVE = 0.99
#: How is p written? Panels and the demo's report write a probability above this as
#: "1 − (1 − p)" (e.g. "p = 1 − 2.1e-05"), which shows how close to 1 it is where four
#: significant digits round to 1.
GAP_NOTATION_ABOVE = 0.999


class PathEnds:
    """y_0 and y_m read off ``scores_path`` (y_l for l = 0..m)."""

    scores_path: np.ndarray

    @property
    def y0(self) -> float:
        """y_0, or NaN when no path was walked (m = 0: only x itself was run)."""
        return float(self.scores_path[0]) if len(self.scores_path) > 1 else float("nan")

    @property
    def ym(self) -> float:
        return float(self.scores_path[-1])


@dataclass
class MethodResult:
    """One method's maps: ``raw`` at layer resolution (h×w, unnormalised) and ``map`` at input
    resolution, normalised to [0, 1). ``dark`` is the paper's dark heatmap test. ``extras``:
    the method's extra scalars by name (e.g. RSI's ``completeness_gap``)."""

    name: str
    raw: np.ndarray
    map: np.ndarray
    dark: bool
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class Explanation(PathEnds):
    """The result for one image and one target.

    Attributes:
        target: class index explained (None for a target without one: detections of several
            classes, an embedding's cosine, a decoded sequence); ``label`` its name when labels
            are known.
        score: the target y at the input (the chosen score mode); ``scores``: every class at
            the input (for other kinds: S, the head's transform of the output, at the input).
        target_kind: what the output was read as (``ort_cam.targets``); ``target_record``:
            what was chosen at x for a kind other than class (kind, class, value, mask area,
            boxes, anchors, steps), ``target_mask`` (on the output's grid) and
            ``target_boxes`` (x0, y0, x1, y1 in the input's pixels) for the panels.
        scores_path: y_c(x_l) for l = 0..m; ``y0``/``ym`` its ends.
        steps: m used; ``completeness_gap``: the gap |Σ IG − (y_m − y_0)| / |y_m − y_0| of
            the first method that reports one, else None.
        methods: method name -> MethodResult (also ``result[name]``).
        timings: seconds spent per stage.
        pixels: the H×W×3 image the model saw (after resize), when the input was an image.
        photo, geometry: that image as given (upright RGB, before resize, crop or letterbox)
            and how the preprocessing moved its points (``Preprocess.geometry``);
            ``photo_map(name)`` is a method's map on the photo's own pixel grid.
    """

    target: int | None
    label: str | None
    score: float
    scores: np.ndarray
    scores_path: np.ndarray
    steps: int
    methods: dict[str, MethodResult]
    score_mode: str
    layer: str
    timings: dict[str, float] = field(default_factory=dict)
    pixels: np.ndarray | None = None
    photo: Any = None
    geometry: tuple[float, float, float, float] | None = None
    target_kind: str = "class"
    target_record: dict[str, Any] | None = None
    target_mask: np.ndarray | None = None
    target_boxes: np.ndarray | None = None

    def __getitem__(self, method: str) -> MethodResult:
        return self.methods[method]

    def photo_map(self, method: str, eps: float = 1e-8) -> np.ndarray:
        """``method``'s map on the photo's pixel grid (height × width of the photo): the
        resize, crop or letterbox undone, normalised as the map at the model's input size,
        NaN where the photo lay outside the model's input (outside a centre crop)."""
        if self.photo is None or self.geometry is None or self.pixels is None:
            raise ValueError("the explanation has no photo (it came from explain_array)")
        return to_photo(self.methods[method].raw, self.pixels.shape[:2], self.geometry,
                        self.photo.size, eps)

    def extra(self, name: str) -> float | None:
        """Extra scalar ``name`` of the first method that reports it, else None."""
        return next((res.extras[name] for res in self.methods.values() if name in res.extras),
                    None)

    @property
    def completeness_gap(self) -> float | None:
        """The gap of the first method that reports one (NaN where it is not defined:
        ``completeness_gap_undefined``), else None."""
        return self.extra(COMPLETENESS_GAP)

    @property
    def completeness_gap_undefined(self) -> str | None:
        """Why the completeness gap is not given (``GAP_UNDEFINED``: y at x equals y at the
        baseline, to float32), else None (also where no method reports a gap)."""
        if self.completeness_gap is None or gap_defined(self.y0, self.ym):
            return None
        return GAP_UNDEFINED
