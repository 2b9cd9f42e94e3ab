"""The CAM methods and the one registry that the API, the CLI, the outputs and the audit read.

``METHODS`` maps a method's name to its class; every other list of methods in ort_cam (the
default set, the CLI's choices, panels, npz keys, the audit's tables, colours and legends) is
derived from it, at the time it is needed, so that a method registered here (or added to the
dict at run time) shows up everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

from ..engine import PathResult, PathState, ReducerFactory
from ..errors import OrtCamError
from ..result import COMPLETENESS_GAP
from .ablation import AblationCam
from .base import CamMethod, MethodOptions
from .eigencam import EigenCam, EigenGradCam
from .fem import Fem
from .finercam import FinerCam
from .gradcam import GradCam
from .gradcam_elementwise import GradCamElementwise
from .gradcampp import GradCamPlusPlus
from .hirescam import HiResCam
from .igcam import IntegratedGradCam
from .kpca import KpcaCam
from .layercam import LayerCam
from .layerig import LayerIntegratedGradients
from .rsi import RsiGradCam
from .scorecam import ScoreCam
from .xgradcam import XGradCam

#: method name -> class, in display order: the default three, then the rest of what
#: pytorch-grad-cam offers (``default = False``: asked for by name).
METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (
        GradCam, IntegratedGradCam, RsiGradCam,
        HiResCam, GradCamElementwise, GradCamPlusPlus, XGradCam, LayerCam, EigenGradCam,
        EigenCam, KpcaCam, Fem, AblationCam, ScoreCam, FinerCam, LayerIntegratedGradients,
    )
}


def default_methods() -> tuple[str, ...]:
    """The methods explained when none are named: every registered one with ``default``."""
    return tuple(name for name, cls in METHODS.items() if cls.default)


def resolve(names: Sequence[str] | None, *, listed_as: str = "") -> list[str]:
    """``names`` as a list (None: the default set), every one registered; else one error that
    names the unknown ones and lists the registered ones (``listed_as``: how the caller takes
    them, e.g. "a comma-separated list of ")."""
    chosen = list(default_methods() if names is None else names)
    unknown = [n for n in chosen if n not in METHODS]
    if unknown or not chosen:
        raise OrtCamError(f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                          f"use {listed_as}{', '.join(METHODS)}")
    return chosen


def auto_judge(names: Sequence[str]) -> str:
    """The method whose completeness gap ``steps="auto"`` watches: the first of ``names`` that
    reports one, else the first registered one."""
    judge = next((name for name in names if COMPLETENESS_GAP in METHODS[name].extras),
                 reporting(COMPLETENESS_GAP))
    if judge is None:
        raise OrtCamError("steps='auto' needs a method that reports a completeness gap; "
                          "none is registered, so pass an integer number of steps")
    return judge


def reducer_factories(names: Sequence[str], opts: MethodOptions) -> dict[str, ReducerFactory]:
    """What the engine calls to build the methods ``names`` on its path state."""
    return {name: partial(METHODS[name], options=opts) for name in names}


def check_extras(path: PathResult) -> PathResult:
    """``path``, after checking that every method reported exactly the extras it declares."""
    for name, values in path.extras.items():
        declared = METHODS[name].extras
        if sorted(values) != sorted(declared):
            raise OrtCamError(f"method {name!r} reported extras {sorted(values)} but declares "
                              f"{list(declared)}; make its finish() fill exactly those")
    return path


def needs_path(names: Sequence[str]) -> bool:
    """Whether any of the methods ``names`` reads points of the path other than x (l = m);
    when none does, x alone is run (the explainer) or walked (the exported graph)."""
    return any(METHODS[name].needs_path for name in names)


def extra_names() -> tuple[str, ...]:
    """Every extra scalar some registered method reports, in registry order, once each."""
    return tuple(dict.fromkeys(e for cls in METHODS.values() for e in cls.extras))


def reporting(extra: str) -> str | None:
    """The first registered method that reports ``extra``, or None."""
    return next((name for name, cls in METHODS.items() if extra in cls.extras), None)


def method_records() -> list[dict[str, object]]:
    """One record per registered method, in registry order: name, title, whether it is in
    the default set, what it costs per image and target (``cost``), and its summary (the
    first line of its class's docstring, else of its module's)."""
    out: list[dict[str, object]] = []
    for name, cls in METHODS.items():
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
        summary = " ".join(doc.strip().split("\n\n")[0].split())
        out.append({"name": name, "title": cls.title, "default": cls.default,
                    "cost": cls.cost, "summary": summary})
    return out


__all__ = ["METHODS", "CamMethod", "MethodOptions", "PathState", "auto_judge", "check_extras",
           "default_methods", "extra_names", "needs_path", "reducer_factories", "reporting",
           "resolve"]
