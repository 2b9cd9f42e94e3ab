"""What an explanation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class PathEnds:
    """y_0 and y_m read off ``scores_path`` (y_l for l = 0..m)."""

    scores_path: np.ndarray

    @property
    def y0(self) -> float:
        return float(self.scores_path[0])

    @property
    def ym(self) -> float:
        return float(self.scores_path[-1])


@dataclass
class MethodResult:
    """One method's maps: ``raw`` at layer resolution (h×w, unnormalised) and ``map`` at input
    resolution, normalised to [0, 1). ``dark`` is the paper's dark heatmap test."""

    name: str
    raw: np.ndarray
    map: np.ndarray
    dark: bool


@dataclass
class Explanation(PathEnds):
    """The result for one image and one target class.

    Attributes:
        target: class index explained; ``label`` its name when labels are known.
        score: y_c at the input (the chosen score mode); ``scores``: every class at the input.
        scores_path: y_c(x_l) for l = 0..m; ``y0``/``ym`` its ends.
        steps: m used; ``completeness_gap``: RSI's |Σ IG − (y_m − y_0)| / |y_m − y_0|.
        methods: method name -> MethodResult (also ``result["rsi"]``).
        timings: seconds spent per stage.
        pixels: the H×W×3 image the model saw (after resize), when the input was an image.
    """

    target: int
    label: str | None
    score: float
    scores: np.ndarray
    scores_path: np.ndarray
    steps: int
    completeness_gap: float | None
    methods: dict[str, MethodResult]
    score_mode: str
    layer: str
    timings: dict[str, float] = field(default_factory=dict)
    pixels: np.ndarray | None = None

    def __getitem__(self, method: str) -> MethodResult:
        return self.methods[method]

    @property
    def gradcam(self) -> MethodResult | None:
        return self.methods.get("gradcam")

    @property
    def igcam(self) -> MethodResult | None:
        return self.methods.get("igcam")

    @property
    def rsi(self) -> MethodResult | None:
        return self.methods.get("rsi")
