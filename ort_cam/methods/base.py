"""What every CAM method shares: the options and the hook on the driver's path state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import numpy as np

from ..engine import PathState
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


class CamMethod(ABC):
    """A CAM method: sees each chunk of the path once (``update``), then returns its raw
    layer-resolution map (``finish``) and fills ``extra_values``.

    What the rest of ort_cam knows about a method, it reads from these class attributes
    (through ``METHODS``), never from a name typed elsewhere:

    Attributes:
        name: registry key; the CLI's ``--methods`` value and the prefix of its npz arrays.
        title: full name (panels, the audit's tables and legends).
        short: short name (the report's box plots, the CLI's one-line summary).
        color: matplotlib colour of its lines in the report.
        default: in the set explained when no methods are given.
        extras: names of the extra scalars ``finish`` puts in ``self.extra_values``.
    """

    name: str = ""
    title: str = ""
    short: str = ""
    color: str = ""
    default: bool = False
    extras: tuple[str, ...] = ()

    def __init__(self, state: PathState, options: MethodOptions):
        self.state = state
        self.options = options
        #: ``finish`` fills it: extra name (one of ``extras``) -> value.
        self.extra_values: dict[str, float] = {}

    def update(self, ls: np.ndarray, a: np.ndarray, g: np.ndarray) -> None:  # noqa: B027
        """Chunk of path points ``ls`` with activations ``a`` and gradients ``g`` [b,K,h,w]."""

    @abstractmethod
    def finish(self) -> np.ndarray:
        """The raw map L (h×w, float64)."""


def weighted_map(weights: np.ndarray, a: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k w_k A[k]) for weights [K] and A [K, h, w]."""
    return np.maximum(np.tensordot(weights, a, axes=(0, 0)), 0.0)
