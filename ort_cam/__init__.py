"""ort_cam: gradient-based class activation maps for ONNX classifiers on stock onnxruntime."""

__version__ = "0.1.0"

from .errors import OrtCamError  # noqa: E402
from .explainer import Explainer  # noqa: E402
from .methods import METHODS, MethodOptions  # noqa: E402
from .preprocess import PRESETS, Preprocess  # noqa: E402
from .result import Explanation, MethodResult  # noqa: E402

__all__ = [
    "METHODS", "PRESETS", "Explainer", "Explanation", "MethodOptions", "MethodResult",
    "OrtCamError", "Preprocess", "__version__",
]
