"""What every CAM method shares: the options and the hook on the driver's path state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..engine import PathState
from ..errors import OrtCamError

#: Field metadata of the options added with the methods after the three.
_LATER = {"later": True}


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

    Options of the methods added later (recorded in settings files only when set, see
    ``record``; each method's docstring says what it reads):
        eigen_smooth: the first principal component of the weighted activations instead of
            their channel sum (methods whose map is a channel sum).
        aug_smooth: average the normalised maps of 6 test-time augmentations (horizontal flip
            × input scaled by 0.9, 1, 1.1), as pytorch-grad-cam's ``aug_smooth``.
        gradcampp_eps: ε added to Grad-CAM++'s α denominator (0: the paper; 1e-6:
            pytorch-grad-cam).
        fem_k: FEM's k of the k-sigma threshold.
        kpca_kernel, kpca_gamma: KPCA-CAM's kernel and its γ (None: 1/K).
        finer_alpha, finer_compare: Finer-CAM's comparison strength and number of most
            similar classes compared with.
        run_batch: rows per session run of the methods that run the model or its head.
    """

    gradcam_weights: str = "mean"
    igcam_variant: str = "paper"
    rsi_rule: str = "trapezoid"
    rsi_selection: str = "guided"
    eps: float = 1e-8
    auto_tolerance: float = 0.05
    auto_start: int = 8
    auto_max: int = 1024
    eigen_smooth: bool = field(default=False, metadata=_LATER)
    aug_smooth: bool = field(default=False, metadata=_LATER)
    gradcampp_eps: float = field(default=0.0, metadata=_LATER)
    fem_k: float = field(default=2.0, metadata=_LATER)
    kpca_kernel: str = field(default="sigmoid", metadata=_LATER)
    kpca_gamma: float | None = field(default=None, metadata=_LATER)
    finer_alpha: float = field(default=1.0, metadata=_LATER)
    finer_compare: int = field(default=3, metadata=_LATER)
    run_batch: int = field(default=32, metadata=_LATER)

    _CHOICES = {
        "gradcam_weights": ("mean", "positive"),
        "igcam_variant": ("paper", "notebook"),
        "rsi_rule": ("trapezoid", "riemann"),
        "rsi_selection": ("guided", "positive", "none"),
        "kpca_kernel": ("sigmoid", "rbf", "poly", "linear", "cosine"),
    }

    def __post_init__(self) -> None:
        for name, choices in self._CHOICES.items():
            if getattr(self, name) not in choices:
                raise OrtCamError(
                    f"{name}={getattr(self, name)!r}; use one of {', '.join(choices)}")
        if not self.eps > 0:
            raise OrtCamError("eps must be > 0")
        if self.run_batch < 1 or self.finer_compare < 1:
            raise OrtCamError("run_batch and finer_compare must be >= 1")
        if not self.gradcampp_eps >= 0:
            raise OrtCamError("gradcampp_eps must be >= 0")

    def record(self) -> dict:
        """Every option for a settings file, except the later ones left at their default (so
        that a file written before they existed, and one written now, read the same)."""
        default = type(self)()
        return {k: v for k, v in asdict(self).items()
                if not (k in _LATER_NAMES and v == getattr(default, k))}

    @classmethod
    def from_kwargs(cls, **options) -> MethodOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OrtCamError(f"unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**options)


#: The cost of a method that reads only x (l = m): asked for alone (or only with such
#: methods) it is one gradient run of x at batch 1; with a path method, nothing more.
AT_X = "1 gradient run at x alone; 0 extra beside a path method (reads l = m)"

_LATER_NAMES = frozenset(f.name for f in fields(MethodOptions) if f.metadata.get("later"))


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
        cost: model runs per image and target, in words (``ort-cam methods`` lists it).
        needs_path: whether it reads points other than l = m (x itself). When every method
            asked for has it False, the explainer runs x alone, once, and the state holds
            only that point (``a_end``, ``g_end``; m = 0). True unless the method says so.
    """

    name: str = ""
    title: str = ""
    short: str = ""
    color: str = ""
    default: bool = False
    extras: tuple[str, ...] = ()
    cost: str = "m+1 gradient runs (the shared pass)"
    needs_path: bool = True

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
