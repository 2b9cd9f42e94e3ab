"""The whole explainer as one ONNX model, for stacks without Python (``ort-cam export``)."""

from .build import INPUT_KINDS, export_explainer, exportable_methods
from .reductions import ONNX_REDUCTIONS

__all__ = ["INPUT_KINDS", "ONNX_REDUCTIONS", "export_explainer", "exportable_methods"]
