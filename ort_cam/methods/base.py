"""What every CAM method shares: the path state the driver keeps, the options, the hook."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import numpy as np

from ..errors import OrtCamError


@dataclass
class MethodOptions:
    """Every option of METHODS.md, with its default.

    Attributes:
        gradcam_weights: ``mean`` (eq 1) or ``positive`` (mean of ReLU(G), eq 2).
        igcam_variant: ``paper`` (eq 23: mean over l=1..m of ReLU(Σ_k ΣG_l · (A_l − A_0)))
            or ``notebook`` (the authors' notebook: sum of Grad-CAM maps of x_l, l=0..m−1).
        rsi_rule: ``trapezoid`` (g_l = (G_l + G_{l−1})/2, the authors' code) or ``riemann``.
        rsi_selection: ``guided`` (A_m>0, IG>0, A_m−A_0>0), ``positive`` (IG>0) or ``none``.
        eps: ε of the normalisation (L − min) / (max − min + ε).
        auto_tolerance: completeness-gap target of ``steps="auto"``.
        auto_start, auto_max: first and largest m tried by ``steps="auto"``.
    """

    gradcam_weights: str = "mean"
    igcam_variant: str = "paper"
    rsi_rule: str = "trapezoid"
    rsi_selection: str = "guided"
    eps: float = 1e-8
    auto_tolerance: float = 0.05
    auto_start: int = 8
    auto_max: int = 1024

    _CHOICES = {
        "gradcam_weights": ("mean", "positive"),
        "igcam_variant": ("paper", "notebook"),
        "rsi_rule": ("trapezoid", "riemann"),
        "rsi_selection": ("guided", "positive", "none"),
    }

    def __post_init__(self) -> None:
        for name, choices in self._CHOICES.items():
            if getattr(self, name) not in choices:
                raise OrtCamError(
                    f"{name}={getattr(self, name)!r}; use one of {', '.join(choices)}")
        if not self.eps > 0:
            raise OrtCamError("eps must be > 0")

    @classmethod
    def from_kwargs(cls, **options) -> MethodOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OrtCamError(f"unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**options)


@dataclass
class PathState:
    """What the driver knows while it walks l = 0..m, channels first ([K, h, w]).

    ``prev_a``/``prev_g`` are A_{l−1}, G_{l−1} for the first l of the current chunk (None at
    l = 0): the trapezoid rule needs them across chunk boundaries.
    """

    m: int
    a0: np.ndarray | None = None
    am: np.ndarray | None = None
    gm: np.ndarray | None = None
    prev_a: np.ndarray | None = None
    prev_g: np.ndarray | None = None


class CamMethod(ABC):
    """A CAM method: sees each chunk of the path once (``update``), then returns its raw
    layer-resolution map (``finish``)."""

    name: str = ""
    title: str = ""

    def __init__(self, state: PathState, options: MethodOptions):
        self.state = state
        self.options = options
        self.extras: dict[str, float] = {}

    def update(self, ls: np.ndarray, a: np.ndarray, g: np.ndarray) -> None:  # noqa: B027
        """Chunk of path points ``ls`` with activations ``a`` and gradients ``g`` [b,K,h,w]."""

    @abstractmethod
    def finish(self) -> np.ndarray:
        """The raw map L (h×w, float64)."""


def weighted_map(weights: np.ndarray, a: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k w_k A[k]) for weights [K] and A [K, h, w]."""
    return np.maximum(np.tensordot(weights, a, axes=(0, 0)), 0.0)
