"""Methods that run the model or its head, instead of reading the shared gradient pass.

They get what they run through a ``ModelRuns`` object that the explainer builds for one input
and target and hands to the method (this room never imports the explainer). The explainer
computes them after the walk: they are not reducers of the path (``uses_runs``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol

import numpy as np

from ..engine import PathState
from ..errors import OrtCamError
from .base import CamMethod, MethodOptions


class ModelRuns(Protocol):
    """Runs of the model and of its head above the layer for one input x and one class.

    Every array is float64 and channels first ([K, h, w] or [b, K, h, w]) whatever the model's
    layout; the head's other inputs (the tensors crossing the cut: skip connections) are x's.
    Each call splits its rows into session runs of at most ``batch`` rows.
    """

    #: the class c whose score y_c is explained
    target: int
    #: rows per session run
    batch: int
    #: the explainer's score: ``probability`` or ``logit``
    score_mode: str

    def scores(self) -> np.ndarray:
        """Every class's score at x ([C], the explainer's score mode)."""
        ...

    def activation(self) -> np.ndarray:
        """A(x), the layer at x [K, h, w]."""
        ...

    def baseline_activation(self) -> np.ndarray:
        """A(x0), the layer at the baseline [K, h, w]."""
        ...

    def head_scores(self, acts: np.ndarray) -> np.ndarray:
        """y_c of the head run on layer values ``acts`` [b, K, h, w] -> [b]."""
        ...

    def head_gradients(self, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y_c [b], ∂y_c/∂A [b, K, h, w]) of the head run on ``acts``."""
        ...

    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input x."""
        ...

    def masked_scores(self, masks: np.ndarray) -> np.ndarray:
        """y_c of the whole model on x ⊙ mask for each mask [b, H, W] (broadcast over the
        input's channels, in the model's own input space) -> [b]."""
        ...

    def gradient_at_x(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A, ∂(Σ_c w_c y_c)/∂A) at x, [K, h, w] each, for target weights ``weights`` [C]."""
        ...


class RunsMethod(CamMethod):
    """A method computed from model or head runs (``compute``), after the walk, once per input
    and target. ``runs`` comes from the explainer."""

    uses_runs = True
    needs_path = False

    def __init__(self, state: PathState, options: MethodOptions, runs: ModelRuns | None = None):
        super().__init__(state, options)
        self._runs = runs

    @property
    def runs(self) -> ModelRuns:
        if self._runs is None:
            raise OrtCamError(f"method {self.name!r} runs the model; use it through an "
                              "Explainer, which hands it the runs")
        return self._runs

    def finish(self) -> np.ndarray:
        return self.compute(self.runs)

    @abstractmethod
    def compute(self, runs: ModelRuns) -> np.ndarray:
        """The raw map L (h×w, float64)."""


def uses_runs(cls: type[CamMethod]) -> bool:
    """Whether the explainer computes ``cls`` from runs after the walk (not as a reducer)."""
    return issubclass(cls, RunsMethod)


def run_method(cls: type[CamMethod], m: int, options: MethodOptions,
               runs: ModelRuns) -> tuple[np.ndarray, dict[str, float]]:
    """(raw map, extras) of the runs method ``cls``; ``m`` is the explanation's steps."""
    if not issubclass(cls, RunsMethod):
        raise OrtCamError(f"method {cls.name!r} reads the path walk; it has no runs to compute")
    method = cls(PathState(m=m), options, runs=runs)
    raw = method.finish()
    return raw, dict(method.extra_values)


def batches(n: int, size: int) -> list[slice]:
    """Slices of at most ``size`` rows covering range(n)."""
    return [slice(lo, min(lo + size, n)) for lo in range(0, n, max(1, size))]
