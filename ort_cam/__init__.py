"""ort_cam: gradient-based class activation maps for ONNX classifiers on stock onnxruntime."""

from ._version import __version__
from .errors import OrtCamError
from .explainer import Explainer
from .methods import METHODS, MethodOptions
from .preprocess import PRESETS, Preprocess
from .result import Explanation, MethodResult

__all__ = [
    "METHODS", "PRESETS", "Explainer", "Explanation", "MethodOptions", "MethodResult",
    "OrtCamError", "Preprocess", "__version__",
]
