"""Graph tools: load a model, list candidate layers, split it at one."""

from .layers import (
    LAYER_LAYOUTS,
    LayerHint,
    LayerView,
    layer_view,
    layouts,
    resolve_layer,
    spatial_layer,
    view_layer,
)
from .load import LoadedModel, load_model
from .split import Cut, find_cut

__all__ = [
    "LAYER_LAYOUTS", "Cut", "LayerHint", "LayerView", "LoadedModel", "find_cut", "layer_view",
    "layouts", "load_model", "resolve_layer", "spatial_layer", "view_layer",
]
