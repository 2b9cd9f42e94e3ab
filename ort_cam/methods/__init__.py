"""The CAM methods and the one registry that the API, the CLI, the outputs and the audit read.

``METHODS`` maps a method's name to its class; every other list of methods in ort_cam (the
default set, the CLI's choices, panels, npz keys, the audit's tables, colours and legends) is
derived from it, at the time it is needed, so that a method registered here (or added to the
dict at run time) shows up everywhere.
"""

from __future__ import annotations

from ..engine import PathState
from .base import CamMethod, MethodOptions
from .gradcam import GradCam
from .igcam import IntegratedGradCam
from .rsi import RsiGradCam

#: method name -> class, in display order.
METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (GradCam, IntegratedGradCam, RsiGradCam)
}


def default_methods() -> tuple[str, ...]:
    """The methods explained when none are named: every registered one with ``default``."""
    return tuple(name for name, cls in METHODS.items() if cls.default)


def extra_names() -> tuple[str, ...]:
    """Every extra scalar some registered method reports, in registry order, once each."""
    return tuple(dict.fromkeys(e for cls in METHODS.values() for e in cls.extras))


def reporting(extra: str) -> str | None:
    """The first registered method that reports ``extra``, or None."""
    return next((name for name, cls in METHODS.items() if extra in cls.extras), None)


__all__ = ["METHODS", "CamMethod", "MethodOptions", "PathState", "default_methods",
           "extra_names", "reporting"]
