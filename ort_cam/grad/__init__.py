"""Gradient graphs in standard ONNX ops: the VJP rule table and the models built from it."""

from .heads import SCORE_MODES, GradientModels, fused_model, split_models
from .layers import LayerInfo, list_layers
from .table import VJP_RULES

__all__ = [
    "SCORE_MODES", "VJP_RULES", "GradientModels", "LayerInfo", "fused_model", "list_layers",
    "split_models",
]
