"""Graph tools: load a model, list candidate layers, split it at one.

Its names are imported on first use (they load onnx and onnx-graphsurgeon), so that code which
only needs a submodule that does not (``digest`` on a remembered model) does not load them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names
from .spec import LAYER_LAYOUTS

if TYPE_CHECKING:
    from .layers import (
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

_WHERE = {"LayerHint": "layers", "LayerView": "layers",
          "layer_view": "layers", "layouts": "layers", "resolve_layer": "layers",
          "spatial_layer": "layers", "view_layer": "layers", "LoadedModel": "load",
          "load_model": "load", "Cut": "split", "find_cut": "split"}


__getattr__ = lazy_names(__name__, _WHERE)


__all__ = [
    "LAYER_LAYOUTS", "Cut", "LayerHint", "LayerView", "LoadedModel", "find_cut", "layer_view",
    "layouts", "load_model", "resolve_layer", "spatial_layer", "view_layer",
]
