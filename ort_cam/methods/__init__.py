"""The CAM methods and the one registry the API and the CLI read."""

from .base import CamMethod, MethodOptions, PathState
from .gradcam import GradCam
from .igcam import IntegratedGradCam
from .rsi import RsiGradCam

#: method name -> class. The CLI's ``--methods`` choices come from here.
METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls for cls in (GradCam, IntegratedGradCam, RsiGradCam)
}

__all__ = ["METHODS", "CamMethod", "MethodOptions", "PathState"]
