"""Graph tools: load a model, list candidate layers, split it at one."""

from .layers import LayerInfo, list_layers, resolve_layer, spatial_layer
from .load import LoadedModel, load_model, session_for
from .split import Cut, find_cut

__all__ = [
    "Cut", "LayerInfo", "LoadedModel", "find_cut", "list_layers", "load_model",
    "resolve_layer", "session_for", "spatial_layer",
]
