"""Graph tools: load a model, list candidate layers, split it at one."""

from .layers import layouts, resolve_layer, spatial_layer
from .load import LoadedModel, load_model
from .split import Cut, find_cut

__all__ = [
    "Cut", "LoadedModel", "find_cut", "layouts", "load_model",
    "resolve_layer", "spatial_layer",
]
